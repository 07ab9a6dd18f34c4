"""Validated policy -> PolicyPlan: pure and deterministic (no root, no libbpf).

Each hook becomes one ``struct vg_hook_cfg`` (packed by name through
``vigil.abi.pack``) plus the keys of its matching maps. What this kernel offers comes in
as ``KernelView`` (probed by the caller), so ``vigil tracingpolicy check`` can say what
each hook becomes here, and refuse what cannot be honoured, before anything loads.

Hook mapping on a kernel without kprobes (like the hardened host):
- ``kprobes`` with ``syscall: true`` -> ``syscalls/sys_enter_<name>`` (+ ``sys_exit_<name>``
  for ``return``/``matchReturnArgs``/``returnCopy``), arguments by position;
- other ``kprobes``, ``fentries``, ``lsmhooks`` -> rejected with the reason;
- ``tracepoints`` -> the tracepoint, arguments by field index of its format file;
- ``uprobes`` -> one uprobe (or uretprobe) per symbol/offset;
- ``usdts`` -> uprobes at the probe's sites (vigil.policy.compile_usdt).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.abi import _generated as abi
from vigil.abi.keys import addr_key, eq_key, int_key, pfx_key, sub_key
from vigil.abi.pack import pack
from vigil.capabilities import cap_number
from vigil.events.generic import ArgSpec
from vigil.policy import celexpr
from vigil.policy.follow import FollowSel, pbin_bit
from vigil.policy.plan import Attach, HookPlan, PolicyPlan, SockRule
from vigil.policy.scope import describe_selector, node_selector, policy_scope, workload_scope
from vigil.policy.tracefs import TpField, TpFormat, TracefsUnavailable
from vigil.policy.spec import MAX_INMAP_VALUES
from vigil.policy.values import parse_family, parse_int, parse_port_range
from vigil.syscalls import syscall_number, syscall_value

Op = abi.Op
K = abi.ArgKind
STR_KEY = int(abi.GenLimits.STR_KEY)
PFX_KEY = int(abi.GenLimits.PFX_KEY)
NS_ORDER = ("uts", "ipc", "mnt", "pid", "pidforchildren", "net", "time", "timeforchildren",
            "cgroup", "user")


class CompileError(ValueError):
    """A hook cannot be built on this kernel: ``where`` names the policy field.

    ``invalid``: the policy itself is malformed (a value the checker should have refused
    first; tests/unit/test_policy_agree.py asserts it did), as opposed to something this
    kernel or version cannot do. ``kernel_lacks``: what this kernel's build does not have
    (a function, tracepoint or signature the policy names), which no BPF feature would
    supply: the policy is valid, for another kernel. ``unsupported``: a valid policy
    asks for something this version of Vigil does not do on any kernel; such messages
    say "by this version of Vigil", which is what sets it by default."""

    def __init__(self, where: str, message: str, invalid: bool = False,
                 kernel_lacks: str = "", unsupported: bool | None = None) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
        self.invalid = invalid
        self.kernel_lacks = kernel_lacks
        self.unsupported = ("this version of Vigil" in message if unsupported is None
                            else unsupported)


def where_path(where: str) -> tuple[str | int, ...]:
    """ "spec.kprobes[1].call" -> ("spec", "kprobes", 1, "call")."""
    out: list[str | int] = []
    for part in where.split("."):
        name, *idx = part.replace("]", "").split("[")
        if name:
            out.append(name)
        out += [int(i) for i in idx]
    return tuple(out)


def diagnostic(err: CompileError, policy: Any, source: str, severity: str = "error") -> Any:
    """A CompileError (or a plan warning as one) as a located Diagnostic (file:line:col
    of the field)."""
    from vigil.policy.diagnostics import Diagnostic
    try:
        line, col = policy.locate(where_path(err.where))
    except (AttributeError, KeyError, LookupError, TypeError):
        line, col = 1, 1
    return Diagnostic(source, line, col, err.where, "policy.unsupported", err.message,
                      severity)  # type: ignore[arg-type]  # a Severity literal


@dataclass(frozen=True)
class KernelView:
    """What the running kernel offers, as far as the compiler cares."""

    kprobes: bool = False
    fentry: bool = False
    lsm: bool = False
    # kernel-function hooks (vigil.policy.compile_kprobe)
    kprobe_multi: bool = False
    fmod_ret: bool = False            # fmod_ret on security_* functions (Override)
    fmod_ret_syscall: bool = False    # fmod_ret on syscall functions (error injection)
    kprobe_mode: str = "auto"         # auto | kprobe | kprobe_multi | fentry
    btf: Any = None                   # vigil.policy.kbtf.KernelBtf of the target kernel
    host_ns: dict[str, int] = field(default_factory=dict)   # "net" -> inum, for host_ns
    # Why host_ns is empty: the reason a policy using it is refused.
    host_ns_unknown: str = "the host's namespaces are unknown"
    # This view is not where the policy will load (`check` with a profile, or without
    # root): host_ns compiles to a placeholder and the plan carries a warning instead.
    host_ns_deferred: bool = False
    formats: Callable[[str, str], TpFormat] | None = None   # tracefs format reader
    # traceable kernel functions (tracefs available_filter_functions), None: unreadable
    ftrace_functions: Callable[[], list[str] | None] | None = None
    # bpf_probe_write_user (the Set action on USDT arguments), and why it is refused
    probe_write_user: bool = False
    probe_write_user_refused: str = "this kernel refuses bpf_probe_write_user"
    # uprobe programs may rewrite the registers (Override on uprobes), and why not
    uprobe_regs: bool = False
    uprobe_regs_refused: str = "not probed"
    # BPF kernel functions in the kernel's BTF: SubString, SubStringIgnCase
    kfunc_strnstr: bool = False
    kfunc_strncasestr: bool = False


def _s(v: Any) -> str:
    """Enum or str -> its string value."""
    return str(v.value) if isinstance(v, enum.Enum) else str(v)


# ---- argument types -------------------------------------------------------------------

@dataclass(frozen=True)
class _ArgType:
    kind: int
    size: int
    signed: bool
    out: str


_INT_TYPES = {
    "int": _ArgType(K.INT, 4, True, "int"), "sint32": _ArgType(K.INT, 4, True, "int"),
    "int32": _ArgType(K.INT, 4, True, "int"), "sint16": _ArgType(K.INT, 2, True, "int"),
    "int16": _ArgType(K.INT, 2, True, "int"), "sint8": _ArgType(K.INT, 1, True, "int"),
    "int8": _ArgType(K.INT, 1, True, "int"),
    "uint32": _ArgType(K.INT, 4, False, "uint"), "uint16": _ArgType(K.INT, 2, False, "uint"),
    "uint8": _ArgType(K.INT, 1, False, "uint"),
    "long": _ArgType(K.INT, 8, True, "long"), "sint64": _ArgType(K.INT, 8, True, "long"),
    "int64": _ArgType(K.INT, 8, True, "long"),
    "ulong": _ArgType(K.INT, 8, False, "size"), "uint64": _ArgType(K.INT, 8, False, "size"),
    "size_t": _ArgType(K.INT, 8, False, "size"),
    "capability": _ArgType(K.INT, 4, True, "capability"),
    "syscall64": _ArgType(K.INT, 8, False, "syscall64"),
    "bpf_cmd": _ArgType(K.INT, 4, True, "int"),
}
_USER_STR = _ArgType(K.USTR, 8, False, "string")
_STRING_TYPES = ("string", "filename")
_STRING_OPS = {"Equal": Op.EQ, "NotEqual": Op.NEQ, "Prefix": Op.PREFIX,
               "NotPrefix": Op.NOTPREFIX, "Postfix": Op.POSTFIX, "NotPostfix": Op.NOTPOSTFIX}
_INT_OPS = {"Equal": Op.EQ, "NotEqual": Op.NEQ, "GreaterThan": Op.GT, "GT": Op.GT,
            "LessThan": Op.LT, "LT": Op.LT, "Mask": Op.MASK, "InRange": Op.INRANGE,
            "NotInRange": Op.NOTINRANGE, "InMap": Op.INMAP, "NotInMap": Op.NOTINMAP}
_SOCK_OPS = {"SAddr": Op.SADDR, "DAddr": Op.DADDR, "NotSAddr": Op.NOTSADDR,
             "NotDAddr": Op.NOTDADDR, "SPort": Op.SPORT, "DPort": Op.DPORT,
             "NotSPort": Op.NOTSPORT, "NotDPort": Op.NOTDPORT, "Family": Op.FAMILY}
_BIN_OPS = {"In": Op.IN, "NotIn": Op.NOTIN, "Prefix": Op.PREFIX, "NotPrefix": Op.NOTPREFIX,
            "Postfix": Op.POSTFIX, "NotPostfix": Op.NOTPOSTFIX}


# ---- per hook state -------------------------------------------------------------------

class _HookBuilder:
    """Accumulates one hook's config fields and map keys."""

    def __init__(self, where: str, view: KernelView,
                 lists: dict[str, list[int]] | None = None) -> None:
        self.where = where
        self.view = view
        self.lists = lists or {}  # spec.lists of syscalls, as numbers
        self.cfg: dict[str, Any] = {}
        self.keys: dict[str, list[bytes]] = {}
        self.args: list[tuple[int, _ArgType]] = []  # (function position, type)
        self.next_set = 1
        self.override = False  # Override can be honoured (fmod_ret / BPF LSM hooks)
        self.follow: dict[int, FollowSel] = {}  # vg_follow bit -> what it follows
        self.tracepoint = False  # matchArgs index: field index or position (Tetragon)
        self.ncel = 0  # CelExpr programs in cfg cel[]
        self.ret_type = _INT_TYPES["long"]  # how matchReturnArgs read the return value
        self.hook: Any = None
        self.usdt = False  # a USDT probe: arguments come from the probe's spec, not registers
        self.uprobe_override = False  # a uprobe selector overrides: the register-writing program
        self.kfuncs: set[str] = set()  # kernel functions the hook calls (HookPlan.kfuncs)
        self.workloads: dict[int, Any] = {}  # selector index -> matchWorkloads PodScope

    def new_set(self) -> int:
        self.next_set += 1
        return self.next_set - 1

    def key(self, mapname: str, key: bytes) -> None:
        self.keys.setdefault(mapname, []).append(key)

    def str_set(self, op: int, values: Sequence[str], where: str) -> int:
        set_id = self.new_set()
        for v in values:
            raw = v.encode()
            if op in (Op.EQ, Op.NEQ, Op.IN, Op.NOTIN):
                if len(raw) >= STR_KEY:
                    raise CompileError(where, f"value longer than {STR_KEY - 1} bytes")
                self.key("vg_str_eq", eq_key(set_id, raw))
            else:
                if len(raw) > PFX_KEY - 1:
                    raise CompileError(where, f"value longer than {PFX_KEY - 1} bytes")
                if op in (Op.POSTFIX, Op.NOTPOSTFIX):
                    raw = raw[::-1]
                m = "vg_str_sfx" if op in (Op.POSTFIX, Op.NOTPOSTFIX) else "vg_str_pfx"
                self.key(m, pfx_key(set_id, raw))
        return set_id


