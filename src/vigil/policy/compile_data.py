"""A hook's ``data`` (extra values from ``source: current_task`` or ``source: pt_regs``)
and ``matchData`` selectors, on kernel-function hooks (and lists of them), syscall hooks
(and syscall lists) and uprobes. Pure.

Data entries are compiled as arguments after the hook's ``args`` (Tetragon counts
``args`` + ``data`` against the same limit of 5) with a source flag the BPF program
honours when it collects the raw values at entry:

- ``current_task``: the calling task (``struct task_struct *``); ``resolve`` follows a
  field path from it with the kernel's BTF (``real_parent.pid``, ``mm.owner.comm``);
- ``pt_regs``: ``resolve`` names an x86_64 register (``rdi``, ``edi``, ``di``, ``r8``,
  ``r8d``, ``rax``, ...); its value at the probe, read from the kprobe's ``struct
  pt_regs`` (so these hooks use kprobes, never BPF trampolines, which have no pt_regs),
  or from the uprobe's (the process's registers at the probed instruction). On a syscall
  hook or syscall list, as in Tetragon, the registers are those of a kprobe on the
  syscall function ``__x64_sys_X`` (``di`` holds the address of the caller's saved
  registers), so such a hook runs on that kprobe instead of the syscall tracepoints.
  On a return uprobe, the registers at the call's entry. Refused with Override on a
  syscall (an fmod_ret program there: overriding from a kprobe needs
  ``bpf_override_return``, which these kernels lack).

Events carry them in ``data`` (after the other fields, as Tetragon orders them);
``matchData`` filters on them like ``matchArgs`` does on arguments (its ``index`` is the
position in ``data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vigil.abi import _generated as abi
from vigil.policy import compiler as C
from vigil.policy.compiler import CompileError

F = abi.ArgFlag
K = abi.ArgKind
# x86_64 register names -> (struct pt_regs member, bytes)
_REGS: dict[str, tuple[str, int]] = {}
for _r in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp"):
    _REGS.update({_r: (_r, 8), f"r{_r}": (_r, 8), f"e{_r}": (_r, 4)})
for _n in range(8, 16):
    _REGS.update({f"r{_n}": (f"r{_n}", 8), f"r{_n}d": (f"r{_n}", 4)})
_REGS.update({"ip": ("ip", 8), "rip": ("ip", 8), "orig_ax": ("orig_ax", 8)})


# Tetragon reads a syscall hook's registers at its kprobe on the syscall function
# (__x64_sys_X, whose one parameter is the caller's saved struct pt_regs): kernel
# registers, not the caller's. Syscall hooks and syscall lists with pt_regs data are
# compiled as such kprobes (compile_kprobe.compile_syscall_regs, compile_lists), never
# as the syscall tracepoints, which have no such registers.
_SYSCALL_REGS = ("pt_regs on a syscall tracepoint: a syscalls/sys_enter_X or raw_syscalls "
                 "record has no registers (syscall hooks with pt_regs data run on kprobes "
                 "on __x64_sys_X)")
# Override on a syscall function is an fmod_ret program here (a BPF trampoline: no
# pt_regs); Tetragon would override from its kprobe with bpf_override_return.
_FMOD_RET_REGS = ("pt_regs on a syscall hook with Override: Override runs as an fmod_ret "
                  "program on the syscall function (a BPF trampoline, which has no pt_regs); "
                  "reading the registers needs a kprobe, and overriding from a kprobe needs "
                  "bpf_override_return, which this kernel does not have (no error injection "
                  "for syscall functions)")


def uses_regs(hook: Any) -> bool:
    """The hook has a ``pt_regs`` data source (it must run on a kprobe)."""
    return any(getattr(d, "source", None) == "pt_regs" for d in getattr(hook, "data", None) or ())


def register(name: str, btf: Any, where: str) -> tuple[int, int]:
    """(offset in struct pt_regs, bytes) of x86_64 register ``name``."""
    reg = _REGS.get(name.lower())
    if reg is None:
        raise CompileError(f"{where}.resolve", f"{name!r} is not an x86_64 register (rdi, "
                           "esi, rdx, r10, r8d, rax, ...)", invalid=True)
    member, size = reg
    if btf is None:
        raise CompileError(f"{where}.resolve", "pt_regs sources need the kernel's BTF")
    from vigil.policy.kbtf import BtfError
    try:
        step = btf.resolve(btf.struct_id("pt_regs"), member)
    except BtfError as err:
        raise CompileError(f"{where}.resolve", str(err)) from err
    return step.offsets[-1], size


def compile_data(b: Any, data: Sequence[Any], btf: Any, where: str, mech: str) -> None:
    """Append the hook's data entries to its arguments (``b.args`` / ``b.cfg``)."""
    from vigil.policy import compile_kprobe as KP
    first = len(b.args)
    for k, d in enumerate(data):
        w = f"{where}.data[{k}]"
        i = first + k
        if i >= int(abi.GenLimits.GEN_ARGS):
            raise CompileError(w, f"at most {int(abi.GenLimits.GEN_ARGS)} args and data "
                               "together", invalid=True)
        src = getattr(d, "source", None)
        if src == "pt_regs":
            if mech == "syscall":
                raise CompileError(f"{w}.source", _SYSCALL_REGS)
            if mech == "syscall_fmod_ret":
                raise CompileError(f"{w}.source", _FMOD_RET_REGS,
                                   kernel_lacks="bpf_override_return")
            # a return uprobe: the registers at the call's entry, saved by its entry
            # uprobe with the arguments (at the return they hold other values)
            if mech not in ("kprobe", "kprobe_multi", "uprobe", "uretprobe"):
                raise CompileError(f"{w}.source", "pt_regs sources need a kprobe (BPF "
                                   "trampolines have no pt_regs)")
            t = _regs_type(d, w, user=mech in ("uprobe", "uretprobe"))
            off, size = register(getattr(d, "resolve", "") or "", btf, w)
            cfg = C._arg_cfg(i, t, offset=off, size=size if t.kind == K.INT else 8, arg=d)
            if t.kind == K.INT and size < t.size:
                cfg[f"args[{i}].size"] = size
            cfg[f"args[{i}].flags"] |= int(F.SRC_REGS)
        elif src == "current_task":
            if btf is None:
                raise CompileError(f"{w}.source", "current_task sources need the kernel's BTF")
            task = btf.struct_id("task_struct")
            t, extra = KP._kernel_arg(d, task, btf, w)
            cfg = C._arg_cfg(i, t, offset=0, size=t.size, arg=d)
            flags = cfg[f"args[{i}].flags"] | extra.pop("flags", 0) | int(F.SRC_TASK)
            cfg.update({f"args[{i}].{key}": v for key, v in extra.items()})
            cfg[f"args[{i}].flags"] = flags
        else:
            raise CompileError(f"{w}.source", "source must be current_task or pt_regs",
                               invalid=True)
        b.args.append((0x100 + k, t))  # never a function position: matchArgs cannot see it
        b.cfg.update(cfg)


