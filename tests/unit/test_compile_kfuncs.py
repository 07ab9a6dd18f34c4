"""Function lists, data sources and syscall Override in the compiler, without root: the
mechanism per kernel view, what each plan attaches and configures, and the refusals
with their reasons (vigil.policy.compile_lists, compile_data, compile_kprobe)."""

from __future__ import annotations

import struct

import pytest

from tests.unit.test_compile_kprobe import doc, view
from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.policy.compiler import CompileError, compile_policy
from vigil.syscalls import SYSCALL_NAMES, syscall_number

DUPS = """  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  kprobes:
  - call: "list:dups"
    args: [{index: 0, type: int}]
"""
FNS = """  lists:
  - name: fns
    values: ["security_file_open", "security_file_permission"]
  kprobes:
  - call: "list:fns"
    args: [{index: 0, type: file}]
"""


class cfg:  # noqa: N801 (reads like a dict of the packed vg_hook_cfg)
    def __init__(self, hook) -> None:  # type: ignore[no-untyped-def]
        self.data = hook.config

    def __getitem__(self, name: str) -> int:
        return unpack_field("vg_hook_cfg", name, self.data)


def test_syscall_list_runs_on_raw_syscalls(btf) -> None:  # type: ignore[no-untyped-def]
    for v in (view(btf), view(btf, kprobes=False, fentry=False, kprobe_multi=False)):
        (h,) = compile_policy(doc(DUPS), v).hooks
        assert [(a.program, a.target) for a in h.attach] == [
            ("vg_gen_tp", ("raw_syscalls", "sys_enter"))]
        nrs = [syscall_number("dup"), syscall_number("dup2")]
        assert h.map_keys["vg_int_set"] == tuple(struct.pack("<IIq", 0, 0, n) for n in nrs)
        assert dict(h.functions) == {n: f"__x64_sys_{SYSCALL_NAMES[n]}" for n in nrs}
        c = cfg(h)
        assert c["flags"] & int(abi.HookFlag.LIST)
        assert c["args[0].offset"] == 16
        assert "2 syscalls of list dups" in h.mechanism


