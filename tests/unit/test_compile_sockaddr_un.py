"""``sockaddr_un`` arguments: what the compiler builds on syscall hooks and kernel
functions, which operators apply (Family, the string operators on the path), and how
the record renders (family and path; an abstract name as '@' + name)."""

from __future__ import annotations

import struct

import pytest

from tests.unit.test_policy_refused import fixture_view
from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.errors import PolicyError
from vigil.events.generic import ArgSpec, render_arg
from vigil.policy.compiler import KernelView, compile_policy
from vigil.policy.loader import load_policy

K = abi.ArgKind


def doc(spec: str) -> object:
    return load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       "metadata:\n  name: t\nspec:\n" + spec, source="t.yaml")


def hook(call: str, syscall: bool, op: str, values: str) -> str:
    return f"""  kprobes:
  - call: {call}
    syscall: {str(syscall).lower()}
    args:
    - index: 1
      type: sockaddr_un
    selectors:
    - matchArgs:
      - index: 1
        operator: {op}
        values: [{values}]
"""


def field(config: bytes, name: str) -> int:
    return int(unpack_field("vg_hook_cfg", name, config))


def test_syscall_hook_reads_the_user_address() -> None:
    (h,) = compile_policy(doc(hook("sys_connect", True, "Prefix", '"/run/"')),
                          fixture_view()).hooks
    assert field(h.config, "args[0].kind") == int(K.SOCKADDR_UN)
    assert field(h.config, "sel[0].args[0].op") == int(abi.Op.PREFIX)
    assert [a.out for a in h.args] == ["sockaddr_un"]


def test_family_and_string_operators(btf) -> None:  # type: ignore[no-untyped-def]
    if "unix_stream_connect" not in btf.funcs:
        pytest.skip("unix_stream_connect is not in this kernel's BTF")
    view = KernelView(kprobes=True, fentry=True, kprobe_multi=True, btf=btf)
    (h,) = compile_policy(doc(hook("unix_stream_connect", False, "Family", '"AF_UNIX"')),
                          view).hooks
    assert field(h.config, "args[0].kind") == int(K.KSOCKADDR_UN)
    assert field(h.config, "sel[0].args[0].op") == int(abi.Op.FAMILY)
    assert field(h.config, "sel[0].args[0].nvals") == 1
    (h,) = compile_policy(doc(hook("unix_stream_connect", False, "SubString", '"docker"')),
                          KernelView(kprobes=True, btf=btf, kfunc_strnstr=True)).hooks
    assert h.kfuncs == ("bpf_strnstr",)


@pytest.mark.parametrize("op,values", [("SAddr", '"127.0.0.1"'), ("DPort", '"80"'),
                                       ("GreaterThan", '"1"')])
def test_network_and_integer_operators_do_not_apply(op: str, values: str) -> None:
    """Rejected where the policy is read, located at the operator."""
    with pytest.raises(PolicyError) as err:
        compile_policy(doc(hook("sys_connect", True, op, values)), fixture_view())
    [d] = err.value.diagnostics
    assert (d.file, d.line) == ("t.yaml", 15)
    assert d.path == "spec.kprobes[0].selectors[0].matchArgs[0].operator"
    assert d.message == f"operator {op} cannot be used on an argument of type sockaddr_un"


def _rec(family: int, path: bytes = b"") -> bytes:
    return struct.pack("<H", family) + path


def test_rendering() -> None:
    spec = ArgSpec("sockaddr_un", "addr")
    assert render_arg(spec, _rec(1, b"/run/x.sock")) == {
        "sockaddrun_arg": {"family": "AF_UNIX", "path": "/run/x.sock"}, "label": "addr"}
    assert render_arg(ArgSpec("sockaddr_un"), _rec(1, b"@abstract")) == {
        "sockaddrun_arg": {"family": "AF_UNIX", "path": "@abstract"}}
    assert render_arg(ArgSpec("sockaddr_un"), _rec(2)) == {"sockaddrun_arg": {"family": "AF_INET"}}
    assert render_arg(ArgSpec("sockaddr_un"), b"") == {"sockaddrun_arg": {}}