# ---- the compiler ---------------------------------------------------------------------

def compile_policy(policy: Any, view: KernelView, hook_id_base: int = 1) -> PolicyPlan:
    """Compile a validated ``vigil.policy.spec.Policy``; raises CompileError."""
    spec = policy.spec
    scope = policy_scope(policy)
    refuse_without_effect(spec)
    name = policy.metadata.name
    namespace = getattr(policy, "namespace", "") or ""
    selectors = _selector_resolver(spec)
    lists = _syscall_lists(spec)
    monitor = _s(getattr(policy, "mode", "enforce")) == "monitor"
    hooks: list[HookPlan] = []
    notes: list[str] = []
    next_id = hook_id_base

    # -- fentries, and lsmhooks on BPF LSM where the kernel has it
    from vigil.policy import compile_kprobe
    kfn = compile_kprobe.compile_sections(spec, view, next_id, monitor, notes, selectors,
                                           lists)
    hooks += kfn.hooks
    next_id += len(kfn.hooks)
    policy = kfn.without_handled(policy)
    # -- lsmhooks and security_socket_* Override go to vigil.policy.compile_lsm
    from vigil.policy import compile_lsm
    routed = compile_lsm.routed_kprobes(spec, view, selectors)
    for i, kp in enumerate(spec.kprobes or ()):
        if i in routed:
            continue
        if kp.call.startswith("list:"):  # vigil.policy.compile_lists
            from vigil.policy.compile_lists import compile_list_hooks
            plans = compile_list_hooks(kp, f"spec.kprobes[{i}]", spec, view, next_id,
                                       monitor, notes, selectors(kp), lists)
            hooks += plans
            next_id += len(plans)
            continue
        hook = _compile_kprobe(kp, f"spec.kprobes[{i}]", view, next_id, monitor, notes,
                               selectors, lists)
        if hook is not None:  # None: ignore.callNotFound and the function is missing
            hooks.append(hook)
            next_id += 1
    for i, tp in enumerate(spec.tracepoints or ()):
        hooks.append(_compile_tracepoint(tp, f"spec.tracepoints[{i}]", view, next_id, monitor,
                                         selectors, lists))
        next_id += 1
    for i, up in enumerate(spec.uprobes or ()):
        for hook in _compile_uprobe(up, f"spec.uprobes[{i}]", view, next_id, monitor,
                                    selectors, lists):
            hooks.append(hook)
            next_id += 1
    from vigil.policy.compile_usdt import compile_usdts
    usdts = compile_usdts(spec, view, next_id, monitor, selectors, lists)
    hooks += usdts
    next_id += len(usdts)
    from vigil.policy.compile_loader import compile_loader
    loader = compile_loader(spec, next_id)
    hooks += loader
    next_id += len(loader)
    mode = _s(getattr(policy, "mode", "enforce"))
    # -- fanotify (file_open, bprm_check_security) and cgroup socket programs
    enforce = compile_lsm.compile_enforcement(policy, view, next_id, selectors, routed,
                                              has_generic=bool(hooks))
    if scope is not None:
        where = " and in ".join(([] if not scope.pods else ["those pods' cgroups"]) +
                                ([] if not scope.host else ["cgroups that are no pod's"]))
        notes.append(f"scoped to {scope.describe()}: the hooks run only in {where} "
                     "(kernel map vg_pf_cgroups), nowhere else")
    in_kernel: list[HookPlan | SockRule] = [*hooks, *enforce.sock]
    for h in in_kernel:
        for si, s in h.workloads:
            notes.append(f"{h.section}.selectors[{si}].matchWorkloads: the selector matches "
                         f"only in the {s.describe()} it selects (kernel map vg_pf_cgroups)")
    for fh in enforce.fanotify:
        for si, s in fh.workloads:
            notes.append(f"{fh.section}.selectors[{si}].matchWorkloads: the selector matches "
                         f"only in the {s.describe()} it selects (the decider looks the "
                         "task's cgroup up in kernel map vg_pf_cgroups)")
    nodes = node_selector(policy)
    if nodes is not None:
        notes.append(f"loads only on nodes whose labels match spec.nodeSelector "
                     f"({describe_selector(nodes)}); elsewhere it is listed as skipped")
    from vigil.policy.compile_actions import compile_enforcer
    return PolicyPlan(name, namespace, mode, tuple(hooks), tuple(notes), enforce,
                      tuple(_deferred_host_ns(spec, view)), scope=scope,
                      enforcer=compile_enforcer(spec, view, monitor), node_selector=nodes)


Selectors = Callable[[Any], Sequence[Any]]


def _selector_resolver(spec: Any) -> Selectors:
    """hook -> its selectors with the policy's selectorsMacros merged in."""
    effective = getattr(spec, "effective_selectors", lambda hook: hook.selectors or ())
    return lambda hook: list(effective(hook) or ())


def _syscall_lists(spec: Any) -> dict[str, list[int]]:
    """``lists`` of type syscalls -> syscall numbers (for ``list:NAME`` in InMap)."""
    out: dict[str, list[int]] = {}
    for i, lst in enumerate(getattr(spec, "lists", None) or ()):
        kind = _s(lst.type) if lst.type is not None else ""  # "": kernel functions
        if kind == "generated_syscalls":
            from vigil.syscalls import SYSCALL_NAMES
            out[lst.name] = sorted(SYSCALL_NAMES)
            continue
        if kind != "syscalls":
            continue  # function lists: kprobes on them (vigil.policy.compile_lists)
        nums = []
        for j, name in enumerate(lst.values):
            if name.startswith(("__ia32_", "__x32_")):
                continue  # 32-bit entry points: ids of another table (see docs/policies.md)
            nr = syscall_number(name.split("/", 1)[-1])
            if nr is None:
                raise CompileError(f"spec.lists[{i}].values[{j}]", f"unknown syscall {name}")
            nums.append(nr)
        out[lst.name] = nums
    return out


_NOT_HERE = "not supported by this version of Vigil"


def refuse_without_effect(spec: Any) -> None:
    """Fields the schema accepts but Vigil would not honour: refused, never ignored.

    (Per-hook refusals that depend on the hook kind are in the hook compilers; the
    selector and action ones in ``_compile_selectors`` / ``_compile_actions``.)
    """
    for section in ("kprobes", "fentries", "tracepoints", "uprobes", "lsmhooks"):
        for i, hook in enumerate(getattr(spec, section, None) or ()):
            w = f"spec.{section}[{i}]"
            args = [(f"{w}.args[{j}]", a) for j, a in enumerate(getattr(hook, "args", None) or ())]
            ra = getattr(hook, "return_arg", None)
            if ra is not None:
                args.append((f"{w}.returnArg", ra))
            for aw, a in args:
                if getattr(a, "max_data", False) and aw.endswith("returnArg"):
                    raise CompileError(f"{aw}.maxData", "maxData applies to buffer "
                                       "arguments, not to the return value", invalid=True)


def refuse_resolve(arg: Any, where: str, kind: str) -> None:
    """``resolve`` / ``btfType`` follow kernel pointers: refused where the argument is
    none (syscall arguments point to user memory) or has no BTF type."""
    for fld, yaml_name in (("resolve", "resolve"), ("btf_type", "btfType"),
                           ("btf_type_module", "btfTypeModule")):
        if getattr(arg, fld, None):
            raise CompileError(f"{where}.{yaml_name}", f"{yaml_name} is not supported on "
                               f"{kind} (only on kernel-function hooks, tracepoint fields "
                               "that point to kernel structs, raw tracepoints, and uprobes "
                               "with btfPath)")


def _unsupported_reason(kind: str, view: KernelView) -> str:
    if kind == "lsmhooks" and not view.lsm:
        return ("BPF LSM programs are refused by this kernel (no trampolines or 'bpf' not "
                "in the active LSMs); lsmhooks cannot load here")
    if kind == "fentries" and not view.fentry:
        return "fentry/fexit programs are refused by this kernel (no BPF trampolines)"
    return f"{kind} are not supported by this version of Vigil"