def test_generated_syscalls_list_every_syscall(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  lists:
  - {name: all, type: generated_syscalls}
  kprobes:
  - call: "list:all"
    return: true
    returnArg: {index: 0, type: int}
"""
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert len(h.map_keys["vg_int_set"]) == len(SYSCALL_NAMES)
    assert [a.target for a in h.attach] == [("raw_syscalls", "sys_enter"),
                                            ("raw_syscalls", "sys_exit")]


@pytest.mark.parametrize("kw,spec_extra,kinds,text", [
    ({}, "", [("kprobe_multi", ("security_file_open", "security_file_permission"), 0)],
     "kprobe.multi on the 2 functions of list fns"),
    ({"kprobe_multi": False}, "",
     [("kprobe", ("security_file_open",), 0), ("kprobe", ("security_file_permission",), 1)],
     "one kprobe per function of list fns (2; no kprobe.multi here)"),
    ({}, "  options:\n  - {name: disable-kprobe-multi, value: \"true\"}\n",
     [("kprobe", ("security_file_open",), 0), ("kprobe", ("security_file_permission",), 1)],
     "one kprobe per function"),
])
def test_function_list_mechanisms(btf, kw, spec_extra, kinds, text) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(FNS + spec_extra), view(btf, **kw)).hooks
    assert [(a.kind, a.target, a.cookie) for a in h.attach] == kinds
    assert text in h.mechanism
    assert dict(h.functions) == {0: "security_file_open", 1: "security_file_permission"}
    assert cfg(h)["kind"] == int(abi.HookKind.KPROBE)


def test_function_list_refusals(btf) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CompileError) as e:  # no kprobes: a kernel reason, not a Vigil gap
        compile_policy(doc(FNS), view(btf, kprobes=False, kprobe_multi=False))
    assert "CONFIG_KPROBES is off" in e.value.message and not e.value.unsupported
    with pytest.raises(CompileError) as e:
        compile_policy(doc(FNS.replace("security_file_permission", "vk_no_such_fn")), view(btf))
    assert e.value.kernel_lacks == "function vk_no_such_fn"


def test_generated_ftrace_reads_available_filter_functions(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  lists:
  - {name: k, type: generated_ftrace, pattern: "^ksys_(read|write)$"}
  kprobes:
  - call: "list:k"
"""
    v = view(btf, ftrace_functions=lambda: ["ksys_write", "ksys_read", "ksys_readv", "vfs_read"])
    (h,) = compile_policy(doc(spec), v).hooks
    assert h.attach[0].target == ("ksys_read", "ksys_write")
    v = view(btf, ftrace_functions=lambda: ["vfs_read"])
    with pytest.raises(CompileError, match="no kernel function matches"):
        compile_policy(doc(spec), v)


DATA = """  kprobes:
  - call: security_file_open
    args: [{index: 0, type: file}]
    data:
    - {index: 0, type: int, source: current_task, resolve: real_parent.tgid, label: ppid}
    - {index: 1, type: uint64, source: pt_regs, resolve: rdi}
    selectors:
    - matchData:
      - {index: 0, operator: Equal, values: ["1"]}
"""


def test_data_sources(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(DATA), view(btf)).hooks
    assert h.mechanism == "kprobe.multi security_file_open"  # pt_regs: never a trampoline
    assert h.ndata == 2 and [a.label for a in h.args] == ["", "ppid", ""]
    c = cfg(h)
    assert c["nargs"] == 3
    assert c["args[1].flags"] & int(abi.ArgFlag.SRC_TASK) and c["args[1].nres"] == 2
    assert c["args[2].flags"] & int(abi.ArgFlag.SRC_REGS)
    assert c["args[2].offset"] == btf.resolve(btf.struct_id("pt_regs"), "di").offsets[-1]
    assert c["sel[0].nargs"] == 1 and c["sel[0].args[0].arg"] == 1  # matchData -> data[0]
    no_regs = DATA.replace("    - {index: 1, type: uint64, source: pt_regs, resolve: rdi}\n", "")
    (h,) = compile_policy(doc(no_regs), view(btf)).hooks
    assert h.mechanism == "fentry security_file_open"
    with pytest.raises(CompileError, match="pt_regs sources need a kprobe"):
        compile_policy(doc(DATA), view(btf, kprobe_mode="fentry"))
    with pytest.raises(CompileError, match="not an x86_64 register"):
        compile_policy(doc(DATA.replace("resolve: rdi", "resolve: xmm0")), view(btf))


LINKAT = """  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}, {index: 3, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["/etc/passwd"]}]
      matchActions: [{action: Override, argError: -1}]
"""


def test_syscall_override_by_fmod_ret(btf) -> None:  # type: ignore[no-untyped-def]
    if "__x64_sys_linkat" not in btf.funcs:
        pytest.skip("no __x64_sys_linkat in this BTF")
    (h,) = compile_policy(doc(LINKAT), view(btf, fmod_ret_syscall=True)).hooks
    assert [(a.program, a.kind, a.target) for a in h.attach] == [
        ("vg_gen_fmodret", "fmod_ret", ("__x64_sys_linkat",))]
    c = cfg(h)
    assert c["flags"] & int(abi.HookFlag.SYSWRAP)
    assert (c["args[0].src"], c["args[1].src"]) == (1, 3)
    assert h.enforcement.startswith("Override: __x64_sys_linkat is not run and returns -1")
    assert h.function_name == "__x64_sys_linkat"
    with pytest.raises(CompileError) as e:
        compile_policy(doc(LINKAT), view(btf, fmod_ret_syscall=False))
    assert "this kernel refuses fmod_ret on syscall functions" in e.value.message
    assert not e.value.unsupported


def _module_blob(first_id: int, base_strs: int) -> bytes:
    """A module's split BTF: int, struct vk_mod_s { int a; struct vk_mod_s *next; }."""
    strs = b"\0int\0vk_mod_s\0a\0next\0"
    off = {n: base_strs + strs.index(n.encode() + b"\0", 1) for n in ("int", "vk_mod_s", "a", "next")}
    i, s, p = first_id, first_id + 1, first_id + 2
    types = struct.pack("<IIII", off["int"], 1 << 24, 4, (1 << 24) | 32)
    types += struct.pack("<III", off["vk_mod_s"], (4 << 24) | 2, 16)
    types += struct.pack("<III", off["a"], i, 0) + struct.pack("<III", off["next"], p, 64)
    types += struct.pack("<III", 0, 2 << 24, s)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs)) \
        + types + strs


def test_module_btf_split(btf, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vigil.policy.kbtf import module_btf
    (tmp_path / "vk_mod").write_bytes(_module_blob(len(btf._pos), btf._base_strs))
    mod = module_btf(btf, "vk_mod", root=str(tmp_path))
    assert mod is not None and module_btf(btf, "vk_mod", root=str(tmp_path)) is mod
    step = mod.resolve(mod.struct_id("vk_mod_s"), "next.a")
    assert step.offsets == (8, 0) and step.last == "int" and step.signed
    assert mod.struct_id("task_struct") == btf.struct_id("task_struct")
    assert mod.spell(mod.struct_id("vk_mod_s")) == "struct vk_mod_s"
    assert module_btf(btf, "vk_absent", root=str(tmp_path)) is None


def test_btf_type_module_refused_when_not_loaded(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  kprobes:
  - call: security_file_open
    args:
    - {index: 0, type: int, btfType: vk_mod_s, btfTypeModule: vk_absent_mod, resolve: a}
"""
    with pytest.raises(CompileError) as e:
        compile_policy(doc(spec), view(btf))
    assert e.value.kernel_lacks == "module vk_absent_mod" and not e.value.unsupported
