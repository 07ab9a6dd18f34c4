"""Kernel-function hooks: ``kprobes`` on kernel functions, ``fentries`` and ``lsmhooks`` on
BPF LSM -> HookPlans for kprobe / kprobe.multi / fentry / fexit / fmod_ret / lsm. Pure.

The mechanism is chosen per hook from what the kernel allows (``KernelView``), so the
same policy loads on every kernel:

- ``Override`` on a ``security_*`` function -> fmod_ret (the function is skipped and
  returns ``argError``); with a return probe, an fexit posts the merged record. Override
  on other functions is refused with the reason (no ``bpf_override_return`` on the
  kernels we target, and Tetragon allows it nowhere else either);
- otherwise ``kprobe_mode`` decides: ``auto`` takes fentry/fexit where the kernel has
  trampolines and BTF for the function (cheapest, and fexit sees arguments and return
  value together), then kprobe.multi, then kprobe/kretprobe; ``kprobe``,
  ``kprobe_multi`` and ``fentry`` force one and fail with the reason where it is missing;
- ``fentries`` always use fentry/fexit (fmod_ret for Override);
- ``lsmhooks`` -> BPF LSM when ``bpf`` is an active LSM: Override's ``argError`` is the
  hook's verdict. Elsewhere, and for policies scoped with the ``vigil-cgroups`` option,
  they are left to ``vigil.policy.compile_lsm`` (fanotify, cgroup programs).

Arguments of kernel types (file, path, dentry, linux_binprm, sock, socket, skb, sockaddr,
cred, kernel_cap_t, cap_*, bpf_attr, bpf_prog, bpf_map, module, load_info, net_device,
user_namespace, perf_event) are read in
the kernel into fixed records (``vg_*_rec`` in abi.h); paths are resolved in the kernel
by a bounded dentry walk that crosses mounts (bpf_d_path needs typed pointers, which a
generic program taking arguments by position does not have). ``resolve`` field paths
are turned into offsets with the kernel's BTF (``vigil.policy.kbtf``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.abi import _generated as abi
from vigil.policy import compiler as C
from vigil.policy.compiler import CompileError
from vigil.policy.plan import Attach, HookPlan
from vigil.policy.values import parse_file_type, parse_protocol, parse_tcp_state

K = abi.ArgKind
F = abi.ArgFlag
Op = abi.Op
MODES = ("auto", "kprobe", "kprobe_multi", "fentry")
SCOPE_OPTION = "vigil-cgroups"  # vigil.policy.compile_lsm.SCOPE_OPTION
RES_STEPS = int(abi.ResLimits.STEPS)

# policy type -> (arg kind, rendered as, extra flags)
_OBJECT_TYPES: dict[str, tuple[int, str, int]] = {
    "file": (K.FILE, "file", 0), "path": (K.PATH, "path", 0), "dentry": (K.DENTRY, "path", 0),
    "linux_binprm": (K.BINPRM, "binprm", 0), "sock": (K.SOCK, "sock", 0),
    "socket": (K.SOCK, "sock", int(F.SOCKET)), "skb": (K.SKB, "skb", 0),
    "sockaddr": (K.KSOCKADDR, "sockaddr", 0), "cred": (K.CRED, "cred", 0),
    # a struct sockaddr * read as a sockaddr_un: family and path, as Tetragon
    "sockaddr_un": (K.KSOCKADDR_UN, "sockaddr_un", 0),
    "kernel_cap_t": (K.CAPS, "kernel_cap_t", 0), "cap_inheritable": (K.CAPS, "cap_inheritable", 0),
    "cap_permitted": (K.CAPS, "cap_permitted", 0), "cap_effective": (K.CAPS, "cap_effective", 0),
    "bpf_attr": (K.BPF_ATTR, "bpf_attr", 0), "bpf_prog": (K.BPF_PROG, "bpf_prog", 0),
    "bpf_map": (K.BPF_MAP, "bpf_map", 0), "module": (K.MODULE, "module", 0),
    "load_info": (K.LOAD_INFO, "load_info", 0), "fd": (K.FD, "file", 0),
    "char_buf": (K.KBUF, "bytes", 0), "string": (K.KSTR, "string", 0),
    "filename": (K.KSTR, "string", 0),
    # Tetragon's kprobe decoder renders a net_device as its name, a string_arg
    "net_device": (K.NETDEV, "string", 0), "user_namespace": (K.USER_NS, "user_ns", 0),
    "perf_event": (K.PERF_EVENT, "perf_event", 0),
    # a struct kiocb * is rendered as its file (ki_filp, followed with BTF), as Tetragon
    "kiocb": (K.FILE, "file", 0), "iov_iter": (K.IOV_ITER, "bytes", 0),
}
# BTF struct a parameter points to -> the type `auto` picks
_AUTO_STRUCTS = {"file": "file", "path": "path", "dentry": "dentry",
                 "linux_binprm": "linux_binprm", "sock": "sock", "socket": "socket",
                 "sk_buff": "skb", "sockaddr": "sockaddr", "cred": "cred",
                 "bpf_attr": "bpf_attr", "bpf_prog": "bpf_prog", "bpf_map": "bpf_map",
                 "module": "module", "load_info": "load_info", "filename": "filename",
                 "net_device": "net_device", "user_namespace": "user_namespace",
                 "perf_event": "perf_event"}
_STRINGY = (K.FILE, K.PATH, K.DENTRY, K.BINPRM, K.KSTR, K.KBUF, K.NETDEV, K.IOV_ITER,
            K.IOVEC)
_PRIV_PORTS = {"SPortPriv": "SPort", "NotSportPriv": "NotSPort", "NotSPortPriv": "NotSPort",
               "DPortPriv": "DPort", "NotDPortPriv": "NotDPort"}


def _s(v: Any) -> str:
    return C._s(v)


def _has_override(selectors: Sequence[Any]) -> bool:
    return any(_s(a.action) == "Override" for s in selectors for a in (s.match_actions or ()))


def _override_error(selectors: Sequence[Any]) -> int:
    for s in selectors:
        for a in s.match_actions or ():
            if _s(a.action) == "Override":
                return int(a.arg_error) if getattr(a, "arg_error", None) is not None else -1
    return 0


# ---- sections -------------------------------------------------------------------------

@dataclass
class Sections:
    """What this module compiled of a policy's ``fentries`` and ``lsmhooks``."""

    hooks: list[HookPlan] = field(default_factory=list)
    lsm_done: bool = False

    def without_handled(self, policy: Any) -> Any:
        """The policy without the lsmhooks compiled here (for vigil.policy.compile_lsm)."""
        if not self.lsm_done:
            return policy
        spec = policy.spec.model_copy(update={"lsmhooks": []})
        return policy.model_copy(update={"spec": spec})


