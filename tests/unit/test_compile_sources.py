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


def test_syscall_pt_regs_refused(btf) -> None:  # type: ignore[no-untyped-def]
    spec = SYS.replace("source: current_task, resolve: tgid", "source: pt_regs, resolve: rdi")
    refused(spec, btf, "spec.kprobes[0].data[0].source", "pt_regs on a syscall hook")
    lst = spec.replace("  kprobes:\n  - call: sys_openat",
                       "  lists:\n  - {name: o, type: syscalls, values: [sys_openat]}\n"
                       "  kprobes:\n  - call: \"list:o\"")
    refused(lst, btf, "spec.kprobes[0].data[0].source", "pt_regs on a syscall hook")


def test_syscall_list_current_task(btf) -> None:  # type: ignore[no-untyped-def]
    spec = SYS.replace("  kprobes:\n  - call: sys_openat",
                       "  lists:\n  - {name: o, type: syscalls, values: [sys_openat, sys_open]}\n"
                       "  kprobes:\n  - call: \"list:o\"")
    (h,) = compile_policy(doc(spec), here(btf)).hooks
    assert h.attach[0].target == ("raw_syscalls", "sys_enter") and h.ndata == 2
    assert cfg(h)["args[2].flags"] & int(F.SRC_TASK)
    fns = ("  lists:\n  - {name: f, values: [security_file_open]}\n  kprobes:\n"
           "  - call: \"list:f\"\n    data:\n"
           "    - {index: 0, type: int, source: current_task, resolve: tgid}\n")
    with pytest.raises(CompileError, match="list of kernel functions"):
        compile_policy(doc(fns), view(btf))


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
