"""What a compiled policy is: a pure, deterministic plan the loader applies.

The compiler (``vigil.policy.compiler``) turns a validated policy into a ``PolicyPlan``
on any machine (no root, no libbpf). ``vigil.sensors.generic`` is the only code that
turns a plan into kernel objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vigil.events.generic import ArgSpec


@dataclass(frozen=True)
class Attach:
    """Attach one program of the hook's object."""

    program: str              # vg_gen_tp | vg_gen_tp_ret | vg_gen_rawtp | vg_gen_uprobe | vg_gen_uretprobe
    kind: str                 # tracepoint | raw_tracepoint | uprobe | uretprobe
    target: tuple[str, ...]   # (subsys, event) | (name,) | (path, symbol)
    offset: int = 0           # uprobes by offset


@dataclass(frozen=True)
class HookPlan:
    """One hook of a policy: one copy of generic.bpf.o with this configuration."""

    hook_id: int
    section: str              # where in the policy: "spec.kprobes[0]"
    event: str                # process_kprobe | process_tracepoint | process_uprobe
    opcode: int               # record opcode (MsgOp.GENERIC_*)
    attach: tuple[Attach, ...]
    config: bytes             # struct vg_hook_cfg
    map_keys: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    map_sizes: Mapping[str, int] = field(default_factory=dict)
    args: tuple[ArgSpec, ...] = ()
    return_arg: ArgSpec | None = None
    function_name: str = ""   # process_kprobe
    subsys: str = ""          # process_tracepoint
    event_name: str = ""
    path: str = ""            # process_uprobe
    symbol: str = ""
    message: str = ""
    tags: tuple[str, ...] = ()
    mechanism: str = ""       # what implements it on this kernel, for `check` and logs
    enforcement: str = ""     # what the actions guarantee here ("" = observe only)

    @property
    def hook_label(self) -> str:
        """Tetragon's metrics `hook` label: kprobe:<fn>, tracepoint:<s>/<e>, uprobe:<p>/<sym>."""
        if self.event == "process_kprobe":
            return f"kprobe:{self.function_name}"
        if self.event == "process_tracepoint":
            return f"tracepoint:{self.subsys}/{self.event_name}"
        return f"uprobe:{self.path}/{self.symbol}"


@dataclass(frozen=True)
class PolicyPlan:
    name: str
    namespace: str
    mode: str                 # enforce | monitor | monitor_only
    hooks: tuple[HookPlan, ...]
    notes: tuple[str, ...] = ()   # things the user should know (fallbacks taken)
