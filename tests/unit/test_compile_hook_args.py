"""Several maxData buffers in one hook, maxData on char_iovec, and resolve / btfType on
syscall arguments (user pointers), in the compiler without root."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_compile_kfuncs import cfg
from tests.unit.test_compile_kprobe import doc
from tests.unit.test_compile_sources import here
from vigil.abi import _generated as abi
from vigil.policy.checks import check_document
from vigil.policy.compiler import CompileError, compile_policy

F = abi.ArgFlag
MAX = int(abi.DataLimits.MAX_DATA)

TWO_BUFS = """  uprobes:
  - path: /bin/true
    symbols: [main]
    args:
    - {index: 0, type: char_buf, sizeArgIndex: 2, maxData: true}
    - {index: 1, type: size_t}
    - {index: 2, type: char_buf, sizeArgIndex: 4, maxData: true}
    - {index: 3, type: size_t}
"""


def test_two_max_data_buffers_are_both_chunked(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(TWO_BUFS), here(btf)).hooks
    c = cfg(h)
    assert c["args[0].max_len"] == MAX and c["args[2].max_len"] == MAX
    assert c["chunk_args"] == 0b101  # arguments 0 and 2


def test_one_max_data_buffer_and_none(btf) -> None:  # type: ignore[no-untyped-def]
    one = TWO_BUFS.replace("sizeArgIndex: 2, maxData: true", "sizeArgIndex: 2")
    assert cfg(compile_policy(doc(one), here(btf)).hooks[0])["chunk_args"] == 0b100
    none = one.replace("sizeArgIndex: 4, maxData: true", "sizeArgIndex: 4")
    assert cfg(compile_policy(doc(none), here(btf)).hooks[0])["chunk_args"] == 0


IOVEC = """  kprobes:
  - call: sys_writev
    syscall: true
    args:
    - {index: 1, type: char_iovec, sizeArgIndex: 3, maxData: true}
    - {index: 2, type: uint64}
"""


def test_max_data_on_char_iovec_is_ignored_with_a_warning(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(IOVEC), here(btf)).hooks
    c = cfg(h)
    assert c["args[0].kind"] == int(abi.ArgKind.IOVEC) and c["args[0].max_len"] == 4096
    assert c["chunk_args"] == 0
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\n"
            "spec:\n" + IOVEC)
    warnings = [(f.path, f.message) for f in check_document(yaml.safe_load(text))
                if f.severity == "warning"]
    assert [(p, m.split(" (")[0]) for p, m in warnings] == [
        (("spec", "kprobes", 0, "args", 0, "maxData"),
         "maxData is ignored on char_iovec arguments")]


CONNECT_TP = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_connect
    args:
    - {index: 5, type: int}
    - {index: 6, type: uint16, resolve: sa_family}
"""


def test_syscall_tracepoint_field_resolve_follows_user_memory(btf) -> None:  # type: ignore[no-untyped-def]
    (h,) = compile_policy(doc(CONNECT_TP), here(btf)).hooks
    c = cfg(h)
    fam = btf.resolve(btf.struct_id("sockaddr"), "sa_family")
    assert c["args[1].nres"] == 1 and c["args[1].res_off"] == fam.offsets[-1]
    assert c["args[1].flags"] & int(F.RES_USER) and c["args[1].flags"] & int(F.RES_VALUE)
    assert c["args[1].kind"] == int(abi.ArgKind.INT) and c["args[1].size"] == 2


def test_syscall_hook_resolve_follows_user_memory(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  kprobes:
  - call: sys_connect
    syscall: true
    args:
    - {index: 0, type: int}
    - {index: 1, type: uint16, resolve: sa_family}
"""
    (h,) = compile_policy(doc(spec), here(btf)).hooks
    c = cfg(h)
    assert c["args[1].offset"] == 24 and c["args[1].nres"] == 1
    assert c["args[1].flags"] & int(F.RES_USER) and c["args[1].flags"] & int(F.RES_VALUE)
    # btfType names the struct instead of the format's declaration
    typed = spec.replace("resolve: sa_family}", "btfType: sockaddr_in, resolve: sin_port}")
    c = cfg(compile_policy(doc(typed), here(btf)).hooks[0])
    port = btf.resolve(btf.struct_id("sockaddr_in"), "sin_port")
    assert c["args[1].res_off"] == port.offsets[-1] and c["args[1].flags"] & int(F.RES_USER)


def test_syscall_resolve_needs_a_struct_pointer(btf) -> None:  # type: ignore[no-untyped-def]
    spec = """  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {index: 1, type: uint16, resolve: x}
"""
    with pytest.raises(CompileError) as err:
        compile_policy(doc(spec), here(btf))
    assert err.value.where == "spec.kprobes[0].args[0].resolve"
    assert "not declared as a struct pointer" in err.value.message
    assert not err.value.unsupported


def test_data_loc_on_a_kernel_function_is_invalid_for_check_too() -> None:
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\n"
            "spec:\n  kprobes:\n  - call: security_file_open\n    syscall: false\n"
            "    args: [{index: 0, type: data_loc}]\n")
    errors = [(f.path, f.message) for f in check_document(yaml.safe_load(text))
              if f.severity == "error"]
    assert [p for p, _m in errors] == [("spec", "kprobes", 0, "args", 0, "type")]
    assert "__data_loc field" in errors[0][1]