def compile_sections(spec: Any, view: Any, hook_id: int, monitor: bool, notes: list[str],
                     selectors_of: Callable[[Any], Sequence[Any]],
                     lists: dict[str, list[int]] | None = None) -> Sections:
    out = Sections()
    for i, fe in enumerate(getattr(spec, "fentries", None) or ()):
        hook = compile_function_hook(fe, f"spec.fentries[{i}]", view, hook_id + len(out.hooks),
                                     monitor, notes, selectors_of(fe), section="fentries",
                                     lists=lists)
        if hook is not None:
            out.hooks.append(hook)
    lsmhooks = getattr(spec, "lsmhooks", None) or ()
    # the vigil-cgroups scope option is honoured by compile_lsm's mechanisms (fanotify,
    # cgroup programs), not by BPF LSM programs, which see the whole host: leave those
    scoped = bool(spec.option(SCOPE_OPTION)) if hasattr(spec, "option") else False
    if lsmhooks and getattr(view, "lsm", False) and not scoped:
        for i, lh in enumerate(lsmhooks):
            out.hooks.append(compile_lsm_hook(lh, f"spec.lsmhooks[{i}]", view,
                                              hook_id + len(out.hooks), monitor, selectors_of(lh),
                                              lists=lists))
        out.lsm_done = True
    return out


# ---- mechanism --------------------------------------------------------------------------

def _has_stack_traces(selectors: Sequence[Any]) -> bool:
    return any(getattr(a, "kernel_stack_trace", False) or getattr(a, "user_stack_trace", False)
               for s in selectors for a in (s.match_actions or ()))


def _mechanism(call: str, view: Any, section: str, override: bool, where: str,
               regs: bool = False, stacks: bool = False) -> str:
    """``regs``: pt_regs data sources, which need a kprobe (trampolines have none).
    ``stacks``: kernelStackTrace / userStackTrace, taken from a plain kprobe where there
    is one, as Tetragon takes them (the path the lane checks on 6.1 and 6.12 with
    stack_traces.yaml); from fentry only on kernels without kprobes."""
    mode = getattr(view, "kprobe_mode", "auto") or "auto"
    if mode not in MODES:
        raise CompileError(where, f"kprobe mode {mode!r} is not one of {', '.join(MODES)}")
    if override:
        if not call.startswith("security_"):
            raise CompileError(f"{where}.selectors", (
                f"Override on {call}: only security_* functions can be overridden (fmod_ret); "
                "bpf_override_return is not available on this kernel (no error injection "
                "support): hook the security_* function or an lsmhook instead"))
        if not getattr(view, "fmod_ret", False):
            raise CompileError(f"{where}.selectors", (
                f"Override on {call} needs fmod_ret programs, which this kernel refuses "
                "(no BPF trampolines)"))
        return "fmod_ret"
    if section == "fentries" or mode == "fentry":
        if not view.fentry:
            raise CompileError(f"{where}.call", f"{call}: fentry/fexit programs are refused by "
                               "this kernel (no BPF trampolines)")
        return "fentry"
    if mode == "kprobe_multi":
        if not getattr(view, "kprobe_multi", False):
            raise CompileError(f"{where}.call", f"{call}: kprobe.multi is not available on "
                               "this kernel (kprobe mode kprobe_multi)")
        return "kprobe_multi"
    if mode == "kprobe":
        if not view.kprobes:
            raise CompileError(f"{where}.call", f"{call}: kprobes are not available on this "
                               "kernel (CONFIG_KPROBES is off)")
        return "kprobe"
    btf = getattr(view, "btf", None)
    trampoline = view.fentry and (btf is None or call in btf.funcs) and not regs
    if trampoline and not stacks:
        return "fentry"
    if stacks and view.kprobes:
        return "kprobe"
    if getattr(view, "kprobe_multi", False):
        return "kprobe_multi"
    if view.kprobes:
        return "kprobe"
    if trampoline:
        return "fentry"
    raise CompileError(f"{where}.call", f"{call}: this kernel has neither kprobes nor BPF "
                       "trampolines")


