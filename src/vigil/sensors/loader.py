"""Load a policy's loader hook (``spec.loader``): loader.bpf.o, sharing the base
sensor's ring buffer and counters, one copy per policy (removed with it)."""

from __future__ import annotations

import struct

from vigil.bpf.object import BpfObject
from vigil.policy.plan import HookPlan
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

LOADER_OBJECT = OBJECTS_DIR / "loader.bpf.o"


def load_loader_hook(hook: HookPlan, base: BaseSensor) -> BpfObject:
    from vigil.bpf import mounts
    mounts.ensure_tracefs()  # libbpf finds the tracepoints' ids there
    obj = BpfObject(LOADER_OBJECT, name=f"vg_h{hook.hook_id}")
    try:
        obj.set_rodata(base.rodata)
        for name, fd in base.shared_maps().items():
            if name in ("vg_events", "vg_stats", "vg_cgroup_rate"):
                obj.map(name).reuse_fd(fd)
        obj.map(".rodata.loader").set_initial_value(struct.pack("<I", hook.hook_id))
        obj.load()
        for a in hook.attach:
            obj.program(a.program).attach_tracepoint(*a.target)
    except BaseException:
        obj.close()
        raise
    return obj