def _compile_kprobe(kp: Any, where: str, view: KernelView, hook_id: int, monitor: bool,
                    notes: list[str], selectors: Selectors,
                    lists: dict[str, list[int]]) -> HookPlan | None:
    call = kp.call
    nr = syscall_number(call) if kp.syscall else None
    if nr is None and (view.kprobes or view.fentry):  # kernel functions
        from vigil.policy.compile_kprobe import compile_function_hook
        return compile_function_hook(kp, where, view, hook_id, monitor, notes, selectors(kp),
                                     lists=lists)
    if nr is not None and view.fmod_ret:  # Override by fmod_ret, or say why it cannot work
        from vigil.policy.compile_kprobe import check_syscall_override, compile_syscall_override
        plan = compile_syscall_override(kp, where, view, hook_id, monitor, selectors(kp), lists)
        if plan is not None:
            return plan
        check_syscall_override(call, where, view, selectors(kp))
    if nr is None:
        reason = ("kprobes are not available on this kernel (CONFIG_KPROBES is off)"
                  if not view.kprobes else
                  "kprobes on kernel functions are not supported by this version of Vigil")
        raise CompileError(f"{where}.call", f"{call}: {reason}")
    from vigil.policy import compile_data as D
    if D.uses_regs(kp):  # Tetragon's registers: its kprobe's on the syscall function
        from vigil.policy.compile_kprobe import compile_syscall_regs
        return compile_syscall_regs(kp, where, view, hook_id, monitor, selectors(kp), lists)
    sysname = call.removeprefix("__x64_").removeprefix("sys_")
    data = list(getattr(kp, "data", None) or ())
    hook_selectors = D.with_match_data(selectors(kp), len(kp.args or ()), where, data)
    b = _HookBuilder(where, view, lists)
    arity = _syscall_arity(view, sysname, where)
    for i, arg in enumerate(kp.args or ()):
        if arity is not None and arg.index >= arity:
            raise CompileError(f"{where}.args[{i}].index",
                               f"{sysname} takes {_count(arity, 'argument')}"
                               + (f" (index 0..{arity - 1})" if arity else "")
                               + f", per syscalls/sys_enter_{sysname}")
        t = _syscall_arg_type(arg, f"{where}.args[{i}]")
        b.args.append((arg.index, t))
        b.cfg.update(_arg_cfg(i, t, offset=16 + 8 * arg.index, size=8, arg=arg))
        if getattr(arg, "resolve", None) or getattr(arg, "btf_type", None):
            from vigil.policy.compile_kprobe import syscall_resolve  # a user pointer
            extra = syscall_resolve(arg, _syscall_field(view, sysname, arg.index), t,
                                    view.btf, f"{where}.args[{i}]")
            flags = b.cfg[f"args[{i}].flags"] | extra.pop("flags", 0)
            b.cfg.update({f"args[{i}].{k}": v for k, v in extra.items()})
            b.cfg[f"args[{i}].flags"] = flags
    D.compile_data(b, data, view.btf, where, "syscall")  # current_task: the calling task
    ret_spec = _ret_spec(kp, where)
    wants_exit = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in hook_selectors) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    b.hook = kp
    _compile_selectors(b, hook_selectors, where)
    attach = [Attach("vg_gen_tp", "tracepoint", ("syscalls", f"sys_enter_{sysname}"))]
    if wants_exit:
        attach.append(Attach("vg_gen_tp_ret", "tracepoint", ("syscalls", f"sys_exit_{sysname}")))
    mech = (f"tracepoint syscalls/sys_enter_{sysname}"
            + (f" + sys_exit_{sysname}" if wants_exit else ""))
    if not view.kprobes:
        mech += " (kprobe replaced: this kernel has no kprobes)"
        notes.append(f"{where}: {call} runs on syscall tracepoints (no kprobes here)")
    plan = _finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                   D.with_data_args(kp) if data else kp, monitor, has_return=wants_exit,
                   ret_spec=ret_spec, function_name=f"__x64_sys_{sysname}", mechanism=mech)
    if data:
        import dataclasses
        plan = dataclasses.replace(plan, ndata=len(data))
    return plan


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}" if n else f"no {what}s"


def _syscall_field(view: KernelView, sysname: str, index: int) -> TpField | None:
    """Argument ``index`` of syscall ``sysname`` as its sys_enter format declares it (None:
    no format to ask; _syscall_arity has reported an unreadable one)."""
    if view.formats is None:
        return None
    try:
        fmt = view.formats("syscalls", f"sys_enter_{sysname}")
    except (OSError, ValueError):
        return None
    fields = [f for f in fmt.fields if not f.name.startswith("common_")
              and f.name != "__syscall_nr"]
    return fields[index] if index < len(fields) else None


def _syscall_arity(view: KernelView, sysname: str, where: str) -> int | None:
    """Arguments of syscall `sysname`, from its sys_enter format (None: no tracefs to ask)."""
    if view.formats is None:
        return None
    try:
        fmt = view.formats("syscalls", f"sys_enter_{sysname}")
    except TracefsUnavailable as err:
        raise CompileError(f"{where}.call", f"syscall hooks run on tracepoint syscalls/"
                           f"sys_enter_{sysname}, whose format cannot be read: "
                           f"{err.strerror or err}") from err
    except FileNotFoundError as err:
        raise CompileError(f"{where}.call", f"no tracepoint syscalls/sys_enter_{sysname} on "
                           "this kernel (the syscall hook needs it)",
                           kernel_lacks=f"tracepoint syscalls/sys_enter_{sysname}") from err
    except (OSError, ValueError):
        return None
    return sum(1 for f in fmt.fields if not f.name.startswith("common_")
               and f.name != "__syscall_nr")


def _compile_tracepoint(tp: Any, where: str, view: KernelView, hook_id: int,
                        monitor: bool, selectors: Selectors,
                        lists: dict[str, list[int]]) -> HookPlan:
    b = _HookBuilder(where, view, lists)
    b.tracepoint = True
    raw = bool(getattr(tp, "raw", False))
    fmt = None
    if not raw:
        if view.formats is None:
            raise CompileError(where, "tracefs is not available to read the tracepoint format")
        try:
            fmt = view.formats(tp.subsystem, tp.event)
        except TracefsUnavailable as err:
            raise CompileError(where, f"the format of tracepoint {tp.subsystem}/{tp.event} "
                               f"cannot be read: {err.strerror or err}") from err
        except FileNotFoundError as err:
            raise CompileError(f"{where}.event",
                               f"no tracepoint {tp.subsystem}/{tp.event} on this kernel ({err})",
                               kernel_lacks=f"tracepoint {tp.subsystem}/{tp.event}") from err
    arity = None
    if raw and view.btf is not None:
        arity = view.btf.raw_tp_arity(tp.event)
    for i, arg in enumerate(tp.args or ()):
        w = f"{where}.args[{i}]"
        if arity is not None and arg.index >= arity:
            raise CompileError(f"{w}.index", f"raw tracepoint {tp.event} has "
                               f"{_count(arity, 'argument')}"
                               + (f" (index 0..{arity - 1})" if arity else "")
                               + f", per btf_trace_{tp.event} in the kernel's BTF")
        res_extra: dict[str, Any] = {}
        if raw and (getattr(arg, "resolve", None) or getattr(arg, "btf_type", None)):
            from vigil.policy.compile_kprobe import raw_tp_resolve  # BTF-typed arguments
            res_extra = raw_tp_resolve(arg, tp.event, _raw_arg_type(arg, w), view.btf, w)
        elif raw or not (getattr(arg, "resolve", None) or getattr(arg, "btf_type", None)):
            refuse_resolve(arg, w, "tracepoints" if not raw else "raw tracepoints without BTF")
        if fmt is not None:
            if arg.index >= len(fmt.fields):
                raise CompileError(f"{w}.index", f"{tp.subsystem}/{tp.event} has "
                                   f"{len(fmt.fields)} fields (0..{len(fmt.fields) - 1})")
            fld = fmt.fields[arg.index]
            if getattr(arg, "resolve", None) or getattr(arg, "btf_type", None):
                # a pointer field followed with BTF (vigil.policy.compile_kprobe); a
                # syscall's is a user pointer, followed in the process's memory
                from vigil.policy.compile_kprobe import syscall_resolve, tp_field_resolve
                if tp.subsystem == "syscalls":
                    t = _syscall_arg_type(arg, w)
                    res_extra = syscall_resolve(arg, fld, t, view.btf, w)
                else:
                    t, res_extra = tp_field_resolve(arg, tp.event, fld, view.btf, w)
                b.cfg.update(_arg_cfg(i, t, offset=fld.offset, size=8, arg=arg))
                flags = b.cfg[f"args[{i}].flags"] | res_extra.pop("flags", 0)
                b.cfg.update({f"args[{i}].{k}": v for k, v in res_extra.items()})
                b.cfg[f"args[{i}].flags"] = flags
            else:
                t = _tp_arg_type(arg, fld, tp.subsystem, w)
                b.cfg.update(_arg_cfg(i, t, offset=fld.offset, size=min(fld.size, 8),
                                      arg=arg))
        else:
            t = _raw_arg_type(arg, w)
            b.cfg.update(_arg_cfg(i, t, offset=0, size=t.size, arg=arg, src=arg.index))
            if res_extra:
                flags = b.cfg[f"args[{i}].flags"] | res_extra.pop("flags", 0)
                b.cfg.update({f"args[{i}].{k}": v for k, v in res_extra.items()})
                b.cfg[f"args[{i}].flags"] = flags
        b.args.append((arg.index, t))
    _compile_selectors(b, selectors(tp), where)
    if raw:
        attach = [Attach("vg_gen_rawtp", "raw_tracepoint", (tp.event,))]
        mech = f"raw_tracepoint {tp.event}"
    else:
        attach = [Attach("vg_gen_tp", "tracepoint", (tp.subsystem, tp.event))]
        mech = f"tracepoint {tp.subsystem}/{tp.event}"
    return _finish(b, hook_id, where, "process_tracepoint", abi.MsgOp.GENERIC_TRACEPOINT,
                   attach, tp, monitor, subsys=tp.subsystem, event_name=tp.event,
                   mechanism=mech)


