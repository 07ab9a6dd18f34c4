"""``usdts`` -> one USDT hook per probe, and ``resolve`` on uprobe and USDT arguments
through the probed binary's BTF (``btfPath``): pure, like the rest of the compiler.

A USDT hook is a copy of ``generic_usdt.bpf.o`` (generic.bpf.c's pipeline with a USDT
entry program). Which sites the probe has, their semaphores and where each argument
lives (a register, memory at a register + offset, a constant) are in the binary's
``.note.stapsdt`` notes; libbpf reads them when the hook is attached, so a policy
compiles without the binary (``check`` on another machine) and the binary's current
contents are what is probed.

``Set`` writes a value into an argument that lives in memory (bpf_probe_write_user):
compiled only where the kernel allows that helper; elsewhere the policy is refused with
the kernel's reason.
"""

from __future__ import annotations

from typing import Any

from vigil.abi import _generated as abi
from vigil.policy.plan import Attach, HookPlan

USDT_MAX_ARGS = 12  # libbpf's BPF_USDT_MAX_ARG_CNT: argument specs kept per site


def compile_usdts(spec: Any, view: Any, hook_id: int, monitor: bool, selectors: Any,
                  lists: dict[str, list[int]]) -> list[HookPlan]:
    from vigil.policy import compiler as c
    out: list[HookPlan] = []
    for i, us in enumerate(getattr(spec, "usdts", None) or ()):
        where = f"spec.usdts[{i}]"
        b = c._HookBuilder(where, view, lists)
        b.usdt = True
        for j, arg in enumerate(us.args or ()):
            aw = f"{where}.args[{j}]"
            if arg.index >= USDT_MAX_ARGS:
                raise c.CompileError(f"{aw}.index", f"a USDT probe has at most {USDT_MAX_ARGS} "
                                     "arguments", invalid=True)
            t = c._raw_arg_type(arg, aw, user=True)
            b.args.append((arg.index, t))
            b.cfg.update(c._arg_cfg(j, t, offset=0, size=t.size, arg=arg, src=arg.index))
            if getattr(arg, "resolve", None) or getattr(arg, "btf_type", None):
                # a pointer argument to a struct of btfType, read through in user memory
                uprobe_resolve(b, us, "", j, arg, t, aw, kind="usdt")
        b.hook = us
        c._compile_selectors(b, selectors(us), where)
        attach = [Attach("vg_gen_usdt", "usdt", (us.path, us.provider, us.name))]
        mech = f"usdt {us.path}:{us.provider}:{us.name} (uprobe at each site)"
        hook = c._finish(b, hook_id + len(out), where, "process_usdt",
                         abi.MsgOp.GENERIC_USDT, attach, us, monitor, path=us.path,
                         symbol=f"{us.provider}:{us.name}", mechanism=mech)
        out.append(hook)
    return out


def set_action(b: Any, a: Any, p: str, w: str, k: int) -> None:
    """The ``Set`` action of a usdt hook's selector: argIndex gets argValue."""
    from vigil.policy.compiler import CompileError
    view = b.view
    if not getattr(b, "usdt", False):
        raise CompileError(f"{w}.matchActions[{k}].action", "action Set is only supported "
                           "for usdts", invalid=True)
    if not view.probe_write_user:
        raise CompileError(f"{w}.matchActions[{k}].action",
                           "action Set writes the probe's argument in user memory with "
                           f"bpf_probe_write_user: {view.probe_write_user_refused}")
    index = getattr(a, "arg_index", None)
    if index is None or index >= USDT_MAX_ARGS:
        raise CompileError(f"{w}.matchActions[{k}].argIndex", "action Set needs argIndex "
                           f"(a USDT argument, 0..{USDT_MAX_ARGS - 1})", invalid=True)
    b.cfg[f"{p}.actions[{k}].action"] = int(abi.Action.SET)
    b.cfg[f"{p}.actions[{k}].index"] = int(index)
    b.cfg[f"{p}.actions[{k}].arg"] = int(getattr(a, "arg_value", None) or 0) & 0xFFFFFFFF
    b.set_writes = True


