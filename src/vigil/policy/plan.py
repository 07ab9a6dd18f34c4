"""What a compiled policy is: a pure, deterministic plan the loader applies.

The compiler (``vigil.policy.compiler``) turns a validated policy into a ``PolicyPlan``
on any machine (no root, no libbpf). ``vigil.sensors.generic`` is the only code that
turns a plan into kernel objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

from vigil.events.generic import ArgSpec
from vigil.policy.follow import FollowSel
from vigil.policy.scope import PodScope, Selector


@dataclass(frozen=True)
class Attach:
    """Attach one program of the hook's object."""

    program: str              # vg_gen_tp | vg_gen_tp_ret | vg_gen_rawtp | vg_gen_uprobe | vg_gen_uretprobe
                              # | vg_gen_kprobe | vg_gen_kretprb | vg_gen_kpm | vg_gen_kretpm
                              # | vg_gen_fentry | vg_gen_fexit | vg_gen_fmodret | vg_gen_lsm
    kind: str                 # tracepoint | raw_tracepoint | uprobe | uretprobe | kprobe |
                              # kretprobe | kprobe_multi | kretprobe_multi | fentry | fexit |
                              # fmod_ret | lsm | tp_btf (vg_gen_fl_*: follow descendants)
    target: tuple[str, ...]   # (subsys, event) | (name,) | (path, symbol) | (function,) | (lsm hook,)
                              # | (path, provider, name): usdt
    offset: int = 0           # uprobes by offset
    ref_ctr_offset: int = 0   # uprobes: file offset of the semaphore the kernel counts (0: none)
    # uprobes: "ALGO:HEX" digests the binary must match before it is probed (any of them);
    # digest_ignore: a mismatch skips this probe (with a warning) instead of failing the load
    digests: tuple[str, ...] = ()
    digest_ignore: bool = False
    cookie: int = 0           # BPF cookie (kprobes of a list: the function's index)


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
    follow: tuple[FollowSel, ...] = ()  # selectors following descendants (vg_follow seeds)
    # list hooks (call: list:NAME): the record's `func` -> the function named in the event
    functions: Mapping[int, str] = field(default_factory=dict)
    ndata: int = 0            # the last ndata of args are the hook's `data` (event field data)
    requests: tuple[Any, ...] = ()  # GetUrl / DnsLookup (vigil.policy.compile_actions.Request)
    # kernel functions the hook's programs call (SubString: bpf_strnstr): the loader opens
    # the object variant that has those calls (vigil.sensors.generic.load_hook)
    kfuncs: tuple[str, ...] = ()
    # matchWorkloads: (selector index, PodScope) of the selectors that run only in the
    # workloads they select (each gets its own policy-filter id when loaded)
    workloads: tuple[tuple[int, PodScope], ...] = ()

    @property
    def hook_label(self) -> str:
        """Tetragon's metrics `hook` label: kprobe:<fn>, tracepoint:<s>/<e>, uprobe:<p>/<sym>."""
        if self.event == "process_kprobe":
            return f"kprobe:{self.function_name}"
        if self.event == "process_tracepoint":
            return f"tracepoint:{self.subsys}/{self.event_name}"
        if self.event == "process_lsm":
            return f"lsm:{self.function_name}"
        if self.event == "process_loader":
            return "loader"
        if self.event == "process_usdt":
            return f"usdt:{self.symbol.replace(':', '/', 1)}"
        return f"uprobe:{self.path}/{self.symbol}"


# ---- enforcement without BPF LSM (vigil.policy.compile_lsm) -------------------------

@dataclass(frozen=True)
class StrMatch:
    """One string filter: matchArgs on a path, or matchBinaries."""

    op: str                   # Equal NotEqual Prefix NotPrefix Postfix NotPostfix (In/NotIn = Equal/NotEqual)
    values: tuple[str, ...]


@dataclass(frozen=True)
class NsMatch:
    ns: str                   # file name in /proc/PID/ns: mnt, pid_for_children, ...
    negate: bool              # NotIn
    values: tuple[int, ...]   # inode numbers (host_ns already resolved)


@dataclass(frozen=True)
class CapMatch:
    field: str                # CapEff | CapInh | CapPrm (/proc/PID/status)
    negate: bool
    mask: int


@dataclass(frozen=True)
class FanSelector:
    """A selector decided in user space: every filter must hold (AND), first match wins."""

    paths: tuple[StrMatch, ...] = ()
    binary: StrMatch | None = None
    pids: tuple[int, ...] = ()
    pids_negate: bool = False
    namespaces: tuple[NsMatch, ...] = ()
    caps: tuple[CapMatch, ...] = ()
    action: int = 1           # vg_action of the event: POST, OVERRIDE, SIGKILL, SIGNAL
    post: bool = True         # False with NoPost
    deny_errno: int = 0       # Override: positive errno to refuse with
    signal: int = 0           # Sigkill (9) / Signal argSig

    def path_free(self) -> bool:
        return not self.paths


