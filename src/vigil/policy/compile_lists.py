"""``call: "list:NAME"`` on ``kprobes``: one hook on every function of a ``spec.lists``
entry -> one HookPlan. Pure.

What a list becomes:

- a syscall list (``type: syscalls`` or ``generated_syscalls``): like a single syscall
  hook, on tracepoints on every kernel (with ``Override``: one fmod_ret hook per syscall
  function, where the kernel allows it) -- one ``raw_syscalls/sys_enter`` program (plus
  ``sys_exit`` for return hooks) that runs only for the list's syscall ids (a hash set
  checked first thing in the kernel); the arguments are the syscall's, read from the
  record (``args[6]`` at the offsets of ``sys_enter_X``), and each event names the syscall
  that fired (``__x64_sys_<name>``, as Tetragon's kprobe on the syscall function does);
- a function list (plain ``values``, or ``type: generated_ftrace``: every traceable
  function matching ``pattern``): one kprobe.multi link on all of them where the kernel
  has kprobe.multi (and neither ``kprobe_mode`` nor the ``disable-kprobe-multi`` option
  says otherwise), else one kprobe per function. Each attachment carries the function's
  index in the list as its BPF cookie, so each event names the function that fired.
  BPF trampolines are not used for lists (one program load per function).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Sequence
from typing import Any

from vigil.abi import _generated as abi
from vigil.policy import compiler as C
from vigil.policy.compiler import CompileError
from vigil.policy.plan import Attach, HookPlan
from vigil.syscalls import SYSCALL_NAMES

#: at most this many functions in one list hook (Tetragon has no limit; every function
#: is one fprobe entry or one kprobe, so the bound keeps attach time and memory sane)
MAX_LIST_FUNCS = 4096
_SYSCALL_LISTS = ("syscalls", "generated_syscalls")


def list_spec(spec: Any, name: str, where: str) -> Any:
    for lst in getattr(spec, "lists", None) or ():
        if lst.name == name:
            return lst
    raise CompileError(f"{where}.call", f"no list named {name} in spec.lists", invalid=True)


def list_kind(lst: Any) -> str:
    """``syscalls``, ``generated_syscalls``, ``generated_ftrace`` or "" (a plain list of
    kernel functions, Tetragon's list type none)."""
    return C._s(lst.type).lower() if lst.type is not None else ""


def compile_list_hooks(kp: Any, where: str, spec: Any, view: Any, hook_id: int,
                       monitor: bool, notes: list[str], selectors: Sequence[Any],
                       lists: dict[str, list[int]]) -> list[HookPlan]:
    """The hooks a list becomes: one, except a list with ``Override``, which becomes one
    hook per function (a fmod_ret program takes one function; a list's kprobes would need
    bpf_override_return, and the raw_syscalls tracepoints cannot change a return value):
    fmod_ret on each syscall function where the kernel allows it, or each kernel function
    as a single hook with Override would be. Hook ids are ``hook_id`` on."""
    name = kp.call[5:]
    lst = list_spec(spec, name, where)
    from vigil.policy import compile_kprobe as KP
    if not KP._has_override(selectors):
        return [compile_list_hook(kp, where, spec, view, hook_id, monitor, notes, selectors,
                                  lists)]
    if list_kind(lst) not in _SYSCALL_LISTS:  # one fmod_ret hook per function
        out: list[HookPlan] = []
        for fn in _functions(lst, kp, view, where, notes):
            one = kp.model_copy(update={"call": fn})
            plan = KP.compile_function_hook(one, where, view, hook_id + len(out), monitor,
                                            notes, selectors, lists=lists)
            if plan is not None:
                out.append(plan)
        return out
    nrs = sorted(set(lists.get(name) or ()))
    if not nrs:
        raise CompileError(f"{where}.call", f"list {name} names no syscall", invalid=True)
    if not getattr(view, "fmod_ret_syscall", False):
        raise CompileError(f"{where}.selectors", f"Override on syscall list {name}: this "
                           "kernel refuses fmod_ret on syscall functions (no error injection "
                           "for them), and its raw_syscalls tracepoints cannot change a "
                           "return value; no bpf_override_return either")
    plans = []
    for k, nr in enumerate(nrs):
        one = kp.model_copy(update={"call": f"sys_{SYSCALL_NAMES[nr]}"})
        plan = KP.compile_syscall_override(one, where, view, hook_id + k, monitor, selectors,
                                           lists)
        if plan is None:  # cannot happen: fmod_ret on syscalls and an Override
            raise CompileError(f"{where}.selectors", "Override on a syscall list: not "
                               "compiled")
        plans.append(plan)
    return plans


def compile_list_hook(kp: Any, where: str, spec: Any, view: Any, hook_id: int, monitor: bool,
                      notes: list[str], selectors: Sequence[Any],
                      lists: dict[str, list[int]]) -> HookPlan:
    """A list without Override: one hook on all its functions."""
    name = kp.call[5:]
    lst = list_spec(spec, name, where)
    if list_kind(lst) in _SYSCALL_LISTS:
        from vigil.policy import compile_data as D
        if D.uses_regs(kp):
            return _syscall_functions(kp, where, spec, view, hook_id, monitor, selectors, lists,
                                      name)
        return _syscall_list(kp, where, view, hook_id, monitor, notes, selectors, lists, name)
    funcs = _functions(lst, kp, view, where, notes)
    return _function_list(kp, where, spec, view, hook_id, monitor, selectors, lists, funcs)


# ---- syscall lists: raw_syscalls tracepoints ------------------------------------------

def _syscall_list(kp: Any, where: str, view: Any, hook_id: int, monitor: bool,
                  notes: list[str], selectors: Sequence[Any], lists: dict[str, list[int]],
                  name: str) -> HookPlan:
    nrs = sorted(set(lists.get(name) or ()))
    if not nrs:
        raise CompileError(f"{where}.call", f"list {name} names no syscall", invalid=True)
    _check_raw_syscalls(view, where)
    from vigil.policy import compile_data as D
    data = list(getattr(kp, "data", None) or ())
    selectors = D.with_match_data(selectors, len(kp.args or ()), where, data)
    b = C._HookBuilder(where, view, lists)
    for i, arg in enumerate(kp.args or ()):
        w = f"{where}.args[{i}]"
        C.refuse_resolve(arg, w, "syscall hooks")
        if arg.index > 5:
            raise CompileError(f"{w}.index", "a syscall has at most 6 arguments (index 0..5)")
        t = C._syscall_arg_type(arg, w)
        b.args.append((arg.index, t))
        b.cfg.update(C._arg_cfg(i, t, offset=16 + 8 * arg.index, size=8, arg=arg))
    D.compile_data(b, data, view.btf, where, "syscall")  # current_task: the calling task
    for nr in nrs:  # set 0 of vg_int_set: the ids the entry program runs for
        b.key("vg_int_set", struct.pack("<IIq", 0, 0, nr))
    sels = list(selectors)  # no Override here: compile_list_hooks splits such a list
    wants_exit = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in sels) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    b.hook = kp
    C._compile_selectors(b, sels, where)
    b.cfg["flags"] = int(abi.HookFlag.LIST)
    attach = [Attach("vg_gen_tp", "tracepoint", ("raw_syscalls", "sys_enter"))]
    if wants_exit:
        attach.append(Attach("vg_gen_tp_ret", "tracepoint", ("raw_syscalls", "sys_exit")))
    mech = (f"tracepoint raw_syscalls/sys_enter{' + sys_exit' if wants_exit else ''} for "
            f"the {len(nrs)} syscalls of list {name} (syscall ids checked in the kernel; "
            "a syscall list runs on tracepoints like a single syscall hook)")
    if not view.kprobes:
        notes.append(f"{where}: {kp.call} runs on raw_syscalls tracepoints (no kprobes here)")
    functions = {nr: f"__x64_sys_{SYSCALL_NAMES[nr]}" for nr in nrs if nr in SYSCALL_NAMES}
    plan = C._finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                     D.with_data_args(kp) if data else kp, monitor, has_return=wants_exit,
                     ret_spec=C._ret_spec(kp, where), function_name=kp.call, mechanism=mech)
    if data:
        plan = dataclasses.replace(plan, ndata=len(data))
    return _with_functions(plan, functions)


