"""Load security_socket_* enforcement: one copy of sockguard.bpf.o per hook, attached
(bpf_link, multi-attach) to each cgroup in the policy's scope.

Links are owned by this process: when it exits, or ``close()`` runs, the kernel detaches
the programs, so nothing survives the agent (enforcement stops with it: fail-open).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from vigil.bpf.object import BpfObject
from vigil.errors import BpfError
from vigil.policy.plan import SockRule
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

log = logging.getLogger("vigil.sensors.sockguard")

SOCKGUARD_OBJECT = OBJECTS_DIR / "sockguard.bpf.o"
PRIVATE_MAPS = ("vg_sk_addr", "vg_sk_bin_eq", "vg_sk_bin_pfx")
SHARED = ("vg_events", "vg_cgroup_rate", "vg_procs")


def cgroup_paths(scope: tuple[str, ...], root: str) -> list[str]:
    """Scope entries ("/a/b", relative to the cgroup2 mount) -> directories; the mount
    itself (every process) when the scope is empty. Missing cgroups raise."""
    paths = [os.path.join(root, s.lstrip("/")) for s in scope] if scope else [root]
    for p in paths:
        if not os.path.isdir(p):
            raise BpfError(2, "attach cgroup programs", f"no cgroup {p}")
    return paths


@dataclass
class LoadedSock:
    objects: list[BpfObject] = field(default_factory=list)

    def close(self) -> None:
        for obj in self.objects:
            obj.close()
        self.objects.clear()

    @property
    def link_ids(self) -> list[int]:
        out = []
        for obj in self.objects:
            for lk in obj.links:
                try:
                    with open(f"/proc/self/fdinfo/{lk.fd}") as f:
                        out += [int(ln.split()[1]) for ln in f if ln.startswith("link_id:")]
                except OSError:
                    pass
        return out


def load_sock_rules(rules: tuple[SockRule, ...], scope: tuple[str, ...], base: BaseSensor,
                    cgroup_root: str) -> LoadedSock:
    """Load and attach every rule; on any failure undo all of it and raise."""
    loaded = LoadedSock()
    try:
        paths = cgroup_paths(scope, cgroup_root)
        for rule in rules:
            loaded.objects.append(_load_rule(rule, base, paths))
    except BaseException:
        loaded.close()
        raise
    return loaded


def _load_rule(rule: SockRule, base: BaseSensor, cgroups: list[str]) -> BpfObject:
    obj = BpfObject(SOCKGUARD_OBJECT, name=f"vg_s{rule.hook_id}")
    try:
        for prog in obj.programs():
            prog.autoload = prog.name in rule.programs
        obj.set_rodata(base.rodata)
        obj.map(".rodata.sock").set_initial_value(rule.config)
        shared = base.shared_maps()
        for name in SHARED:
            obj.map(name).reuse_fd(shared[name])
        for name in PRIVATE_MAPS:
            obj.map(name).set_max_entries(max(1, len(rule.map_keys.get(name, ()))))
        obj.load()
        for name, keys in rule.map_keys.items():
            m = obj.map(name)
            for key in keys:
                m.update(key, b"\x01")
        for cg in cgroups:
            for name in rule.programs:
                obj.program(name).attach_cgroup(cg)
    except BaseException:
        obj.close()
        raise
    log.info("%s: %s attached to %s", rule.section, "+".join(rule.programs), ", ".join(cgroups))
    return obj