@dataclass(frozen=True)
class FanotifyHook:
    """``lsmhooks`` file_open / bprm_check_security enforced with fanotify permission events."""

    hook_id: int
    section: str              # "spec.lsmhooks[0]"
    hook: str                 # file_open | bprm_check_security
    selectors: tuple[FanSelector, ...]
    arg: str = ""             # "file" / "linux_binprm" when the hook declares its argument
    arg_label: str = ""
    message: str = ""
    tags: tuple[str, ...] = ()
    mechanism: str = ""
    enforcement: str = ""
    # matchWorkloads: (selector index, vigil.policy.scope.PodScope); the agent gives each
    # a filter id and the decider checks the task's cgroup in vg_pf_cgroups
    workloads: tuple[tuple[int, PodScope], ...] = ()

    @property
    def hook_label(self) -> str:
        return f"lsm:{self.hook}"


@dataclass(frozen=True)
class SockRule:
    """A security_socket_* hook enforced by cgroup programs (vigil.sensors.sockguard)."""

    hook_id: int
    section: str
    function: str             # security_socket_connect | _bind | _sendmsg
    programs: tuple[str, ...] # vg_sk_connect4, vg_sk_connect6, ...
    config: bytes             # struct vg_sock_cfg
    map_keys: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    event: HookPlan | None = None   # how its records render (process_kprobe)
    mechanism: str = ""
    enforcement: str = ""
    # matchWorkloads: (selector index, vigil.policy.scope.PodScope), checked by the
    # program on the calling task's cgroup (.rodata.pf, as generic hooks)
    workloads: tuple[tuple[int, PodScope], ...] = ()


@dataclass(frozen=True)
class EnforcePlan:
    """What a policy enforces outside generic.bpf.o, and where (``cgroups``: paths under the
    cgroup2 mount from the ``vigil-cgroups`` option; empty: the whole host)."""

    fanotify: tuple[FanotifyHook, ...] = ()
    sock: tuple[SockRule, ...] = ()
    cgroups: tuple[str, ...] = ()
    monitor: bool = False

    def __bool__(self) -> bool:
        return bool(self.fanotify or self.sock)


@dataclass(frozen=True)
class PolicyPlan:
    name: str
    namespace: str
    mode: str                 # enforce | monitor | monitor_only
    hooks: tuple[HookPlan, ...]
    notes: tuple[str, ...] = ()   # things the user should know (fallbacks taken)
    enforce: EnforcePlan = field(default_factory=EnforcePlan)
    # (field path, message): compiled, but not as it will load (host_ns left for load time)
    warnings: tuple[tuple[str, str], ...] = ()
    # spec.enforcers (vigil.policy.compile_actions.EnforcerPlan), acting on NotifyEnforcer
    enforcer: Any = None
    # pod scoping (vigil.policy.scope.PodScope): the hooks run only in matching pods'
    # cgroups; None: host-wide
    scope: PodScope | None = None
    # spec.nodeSelector: the policy loads only on nodes whose labels match (the policy
    # manager decides, from the node's labels); None: every node
    node_selector: Selector | None = None

    def described(self) -> list[tuple[str, str, str]]:
        """(section, mechanism, enforcement) of every hook, for `check` and logs."""
        rows = [(h.section, h.mechanism, h.enforcement) for h in self.hooks]
        if self.enforcer is not None:
            e = self.enforcer
            rows.append((e.section, e.mechanism, e.enforcement))
        rows += [(h.section, h.mechanism, h.enforcement) for h in self.enforce.fanotify]
        rows += [(r.section, r.mechanism, r.enforcement) for r in self.enforce.sock]
        return sorted(rows, key=lambda r: _section_key(r[0]))

    @property
    def hook_count(self) -> int:
        return len(self.hooks) + len(self.enforce.fanotify) + len(self.enforce.sock)


def _section_key(section: str) -> tuple[str, int]:
    head, _, idx = section.partition("[")
    return head, int(idx.split("]")[0]) if idx else 0


def coverage(selectors: Sequence[FanSelector]) -> tuple[str, tuple[str, ...]]:
    """("exact", paths) | ("prefix", prefixes) | ("all", ()) for a hook's selectors."""
    exact: list[str] = []
    prefixes: list[str] = []
    if not selectors:
        return "all", ()
    for sel in selectors:
        eq = next((m for m in sel.paths if m.op == "Equal"), None)
        if eq is not None:
            exact += eq.values
            continue
        pf = next((m for m in sel.paths if m.op == "Prefix"), None)
        if pf is None:
            return "all", ()
        prefixes += pf.values
    if prefixes:
        return "prefix", tuple(dict.fromkeys(prefixes + [os.path.dirname(p) or "/" for p in exact]))
    return "exact", tuple(dict.fromkeys(exact))