def _check_raw_syscalls(view: Any, where: str) -> None:
    """raw_syscalls/sys_enter must exist with ``id`` at offset 8 and ``args`` at 16 (the
    layout the program reads); reading its format also mounts tracefs for the agent."""
    from vigil.policy.tracefs import TracefsUnavailable
    if view.formats is None:
        return
    try:
        fmt = view.formats("raw_syscalls", "sys_enter")
    except TracefsUnavailable as err:
        raise CompileError(f"{where}.call", "syscall lists run on tracepoint raw_syscalls/"
                           f"sys_enter, whose format cannot be read: {err.strerror or err}") from err
    except FileNotFoundError as err:
        raise CompileError(f"{where}.call", "no tracepoint raw_syscalls/sys_enter on this "
                           "kernel (syscall lists need it)",
                           kernel_lacks="tracepoint raw_syscalls/sys_enter") from err
    except (OSError, ValueError):
        return
    nr, args = fmt.field("id"), fmt.field("args")
    if nr is None or args is None or nr.offset != 8 or args.offset != 16:
        raise CompileError(f"{where}.call", "raw_syscalls/sys_enter has an unexpected layout "
                           "on this kernel (id at 8, args at 16 expected)")


def _syscall_functions(kp: Any, where: str, spec: Any, view: Any, hook_id: int, monitor: bool,
                       selectors: Sequence[Any], lists: dict[str, list[int]],
                       name: str) -> HookPlan:
    """A syscall list with ``pt_regs`` data: the registers Tetragon reads are those of its
    kprobe on each syscall function, so the list is one of syscall functions
    (``__x64_sys_<name>``), attached like a function list, the syscall's arguments read
    from the caller's saved registers (``VG_HOOKF_SYSWRAP``)."""
    nrs = sorted(set(lists.get(name) or ()))
    if not nrs:
        raise CompileError(f"{where}.call", f"list {name} names no syscall", invalid=True)
    if not view.kprobes:
        k = next(i for i, d in enumerate(kp.data) if getattr(d, "source", None) == "pt_regs")
        raise CompileError(f"{where}.data[{k}].source", "pt_regs on a syscall list: the "
                           "registers are those of a kprobe on each syscall function "
                           "(__x64_sys_X, as Tetragon reads them), and kprobes are not "
                           "available on this kernel (CONFIG_KPROBES is off)")
    btf = getattr(view, "btf", None)
    funcs = []
    for nr in nrs:
        fn = f"__x64_sys_{SYSCALL_NAMES.get(nr, nr)}"
        if btf is not None and fn not in btf.funcs:
            raise CompileError(f"{where}.call", f"list {name}: {fn}: no such function in this "
                               "kernel (not in its BTF)", kernel_lacks=f"function {fn}")
        funcs.append(fn)
    return _function_list(kp, where, spec, view, hook_id, monitor, selectors, lists, funcs,
                          syswrap=True)


