"""SubString / SubStringIgnCase matchArgs: what the compiler builds, what it refuses, and
which BPF object variant carries the kernel-function calls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_policy_refused import fixture_view
from vigil.abi import _generated as abi
from vigil.abi.keys import sub_key
from vigil.policy.checks import check_document
from vigil.policy.compiler import CompileError, KernelView, compile_policy
from vigil.policy.loader import load_policy
from vigil.policy.profiles import PROFILES
from vigil.sensors.generic import GENERIC_OBJECT, KFUNC_OBJECTS, TRACEPOINT_OBJECT

BOTH = {"kfunc_strnstr": True, "kfunc_strncasestr": True}


def view(**kw: Any) -> KernelView:
    return replace(fixture_view(), **kw)


def policy(op: str, values: list[str], arg_type: str = "string") -> str:
    vals = ", ".join(f"'{v}'" for v in values)
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: substr
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: {arg_type}
    selectors:
    - matchArgs:
      - index: 1
        operator: {op}
        values: [{vals}]
"""


def compile_text(text: str, v: KernelView) -> Any:
    return compile_policy(load_policy(text, source="test"), v)


def test_substring_compiles_to_the_kfunc_variant() -> None:
    plan = compile_text(policy("SubString", ["passwd", "shadow", "passwd"]),
                        view(kfunc_strnstr=True))
    hook = plan.hooks[0]
    assert hook.kfuncs == ("bpf_strnstr",)
    assert KFUNC_OBJECTS[hook.kfuncs].name == "generic_substr.bpf.o"
    keys = hook.map_keys["vg_str_sub"]
    set_id = int.from_bytes(keys[0][:4], "little")
    assert keys == (sub_key(set_id, b"passwd"), sub_key(set_id, b"shadow"))  # duplicates once
    assert hook.map_sizes["vg_str_sub"] == 2
    assert len(keys[0]) == abi.VG_SUB_KEY.size and keys[0][4:11] == b"passwd\0"


def test_substring_igncase_needs_both_kfuncs() -> None:
    hook = compile_text(policy("SubStringIgnCase", ["PassWd"]), view(**BOTH)).hooks[0]
    assert hook.kfuncs == ("bpf_strncasestr", "bpf_strnstr")
    assert KFUNC_OBJECTS[hook.kfuncs].name == "generic_substr_icase.bpf.o"


def test_hooks_without_substring_keep_their_objects() -> None:
    hook = compile_text(policy("Prefix", ["/etc/"]), view(**BOTH)).hooks[0]
    assert hook.kfuncs == () and "vg_str_sub" not in hook.map_keys
    assert TRACEPOINT_OBJECT.exists() and GENERIC_OBJECT.exists()


@pytest.mark.parametrize("op,kw,missing,since", [
    ("SubString", {}, "function bpf_strnstr", "6.17"),
    ("SubStringIgnCase", {"kfunc_strnstr": True}, "function bpf_strncasestr", "6.19"),
    ("SubStringIgnCase", {}, "functions bpf_strnstr and bpf_strncasestr", "6.19"),
])
def test_refused_on_a_kernel_without_the_kfunc(op: str, kw: dict[str, bool], missing: str,
                                               since: str) -> None:
    with pytest.raises(CompileError) as err:
        compile_text(policy(op, ["x"]), view(**kw))
    e = err.value
    assert e.where == "spec.kprobes[0].selectors[0].matchArgs[0].operator"
    assert e.message == (f"{op} needs the kernel {missing} (Linux {since} or later), which "
                         "this kernel does not have")
    # valid, for another kernel: a kernel feature, not a fault of the policy or of Vigil
    assert not e.invalid and not e.unsupported and not e.kernel_lacks
    compile_text(policy(op, ["x"]), view(**PROFILES["full"]))


def _errors(text: str) -> list[tuple[tuple[Any, ...], str]]:
    import yaml
    return [(f.path, f.message) for f in check_document(yaml.safe_load(text))
            if f.severity == "error"]


def test_too_many_values_refused_by_checker_and_compiler() -> None:
    text = policy("SubString", [f"v{i}" for i in range(101)])
    assert _errors(text) == [(("spec", "kprobes", 0, "selectors", 0, "matchArgs", 0, "values"),
                              "too many values for operator SubString: 101 (at most 100)")]
    from vigil.policy.spec import Policy
    import yaml
    with pytest.raises(CompileError) as err:
        compile_policy(Policy.model_validate(yaml.safe_load(text)), view(**BOTH))
    assert err.value.invalid and err.value.where.endswith("matchArgs[0].values")
    compile_text(policy("SubString", [f"v{i}" for i in range(100)]), view(**BOTH))


@pytest.mark.parametrize("value,ok", [("a" * 99, True), ("a" * 100, False),
                                      ("é" * 49 + "a", True), ("é" * 50, False)])
def test_value_length_in_bytes(value: str, ok: bool) -> None:
    """Values shorter than 100 bytes (UTF-8), as Tetragon counts them."""
    text = policy("SubStringIgnCase", ["x", value])
    errs = _errors(text)
    if ok:
        assert errs == []
        compile_text(text, view(**BOTH))
        return
    n = len(value.encode())
    assert errs == [(("spec", "kprobes", 0, "selectors", 0, "matchArgs", 0, "values", 1),
                     f"substring is too long: {n} bytes (at most 99)")]
    from vigil.policy.spec import Policy
    import yaml
    with pytest.raises(CompileError) as err:
        compile_policy(Policy.model_validate(yaml.safe_load(text)), view(**BOTH))
    assert err.value.invalid and err.value.where.endswith("matchArgs[0].values[1]")


def test_only_on_strings() -> None:
    errs = _errors(policy("SubString", ["1"], arg_type="int"))
    assert errs and "cannot be used on an argument of type int" in errs[0][1]


def test_profiles_name_the_kfuncs() -> None:
    for name in ("debian-6.1", "debian-6.12", "none"):
        assert not PROFILES[name]["kfunc_strnstr"] and not PROFILES[name]["kfunc_strncasestr"]
    assert PROFILES["full"]["kfunc_strnstr"] and PROFILES["full"]["kfunc_strncasestr"]