def _attach(mech: str, call: str, has_return: bool) -> tuple[list[Attach], str, int]:
    """(attach list, mechanism text, vg_hook_cfg.flags)."""
    if mech == "kprobe":
        att = [Attach("vg_gen_kprobe", "kprobe", (call,))]
        if has_return:
            att.append(Attach("vg_gen_kretprb", "kretprobe", (call,)))
        return att, f"kprobe {call}" + (" + kretprobe (merged)" if has_return else ""), 0
    if mech == "kprobe_multi":
        att = [Attach("vg_gen_kpm", "kprobe_multi", (call,))]
        if has_return:
            att.append(Attach("vg_gen_kretpm", "kretprobe_multi", (call,)))
        return att, (f"kprobe.multi {call}"
                     + (" + kretprobe.multi (merged)" if has_return else "")), 0
    if mech == "fentry":
        if has_return:
            return [Attach("vg_gen_fexit", "fexit", (call,))], \
                f"fexit {call} (arguments and return value)", 0
        return [Attach("vg_gen_fentry", "fentry", (call,))], f"fentry {call}", 0
    # fmod_ret: decides (and skips the function); an fexit posts the merged record
    att = [Attach("vg_gen_fmodret", "fmod_ret", (call,))]
    if has_return:
        att.append(Attach("vg_gen_fexit", "fexit", (call,)))
        return att, f"fmod_ret {call} (Override) + fexit (merged)", int(abi.HookFlag.PAIR)
    return att, f"fmod_ret {call} (Override)", 0


# ---- hooks ------------------------------------------------------------------------------

def compile_syscall_override(kp: Any, where: str, view: Any, hook_id: int, monitor: bool,
                             selectors: Sequence[Any],
                             lists: dict[str, list[int]] | None = None) -> HookPlan | None:
    """A syscall hook with Override, on a kernel that allows fmod_ret on syscall
    functions: an fmod_ret program on ``__x64_sys_<name>`` (arguments read from the
    syscall's pt_regs, the function's one parameter); a matching Override skips the
    syscall, which returns ``argError``. None when the hook has no Override or the kernel
    does not allow it (``check_syscall_override`` then says why)."""
    if not _has_override(selectors) or not getattr(view, "fmod_ret_syscall", False):
        return None
    sysname = kp.call.removeprefix("__x64_").removeprefix("sys_")
    fn = f"__x64_sys_{sysname}"
    btf = getattr(view, "btf", None)
    if btf is not None and fn not in btf.funcs:
        raise CompileError(f"{where}.call", f"{fn}: no such function in this kernel (not in "
                           "its BTF)", kernel_lacks=f"function {fn}")
    if any(getattr(s, "match_return_args", None) for s in selectors if _has_override([s])):
        raise CompileError(f"{where}.selectors", "Override is decided before the call: a "
                           "selector with Override cannot filter on matchReturnArgs")
    from vigil.policy import compile_data as D
    data = list(getattr(kp, "data", None) or ())
    selectors = D.with_match_data(selectors, len(kp.args or ()), where, data)
    has_return = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in selectors) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    b = C._HookBuilder(where, view, lists)
    b.override = True
    for i, arg in enumerate(kp.args or ()):
        w = f"{where}.args[{i}]"
        C.refuse_resolve(arg, w, "syscall hooks")
        if arg.index > 5:
            raise CompileError(f"{w}.index", "a syscall has at most 6 arguments (index 0..5)")
        t = C._syscall_arg_type(arg, w)
        b.args.append((arg.index, t))
        b.cfg.update(C._arg_cfg(i, t, offset=0, size=8, arg=arg, src=arg.index))
    D.compile_data(b, data, btf, where, "syscall_fmod_ret")
    b.hook = kp
    C._compile_selectors(b, selectors, where)
    attach, mech_text, flags = _attach("fmod_ret", fn, has_return)
    b.cfg["flags"] = flags | int(abi.HookFlag.SYSWRAP)
    plan = C._finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                     D.with_data_args(kp) if data else kp, monitor, has_return=has_return,
                     ret_spec=C._ret_spec(kp, where), function_name=fn,
                     mechanism=mech_text + " (syscall function)")
    if data:
        plan = dataclasses.replace(plan, ndata=len(data))
    return _adjust(plan, "fmod_ret", True, monitor, selectors, fn)