def _compile_uprobe(up: Any, where: str, view: KernelView, hook_id: int,
                    monitor: bool, selectors: Selectors,
                    lists: dict[str, list[int]]) -> list[HookPlan]:
    targets: list[tuple[str, int]] = [(s, 0) for s in (up.symbols or ())]
    targets += [("", int(o)) for o in (getattr(up, "offsets", None) or ())]
    # addrs: file offsets of the probed instructions, as offsets are
    targets += [("", int(o)) for o in (getattr(up, "addrs", None) or ())]
    if not targets:
        raise CompileError(where, "uprobes need symbols, offsets or addrs")
    ref_ctrs = [int(r) for r in (getattr(up, "ref_ctr_offsets", None) or ())]
    if ref_ctrs and len(ref_ctrs) != len(targets):
        raise CompileError(f"{where}.refCtrOffsets", f"refCtrOffsets has {len(ref_ctrs)} "
                           f"entries for {len(targets)} probe locations (one per location)",
                           invalid=True)
    digests = tuple(getattr(up, "binary_digests", None) or ())
    ignore = getattr(up, "ignore", None)
    digest_ignore = bool(ignore is not None and ignore.digest_verification_failure)
    ret = bool(getattr(up, "return_", False))
    from vigil.policy import compile_data as D
    data = list(getattr(up, "data", None) or ())
    hook_selectors = D.with_match_data(selectors(up), len(up.args or ()), where, data)
    out: list[HookPlan] = []
    for n, (symbol, offset) in enumerate(targets):
        ref_ctr = ref_ctrs[n] if ref_ctrs else 0
        b = _HookBuilder(where, view, lists)
        for i, arg in enumerate(up.args or ()):
            t = _raw_arg_type(arg, f"{where}.args[{i}]", user=True)
            b.args.append((arg.index, t))
            b.cfg.update(_arg_cfg(i, t, offset=0, size=t.size, arg=arg, src=arg.index))
            if getattr(arg, "resolve", None) or getattr(arg, "btf_type", None):
                from vigil.policy.compile_usdt import uprobe_resolve
                uprobe_resolve(b, up, symbol, i, arg, t, f"{where}.args[{i}]")
        # current_task and the uprobe's registers (read at the call, like the args)
        D.compile_data(b, data, view.btf, where, "uretprobe" if ret else "uprobe")
        b.hook = up
        if ret and _returns_string(up):  # a char * in user memory, read at return
            b.ret_type = _USER_STR
            b.cfg["ret_kind"] = int(K.USTR)
        _compile_selectors(b, hook_selectors, where)
        prog, kind = ("vg_gen_uretprobe", "uretprobe") if ret else ("vg_gen_uprobe", "uprobe")
        if b.uprobe_override:  # the entry program that may return to the caller
            prog = "vg_gen_uprobe_override"
        attach = [Attach(prog, kind, (up.path, symbol), offset, ref_ctr, digests,
                         digest_ignore)]
        # return probes with arguments: the entry uprobe saves them for the uretprobe
        paired = ret and bool(b.args)
        if paired:
            attach.insert(0, Attach("vg_gen_uprobe", "uprobe", (up.path, symbol), offset,
                                    ref_ctr, digests, digest_ignore))
        label = symbol or hex(offset)
        mech = f"{kind} {up.path}:{label}" + (" (+ uprobe: arguments read at entry)"
                                             if paired else "")
        if ref_ctr:
            mech += f" (semaphore at file offset {hex(ref_ctr)})"
        if digests:
            mech += (" (binary verified against binaryDigests before attaching"
                     + ("; skipped on mismatch)" if digest_ignore else ")"))
        plan = _finish(b, hook_id + len(out), where, "process_uprobe",
                       abi.MsgOp.GENERIC_UPROBE, attach, D.with_data_args(up) if data else up,
                       monitor, path=up.path, symbol=symbol,
                       ret_spec=_ret_spec(up, where, True) if ret else None,
                       has_return=paired, mechanism=mech)
        if data:
            import dataclasses
            plan = dataclasses.replace(plan, ndata=len(data))
        out.append(plan)
    return out


# ---- arguments ------------------------------------------------------------------------

def _type_name(arg: Any) -> str:
    return _s(getattr(arg, "type", "auto") or "auto")


def _syscall_arg_type(arg: Any, where: str) -> _ArgType:
    t = _type_name(arg)
    if t in _INT_TYPES:
        return _INT_TYPES[t]
    if t in _STRING_TYPES:
        return _USER_STR
    if t == "char_buf":
        return _ArgType(K.UBUF, 8, False, "bytes")
    if t == "fd":
        return _ArgType(K.FD, 4, True, "file")
    if t == "char_iovec":
        return iovec_type(arg, where)
    if t == "sockaddr":
        return _ArgType(K.SOCKADDR, 8, False, "sockaddr")
    if t == "sockaddr_un":
        return _ArgType(K.SOCKADDR_UN, 8, False, "sockaddr_un")
    if t == "auto":
        raise CompileError(f"{where}.type", "syscall arguments need an explicit type")
    raise CompileError(f"{where}.type", f"type {t} is not supported for syscall hooks here")


def iovec_type(arg: Any, where: str) -> _ArgType:
    """char_iovec: a struct iovec array in user memory (syscalls and the kernel functions
    that take one); its bytes, concatenated, as a char_buf's, at most 4096 of them.
    ``maxData`` is accepted and ignored (``check`` warns): Tetragon's CRD documents it
    for char_buf data only."""
    return _ArgType(K.IOVEC, 8, False, "bytes")


def _raw_arg_type(arg: Any, where: str, user: bool = False) -> _ArgType:
    t = _type_name(arg)
    if t in _INT_TYPES:
        return _INT_TYPES[t]
    if t in _STRING_TYPES:
        return _USER_STR if user else _ArgType(K.KSTR, 8, False, "string")
    if t == "char_buf" and user:
        return _ArgType(K.UBUF, 8, False, "bytes")
    if t == "linux_binprm" and not user:  # raw tracepoints: a kernel pointer, as kprobes
        return _ArgType(K.BINPRM, 8, False, "binprm")
    if t in ("file", "path") and not user:  # a struct file * / struct path *, as kprobes
        return _ArgType(K.FILE if t == "file" else K.PATH, 8, False, t)
    raise CompileError(f"{where}.type", f"type {t} is not supported for this hook here",
                       unsupported=True)


def _tp_arg_type(arg: Any, fld: TpField, subsys: str, where: str) -> _ArgType:
    t = _type_name(arg)
    if fld.is_data_loc:
        if t not in ("auto", "string", "data_loc", "filename"):
            raise CompileError(f"{where}.type", f"field {fld.name} is a string (__data_loc)")
        return _ArgType(K.DATA_LOC, 4, False, "string")
    if fld.is_pointer and "char" in fld.ctype and t in ("auto", "string", "filename"):
        return _USER_STR if subsys == "syscalls" else _ArgType(K.KSTR, 8, False, "string")
    if _is_char_array(fld):
        if t not in ("auto", "string", "filename", "char_buf"):
            raise CompileError(f"{where}.type", f"field {fld.name} is a {fld.ctype} array, read as "
                               "a string: use type auto, string or char_buf")
        return _ArgType(K.TP_CHARS, fld.size, False, "string")
    if t == "auto":
        if fld.is_pointer or fld.size == 8:
            return _ArgType(K.INT, 8, fld.signed, "long" if fld.signed else "size")
        return _ArgType(K.INT, fld.size, fld.signed, "int" if fld.signed else "uint")
    if t in _INT_TYPES:
        return _INT_TYPES[t]
    if subsys == "syscalls":
        return _syscall_arg_type(arg, where)
    raise CompileError(f"{where}.type", f"type {t} is not supported for tracepoint fields here")


def _is_char_array(fld: TpField) -> bool:
    """`char x[N]` (also `unsigned char`, `u8`): a fixed array of bytes in the record."""
    base, sep, _n = fld.ctype.partition("[")
    return bool(sep) and base.strip() in ("char", "unsigned char", "signed char", "u8", "__u8") \
        and not fld.is_data_loc


def _arg_cfg(i: int, t: _ArgType, *, offset: int, size: int, arg: Any, src: int = 0) -> dict[str, int]:
    flags = int(abi.ArgFlag.SIGNED) if t.signed else 0
    if getattr(arg, "return_copy", False):
        flags |= int(abi.ArgFlag.RETURN_COPY)
    cfg = {f"args[{i}].kind": int(t.kind), f"args[{i}].size": size if t.kind != K.INT else t.size,
           f"args[{i}].flags": flags, f"args[{i}].offset": offset, f"args[{i}].src": src,
           f"args[{i}].size_arg": 0xFF, f"args[{i}].max_len": 4096}
    if t.kind == K.INT and size != t.size:  # read the whole field, interpret t.size bytes
        cfg[f"args[{i}].size"] = t.size
    if t.kind == K.TP_CHARS:  # t.size: the array's length
        cfg[f"args[{i}].max_len"] = t.size
    if getattr(arg, "max_data", False) and t.kind in (K.UBUF, K.KBUF, K.IOV_ITER):
        # the first 4096 bytes in the record, the rest in VG_MSG_DATA records (_finish)
        cfg[f"args[{i}].max_len"] = int(abi.DataLimits.MAX_DATA)
    return cfg


