"""``data`` on syscall hooks and uprobes, and ``resolve`` / ``btfType`` on classic
tracepoint fields, in the compiler without root: what each plan configures, and the
refusals, located on the field (vigil.policy.compile_data, compile_kprobe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_compile_kfuncs import cfg
from tests.unit.test_compile_kprobe import doc, view
from vigil.abi import _generated as abi
from vigil.policy.compiler import CompileError, compile_policy
from vigil.policy.tracefs import read_format

TRACEFS = str(Path(__file__).resolve().parents[1] / "fixtures" / "tracefs")
F = abi.ArgFlag


def here(btf):  # type: ignore[no-untyped-def]
    """This host's kind of kernel: no kprobes or trampolines; tracepoint formats from the
    fixtures."""
    return view(btf, kprobes=False, fentry=False, lsm=False, kprobe_multi=False,
                fmod_ret=False, formats=lambda s, e: read_format(s, e, root=TRACEFS))


def refused(spec: str, btf, where: str, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CompileError) as err:
        compile_policy(doc(spec), here(btf))
    assert err.value.where == where and text in err.value.message, err.value


SYS = """  kprobes:
  - call: sys_openat
    args: [{index: 1, type: string}]
    data:
    - {index: 0, type: int, source: current_task, resolve: tgid}
    - {index: 1, type: int, source: current_task, resolve: real_parent.tgid, label: ppid}
    selectors:
    - matchData:
      - {index: 1, operator: Equal, values: ["1"]}
"""


def test_syscall_current_task(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(SYS), here(btf)).hooks
    assert [a.target for a in h.attach] == [("syscalls", "sys_enter_openat")]
    assert h.ndata == 2 and [a.label for a in h.args] == ["", "", "ppid"]
    c = cfg(h)
    assert c["nargs"] == 3 and c["args[0].offset"] == 24
    assert c["args[1].flags"] & int(F.SRC_TASK) and c["args[1].nres"] == 1
    assert c["args[2].flags"] & int(F.SRC_TASK) and c["args[2].nres"] == 2
    assert c["sel[0].nargs"] == 1 and c["sel[0].args[0].arg"] == 2  # matchData -> data[1]
    ret = SYS.replace("    args:", "    return: true\n    returnArg: {index: 0, type: int}\n"
                      "    args:")
    (h,) = compile_policy(doc(ret), here(btf)).hooks
    assert [a.target[1] for a in h.attach] == ["sys_enter_openat", "sys_exit_openat"]
    assert h.ndata == 2


REGS = SYS.replace("source: current_task, resolve: tgid", "source: pt_regs, resolve: rdi")
LIST = ("  lists:\n  - {name: o, type: syscalls, values: [sys_openat, sys_open]}\n"
        "  kprobes:\n  - call: \"list:o\"")


def test_syscall_pt_regs_needs_kprobes(btf) -> None:  # type: ignore[no-untyped-def]
    """Here (no kprobes): refused naming the missing kprobes, for a syscall hook and a
    syscall list alike."""
    refused(REGS, btf, "spec.kprobes[0].data[0].source", "kprobes are not available")
    lst = REGS.replace("  kprobes:\n  - call: sys_openat", LIST)
    refused(lst, btf, "spec.kprobes[0].data[0].source", "kprobes are not available")
    with pytest.raises(CompileError) as err:
        compile_policy(doc(REGS), here(btf))
    assert not err.value.unsupported and "version" not in err.value.message


def test_syscall_pt_regs_on_kprobe(btf) -> None:  # type: ignore[no-untyped-def]
    """With kprobes: a kprobe (kprobe.multi where there is one) on __x64_sys_openat, the
    syscall's arguments from the saved registers (SYSWRAP), pt_regs data from the probe's."""
    ret = REGS.replace("    args:", "    return: true\n    returnArg: {index: 0, type: int}\n"
                       "    args:")
    for kw, progs in (({}, ["vg_gen_kpm"]), ({"kprobe_multi": False}, ["vg_gen_kprobe"])):
        (h,) = compile_policy(doc(REGS), view(btf, **kw)).hooks
        assert [a.program for a in h.attach] == progs
        assert h.attach[0].target == ("__x64_sys_openat",) and h.ndata == 2
        c = cfg(h)
        assert c["flags"] & int(abi.HookFlag.SYSWRAP)
        assert c["args[0].src"] == 1 and c["args[1].flags"] & int(F.SRC_REGS)
        assert c["args[2].flags"] & int(F.SRC_TASK)
        (h,) = compile_policy(doc(ret), view(btf, **kw)).hooks
        assert [a.program for a in h.attach] == progs + [
            "vg_gen_kretpm" if progs == ["vg_gen_kpm"] else "vg_gen_kretprb"]
    lst = REGS.replace("  kprobes:\n  - call: sys_openat", LIST)
    (h,) = compile_policy(doc(lst), view(btf)).hooks
    assert h.attach[0].program == "vg_gen_kpm"
    assert set(h.attach[0].target) == {"__x64_sys_openat", "__x64_sys_open"}
    assert cfg(h)["flags"] & int(abi.HookFlag.SYSWRAP) and h.ndata == 2


OVERRIDE = """    - matchActions:
      - {action: Override, argError: -1}