def compile_syscall_regs(kp: Any, where: str, view: Any, hook_id: int, monitor: bool,
                         selectors: Sequence[Any],
                         lists: dict[str, list[int]] | None = None) -> HookPlan:
    """A syscall hook with ``pt_regs`` data (and no Override): a kprobe (kprobe.multi
    where the kernel has it) on ``__x64_sys_<name>``, as Tetragon attaches its syscall
    hooks, so the registers are that kprobe's (``di`` holds the address of the caller's
    saved ``struct pt_regs``); the syscall's arguments are read from those saved
    registers (``VG_HOOKF_SYSWRAP``). ``return: true`` adds the kretprobe."""
    from vigil.policy import compile_data as D
    sysname = kp.call.removeprefix("__x64_").removeprefix("sys_")
    fn = f"__x64_sys_{sysname}"
    data = list(getattr(kp, "data", None) or ())
    k = next(i for i, d in enumerate(data) if getattr(d, "source", None) == "pt_regs")
    if not view.kprobes:
        raise CompileError(f"{where}.data[{k}].source", "pt_regs on a syscall hook: the "
                           f"registers are those of a kprobe on the syscall function {fn} "
                           "(as Tetragon reads them), and kprobes are not available on this "
                           "kernel (CONFIG_KPROBES is off)")
    btf = getattr(view, "btf", None)
    if btf is not None and fn not in btf.funcs:
        raise CompileError(f"{where}.call", f"{fn}: no such function in this kernel (not in "
                           "its BTF)", kernel_lacks=f"function {fn}")
    selectors = D.with_match_data(selectors, len(kp.args or ()), where, data)
    if _has_override(selectors):
        raise CompileError(f"{where}.selectors", f"Override on syscall {kp.call} with pt_regs "
                           "data: the registers are a kprobe's, and overriding from a kprobe "
                           "needs bpf_override_return, which this kernel does not have (no "
                           "error injection for syscall functions)",
                           kernel_lacks="bpf_override_return")
    has_return = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in selectors) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    mech = _mechanism(fn, view, "kprobes", False, where, regs=True,
                      stacks=_has_stack_traces(selectors))
    arity = C._syscall_arity(view, sysname, where)
    b = C._HookBuilder(where, view, lists)
    for i, arg in enumerate(kp.args or ()):
        w = f"{where}.args[{i}]"
        C.refuse_resolve(arg, w, "syscall hooks")
        limit = 6 if arity is None else arity
        if arg.index >= limit:
            raise CompileError(f"{w}.index", f"{sysname} takes {C._count(limit, 'argument')}"
                               + (f" (index 0..{limit - 1})" if limit else ""))
        t = C._syscall_arg_type(arg, w)
        b.args.append((arg.index, t))
        b.cfg.update(C._arg_cfg(i, t, offset=0, size=8, arg=arg, src=arg.index))
    D.compile_data(b, data, btf, where, mech)
    b.hook = kp
    C._compile_selectors(b, selectors, where)
    attach, mech_text, flags = _attach(mech, fn, has_return)
    b.cfg["flags"] = flags | int(abi.HookFlag.SYSWRAP)
    plan = C._finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                     D.with_data_args(kp), monitor, has_return=has_return,
                     ret_spec=C._ret_spec(kp, where), function_name=fn,
                     mechanism=mech_text + " (syscall function: pt_regs data)")
    plan = dataclasses.replace(plan, ndata=len(data))
    return _adjust(plan, mech, False, monitor, selectors, fn)


def check_syscall_override(call: str, where: str, view: Any, selectors: Sequence[Any]) -> None:
    """Override on a syscall that fmod_ret cannot honour here: refused with the precise
    reason (fmod_ret on syscall functions needs them error-injectable: bookworm's 6.1 and
    6.12 refuse it, sid's 7.2 allows it)."""
    for si, s in enumerate(selectors):
        for ai, a in enumerate(s.match_actions or ()):
            if _s(a.action) != "Override":
                continue
            why = "this kernel refuses fmod_ret on syscall functions (no error injection for them)"
            raise CompileError(f"{where}.selectors[{si}].matchActions[{ai}].action",
                               f"Override on syscall {call}: {why}; no bpf_override_return "
                               "either. Override the security_* function the syscall "
                               "reaches (fmod_ret) or use an lsmhook (BPF LSM)")