def _ret_spec(hook: Any, where: str, strings: bool = False) -> ArgSpec | None:
    """How the return value renders; ``strings``: a string returnArg is read as one
    (uprobes), else it renders as the pointer's value."""
    ra = getattr(hook, "return_arg", None)
    if ra is None:
        return None
    t = _type_name(ra)
    out = (_INT_TYPES[t].out if t in _INT_TYPES else
           "string" if strings and t in _STRING_TYPES else "long")
    return ArgSpec(out, getattr(ra, "label", "") or "")


def _returns_string(hook: Any) -> bool:
    """returnArg is a string: the function returns a char * to read at return."""
    ra = getattr(hook, "return_arg", None) if hook is not None else None
    return ra is not None and _type_name(ra) in _STRING_TYPES


# ---- selectors ------------------------------------------------------------------------

def _compile_selectors(b: _HookBuilder, selectors: Sequence[Any], where: str) -> None:
    b.cfg["nsel"] = len(selectors)
    for si, sel in enumerate(selectors):
        w = f"{where}.selectors[{si}]"
        p = f"sel[{si}]"
        _compile_match_args(b, sel, p, w)
        _compile_binaries(b, sel, p, w)
        _compile_parent_binaries(b, sel, p, w)
        _compile_pids(b, sel, p, w)
        _compile_namespaces(b, sel, p, w)
        _compile_ns_changes(b, sel, p, w)
        _compile_caps(b, sel, p, w)
        _compile_actions(b, sel, p, w)
        if getattr(sel, "match_return_actions", None):
            from vigil.policy.compile_actions import compile_return_actions
            compile_return_actions(b, sel, p, w)
        wl = workload_scope(getattr(sel, "match_workloads", None))
        if wl is not None:
            b.workloads[si] = wl
        for unsupported in ("match_data",):
            if getattr(sel, unsupported, None):
                raise CompileError(f"{w}.{_camel(unsupported)}", "not supported by this version of Vigil")


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(r.capitalize() for r in rest)


def _arg_position(b: _HookBuilder, ma: Any, w: str) -> int:
    positions = getattr(ma, "args", None)
    if positions:
        return int(positions[0])
    if b.tracepoint:  # Tetragon: a field index, else a position in args
        index = ma.index
        for pos, (field_index, _t) in enumerate(b.args):
            if index == field_index:
                index = pos
        if index < len(b.args):
            return index
    else:
        for pos, (index, _t) in enumerate(b.args):
            if index == ma.index:
                return pos
    raise CompileError(f"{w}.index", f"argument {ma.index} is not among the hook's args",
                       invalid=True)


