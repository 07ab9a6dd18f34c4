"""Load security_socket_* enforcement: one copy of sockguard.bpf.o per hook, attached
(bpf_link, multi-attach) to each cgroup in the policy's scope.

Links are owned by this process: when it exits, or ``close()`` runs, the kernel detaches
the programs, so nothing survives the agent (enforcement stops with it: fail-open).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from vigil.bpf.object import BpfObject
from vigil.errors import BpfError
from vigil.policy.plan import SockRule
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

log = logging.getLogger("vigil.sensors.sockguard")

SOCKGUARD_OBJECT = OBJECTS_DIR / "sockguard.bpf.o"
PRIVATE_MAPS = ("vg_sk_addr", "vg_sk_bin_eq", "vg_sk_bin_pfx")
SHARED = ("vg_events", "vg_cgroup_rate", "vg_procs")
PF_MAP = "vg_pf_cgroups"  # pod scoping (vigil.sensors.policyfilter); unscoped: one entry


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
                    cgroup_root: str, pf: Any = None) -> LoadedSock:
    """Load and attach every rule; on any failure undo all of it and raise. ``pf``:
    (PolicyFilter, policy filter id, hook id -> ((selector, filter id), ...)) when the
    policy is pod-scoped or has matchWorkloads: the programs check the calling task's
    cgroup in vg_pf_cgroups as generic hooks do."""
    loaded = LoadedSock()
    try:
        paths = cgroup_paths(scope, cgroup_root)
        for rule in rules:
            loaded.objects.append(_load_rule(rule, base, paths, pf))
    except BaseException:
        loaded.close()
        raise
    return loaded


def _load_rule(rule: SockRule, base: BaseSensor, cgroups: list[str], pf: Any) -> BpfObject:
    obj = BpfObject(SOCKGUARD_OBJECT, name=f"vg_s{rule.hook_id}")
    filt, policy_id, sel_map = pf if pf is not None else (None, 0, {})
    sel_ids = sel_map.get(rule.hook_id, ())
    try:
        if filt is not None:
            filt.configure(obj, policy_id, sel_ids)
        else:
            obj.map(PF_MAP).set_max_entries(1)
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
        if filt is not None:
            filt.loaded(obj, policy_id, bool(sel_ids))
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