def compile_function_hook(kp: Any, where: str, view: Any, hook_id: int, monitor: bool,
                          notes: list[str], selectors: Sequence[Any],
                          section: str = "kprobes",
                          lists: dict[str, list[int]] | None = None) -> HookPlan | None:
    """A ``kprobes``/``fentries`` entry on a kernel function; None when the function is
    missing and ``ignore.callNotFound`` is set."""
    call = kp.call
    if call.startswith("list:"):
        raise CompileError(f"{where}.call", "function lists (list:NAME) on kernel functions "
                           "are not supported by this version of Vigil")
    btf = getattr(view, "btf", None)
    params = None
    if btf is not None:
        params = btf.func_params(call)
        if params is None:
            ignore = getattr(kp, "ignore", None)
            if ignore is not None and getattr(ignore, "call_not_found", False):
                notes.append(f"{where}: {call} is not in this kernel: hook ignored "
                             "(ignore.callNotFound)")
                return None
            raise CompileError(f"{where}.call", f"{call}: no such function in this kernel "
                               "(not in its BTF)", kernel_lacks=f"function {call}")
    from vigil.policy import compile_data as D
    data = list(getattr(kp, "data", None) or ())
    selectors = D.with_match_data(selectors, len(kp.args or ()), where, data)
    override = _has_override(selectors)
    has_return = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in selectors) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    if override and any(getattr(s, "match_return_args", None) for s in selectors
                        if _has_override([s])):
        raise CompileError(f"{where}.selectors", "Override is decided before the call: a "
                           "selector with Override cannot filter on matchReturnArgs")
    mech = _mechanism(call, view, section, override, where, regs=D.uses_regs(kp),
                      stacks=_has_stack_traces(selectors))
    if mech == "fmod_ret" and btf is not None and btf.kind(btf.strip(btf.func_return(call))) == 0:
        raise CompileError(f"{where}.call", f"Override on {call}: it returns void")
    b = C._HookBuilder(where, view, lists)
    b.override = override
    _compile_args(b, kp.args or (), params, btf, where, call)
    D.compile_data(b, data, btf, where, mech)
    b.hook = kp
    C._compile_selectors(b, selectors, where)
    _return_cfg(b, kp, btf, call)
    attach, mech_text, flags = _attach(mech, call, has_return)
    b.cfg["flags"] = flags
    plan = C._finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                     D.with_data_args(kp) if data else kp, monitor, has_return=has_return,
                     ret_spec=C._ret_spec(kp, where), function_name=call,
                     mechanism=mech_text)
    if data:
        plan = dataclasses.replace(plan, ndata=len(data))
    return _adjust(plan, mech, override, monitor, selectors, call)


def compile_lsm_hook(lh: Any, where: str, view: Any, hook_id: int, monitor: bool,
                     selectors: Sequence[Any],
                     lists: dict[str, list[int]] | None = None) -> HookPlan:
    """An ``lsmhooks`` entry on BPF LSM."""
    name = lh.hook.removeprefix("security_")
    btf = getattr(view, "btf", None)
    params = None
    if btf is not None:
        params = btf.func_params(f"bpf_lsm_{name}")
        if params is None:
            raise CompileError(f"{where}.hook", f"no LSM hook {name} in this kernel "
                               f"(bpf_lsm_{name} is not in its BTF)",
                               kernel_lacks=f"LSM hook {name}")
    for si, s in enumerate(selectors):
        if getattr(s, "match_return_args", None):
            raise CompileError(f"{where}.selectors[{si}].matchReturnArgs",
                               "LSM hooks have no return value to match")
        for ai, a in enumerate(s.match_actions or ()):
            err = getattr(a, "arg_error", None)
            if _s(a.action) == "Override" and err is not None and not -4095 <= int(err) <= 0:
                raise CompileError(f"{where}.selectors[{si}].matchActions[{ai}].argError",
                                   "an LSM hook's verdict is 0 or a negative errno (-4095..-1)")
    b = C._HookBuilder(where, view, lists)
    b.override = True
    _compile_args(b, lh.args or (), params, btf, where, f"bpf_lsm_{name}")
    C._compile_selectors(b, selectors, where)
    attach = [Attach("vg_gen_lsm", "lsm", (name,))]
    plan = C._finish(b, hook_id, where, "process_lsm", abi.MsgOp.GENERIC_LSM, attach, lh,
                     monitor, function_name=name, mechanism=f"BPF LSM {name}")
    return _adjust(plan, "lsm", _has_override(selectors), monitor, selectors, name)


def _adjust(plan: HookPlan, mech: str, override: bool, monitor: bool,
            selectors: Sequence[Any], call: str) -> HookPlan:
    sizes = dict(plan.map_sizes)
    if mech not in ("kprobe", "kprobe_multi"):
        sizes.pop("vg_gen_entries", None)  # only kretprobes keep entry arguments
    enforcement = plan.enforcement
    if override:
        err = _override_error(selectors)
        if monitor:
            text = "monitor mode: Override is only reported"
        elif mech == "lsm":
            text = f"Override: BPF LSM refuses the operation with {err} before it happens"
        else:
            text = f"Override: {call} is not run and returns {err} (fmod_ret)"
        enforcement = f"{text}; {enforcement}" if enforcement else text
    return dataclasses.replace(plan, map_sizes=sizes, enforcement=enforcement)


# ---- arguments --------------------------------------------------------------------------