"""


def test_syscall_override_data(btf) -> None:  # type: ignore[no-untyped-def]
    """Override on a syscall function (fmod_ret, where the kernel allows it): current_task
    data works; pt_regs data is refused naming bpf_override_return."""
    task = SYS + OVERRIDE
    (h,) = compile_policy(doc(task), view(btf, fmod_ret_syscall=True)).hooks
    assert h.attach[0].program == "vg_gen_fmodret" and h.ndata == 2
    c = cfg(h)
    assert c["flags"] & int(abi.HookFlag.SYSWRAP) and c["args[1].flags"] & int(F.SRC_TASK)
    with pytest.raises(CompileError) as err:
        compile_policy(doc(REGS + OVERRIDE), view(btf, fmod_ret_syscall=True))
    assert err.value.where == "spec.kprobes[0].data[0].source"
    assert err.value.kernel_lacks == "bpf_override_return" and not err.value.unsupported
    # a kernel with kprobes but no fmod_ret: the kprobe would need bpf_override_return too
    with pytest.raises(CompileError) as err:
        compile_policy(doc(REGS + OVERRIDE), view(btf, fmod_ret=False))
    assert err.value.kernel_lacks == "bpf_override_return"


def test_syscall_list_current_task(btf) -> None:  # type: ignore[no-untyped-def]
    spec = SYS.replace("  kprobes:\n  - call: sys_openat", LIST)
    (h,) = compile_policy(doc(spec), here(btf)).hooks
    assert h.attach[0].target == ("raw_syscalls", "sys_enter") and h.ndata == 2
    assert cfg(h)["args[2].flags"] & int(F.SRC_TASK)


FNS = """  lists:
  - {name: f, values: [fd_install, security_file_open]}
  kprobes:
  - call: "list:f"
    args: [{index: 0, type: int}]
    data:
    - {index: 0, type: int, source: pt_regs, resolve: edi}
    - {index: 1, type: int, source: current_task, resolve: tgid}
    selectors:
    - matchData:
      - {index: 1, operator: Equal, values: ["1"]}
"""


def test_function_list_data(btf) -> None:  # type: ignore[no-untyped-def]
    if "fd_install" not in btf.funcs:
        pytest.skip("no fd_install in this kernel's BTF")
    for kw, prog in (({}, "vg_gen_kpm"), ({"kprobe_multi": False}, "vg_gen_kprobe")):
        (h,) = compile_policy(doc(FNS), view(btf, **kw)).hooks
        assert h.attach[0].program == prog and h.ndata == 2
        c = cfg(h)
        assert c["args[1].flags"] & int(F.SRC_REGS) and c["args[1].size"] == 4
        assert c["args[2].flags"] & int(F.SRC_TASK)
        assert c["sel[0].args[0].arg"] == 2  # matchData -> data[1]
        assert not c["flags"] & int(abi.HookFlag.SYSWRAP)
    with pytest.raises(CompileError) as err:  # here: no kprobes
        compile_policy(doc(FNS), here(btf))
    assert "kprobes are not available" in err.value.message


UP = """  uprobes:
  - path: /bin/true
    symbols: [main]
    args: [{index: 0, type: int}]
    data:
    - {index: 0, type: int, source: pt_regs, resolve: edi}
    - {index: 1, type: string, source: pt_regs, resolve: rsi}
    - {index: 2, type: int, source: current_task, resolve: tgid}
    selectors:
    - matchData:
      - {index: 0, operator: NotEqual, values: ["2"]}
