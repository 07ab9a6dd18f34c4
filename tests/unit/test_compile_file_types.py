"""FileType / NotFileType matchArgs and char_iovec arguments in the compiler (pure: no
kernel, no root; the host's BTF for kernel-function prototypes): what they compile to,
and the located refusals."""

from __future__ import annotations

import pytest

from tests.unit.test_policy_refused import fixture_view
from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.errors import PolicyError
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy


def view(btf) -> KernelView:  # type: ignore[no-untyped-def]
    return KernelView(kprobes=True, fentry=True, lsm=True, kprobe_multi=True, fmod_ret=True,
                      btf=btf)


def doc(spec: str) -> object:
    return load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       "metadata:\n  name: t\nspec:\n" + spec, source="t.yaml")


def _kprobe(call: str, index: int, typ: str, op: str, values: str) -> str:
    return f"""  kprobes:
  - call: {call}
    syscall: false
    args:
    - index: {index}
      type: {typ}
    selectors:
    - matchArgs:
      - index: {index}
        operator: {op}
        values: {values}
"""


def _field(cfg: bytes, name: str, k: int = 0) -> int:
    return int(unpack_field("vg_hook_cfg", name, cfg[8 * k:]))  # type: ignore[arg-type]


@pytest.mark.parametrize("typ,call,op,values,code,modes", [
    ("file", "security_file_open", "FileType", "[dir, fifo]", abi.Op.FILETYPE,
     [0o040000, 0o010000]),
    ("file", "security_file_open", "NotFileType", "[regular, pipe, char, block]",
     abi.Op.NOTFILETYPE, [0o100000, 0o010000, 0o020000, 0o060000]),
    ("path", "security_inode_getattr", "FileType", "[sock, lnk]", abi.Op.FILETYPE,
     [0o140000, 0o120000]),
])
def test_file_type_values_are_the_s_if_bits(btf, typ, call, op, values, code,  # type: ignore[no-untyped-def]
                                            modes) -> None:
    (h,) = compile_policy(doc(_kprobe(call, 0, typ, op, values)), view(btf)).hooks
    f = "sel[0].args[0]"
    assert _field(h.config, f"{f}.op") == int(code)
    assert _field(h.config, f"{f}.nvals") == len(modes)
    assert [_field(h.config, f"{f}.vals", k) for k in range(len(modes))] == modes


def test_file_type_at_most_four_values(btf) -> None:  # type: ignore[no-untyped-def]
    spec = _kprobe("security_file_open", 0, "file", "FileType", "[reg, dir, chr, blk, fifo]")
    with pytest.raises(CompileError) as err:
        compile_policy(doc(spec), view(btf))
    assert err.value.where == "spec.kprobes[0].selectors[0].matchArgs[0].values"
    assert "at most 4 values" in str(err.value)


@pytest.mark.parametrize("typ,call,index", [("dentry", "security_inode_mkdir", 1),
                                            ("kiocb", "tty_write", 0),
                                            ("string", "do_unlinkat", 1)])
def test_file_type_only_on_file_and_path(typ: str, call: str, index: int) -> None:
    """Tetragon: "FileType operators specified for non-file/path type"."""
    with pytest.raises(PolicyError) as err:
        doc(_kprobe(call, index, typ, "FileType", "[reg]"))
    (d,) = err.value.diagnostics
    assert (d.line, d.path) == (15, "spec.kprobes[0].selectors[0].matchArgs[0].operator")
    assert f"cannot be used on an argument of type {typ}" in d.message


def test_file_type_unknown_name_is_located() -> None:
    with pytest.raises(PolicyError) as err:
        doc(_kprobe("security_file_open", 0, "file", "NotFileType", "[reg, door]"))
    (d,) = err.value.diagnostics
    assert d.path == "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
    assert '"door" is not a file type' in d.message