# ---- function lists: kprobe.multi or kprobes ------------------------------------------

def _functions(lst: Any, kp: Any, view: Any, where: str, notes: list[str]) -> list[str]:
    btf = getattr(view, "btf", None)
    if list_kind(lst) == "generated_ftrace":
        pattern = getattr(lst, "pattern", None) or ""
        if not pattern:
            raise CompileError(f"{where}.call", f"list {lst.name}: generated_ftrace needs a "
                               "pattern", invalid=True)
        try:
            rx = re.compile(pattern)
        except re.error as err:
            raise CompileError(f"{where}.call", f"list {lst.name}: pattern {pattern!r} is not "
                               f"a regular expression: {err}", invalid=True) from err
        names = traceable(view)
        if names is None:
            raise CompileError(f"{where}.call", f"list {lst.name}: the kernel's traceable "
                               "functions are unknown (no BTF, no available_filter_functions)")
        funcs = sorted(n for n in names if rx.search(n))
        if not funcs:
            raise CompileError(f"{where}.call", f"list {lst.name}: no kernel function "
                               f"matches {pattern!r}", kernel_lacks=f"functions {pattern}")
    else:
        funcs, seen = [], set()
        for v in lst.values or ():
            if v in seen:
                continue
            seen.add(v)
            if btf is not None and v not in btf.funcs:
                ignore = getattr(kp, "ignore", None)
                if ignore is not None and getattr(ignore, "call_not_found", False):
                    notes.append(f"{where}: {v} is not in this kernel: left out of list "
                                 f"{lst.name} (ignore.callNotFound)")
                    continue
                raise CompileError(f"{where}.call", f"list {lst.name}: {v}: no such function "
                                   "in this kernel (not in its BTF)", kernel_lacks=f"function {v}")
            funcs.append(v)
        if not funcs:
            raise CompileError(f"{where}.call", f"list {lst.name} names no function here")
    if len(funcs) > MAX_LIST_FUNCS:
        raise CompileError(f"{where}.call", f"list {lst.name} has {len(funcs)} functions; at "
                           f"most {MAX_LIST_FUNCS} per hook")
    return funcs


def traceable(view: Any) -> list[str] | None:
    """Functions a kprobe can attach to: tracefs ``available_filter_functions`` when the
    view can read it, else the functions of the kernel's BTF."""
    reader = getattr(view, "ftrace_functions", None)
    if reader is not None:
        names = reader()
        if names is not None:
            return list(names)
    btf = getattr(view, "btf", None)
    return list(btf.funcs) if btf is not None else None