"""


def test_uprobe_data(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(UP), here(btf)).hooks
    assert h.ndata == 3 and [a.out for a in h.args] == ["int", "int", "string", "int"]
    c = cfg(h)
    regs = btf.struct_id("pt_regs")
    assert c["args[1].flags"] & int(F.SRC_REGS) and c["args[1].size"] == 4
    assert c["args[1].offset"] == btf.resolve(regs, "di").offsets[-1]
    assert c["args[2].kind"] == int(abi.ArgKind.USTR)  # a pointer into the process
    assert c["args[2].offset"] == btf.resolve(regs, "si").offsets[-1]
    assert c["args[3].flags"] & int(F.SRC_TASK)
    assert c["sel[0].args[0].arg"] == 1


def test_uretprobe_data(btf) -> None:  # type: ignore[no-untyped-def]
    ret = UP.replace("    args:", "    return: true\n    returnArg: {index: 0, type: int}\n"
                     "    args:")
    # pt_regs on a return uprobe: the registers at the call's entry, read by the entry
    # uprobe with the arguments
    (h,) = compile_policy(doc(ret), here(btf)).hooks
    assert [a.program for a in h.attach] == ["vg_gen_uprobe", "vg_gen_uretprobe"]
    c = cfg(h)
    assert c["has_return"] == 1 and c["args[1].flags"] & int(F.SRC_REGS)
    assert c["args[2].kind"] == int(abi.ArgKind.USTR)
    task_only = ret.replace("    - {index: 0, type: int, source: pt_regs, resolve: edi}\n", "") \
        .replace("    - {index: 1, type: string, source: pt_regs, resolve: rsi}\n", "") \
        .replace("NotEqual", "Equal")
    task_only = task_only.replace("{index: 0, operator: Equal", "{index: 2, operator: Equal")
    (h,) = compile_policy(doc(task_only), here(btf)).hooks
    assert [a.program for a in h.attach] == ["vg_gen_uprobe", "vg_gen_uretprobe"]
    assert h.ndata == 1
    assert cfg(h)["sel[0].args[0].arg"] == 1  # matchData index 2: data[0], after one arg


EXIT_MMAP = """  tracepoints:
  - subsystem: mmap
    event: exit_mmap
    args:
    - {index: 4, type: string, resolve: exe_file.f_path.dentry.d_name.name}
    - {index: 4, type: uint64, btfType: mm_struct, resolve: exe_file.f_inode.i_ino}
    - {index: 5, type: int, btfType: mm_struct, resolve: map_count}
"""


def test_tracepoint_field_resolve(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(EXIT_MMAP), here(btf)).hooks
    c = cfg(h)
    mm = btf.struct_id("mm_struct")
    step = btf.resolve(mm, "exe_file.f_path.dentry.d_name.name")
    assert c["args[0].offset"] == 8 and c["args[0].kind"] == int(abi.ArgKind.KSTR)
    assert c["args[0].nres"] == len(step.offsets) and c["args[0].flags"] & int(F.RES_DEREF)
    assert c["args[0].res_off"] == step.offsets[0]  # the first of them
    assert c["args[1].flags"] & int(F.RES_VALUE) and c["args[1].size"] == 8
    # btfType on another pointer field: it is read as a struct mm_struct *
    assert c["args[2].offset"] == 16 and c["args[2].size"] == 4
    assert c["args[2].res_off"] == btf.resolve(mm, "map_count").offsets[0]


def test_tracepoint_field_resolve_class_struct(btf) -> None:  # type: ignore[no-untyped-def]
    assert btf.tp_field_type("mmap_lock_start_locking", "mm") is None  # its class's struct
    spec = """  tracepoints:
  - subsystem: mmap_lock
    event: mmap_lock_start_locking
    args:
    - {index: 4, type: int, resolve: map_count}
"""
    (h,) = compile_policy(doc(spec), here(btf)).hooks
    assert cfg(h)["args[0].res_off"] == btf.resolve(btf.struct_id("mm_struct"),
                                                        "map_count").offsets[0]


@pytest.mark.parametrize("arg,where,text", [
    ("{index: 6, type: int, btfType: mm_struct, resolve: map_count}", "index",
     "field write is bool (1 bytes)"),
    ("{index: 4, type: int, resolve: no_such_field}", "resolve", "has no member no_such_field"),
    ("{index: 4, type: string, resolve: map_count}", "type", "use an integer type"),
    ("{index: 5, type: int, resolve: x}", "resolve", "field memcg_id (u64) has no struct type"),
    ("{index: 4, type: int, btfType: no_such_struct, resolve: x}", "resolve",
     "no struct no_such_struct"),
])
def test_tracepoint_field_resolve_refused(btf, arg: str, where: str,  # type: ignore[no-untyped-def]
                                          text: str) -> None:
    spec = f"""  tracepoints:
  - subsystem: mmap_lock
    event: mmap_lock_start_locking
    args:
    - {arg}
"""
    refused(spec, btf, f"spec.tracepoints[0].args[0].{where}", text)


def test_syscall_tracepoint_resolve_needs_a_struct_field(btf) -> None:  # type: ignore[no-untyped-def]
    """A syscall's field is followed in user memory (vigil.policy.compile_kprobe
    syscall_resolve), from a field the format declares as a struct pointer."""
    spec = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_connect
    args:
    - {index: 5, type: int, resolve: sa_family}
"""
    refused(spec, btf, "spec.tracepoints[0].args[0].resolve", "field fd (int) is not declared "
            "as a struct pointer")