def _regs_type(d: Any, w: str, user: bool = False) -> Any:
    tname = C._type_name(d)
    if tname in C._INT_TYPES:
        return C._INT_TYPES[tname]
    if tname in ("string", "filename"):  # the register holds a pointer to a string
        return C._USER_STR if user else C._ArgType(K.KSTR, 8, False, "string")
    raise CompileError(f"{w}.type", f"type {tname} is not supported for a register here "
                       "(integer types, string)")


def with_match_data(selectors: Sequence[Any], nargs: int, where: str,
                    data: Sequence[Any] = ()) -> list[Any]:
    """Selectors with each ``matchData`` entry turned into a ``matchArgs`` entry on the
    data's position among the captured values (``args: [nargs + k]``, k: the position in
    ``data`` of the entry whose ``index`` the filter names)."""
    pos: dict[int, int] = {}
    for k, d in enumerate(data):
        pos.setdefault(int(d.index), k)
    out = []
    for si, s in enumerate(selectors):
        md = list(getattr(s, "match_data", None) or ())
        if not md:
            out.append(s)
            continue
        extra = []
        for j, m in enumerate(md):
            if getattr(m, "args", None):
                raise CompileError(f"{where}.selectors[{si}].matchData[{j}].args",
                                   "matchData selects by index", invalid=True)
            extra.append(m.model_copy(update={"args": [nargs + pos.get(int(m.index),
                                                                       int(m.index))]}))
        out.append(s.model_copy(update={"match_args": list(s.match_args or ()) + extra,
                                        "match_data": None}))
    return out


def with_data_args(hook: Any) -> Any:
    """The hook as ``_finish`` should see it: ``args`` followed by ``data`` (labels,
    renderers)."""
    return hook.model_copy(update={"args": list(hook.args or ()) + list(hook.data or ())})