def test_raw_tracepoint_file_argument(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  tracepoints:
  - subsystem: filelock
    event: flock_lock_inode
    raw: true
    args:
    - index: 1
      type: file
      resolve: c.flc_file
    selectors:
    - matchArgs:
      - index: 1
        operator: FileType
        values: [dir]
"""
    try:
        btf.resolve(btf.struct_id("file_lock"), "c.flc_file")
    except Exception:
        pytest.skip("struct file_lock without file_lock_core (Linux < 6.9)")
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert _field(h.config, "args[0].kind") == int(abi.ArgKind.FILE)
    assert _field(h.config, "sel[0].args[0].op") == int(abi.Op.FILETYPE)
    assert [a.out for a in h.args] == ["file"]


# ---- char_iovec --------------------------------------------------------------------------

WRITEV = """  kprobes:
  - call: sys_writev
    syscall: true
    args:
    - index: 1
      type: char_iovec
      sizeArgIndex: 3{extra}
    - index: 2
      type: uint64
"""


@pytest.mark.parametrize("extra", ["", "\n      returnCopy: true"])
def test_char_iovec_on_a_syscall_counts_entries_from_size_arg(extra: str) -> None:
    """The number of entries comes from sizeArgIndex, with returnCopy too (the return
    value then bounds the bytes, it does not replace the count)."""
    (h,) = compile_policy(doc(WRITEV.format(extra=extra)), fixture_view()).hooks
    assert _field(h.config, "args[0].kind") == int(abi.ArgKind.IOVEC)
    assert _field(h.config, "args[0].size_arg") == 1
    assert bool(_field(h.config, "args[0].flags") & int(abi.ArgFlag.RETURN_COPY)) == bool(extra)
    assert [a.out for a in h.args] == ["bytes", "size"]


def test_char_iovec_count_must_be_captured() -> None:
    spec = WRITEV.format(extra="").replace("    - index: 2\n      type: uint64\n", "")
    with pytest.raises(CompileError) as err:
        compile_policy(doc(spec), fixture_view())
    assert err.value.where == "spec.kprobes[0].args[0].sizeArgIndex"


def test_char_iovec_max_data_is_ignored() -> None:
    """Tetragon uses maxData for char_buf data only: the iovecs' first 4096 bytes."""
    (h,) = compile_policy(doc(WRITEV.format(extra="\n      maxData: true")),
                          fixture_view()).hooks
    assert _field(h.config, "args[0].max_len") == 4096
    assert _field(h.config, "chunk_args") == 0


def test_char_iovec_on_a_kernel_function(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  kprobes:
  - call: vfs_writev
    syscall: false
    args:
    - index: 1
      type: char_iovec
      sizeArgIndex: 3
    - index: 2
      type: uint64
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["GET "]
"""
    if "vfs_writev" not in btf.funcs:
        pytest.skip("vfs_writev is not in this kernel's BTF")
    (h,) = compile_policy(doc(spec), view(btf)).hooks
    assert _field(h.config, "args[0].kind") == int(abi.ArgKind.IOVEC)
    assert _field(h.config, "args[0].size_arg") == 1
    assert _field(h.config, "sel[0].args[0].op") == int(abi.Op.PREFIX)


def test_data_loc_is_invalid_on_kernel_functions(btf) -> None:  # type: ignore[no-untyped-def]
    """A data_loc is an offset into a tracepoint's record: a kernel function has none."""
    import yaml

    from vigil.policy.spec import Policy
    spec = ("  kprobes:\n  - call: security_file_open\n    syscall: false\n"
            "    args: [{index: 0, type: data_loc}]\n")
    with pytest.raises(PolicyError):  # the checker's error (test_compile_hook_args)
        doc(spec)
    # the compiler's own, for a policy that skipped the checker
    pol = Policy.model_validate(yaml.safe_load("apiVersion: cilium.io/v1alpha1\n"
                                               "kind: TracingPolicy\nmetadata: {name: t}\n"
                                               "spec:\n" + spec))
    with pytest.raises(CompileError) as err:
        compile_policy(pol, view(btf))
    assert err.value.where == "spec.kprobes[0].args[0].type"
    assert "tracepoint's __data_loc field" in str(err.value)
    assert err.value.invalid and not err.value.unsupported