def _compile_args(b: Any, args: Sequence[Any], params: Any, btf: Any, where: str,
                  fn: str) -> None:
    for i, arg in enumerate(args):
        w = f"{where}.args[{i}]"
        if params is not None and arg.index >= len(params):
            # a policy written for another kernel's signature (tty_write had 4
            # parameters before 5.10): Tetragon would read whatever the register holds;
            # refused here as not for this kernel, naming the signature
            raise CompileError(f"{w}.index", f"{fn} has {len(params)} parameters "
                               f"(0..{len(params) - 1}) in this kernel",
                               kernel_lacks=f"{fn} with parameter {arg.index}")
        if arg.index >= int(abi.GenLimits.GEN_RAW_ARGS) - 1:
            raise CompileError(f"{w}.index", "arguments 0..4 can be read here")
        ptype = params[arg.index].type_id if params is not None else 0
        t, extra = _kernel_arg(arg, ptype, btf, w)
        b.args.append((arg.index, t))
        cfg = C._arg_cfg(i, t, offset=0, size=t.size, arg=arg, src=arg.index)
        flags = cfg[f"args[{i}].flags"] | extra.pop("flags", 0)
        cfg.update({f"args[{i}].{k}": v for k, v in extra.items()})
        cfg[f"args[{i}].flags"] = flags
        b.cfg.update(cfg)


def _module_btf(btf: Any, module: str, w: str) -> Any:
    """The kernel's BTF with module ``module``'s (``btfTypeModule``: where ``btfType`` is
    defined); refused, naming the module, when it has no BTF here (not loaded)."""
    from vigil.policy.kbtf import module_btf
    out = module_btf(btf, module)
    if out is None:
        raise CompileError(f"{w}.btfTypeModule", f"no BTF for kernel module {module} on this "
                           f"kernel (/sys/kernel/btf/{module}: is the module loaded?)",
                           kernel_lacks=f"module {module}")
    return out


def _auto_type(ptype: int, btf: Any, w: str) -> str:
    if btf is None or not ptype:
        raise CompileError(f"{w}.type", "the type must be given (no BTF to derive it from)")
    tid = btf.strip(ptype)
    kind = btf.kind(tid)
    if kind in (1, 6, 19):  # INT, ENUM, ENUM64
        size, signed = btf.size(tid), btf.int_signed(tid)
        return {(1, True): "int8", (1, False): "uint8", (2, True): "int16", (2, False): "uint16",
                (4, True): "int", (4, False): "uint32", (8, True): "long"}.get(
                    (size, signed), "uint64")
    target = btf.pointee(tid)
    if target:
        name = btf.name(target)
        if name in _AUTO_STRUCTS:
            return _AUTO_STRUCTS[name]
        if name == "char":
            return "string"
        return "uint64"
    raise CompileError(f"{w}.type", f"cannot derive a type for {btf.spell(ptype)}: give one")


def _kernel_arg(arg: Any, ptype: int, btf: Any, w: str) -> tuple[Any, dict[str, Any]]:
    tname = C._type_name(arg)
    if tname == "auto":
        tname = _auto_type(ptype, btf, w)
    extra: dict[str, Any] = {}
    if tname == "nop":
        # not read; Tetragon leaves it out of the event's args
        for attr, name in (("resolve", "resolve"), ("btf_type", "btfType")):
            if getattr(arg, attr, None):
                raise CompileError(f"{w}.{name}", "a nop argument is not read")
        return C._ArgType(K.NONE, 8, False, "nop"), extra
    if tname in C._INT_TYPES:
        t = C._INT_TYPES[tname]
    elif tname == "char_iovec":
        t = C.iovec_type(arg, w)
    elif tname in _OBJECT_TYPES:
        kind, out, flags = _OBJECT_TYPES[tname]
        t = C._ArgType(kind, 8, False, out)
        if flags:
            extra["flags"] = flags
    elif tname == "data_loc":
        raise CompileError(f"{w}.type", "type data_loc is meaningless on a kernel function: "
                           "it is a tracepoint's __data_loc field (a length and an offset "
                           "into the tracepoint's record), and a kernel function's "
                           "arguments have no record to be an offset into", invalid=True)
    else:
        raise CompileError(f"{w}.type", f"type {tname} is not supported for kernel functions "
                           "by this version of Vigil")
    resolve = getattr(arg, "resolve", "") or ""
    btf_type = getattr(arg, "btf_type", None)
    module = getattr(arg, "btf_type_module", None)
    if module and btf is not None:
        btf = _module_btf(btf, module, w)
    if tname == "filename" and not resolve and btf is not None and ptype and \
            btf.name(btf.pointee(ptype)) == "filename":
        resolve = "name"  # struct filename * -> its name
    if tname == "kiocb" and not (resolve or btf_type):
        if btf is None:
            raise CompileError(f"{w}.type", "kiocb needs the kernel's BTF (to find ki_filp)")
        resolve, btf_type = "ki_filp", "kiocb"  # struct kiocb * -> its file
    if resolve or btf_type:
        extra.update(_resolve(t, resolve, btf_type, ptype, btf, w))
    return t, extra


