"""Load a policy plan into the kernel: one copy of generic.bpf.o per hook.

Each hook's object has its own maps (string/address/int sets, rate-limit state), so
removing a policy frees everything it made; the ring buffer, counters, cgroup-rate
state and the per-process binary map are the base sensor's, shared by fd.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from vigil.bpf.object import BpfObject
from vigil.errors import BpfError
from vigil.policy.plan import Attach, HookPlan, PolicyPlan
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

log = logging.getLogger("vigil.sensors.generic")

GENERIC_OBJECT = OBJECTS_DIR / "generic.bpf.o"
BTF_ATTACH = ("fentry", "fexit", "fmod_ret", "lsm")
PRIVATE_MAPS = ("vg_str_eq", "vg_str_pfx", "vg_str_sfx", "vg_int_set", "vg_addr_lpm",
                "vg_gen_entries", "vg_gen_rate")


@dataclass
class LoadedPolicy:
    plan: PolicyPlan
    objects: list[BpfObject] = field(default_factory=list)

    @property
    def link_count(self) -> int:
        return sum(len(o.links) for o in self.objects)

    def close(self) -> None:
        for obj in self.objects:
            obj.close()
        self.objects.clear()


def load_policy(plan: PolicyPlan, base: BaseSensor) -> LoadedPolicy:
    """Load and attach every hook; on any failure, undo all of it and raise."""
    loaded = LoadedPolicy(plan)
    try:
        for hook in plan.hooks:
            loaded.objects.append(load_hook(hook, base))
    except BaseException:
        loaded.close()
        raise
    return loaded


def load_hook(hook: HookPlan, base: BaseSensor) -> BpfObject:
    obj = BpfObject(GENERIC_OBJECT, name=f"vg_h{hook.hook_id}")
    try:
        wanted = {a.program for a in hook.attach}
        for prog in obj.programs():
            prog.autoload = prog.name in wanted
        for a in hook.attach:  # BTF programs name their target before load
            if a.kind in BTF_ATTACH:
                obj.program(a.program).set_attach_target(a.target[0])
        obj.set_rodata(base.rodata)
        obj.map(".rodata.hook").set_initial_value(hook.config)
        for name, fd in base.shared_maps().items():
            obj.map(name).reuse_fd(fd)
        for name in PRIVATE_MAPS:
            obj.map(name).set_max_entries(max(1, hook.map_sizes.get(name, 0)))
        obj.load()
        for name, keys in hook.map_keys.items():
            m = obj.map(name)
            for key in keys:
                m.update(key, b"\x01")
        for a in hook.attach:
            _attach(obj, a)
    except BaseException:
        obj.close()
        raise
    return obj


def _attach(obj: BpfObject, a: Attach) -> None:
    prog = obj.program(a.program)
    if a.kind == "tracepoint":
        prog.attach_tracepoint(*a.target)
    elif a.kind == "raw_tracepoint":
        prog.attach_raw_tracepoint(a.target[0])
    elif a.kind in ("kprobe", "kretprobe"):
        prog.attach_kprobe(a.target[0], retprobe=a.kind == "kretprobe")
    elif a.kind in ("kprobe_multi", "kretprobe_multi"):
        prog.attach_kprobe_multi([a.target[0]], retprobe=a.kind == "kretprobe_multi")
    elif a.kind in BTF_ATTACH:
        prog.attach()
    elif a.kind in ("uprobe", "uretprobe"):
        path, symbol = a.target
        prog.attach_uprobe(path, offset=a.offset, symbol=symbol or None,
                           retprobe=a.kind == "uretprobe")
    else:
        raise BpfError(22, "attach", f"{a.program}: unknown attach kind {a.kind}")