def _list_mechanism(view: Any, spec: Any, where: str, call: str) -> str:
    mode = getattr(view, "kprobe_mode", "auto") or "auto"
    no_multi = bool(spec.option("disable-kprobe-multi")) if hasattr(spec, "option") else False
    if mode == "fentry":
        raise CompileError(f"{where}.call", f"{call}: kprobe mode fentry: a function list "
                           "needs kprobes (kprobe.multi or one kprobe per function)")
    if getattr(view, "kprobe_multi", False) and mode != "kprobe" and not no_multi:
        return "kprobe_multi"
    if mode == "kprobe_multi" and not no_multi:
        raise CompileError(f"{where}.call", f"{call}: kprobe.multi is not available on this "
                           "kernel (kprobe mode kprobe_multi)")
    if view.kprobes:
        return "kprobe"
    raise CompileError(f"{where}.call", f"{call}: kprobes are not available on this kernel "
                       "(CONFIG_KPROBES is off): a list of kernel functions needs kprobe.multi "
                       "or kprobes")


def _function_list(kp: Any, where: str, spec: Any, view: Any, hook_id: int, monitor: bool,
                   selectors: Sequence[Any], lists: dict[str, list[int]],
                   funcs: list[str], syswrap: bool = False) -> HookPlan:
    """``syswrap``: the functions are syscall functions, the arguments the syscall's."""
    from vigil.policy import compile_data as D
    from vigil.policy import compile_kprobe as KP
    data = list(getattr(kp, "data", None) or ())
    sels = D.with_match_data(selectors, len(kp.args or ()), where, data)
    mech = _list_mechanism(view, spec, where, kp.call)
    has_return = bool(getattr(kp, "return_", False)) or any(
        getattr(s, "match_return_args", None) for s in sels) or any(
        getattr(a, "return_copy", False) for a in (kp.args or ()))
    btf = getattr(view, "btf", None)
    b = C._HookBuilder(where, view, lists)
    if syswrap:
        for i, arg in enumerate(kp.args or ()):
            w = f"{where}.args[{i}]"
            C.refuse_resolve(arg, w, "syscall hooks")
            if arg.index > 5:
                raise CompileError(f"{w}.index", "a syscall has at most 6 arguments (index "
                                   "0..5)")
            t = C._syscall_arg_type(arg, w)
            b.args.append((arg.index, t))
            b.cfg.update(C._arg_cfg(i, t, offset=0, size=8, arg=arg, src=arg.index))
    else:
        KP._compile_args(b, kp.args or (), None, btf, where, kp.call)
    D.compile_data(b, data, btf, where, mech)
    b.hook = kp
    C._compile_selectors(b, sels, where)
    if btf is not None and len(funcs) == 1 and not syswrap:
        KP._return_cfg(b, kp, btf, funcs[0])
    b.cfg["flags"] = int(abi.HookFlag.LIST) | (int(abi.HookFlag.SYSWRAP) if syswrap else 0)
    name = kp.call[5:]
    if mech == "kprobe_multi":
        attach = [Attach("vg_gen_kpm", "kprobe_multi", tuple(funcs))]
        if has_return:
            attach.append(Attach("vg_gen_kretpm", "kretprobe_multi", tuple(funcs)))
        text = (f"kprobe.multi on the {len(funcs)} functions of list {name}"
                + (" + kretprobe.multi (merged)" if has_return else ""))
    else:
        attach = [Attach("vg_gen_kprobe", "kprobe", (f,), cookie=i) for i, f in enumerate(funcs)]
        if has_return:
            attach += [Attach("vg_gen_kretprb", "kretprobe", (f,), cookie=i)
                       for i, f in enumerate(funcs)]
        text = (f"one kprobe per function of list {name} ({len(funcs)}"
                + (", each with a kretprobe" if has_return else "") + "; no kprobe.multi here)")
    if syswrap:
        text += " (syscall functions: pt_regs data)"
    plan = C._finish(b, hook_id, where, "process_kprobe", abi.MsgOp.GENERIC_KPROBE, attach,
                     D.with_data_args(kp) if data else kp, monitor, has_return=has_return,
                     ret_spec=C._ret_spec(kp, where), function_name=kp.call, mechanism=text)
    if data:
        plan = dataclasses.replace(plan, ndata=len(data))
    plan = KP._adjust(plan, mech, False, monitor, sels, kp.call)
    return _with_functions(plan, dict(enumerate(funcs)))


def _with_functions(plan: HookPlan, functions: dict[int, str]) -> HookPlan:
    return dataclasses.replace(plan, functions=functions)