def _resolve(t: Any, path: str, btf_type: str | None, ptype: int, btf: Any,
             w: str) -> dict[str, Any]:
    from vigil.policy.kbtf import BtfError
    if btf is None:
        raise CompileError(f"{w}.resolve", "resolve needs the kernel's BTF")
    if not path:
        return {}  # btfType alone only names the type; nothing to follow
    try:
        start = btf.struct_id(btf_type) if btf_type else ptype
        step = btf.resolve(start, path)
    except BtfError as err:
        raise CompileError(f"{w}.resolve", str(err)) from err
    if len(step.offsets) > RES_STEPS:
        raise CompileError(f"{w}.resolve", f"at most {RES_STEPS} pointer hops are followed "
                           "by this version of Vigil (Tetragon: 10 path components)")
    if t.kind == K.INT and step.last == "struct":
        raise CompileError(f"{w}.resolve", f"{path} is {step.type_name}, not an integer or "
                           "pointer: give a type that takes a pointer (file, path, ...)")
    if t.kind != K.INT and step.last == "int":
        raise CompileError(f"{w}.type", f"{path} is an integer ({step.type_name}): use an "
                           "integer type")
    extra: dict[str, Any] = {"nres": len(step.offsets), "res_off": list(step.offsets)}
    if step.last == "ptr":
        extra["flags"] = int(F.RES_DEREF)
    elif step.last == "int":
        extra["flags"] = int(F.RES_VALUE)
        extra["size"] = min(step.size, 8)
    return extra


def raw_tp_resolve(arg: Any, event: str, t: Any, btf: Any, w: str) -> dict[str, Any]:
    """``resolve`` / ``btfType`` on a raw tracepoint argument: its type comes from the
    tracepoint's prototype in BTF (``btf_trace_<event>``), as a kernel function's does."""
    if btf is None:
        raise CompileError(f"{w}.resolve", "resolve needs the kernel's BTF")
    if getattr(arg, "btf_type_module", None):
        raise CompileError(f"{w}.btfTypeModule", "btfTypeModule applies to kprobes only",
                           invalid=True)
    params = btf.raw_tp_params(event)
    if params is None and not getattr(arg, "btf_type", None):
        raise CompileError(f"{w}.resolve", f"raw tracepoint {event} is not described in the "
                           "kernel's BTF (no btf_trace_" + event + "): give btfType")
    ptype = params[arg.index] if params is not None and arg.index < len(params) else 0
    return _resolve(t, getattr(arg, "resolve", "") or "", getattr(arg, "btf_type", None),
                    ptype, btf, w)


def tp_field_resolve(arg: Any, event: str, fld: Any, btf: Any,
                     w: str) -> tuple[Any, dict[str, Any]]:
    """``resolve`` / ``btfType`` on a classic tracepoint's field (a pointer in the
    record): its type is the field's in the record's struct ``trace_event_raw_<event>``,
    or, for an event that shares its class's struct, the ``struct NAME *`` its format
    declares; ``btfType`` names the struct instead (a pointer kept in an integer field)."""
    if getattr(arg, "btf_type_module", None):
        raise CompileError(f"{w}.btfTypeModule", "btfTypeModule applies to kprobes only",
                           invalid=True)
    if fld.size != 8 or fld.is_data_loc:
        raise CompileError(f"{w}.index", f"field {fld.name} is {fld.ctype} ({fld.size} "
                           "bytes): resolve and btfType follow a pointer field")
    t = C._raw_arg_type(arg, w)
    if btf is None:
        raise CompileError(f"{w}.resolve", "resolve needs the kernel's BTF")
    btf_type = getattr(arg, "btf_type", None)
    ptype = 0
    if not btf_type:
        ptype = btf.tp_field_type(event, fld.name) or 0
        decl = fld.ctype.replace("const ", "").strip()
        if not ptype and decl.startswith("struct ") and decl.endswith("*"):
            from vigil.policy.kbtf import BtfError
            try:
                ptype = btf.struct_id(decl[7:-1].strip())
            except BtfError as err:
                raise CompileError(f"{w}.resolve", str(err)) from err
        if not ptype:
            raise CompileError(f"{w}.resolve", f"field {fld.name} ({fld.ctype}) has no "
                               "struct type in the kernel's BTF: give btfType")
    return t, _resolve(t, getattr(arg, "resolve", "") or "", btf_type, ptype, btf, w)


