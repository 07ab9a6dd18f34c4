"""Load a policy's enforcer (spec.enforcers): one copy of enforcer.bpf.o.

The enforcer owns the policy's notification map (``vg_enforcer``); the policy's hooks
reuse it by fd, so a hook's NotifyEnforcer reaches this object's program.
"""

from __future__ import annotations

import struct
from typing import Any

from vigil.abi._generated import EnfCount
from vigil.bpf.object import BpfObject, possible_cpus
from vigil.sensors.base import OBJECTS_DIR, BaseSensor

ENFORCER_OBJECT = OBJECTS_DIR / "enforcer.bpf.o"
#: maps a policy's objects share among themselves (the first object's fd)
POLICY_MAPS = ("vg_enforcer", "vg_socktrack")


def load_enforcer(plan: Any, base: BaseSensor, hook_id: int,
                  policy_maps: dict[str, int]) -> list[BpfObject]:
    """Load and attach the enforcer of ``plan`` (a compile_actions.EnforcerPlan): one
    object on raw_tp sys_exit, or one fmod_ret object per syscall function (a program
    attaches to one function). ``policy_maps`` gets the notification map's fd."""
    objs: list[BpfObject] = []
    try:
        targets = plan.functions if plan.program == "vg_enf_fmodret" else ("",)
        for k, func in enumerate(targets):
            obj = BpfObject(ENFORCER_OBJECT, name=f"vg_e{hook_id}_{k}")
            objs.append(obj)
            for prog in obj.programs():
                prog.autoload = prog.name == plan.program
            shared = dict(base.shared_maps(), **policy_maps)
            for m in obj.maps():
                if m.name in shared:
                    m.reuse_fd(shared[m.name])
            if func:
                obj.program(plan.program).set_attach_target(func)
            obj.load()
            policy_maps.setdefault("vg_enforcer", obj.map("vg_enforcer").fd)
            if not func:
                calls = obj.map("vg_enf_calls")
                for nr in plan.syscalls:
                    calls.update(struct.pack("<I", nr), b"\x01")
            obj.program(plan.program).attach()
    except BaseException:
        for obj in objs:
            obj.close()
        raise
    return objs


def enforcer_counts(obj: BpfObject) -> list[int]:
    """vg_enf_counts summed over CPUs, indexed by vg_enf_count."""
    ncpu = possible_cpus()
    out = []
    for i in range(int(EnfCount.MAX)):
        raw = obj.map("vg_enf_counts").lookup(struct.pack("<I", i), value_size=8 * ncpu)
        out.append(sum(struct.unpack(f"<{ncpu}Q", raw)))
    return out