def _compile_match_args(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    entries = [(m, False, f"{w}.matchArgs[{i}]") for i, m in enumerate(sel.match_args or ())]
    entries += [(m, True, f"{w}.matchReturnArgs[{i}]")
                for i, m in enumerate(getattr(sel, "match_return_args", None) or ())]
    na = nr = 0
    for ma, is_ret, mw in entries:
        if _s(ma.operator) == "CelExpr":
            values = [str(v) for v in ma.values or ()]
            if is_ret:
                _compile_cel(b, f"{p}.ret[{nr}]", values, mw, ret=_ret_cel_type(b, ma, mw))
                nr += 1
            else:
                _compile_cel(b, f"{p}.args[{na}]", values, mw,
                             positions=_cel_positions(b, ma, mw))
                na += 1
            continue
        if is_ret:
            t = b.ret_type
            if t.kind == K.INT and _string_filter(_s(ma.operator),
                                                  [str(v) for v in ma.values or ()]):
                if _returns_string(b.hook):
                    raise CompileError(f"{mw}.operator", "string return values are read "
                                       "for uprobes only by this version of Vigil")
                raise CompileError(f"{mw}.operator", "a string operator on an integer return "
                                   "value: declare returnArg with type string",
                                   invalid=True)
            slot, pos = f"{p}.ret[{nr}]", 0xFF
            nr += 1
        else:
            pos = _arg_position(b, ma, mw)
            t = b.args[pos][1]
            slot = f"{p}.args[{na}]"
            na += 1
        b.cfg[f"{slot}.arg"] = pos
        _compile_operator(b, slot, _s(ma.operator), [str(v) for v in ma.values or ()], t, mw)
    b.cfg[f"{p}.nargs"] = na
    b.cfg[f"{p}.nret"] = nr


def _cel_type(t: _ArgType) -> str:
    """An argument's CEL type: the integers Tetragon's CEL knows, else a name to refuse."""
    if t.kind == K.INT and t.size in (4, 8):
        return {(8, True): "int", (8, False): "uint", (4, True): "s32",
                (4, False): "u32"}[(t.size, t.signed)]
    return f"{8 * t.size}-bit integer" if t.kind == K.INT else "string"


def _ret_cel_type(b: _HookBuilder, ma: Any, w: str) -> str:
    """The CEL type of ``arg0`` in a matchReturnArgs CelExpr: the return value, typed
    by ``returnArg`` (Tetragon compiles these filters over the one-entry argument list
    ``[returnArg]``, so ``args`` may only name position 0)."""
    for k, pos in enumerate(getattr(ma, "args", None) or ()):
        if int(pos) != 0:
            raise CompileError(f"{w}.args[{k}]", f"args position {pos} is out of range: a "
                               "return filter has one argument, the return value (arg0)",
                               invalid=True)
    if b.ret_type.kind != K.INT:
        return "string"
    ra = getattr(b.hook, "return_arg", None)
    t = _type_name(ra) if ra is not None else "long"
    return _cel_type(_INT_TYPES[t]) if t in _INT_TYPES else t


def _cel_positions(b: _HookBuilder, ma: Any, w: str) -> list[int] | None:
    """A matchArgs CelExpr's ``args``: its ``argK`` is the hook argument at position
    ``args[K]`` (Tetragon's variables). None: no ``args``, ``argK`` is the K-th."""
    positions = [int(pos) for pos in getattr(ma, "args", None) or ()]
    for k, pos in enumerate(positions):
        if pos >= len(b.args):
            raise CompileError(f"{w}.args[{k}]", f"args position {pos} is out of range: "
                               f"the hook has {len(b.args)} args", invalid=True)
    return positions or None


def _compile_cel(b: _HookBuilder, slot: str, values: list[str], w: str,
                 ret: str | None = None, positions: list[int] | None = None) -> None:
    """One CelExpr filter: its program into the hook's next ``cel[]`` slot. ``ret``:
    a matchReturnArgs filter, whose ``arg0`` is the return value of this CEL type;
    ``positions``: the filter's ``args`` (its variables)."""
    if len(values) != 1:
        raise CompileError(f"{w}.values", f"CelExpr takes a single expression, got "
                           f"{len(values)} values", invalid=True)
    try:
        if ret is not None:
            code = celexpr.on_return(celexpr.compile_expr(values[0], [ret]), ret)
        elif positions is not None:
            code = celexpr.at_positions(celexpr.compile_expr(
                values[0], [_cel_type(b.args[pos][1]) for pos in positions]), positions)
        else:
            code = celexpr.compile_expr(values[0], [_cel_type(t) for _i, t in b.args])
    except celexpr.CelError as err:
        # a tracepoint field's type may be known only here (auto): the checker could not
        raise CompileError(f"{w}.values[0]", f"invalid CEL expression {values[0]!r}: {err}",
                           invalid=not b.tracepoint or ret is not None) from err
    limit, insns = int(abi.CelLimits.GEN_CEL), int(abi.CelLimits.CEL_INSNS)
    if b.ncel >= limit:
        raise CompileError(f"{w}.operator", f"at most {limit} CelExpr filters per hook here")
    if len(code) > insns:
        raise CompileError(f"{w}.values[0]", f"CEL expression {values[0]!r} compiles to "
                           f"{len(code)} steps; the kernel runs at most {insns}")
    if celexpr.stack_depth(code) > int(abi.CelLimits.CEL_STACK):
        raise CompileError(f"{w}.values[0]", f"CEL expression {values[0]!r} nests too deeply "
                           f"(at most {int(abi.CelLimits.CEL_STACK)} pending values)")
    k = b.ncel
    b.ncel += 1
    b.cfg["ncel"] = b.ncel
    b.cfg[f"cel[{k}].n"] = len(code)
    for j, (op, arg, imm) in enumerate(code):
        b.cfg[f"cel[{k}].insn[{j}].op"] = op
        b.cfg[f"cel[{k}].insn[{j}].arg"] = arg
        b.cfg[f"cel[{k}].insn[{j}].imm"] = imm
    b.cfg[f"{slot}.op"] = int(Op.CEL)
    b.cfg[f"{slot}.set"] = k
    b.cfg[f"{slot}.arg"] = 0xFE  # no single argument: the program reads its own


def _string_filter(op: str, values: list[str]) -> bool:
    """A filter only a string can satisfy (a string operator, or Equal on text)."""
    if op in ("Prefix", "NotPrefix", "Postfix", "NotPostfix", "SubString",
              "SubStringIgnCase"):
        return True
    if op in ("Equal", "NotEqual"):
        for v in values:
            try:
                parse_int(v)
            except ValueError:
                return True
    return False


def _compile_operator(b: _HookBuilder, slot: str, op: str, values: list[str], t: _ArgType,
                      w: str) -> None:
    if t.kind == K.NONE:
        raise CompileError(f"{w}.index", "the argument has type nop: it is not read, so it "
                           "cannot be filtered on")
    if t.kind > K.KSTR and t.kind != K.TP_CHARS:  # kernel objects (compile_kprobe)
        from vigil.policy.compile_kprobe import compile_object_operator
        t = compile_object_operator(b, slot, op, values, t, w)
        if t is None:
            return
    if t.kind == K.INT:
        if op not in _INT_OPS:
            raise CompileError(f"{w}.operator", f"{op} does not apply to integer arguments",
                               invalid=op not in ("Protocol", "State", "CelExpr"))
        code = _INT_OPS[op]
        b.cfg[f"{slot}.op"] = int(code)
        if code in (Op.INMAP, Op.NOTINMAP):
            set_id = b.new_set()
            members: set[int] = set()
            for v in values:
                if ":" in v and not v.startswith("list:"):
                    lo, hi = _range_values([v], w)
                    if hi - lo >= MAX_INMAP_VALUES:
                        raise CompileError(f"{w}.values", f"range {v!r} has {hi - lo + 1} "
                                           f"values (at most {MAX_INMAP_VALUES} per InMap)",
                                           invalid=True)
                    members.update(range(lo, hi + 1))
                else:
                    members.update(_int_values([v], t, w, b.lists))
                if len(members) > MAX_INMAP_VALUES:
                    raise CompileError(f"{w}.values", f"more than {MAX_INMAP_VALUES} values")
            for v in sorted(members):
                b.key("vg_int_set", int_key(set_id, v))
            b.cfg[f"{slot}.set"] = set_id
            return
        ranges = code in (Op.INRANGE, Op.NOTINRANGE)
        if ranges:
            if len(values) > 4:
                raise CompileError(f"{w}.values", "at most 4 ranges (use InMap for more)",
                                   invalid=True)
            nums = _range_values(values, w)
            if t.size == 4 and t.signed:
                nums = _int32_ranges(nums)
            if len(nums) > int(abi.GenLimits.GEN_MATCH_VALUES):
                raise CompileError(f"{w}.values", "these ranges cross 2147483647 too often: "
                                   "at most 8 range pieces on an int argument here")
        else:
            nums = _int_values(values, t, w, b.lists)
            if t.size == 4 and t.signed:  # Tetragon reads 0x80000000.. as the same 32 bits
                nums = [v - (1 << 32) if v > _I32_MAX else v for v in nums]
        if code in (Op.GT, Op.LT) and nums:
            # values OR: greater than any value = greater than the smallest (LT: largest)
            nums = [min(nums)] if code == Op.GT else [max(nums)]
        if not ranges and len(nums) > 4:
            raise CompileError(f"{w}.values", "at most 4 values (use InMap for more)")
        b.cfg[f"{slot}.vals"] = nums
        b.cfg[f"{slot}.nvals"] = len(nums)
    elif t.kind == K.SOCKADDR:
        if op not in _SOCK_OPS:
            raise CompileError(f"{w}.operator", f"{op} does not apply to sockaddr arguments")
        code = _SOCK_OPS[op]
        b.cfg[f"{slot}.op"] = int(code)
        if code in (Op.SADDR, Op.DADDR, Op.NOTSADDR, Op.NOTDADDR):
            set_id = b.new_set()
            for v in values:
                b.key("vg_addr_lpm", _addr_key(set_id, v, w))
            b.cfg[f"{slot}.set"] = set_id
        elif code == Op.FAMILY:
            fams = [parse_family(v) for v in values]
            b.cfg[f"{slot}.vals"] = fams
            b.cfg[f"{slot}.nvals"] = len(fams)
        else:
            ports = [_port_range(v, w) for v in values]
            if len(ports) > 4:
                raise CompileError(f"{w}.values", "at most 4 ports or ranges")
            b.cfg[f"{slot}.vals"] = ports
            b.cfg[f"{slot}.nvals"] = len(ports)
    else:
        if op in _SUBSTRING_OPS:
            _compile_substring(b, slot, op, values, w)
            return
        if op in ("FileType", "NotFileType", "CelExpr"):
            raise CompileError(f"{w}.operator", f"{op} is not supported by this version of "
                               "Vigil")
        if op not in _STRING_OPS:
            raise CompileError(f"{w}.operator", f"{op} does not apply to string arguments",
                               invalid=True)
        if t.kind in (K.USTR, K.KSTR) and op in ("Equal", "NotEqual"):
            # Tetragon drops trailing NULs of string values ("security.capability\0"
            # matches the string security.capability)
            values = [v.rstrip("\0") for v in values]
        b.cfg[f"{slot}.op"] = int(_STRING_OPS[op])
        b.cfg[f"{slot}.set"] = b.str_set(_STRING_OPS[op], values, f"{w}.values")
        if t.kind in (K.USTR, K.KSTR):
            _string_heads(b, slot, _STRING_OPS[op], values)


#: SubString operators -> (their op, the kernel functions they call, first Linux with them)
_SUBSTRING_OPS = {
    "SubString": (Op.SUBSTRING, ("bpf_strnstr",), "6.17"),
    "SubStringIgnCase": (Op.SUBSTRING_IGNCASE, ("bpf_strnstr", "bpf_strncasestr"), "6.19"),
}
MAX_SUBSTRINGS = 100
SUB_KEY = int(abi.GenLimits.SUB_KEY)


def _compile_substring(b: _HookBuilder, slot: str, op: str, values: list[str],
                       w: str) -> None:
    """SubString / SubStringIgnCase: a value matches when it occurs anywhere in the
    string. The values go to the hook's vg_str_sub set; the kernel searches with
    bpf_strnstr / bpf_strncasestr, which only kernels with them in their BTF offer."""
    code, kfuncs, since = _SUBSTRING_OPS[op]
    if len(values) > MAX_SUBSTRINGS:
        raise CompileError(f"{w}.values", f"too many values for operator {op}: "
                           f"{len(values)} (at most {MAX_SUBSTRINGS})", invalid=True)
    for k, v in enumerate(values):
        if len(v.encode()) >= SUB_KEY:
            raise CompileError(f"{w}.values[{k}]", f"substring is too long: "
                               f"{len(v.encode())} bytes (at most {SUB_KEY - 1})",
                               invalid=True)
    view = b.view
    missing = [f for f in kfuncs if not getattr(view, "kfunc_" + f.removeprefix("bpf_"))]
    if missing:
        raise CompileError(f"{w}.operator", f"{op} needs the kernel function"
                           f"{'s' if len(missing) > 1 else ''} "
                           f"{' and '.join(missing)} (Linux {since} or later), which "
                           "this kernel does not have")
    b.kfuncs.update(kfuncs)
    set_id = b.new_set()
    for v in dict.fromkeys(values):
        b.key("vg_str_sub", sub_key(set_id, v.encode()))
    b.cfg[f"{slot}.op"] = int(code)
    b.cfg[f"{slot}.set"] = set_id


_HEAD_BYTES = 8


def _string_heads(b: _HookBuilder, slot: str, code: int, values: list[str]) -> None:
    """Equal / Prefix on a string the hook reads from memory: the first bytes of every
    value inline (vals, head_len), so the hook can tell from the string's first 8 bytes,
    before it reads the whole string, that no value can match (vg_str_head_may_match).
    head_len is the shortest value's length, at most 8; 0 (no head check) with an empty
    value or more values than vals holds."""
    if code not in (Op.EQ, Op.PREFIX):
        return
    raws = [v.encode() for v in values]
    if not raws or len(raws) > int(abi.GenLimits.GEN_MATCH_VALUES):
        return
    n = min(_HEAD_BYTES, *(len(r) for r in raws))
    if n == 0:
        return
    b.cfg[f"{slot}.head_len"] = n
    b.cfg[f"{slot}.vals"] = [int.from_bytes(r[:n], "little") for r in raws]
    b.cfg[f"{slot}.nvals"] = len(raws)


def _int_values(values: list[str], t: _ArgType, w: str,
                lists: dict[str, list[int]]) -> list[int]:
    out = []
    for v in values:
        if v.startswith("list:"):
            if v[5:] not in lists:
                raise CompileError(f"{w}.values", f"no syscall list named {v[5:]} in spec.lists",
                                   invalid=True)
            out += lists[v[5:]]
            continue
        try:
            if t.out == "syscall64" and not v.lstrip("-").isdigit() and not v.startswith("0x"):
                nr = syscall_value(v)
                if nr is None:
                    raise CompileError(f"{w}.values", f"unknown syscall {v!r}", invalid=True)
                out.append(nr)
            elif t.out == "capability" and v.startswith("CAP_"):
                out.append(cap_number(v))
            else:
                out.append(parse_int(v))
        except CompileError:
            raise
        except ValueError as err:
            raise CompileError(f"{w}.values", f"{v!r} is not a number", invalid=True) from err
    return out


_I32_MAX = (1 << 31) - 1


def _int32_ranges(nums: list[int]) -> list[int]:
    """(min, max) pairs for a signed 32-bit argument, ends up to 4294967295 allowed (as
    Tetragon takes them): the part of a range above 2147483647 is the same 32 bits read
    as negative numbers, so it becomes its own range there."""
    out: list[int] = []
    for lo, hi in zip(nums[::2], nums[1::2]):
        if lo <= _I32_MAX:
            out += [lo, min(hi, _I32_MAX)]
        if hi > _I32_MAX:
            out += [max(lo, _I32_MAX + 1) - (1 << 32), hi - (1 << 32)]
    return out


def _range_values(values: list[str], w: str) -> list[int]:
    out = []
    for v in values:
        lo, sep, hi = v.partition(":")
        if not sep:
            raise CompileError(f"{w}.values", f"{v!r}: ranges are written min:max",
                               invalid=True)
        try:
            out += [parse_int(lo), parse_int(hi)]
        except ValueError as err:
            raise CompileError(f"{w}.values", f"{v!r} is not a min:max range",
                               invalid=True) from err
    return out


def _port_range(v: str, w: str) -> int:
    try:
        a, z = parse_port_range(v)
    except ValueError as err:
        raise CompileError(f"{w}.values", f"{v!r} is not a port or min:max range",
                           invalid=True) from err
    if not (0 <= a <= z <= 65535):
        raise CompileError(f"{w}.values", f"{v!r} is not a valid port range", invalid=True)
    return a << 16 | z


def _addr_key(set_id: int, value: str, w: str) -> bytes:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise CompileError(f"{w}.values", f"{value!r} is not an address or CIDR",
                           invalid=True) from err
    return addr_key(set_id, net)


def _binaries_op(b: _HookBuilder, mb: Any, ww: str) -> tuple[Op, int]:
    """The operator and the string set of one matchBinaries / matchParentBinaries
    filter (``ww`` names it in errors)."""
    op = _BIN_OPS.get(_s(mb.operator))
    if op is None:
        raise CompileError(f"{ww}.operator", f"{_s(mb.operator)} is not a binaries operator "
                           f"(one of {', '.join(_BIN_OPS)})", invalid=True)
    return op, b.str_set(op, list(mb.values or ()), f"{ww}.values")


def _compile_binaries(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    mbs = sel.match_binaries or ()
    if not mbs:
        return
    mb = mbs[0]
    ww = f"{w}.matchBinaries[0]"
    op, set_id = _binaries_op(b, mb, ww)
    b.cfg[f"{p}.bin_op"] = int(op)
    b.cfg[f"{p}.bin_set"] = set_id
    if getattr(mb, "follow_children", False):
        if op not in (Op.IN, Op.NOTIN):
            raise CompileError(f"{ww}.followChildren",
                               "followChildren is only supported with operators In and NotIn")
        si = int(p[4:-1])
        b.cfg[f"{p}.follow"] = b.cfg.get(f"{p}.follow", 0) | int(abi.FollowFlag.BIN)
        b.follow[si] = FollowSel(si, tuple(mb.values or ()))


def _compile_parent_binaries(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    """matchParentBinaries: matchBinaries' operators on the binary of the caller's
    parent process, decided in the kernel from the base sensor's process records. A
    parent without a record matches only the Not* operators, like an unknown caller."""
    mbs = getattr(sel, "match_parent_binaries", None) or ()
    if not mbs:
        return
    mb = mbs[0]
    ww = f"{w}.matchParentBinaries[0]"
    op, set_id = _binaries_op(b, mb, ww)
    b.cfg[f"{p}.pbin_op"] = int(op)
    b.cfg[f"{p}.pbin_set"] = set_id
    if getattr(mb, "follow_children", False):
        # Tetragon tests the parent's followChildren bits: the parent runs one of the
        # binaries or descends from a process that did
        if op not in (Op.IN, Op.NOTIN):
            raise CompileError(f"{ww}.followChildren",
                               "followChildren is only supported with operators In and NotIn")
        si = int(p[4:-1])
        bit = pbin_bit(si)
        b.cfg[f"{p}.follow"] = b.cfg.get(f"{p}.follow", 0) | int(abi.FollowFlag.PBIN)
        b.follow[bit] = FollowSel(bit, tuple(mb.values or ()))


def _compile_pids(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    """matchPIDs: each filter in its own slot, all must hold (Tetragon ANDs them)."""
    mps = sel.match_pids or ()
    if not mps:
        return
    limit = int(abi.GenLimits.GEN_PIDF)
    if len(mps) > limit:
        raise CompileError(f"{w}.matchPIDs", f"at most {limit} matchPIDs filters per "
                           "selector here")
    si = int(p[4:-1])
    for k, mp in enumerate(mps):
        ns_pid = bool(getattr(mp, "is_namespace_pid", False))
        q = f"{p}.pids[{k}]"
        if getattr(mp, "follow_forks", False):
            bit = int(abi.FollowFlag.PID_BIT) + si * limit + k
            b.cfg[f"{p}.follow"] = b.cfg.get(f"{p}.follow", 0) | int(abi.FollowFlag.PIDS)
            b.cfg[f"{q}.follow"] = 1
            b.follow[bit] = FollowSel(bit, (), tuple(int(v) for v in mp.values), ns_pid)
        b.cfg[f"{q}.op"] = int(Op.IN if _s(mp.operator) == "In" else Op.NOTIN)
        b.cfg[f"{q}.ns"] = 1 if ns_pid else 0
        b.cfg[f"{q}.vals"] = [int(v) for v in mp.values]
        b.cfg[f"{q}.nvals"] = len(mp.values)
    b.cfg[f"{p}.npidf"] = len(mps)


HOST_NS_DEFERRED = "host_ns is resolved when the policy is loaded"


def host_ns_inum(view: Any, ns: str, where: str) -> int:
    """The host's inum of namespace ``ns`` (its /proc/PID/ns name) for a ``host_ns``
    value; 0 as a placeholder when the view defers host_ns; else CompileError."""
    host = getattr(view, "host_ns", None) or {}
    if ns in host:
        return int(host[ns])
    if getattr(view, "host_ns_deferred", False):
        return 0  # a plan compiled for display only: never loaded
    raise CompileError(where, getattr(view, "host_ns_unknown", "the host's namespaces are unknown"))


def _deferred_host_ns(spec: Any, view: KernelView) -> list[tuple[str, str]]:
    """(field path, warning) of every ``host_ns`` value left unresolved by the view."""
    if not getattr(view, "host_ns_deferred", False) or view.host_ns or not hasattr(spec, "hooks"):
        return []
    effective = getattr(spec, "effective_selectors", lambda hook: hook.selectors or ())
    out = []
    for kind, i, hook in spec.hooks():
        for si, sel in enumerate(effective(hook) or ()):
            for k, f in enumerate(getattr(sel, "match_namespaces", None) or ()):
                out += [(f"spec.{_s(kind)}[{i}].selectors[{si}].matchNamespaces[{k}].values[{j}]",
                         HOST_NS_DEFERRED) for j, v in enumerate(f.values) if str(v) == "host_ns"]
            for name in ("matchCapabilities", "matchCapabilityChanges"):
                for k, f in enumerate(getattr(sel, _snake(name), None) or ()):
                    if getattr(f, "is_namespace_capability", False):
                        out.append((f"spec.{_s(kind)}[{i}].selectors[{si}].{name}[{k}]"
                                    ".isNamespaceCapability", HOST_NS_DEFERRED))
    return out


def _compile_namespaces(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    filters = sel.match_namespaces or ()
    if len(filters) > 4:
        raise CompileError(f"{w}.matchNamespaces", "at most 4 namespace filters here")
    for k, f in enumerate(filters):
        ns = _s(f.namespace).lower()
        vals = []
        for v in f.values:
            v = str(v)
            if v == "host_ns":
                key = {"pidforchildren": "pid_for_children",
                       "timeforchildren": "time_for_children"}.get(ns, ns)
                vals.append(host_ns_inum(b.view, key, f"{w}.matchNamespaces[{k}].values"))
            else:
                try:
                    vals.append(parse_int(v, bits=32, signed=False, base=10))
                except ValueError as err:
                    raise CompileError(f"{w}.matchNamespaces[{k}].values",
                                       f"{v!r}: values are inode numbers or host_ns",
                                       invalid=True) from err
        b.cfg[f"{p}.ns[{k}].ns"] = NS_ORDER.index(ns)
        b.cfg[f"{p}.ns[{k}].op"] = int(Op.IN if _s(f.operator) == "In" else Op.NOTIN)
        b.cfg[f"{p}.ns[{k}].vals"] = vals
        b.cfg[f"{p}.ns[{k}].nvals"] = len(vals)
    b.cfg[f"{p}.nns"] = len(filters)


def _compile_ns_changes(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    """matchNamespaceChanges (one filter, as Tetragon): a mask of namespaces, compared
    in the kernel with the ones the process had at exec (vg_procs). In: one of them
    changed; NotIn: one of the others did."""
    filters = getattr(sel, "match_namespace_changes", None) or ()
    if len(filters) > 1:
        raise CompileError(f"{w}.matchNamespaceChanges", "matchNamespaceChanges supports "
                           f"only a single filter (got {len(filters)})", invalid=True)
    for f in filters:
        mask = 0
        for v in f.values:
            mask |= 1 << NS_ORDER.index(_s(v).lower())
        b.cfg[f"{p}.nsc_op"] = int(Op.IN if _s(f.operator) == "In" else Op.NOTIN)
        b.cfg[f"{p}.nsc_mask"] = mask


def _compile_caps(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    """matchCapabilities and matchCapabilityChanges (the latter compared, in the kernel,
    with the capabilities the process had at exec: vg_procs)."""
    filters = [("matchCapabilities", k, f, 0) for k, f in
               enumerate(sel.match_capabilities or ())]
    filters += [("matchCapabilityChanges", k, f, 1) for k, f in
                enumerate(getattr(sel, "match_capability_changes", None) or ())]
    limit = int(abi.GenLimits.GEN_CAPS)
    if len(filters) > limit:
        raise CompileError(f"{w}.matchCapabilities", f"at most {limit} capability filters "
                           "(matchCapabilities and matchCapabilityChanges together) here")
    for n, (field_name, k, f, change) in enumerate(filters):
        mask = 0
        for v in f.values:
            mask |= 1 << cap_number(_s(v))
        userns = 0
        if getattr(f, "is_namespace_capability", False):
            # as Tetragon: only tasks outside the host's user namespace match
            userns = host_ns_inum(b.view, "user",
                                  f"{w}.{field_name}[{k}].isNamespaceCapability")
        b.cfg[f"{p}.caps[{n}].set"] = {"Effective": 0, "Inheritable": 1, "Permitted": 2}[_s(f.type)]
        b.cfg[f"{p}.caps[{n}].op"] = int(Op.IN if _s(f.operator) == "In" else Op.NOTIN)
        b.cfg[f"{p}.caps[{n}].mask"] = mask
        b.cfg[f"{p}.caps[{n}].change"] = change
        b.cfg[f"{p}.caps[{n}].userns"] = userns
    b.cfg[f"{p}.ncaps"] = len(filters)


_ACTIONS = {"Post": abi.Action.POST, "NoPost": abi.Action.NOPOST,
            "Sigkill": abi.Action.SIGKILL, "Signal": abi.Action.SIGNAL}
_SCOPES = {"thread": 0, "process": 1, "global": 2}


def _compile_actions(b: _HookBuilder, sel: Any, p: str, w: str) -> None:
    actions = sel.match_actions or ()
    from vigil.policy.compile_actions import compile_action
    for k, a in enumerate(actions):
        name = _s(a.action)
        if compile_action(b, a, name, f"{p}.actions[{k}]", f"{w}.matchActions[{k}]"):
            continue
        if name == "Set":  # usdts: write the probe's argument
            from vigil.policy.compile_usdt import set_action
            set_action(b, a, p, w, k)
            continue
        if name == "Override" and b.override:  # fmod_ret / BPF LSM
            b.cfg[f"{p}.actions[{k}].action"] = int(abi.Action.OVERRIDE)
            err = a.arg_error if getattr(a, "arg_error", None) is not None else -1
            b.cfg[f"{p}.actions[{k}].arg"] = int(err) & 0xFFFFFFFF
            continue
        if name == "Override" and b.hook is not None and hasattr(b.hook, "symbols"):
            from vigil.policy.compile_usdt import uprobe_override
            uprobe_override(b, a, p, w, k)
            continue
        if name not in _ACTIONS:
            raise CompileError(f"{w}.matchActions[{k}].action", _action_reason(name))
        b.cfg[f"{p}.actions[{k}].action"] = int(_ACTIONS[name])
        if name == "Signal":
            if a.arg_sig is None:
                raise CompileError(f"{w}.matchActions[{k}].argSig",
                                   "action Signal requires argSig", invalid=True)
            b.cfg[f"{p}.actions[{k}].arg"] = int(a.arg_sig)
        rate_ms = getattr(a, "rate_limit_ms", 0) or 0
        if name == "Post" and rate_ms:
            b.cfg[f"{p}.actions[{k}].rate_ns"] = int(rate_ms) * 1_000_000
            b.cfg[f"{p}.actions[{k}].scope"] = _SCOPES[_s(getattr(a, "rate_limit_scope", "thread") or "thread")]
    if not actions:  # a selector without actions posts
        b.cfg[f"{p}.actions[0].action"] = int(abi.Action.POST)
    b.cfg[f"{p}.nactions"] = max(1, len(actions))


def _action_reason(name: str) -> str:
    if name == "Override":
        return ("Override cannot be honoured on a syscall/tracepoint hook on this kernel "
                "(no bpf_override_return, no fmod_ret); use lsmhooks file_open / "
                "bprm_check_security (fanotify) or a network selector (cgroup programs)")
    return f"action {name} is not supported by this version of Vigil"


# ---- finishing ------------------------------------------------------------------------

_MAP_FLOORS = {"vg_gen_entries": 16384, "vg_gen_rate": 8192}
_BTF_ATTACH = ("fentry", "fexit", "fmod_ret", "lsm")


def _finish(b: _HookBuilder, hook_id: int, where: str, event: str, op: int,
            attach: list[Attach], hook: Any, monitor: bool, *, has_return: bool = False,
            ret_spec: ArgSpec | None = None, mechanism: str = "", **names: Any) -> HookPlan:
    cfg = dict(b.cfg)
    cfg.update({"hook_id": hook_id, "op": int(op), "nargs": len(b.args),
                "has_return": 1 if has_return else 0,
                "syscall_nr": -1,
                "kind": int(abi.HookKind.RAW_TP if attach[0].kind == "raw_tracepoint" else
                            abi.HookKind.UPROBE if attach[0].kind.startswith("uret") or
                            attach[0].kind in ("uprobe", "usdt") else
                            abi.HookKind.KPROBE if "kprobe" in attach[0].kind else
                            abi.HookKind.BTF if attach[0].kind in _BTF_ATTACH else
                            abi.HookKind.TRACEPOINT)})
    _size_args(b, hook, cfg, where)
    _chunk_args(cfg, len(b.args))
    sizes = {m: len(keys) for m, keys in b.keys.items()}
    if b.follow:
        cfg["follow"] = sum(1 << si for si in range(int(abi.GenLimits.GEN_SELECTORS))
                            if cfg.get(f"sel[{si}].follow"))
        sizes["vg_follow"] = int(abi.GenLimits.FOLLOW_ENTRIES)
        attach = attach + [Attach(f"vg_gen_fl_{e}", "tp_btf", (f"sched_process_{e}",))
                           for e in ("exec", "fork", "exit")]
        mechanism += " (+ tp_btf sched_process_exec/fork/exit to follow descendants)"
    if has_return:
        sizes["vg_gen_entries"] = _MAP_FLOORS["vg_gen_entries"]
    if any(k.endswith(".rate_ns") for k in cfg):
        sizes["vg_gen_rate"] = _MAP_FLOORS["vg_gen_rate"]
    specs = tuple(ArgSpec(t.out, getattr(a, "label", "") or "")
                  for (_i, t), a in zip(b.args, _hook_args(hook)))
    kills = any(k.endswith(".action") and v in (int(abi.Action.SIGKILL), int(abi.Action.SIGNAL))
                for k, v in cfg.items())
    from vigil.policy.compile_actions import extra_attach, hook_extras, return_action
    return_action(cfg, hook, where)
    attach = extra_attach(cfg, attach)
    requests, extra = hook_extras(b, cfg, monitor)
    enforcement = ""
    if kills:
        enforcement = ("signal sent synchronously from the hook: the process dies before "
                       "its next instruction; the current syscall may complete")
        if monitor:
            enforcement = "monitor mode: the signal is only reported"
    if any(k.endswith(".action") and v == int(abi.Action.SET) for k, v in cfg.items()):
        enforcement = ("Set: the argument's memory is written (bpf_probe_write_user) before "
                       "the probed code reads it" if not monitor else
                       "monitor mode: Set is only reported")
    if b.uprobe_override:
        errs = sorted({_s32(v) for k, v in cfg.items() if k.endswith(".arg")
                       and cfg.get(k[:-len(".arg")] + ".action") == int(abi.Action.OVERRIDE)})
        text = ("monitor mode: Override is only reported" if monitor else
                f"Override: {names.get('symbol') or 'the function'} is not run and returns "
                f"{' or '.join(map(str, errs))} to its caller (the uprobe program sets rax, "
                "then rip and rsp as its ret would)")
        enforcement = f"{text}; {enforcement}" if enforcement else text
    return HookPlan(
        hook_id=hook_id, section=where, event=event, opcode=int(op), attach=tuple(attach),
        config=pack("vg_hook_cfg", cfg), map_keys={m: tuple(k) for m, k in b.keys.items()},
        map_sizes=sizes, args=specs, return_arg=ret_spec,
        message=getattr(hook, "message", "") or "", tags=tuple(getattr(hook, "tags", None) or ()),
        mechanism=mechanism, enforcement="; ".join(x for x in (enforcement, extra) if x),
        requests=requests, follow=tuple(b.follow[si] for si in sorted(b.follow)),
        kfuncs=tuple(sorted(b.kfuncs)), workloads=tuple(sorted(b.workloads.items())), **names)


def _s32(v: int) -> int:
    """An action's 32-bit argument as the signed value it was written from."""
    return v - (1 << 32) if v & 0x80000000 else v


def _chunk_args(cfg: dict[str, Any], nargs: int) -> None:
    """maxData: the buffer arguments read beyond the record, one bit each (``chunk_args``);
    every one is delivered whole (up to VG_MAX_DATA bytes), as Tetragon does."""
    mask = sum(1 << i for i in range(nargs)
               if cfg.get(f"args[{i}].max_len", 0) > int(abi.GenLimits.GEN_STR_MAX))
    if mask:
        cfg["chunk_args"] = mask


def _hook_args(hook: Any) -> Sequence[Any]:
    return list(getattr(hook, "args", None) or ())


def _size_args(b: _HookBuilder, hook: Any, cfg: dict[str, Any], where: str) -> None:
    """char_buf sizeArgIndex (1-based function position) -> position among captured args."""
    for i, arg in enumerate(_hook_args(hook)):
        sai = getattr(arg, "size_arg_index", 0) or 0
        # char_buf with returnCopy: the return value is the size; char_iovec needs the
        # number of entries either way
        if not sai or (getattr(arg, "return_copy", False) and
                       not (i < len(b.args) and b.args[i][1].kind == K.IOVEC)):
            continue
        for pos, (index, _t) in enumerate(b.args):
            if index == sai - 1:
                cfg[f"args[{i}].size_arg"] = pos
                break
        else:
            raise CompileError(f"{where}.args[{i}].sizeArgIndex",
                               f"argument {sai - 1} (the size) must be captured too")