def syscall_resolve(arg: Any, fld: Any, t: Any, btf: Any, w: str) -> dict[str, Any]:
    """``resolve`` / ``btfType`` on a syscall argument (a syscall hook's, or a
    ``syscalls/sys_enter_*`` field): the argument is a user pointer, so the path is
    followed in the calling process's memory (bpf_probe_read_user at every hop), with the
    kernel's BTF for the layout. Its type: ``btfType``, else the ``struct NAME *`` that
    the sys_enter format declares for the field (``fld``; None: no format to ask)."""
    if getattr(arg, "btf_type_module", None):
        raise CompileError(f"{w}.btfTypeModule", "btfTypeModule applies to kprobes only",
                           invalid=True)
    if fld is not None and (fld.size != 8 or fld.is_data_loc):
        raise CompileError(f"{w}.index", f"field {fld.name} is {fld.ctype} ({fld.size} "
                           "bytes): resolve and btfType follow a pointer field")
    btf_type = getattr(arg, "btf_type", None)
    ptype = 0
    decl = fld.ctype.replace("const ", "").strip() if fld is not None else ""
    if not btf_type and not (decl.startswith("struct ") and decl.endswith("*")):
        what = f"field {fld.name} ({fld.ctype})" if fld is not None else "the argument"
        raise CompileError(f"{w}.resolve", f"{what} is not declared as a struct pointer "
                           "in the syscall's sys_enter format: give btfType")
    if btf is None:
        raise CompileError(f"{w}.resolve", "resolve needs the kernel's BTF")
    if not btf_type:
        from vigil.policy.kbtf import BtfError
        try:
            ptype = btf.struct_id(decl[7:-1].strip())
        except BtfError as err:
            raise CompileError(f"{w}.resolve", str(err)) from err
    extra = _resolve(t, getattr(arg, "resolve", "") or "", btf_type, ptype, btf, w)
    if extra:
        extra["flags"] = extra.get("flags", 0) | int(F.RES_USER)
    return extra


def _return_cfg(b: Any, hook: Any, btf: Any, call: str) -> None:
    ra = getattr(hook, "return_arg", None)
    tname = C._type_name(ra) if ra is not None else "auto"
    if tname in C._INT_TYPES:
        t = C._INT_TYPES[tname]
        size, signed = t.size, t.signed
    elif btf is not None and call in btf.funcs:
        rt = btf.strip(btf.func_return(call))
        if btf.kind(rt) not in (1, 6, 19):
            return
        size, signed = btf.size(rt), btf.int_signed(rt)
    else:
        return
    if size in (1, 2, 4):
        b.cfg["ret_size"] = size
        b.cfg["ret_flags"] = int(F.SIGNED) if signed else 0


# ---- selectors on kernel objects (called from compiler._compile_operator) ---------------

def _file_type(b: Any, slot: str, op: str, values: list[str], t: Any, w: str) -> None:
    """FileType / NotFileType (Tetragon's file and path types only): the argument's
    inode mode & S_IFMT against the named types' S_IF* bits, at most 4 values."""
    if t.kind not in (K.FILE, K.PATH):
        raise CompileError(f"{w}.operator", f"{op} applies to file and path arguments",
                           invalid=True)
    try:
        modes = [parse_file_type(v) for v in values]
    except ValueError as err:
        raise CompileError(f"{w}.values", str(err), invalid=True) from err
    if not modes:
        raise CompileError(f"{w}.values", f"{op} needs at least one file type", invalid=True)
    if len(modes) > 4:
        raise CompileError(f"{w}.values", "at most 4 values", invalid=True)
    b.cfg[f"{slot}.op"] = int(Op.FILETYPE if op == "FileType" else Op.NOTFILETYPE)
    b.cfg[f"{slot}.vals"] = modes
    b.cfg[f"{slot}.nvals"] = len(modes)


def compile_object_operator(b: Any, slot: str, op: str, values: list[str], t: Any,
                            w: str) -> Any:
    """Map a kernel-object argument to the operand kind the compiler knows, or compile
    the operator here (returns None)."""
    if op in ("FileType", "NotFileType"):
        _file_type(b, slot, op, values, t, w)
        return None
    if t.kind in _STRINGY:
        return C._ArgType(K.KSTR, 8, False, "string")
    if t.kind == K.CAPS:
        return C._ArgType(K.INT, 8, False, "size")
    if t.kind == K.KSOCKADDR:
        return C._ArgType(K.SOCKADDR, 8, False, "sockaddr")
    if t.kind in (K.SOCKADDR_UN, K.KSOCKADDR_UN):
        # Family on the address family, the string operators on the path ('@' + name
        # for an abstract address)
        if op == "Family":
            return C._ArgType(K.SOCKADDR, 8, False, "sockaddr")
        return C._ArgType(K.KSTR, 8, False, "string")
    if t.kind in (K.SOCK, K.SKB):
        sockaddr = C._ArgType(K.SOCKADDR, 8, False, "sockaddr")
        if op in _PRIV_PORTS:
            C._compile_operator(b, slot, _PRIV_PORTS[op], ["0:1023"], sockaddr, w)
            return None
        if op in ("Protocol", "State"):
            if op == "State" and t.kind == K.SKB:
                raise CompileError(f"{w}.operator", "State applies to sock arguments")
            parse = parse_protocol if op == "Protocol" else parse_tcp_state
            nums = [parse(v) for v in values]
            if len(nums) > 4:
                raise CompileError(f"{w}.values", "at most 4 values")
            b.cfg[f"{slot}.op"] = int(Op.PROTOCOL if op == "Protocol" else Op.STATE)
            b.cfg[f"{slot}.vals"] = nums
            b.cfg[f"{slot}.nvals"] = len(nums)
            return None
        return sockaddr
    raise CompileError(f"{w}.operator", f"matchArgs on {t.out} arguments is not supported by "
                       "this version of Vigil")