def uprobe_override(b: Any, a: Any, p: str, w: str, k: int) -> None:
    """``Override`` on a uprobe: the probed function does not run and its caller gets
    ``argError`` as the return value. The entry program sets the return register to it,
    then returns as the function's ``ret`` would (ip = the return address the call pushed,
    sp past it), which is right only at the function's first instruction and needs a
    kernel whose uprobe programs may write the registers."""
    from vigil.policy.compiler import CompileError
    up, aw = b.hook, f"{w}.matchActions[{k}]"
    for name, alias in (("arg_regs", "argRegs"), ("arg_new_symbol", "argNewSymbol"),
                        ("arg_new_addr", "argNewAddr"), ("arg_new_offset", "argNewOffset")):
        if getattr(a, name, None) not in (None, [], ""):
            raise CompileError(f"{aw}.{alias}", f"{alias} (Override on uprobes setting "
                               "registers or jumping elsewhere) is not supported by this "
                               "version of Vigil: it overrides with argError only")
    if getattr(up, "offsets", None) or getattr(up, "addrs", None):
        raise CompileError(f"{aw}.action", "Override on a uprobe returns to the caller as "
                           "if the function had run, which is right only at a function's "
                           "first instruction: it needs symbols, not offsets or addrs "
                           "(an instruction inside a function)", invalid=True)
    if getattr(up, "return_", False):
        raise CompileError(f"{aw}.action", "Override on a uprobe returns to the caller "
                           "before the function runs, with the return address the return "
                           "probe (return: true) would replace: use a hook without "
                           "return: true", invalid=True)
    if not b.view.uprobe_regs:
        raise CompileError(f"{aw}.action", "Override on a uprobe (return argError without "
                           "running the function) needs a kernel whose uprobe programs may "
                           "write the registers (the return value, instruction and stack "
                           f"pointers): this kernel refuses it ({b.view.uprobe_regs_refused})")
    err = a.arg_error if getattr(a, "arg_error", None) is not None else -1
    b.cfg[f"{p}.actions[{k}].action"] = int(abi.Action.OVERRIDE)
    b.cfg[f"{p}.actions[{k}].arg"] = int(err) & 0xFFFFFFFF
    b.uprobe_override = True


def _user_btf(path: str, where: str) -> Any:
    """The BTF of a user-space binary (``btfPath``: raw BTF, e.g. a dumped .BTF section)."""
    from vigil.policy.compiler import CompileError
    from vigil.policy.kbtf import BtfError, KernelBtf
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
        return KernelBtf(data)
    except OSError as err:
        raise CompileError(f"{where}.btfPath", f"{path}: {err.strerror}",
                           kernel_lacks=f"the BTF file {path}") from err
    except (BtfError, ValueError, IndexError) as err:  # struct.error is a ValueError
        raise CompileError(f"{where}.btfPath", f"{path} is not BTF data: {err}",
                           invalid=False, unsupported=False) from err


def uprobe_resolve(b: Any, up: Any, symbol: str, i: int, arg: Any, t: Any, w: str,
                   kind: str = "uprobe") -> None:
    """``resolve`` on a uprobe or USDT argument: the field path in the binary's BTF
    (btfPath), the function's parameter type (or ``btfType``; a USDT argument has no type
    of its own, so ``btfType``, as Tetragon requires), pointers followed in user memory."""
    from vigil.abi._generated import ArgFlag
    from vigil.policy.compile_kprobe import _resolve
    from vigil.policy.compiler import CompileError
    if getattr(arg, "btf_type_module", None):
        raise CompileError(f"{w}.btfTypeModule", "btfTypeModule names kernel module BTF; "
                           f"{kind}s take their types from btfPath", invalid=True)
    where = w.rsplit(".args[", 1)[0]
    if not getattr(up, "btf_path", None):
        raise CompileError(f"{w}.resolve", f"resolve on a {kind} needs btfPath (the BTF of "
                           f"{up.path})", invalid=True)
    if kind == "usdt" and not getattr(arg, "btf_type", None):
        raise CompileError(f"{w}.btfType", "resolve on a usdt argument needs btfType (the "
                           f"struct in {up.btf_path} the argument points to): a USDT "
                           "argument has no type of its own", invalid=True)
    btf = _user_btf(up.btf_path, where)
    ptype = 0
    if not getattr(arg, "btf_type", None):
        params = btf.func_params(symbol) if symbol else None
        if params is None or arg.index >= len(params):
            raise CompileError(f"{w}.resolve", f"{up.btf_path} describes no parameter "
                               f"{arg.index} of {symbol or 'a probe by offset'}: give btfType",
                               kernel_lacks=f"function {symbol} in {up.btf_path}")
        ptype = params[arg.index].type_id
    extra = _resolve(t, arg.resolve or "", getattr(arg, "btf_type", None), ptype, btf, w)
    flags = b.cfg[f"args[{i}].flags"] | extra.pop("flags", 0) | int(ArgFlag.RES_USER)
    b.cfg[f"args[{i}].flags"] = flags
    b.cfg.update({f"args[{i}].{k}": v for k, v in extra.items()})
