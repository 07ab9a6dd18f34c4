"""matchNamespaceChanges and CelExpr in matchReturnArgs compiled (pure: no kernel, no
root): what lands in the selector's slot and the hook's CEL programs; malformed filters
refused with their location, as `vigil tracingpolicy check` reports them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_policy_refused import fixture_target, fixture_view
from vigil.abi import _generated as abi
from vigil.abi.pack import unpack_field
from vigil.cli.policycheck import _check_one
from vigil.policy import celexpr
from vigil.policy.compiler import compile_policy
from vigil.policy.loader import load_policy

NS_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: ns-changes
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchNamespaceChanges:
      - operator: {op}
        values: {values}
"""

RET_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: cel-ret
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    returnArg:
      index: 0
      type: {rtype}
    args:
    - index: 1
      type: string
    selectors:
    - matchReturnArgs:
      - operator: CelExpr
        values: ["{expr}"]
{extra}"""


def _hook(text: str) -> Any:
    return compile_policy(load_policy(text, source="t.yaml"), fixture_view()).hooks[0]


def _field(hook: Any, name: str) -> int:
    return int(unpack_field("vg_hook_cfg", name, hook.config))


def _check(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    res = _check_one(str(path), fixture_target())
    res["diagnostics"] = [d.replace(str(tmp_path) + "/", "")
                          for d in res.get("diagnostics", ())]
    return res


# ---- matchNamespaceChanges ----------------------------------------------------------

@pytest.mark.parametrize("op,code", [("In", abi.Op.IN), ("NotIn", abi.Op.NOTIN)])
def test_namespace_changes_mask(op: str, code: int) -> None:
    """One bit per namespace, in Tetragon's order (that of struct vg_namespaces)."""
    hook = _hook(NS_POLICY.format(op=op, values='["Mnt", "Net", "User"]'))
    assert _field(hook, "sel[0].nsc_op") == int(code)
    assert _field(hook, "sel[0].nsc_mask") == (1 << 2) | (1 << 5) | (1 << 9)


def test_namespace_change_names_without_case() -> None:
    """Tetragon lower-cases the names before its lookup: "mnt" and "PIDFORCHILDREN" are
    Mnt and PidForChildren."""
    hook = _hook(NS_POLICY.format(op="In", values='["mnt", "PIDFORCHILDREN"]'))
    assert _field(hook, "sel[0].nsc_mask") == (1 << 2) | (1 << 4)


def test_no_namespace_changes_filter_leaves_the_slot_empty() -> None:
    text = NS_POLICY.replace("    - matchNamespaceChanges:\n      - operator: {op}\n"
                             "        values: {values}\n", "    - matchArgs:\n"
                             "      - index: 1\n        operator: Equal\n"
                             "        values: [/x]\n")
    hook = _hook(text)
    assert _field(hook, "sel[0].nsc_op") == 0 and _field(hook, "sel[0].nsc_mask") == 0


def test_unknown_namespace_is_located(tmp_path: Path) -> None:
    res = _check(tmp_path, NS_POLICY.format(op="In", values='["Mnt", "Disk"]'))
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:15:25: error: spec.kprobes[0].selectors[0]"
                           ".matchNamespaceChanges[0].values[1]: invalid namespace \"Disk\"")


def test_namespace_changes_operator_is_located(tmp_path: Path) -> None:
    res = _check(tmp_path, NS_POLICY.format(op="Equal", values='["Mnt"]'))
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:14:19: error: spec.kprobes[0].selectors[0]"
                           ".matchNamespaceChanges[0].operator:")


def test_one_namespace_changes_filter_only(tmp_path: Path) -> None:
    text = NS_POLICY.format(op="In", values='["Mnt"]') + \
        "      - operator: NotIn\n        values: [Net]\n"
    res = _check(tmp_path, text)
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert "spec.kprobes[0].selectors[0].matchNamespaceChanges" in diag
    assert "at most 1" in diag


def test_check_accepts_namespace_changes(tmp_path: Path) -> None:
    res = _check(tmp_path, NS_POLICY.format(op="NotIn", values='["Uts", "Time"]'))
    assert res["verdict"] == "ok", res


# ---- CelExpr in matchReturnArgs -------------------------------------------------------

def _program(hook: Any) -> list[tuple[int, int, int]]:
    n = _field(hook, "cel[0].n")
    return [(_field(hook, f"cel[0].insn[{k}].op"), _field(hook, f"cel[0].insn[{k}].arg"),
             _field(hook, f"cel[0].insn[{k}].imm")) for k in range(n)]


def test_return_cel_reads_the_return_value_as_returnarg_types_it() -> None:
    """arg0 is the return value: an ARG step with index 0xff, wrapped to 32 signed bits
    for an int returnArg (Tetragon's s32)."""
    hook = _hook(RET_POLICY.format(rtype="int", expr="arg0 < int32(0)", extra=""))
    assert _field(hook, "sel[0].nret") == 1 and _field(hook, "sel[0].nargs") == 0
    assert _field(hook, "sel[0].ret[0].op") == int(abi.Op.CEL)
    assert _field(hook, "sel[0].ret[0].set") == 0 and _field(hook, "ncel") == 1
    assert _program(hook) == [(celexpr.ARG, celexpr.RET, 0), (celexpr.S32, 0, 0),
                              (celexpr.CONST, 0, 0), (celexpr.S32, 0, 0),
                              (celexpr.LT, 0, 0)]


def test_return_cel_on_a_long_needs_no_wrap() -> None:
    hook = _hook(RET_POLICY.format(rtype="long", expr="arg0 == -2", extra=""))
    assert _program(hook) == [(celexpr.ARG, celexpr.RET, 0),
                              (celexpr.CONST, 0, -2 & (1 << 64) - 1), (celexpr.EQ, 0, 0)]


def test_return_cel_types_are_tetragons(tmp_path: Path) -> None:
    """An int returnArg is an s32: comparing it with an int literal has no overload."""
    res = _check(tmp_path, RET_POLICY.format(rtype="int", expr="arg0 < 0", extra=""))
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:19:18: error: spec.kprobes[0].selectors[0]"
                           ".matchReturnArgs[0].values[0]: invalid CEL expression")
    assert "s32 < int" in diag


def test_return_cel_has_one_argument(tmp_path: Path) -> None:
    res = _check(tmp_path, RET_POLICY.format(rtype="int", expr="arg1 == int32(0)",
                                             extra=""))
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert "matchReturnArgs[0].values[0]" in diag and "arg1" in diag


def test_return_cel_args_name_the_return_value_only(tmp_path: Path) -> None:
    ok = RET_POLICY.format(rtype="int", expr="arg0 == int32(3)",
                           extra="        args: [0]\n")
    assert _check(tmp_path, ok)["verdict"] == "ok"
    bad = RET_POLICY.format(rtype="int", expr="arg0 == int32(3)",
                            extra="        args: [1]\n")
    res = _check(tmp_path, bad)
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:20:16: error: spec.kprobes[0].selectors[0]"
                           ".matchReturnArgs[0].args[0]: args position 1 is out of range")


# ---- CelExpr variables named by args ----------------------------------------------------

ARGS_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: cel-args
spec:
  kprobes:
  - call: sys_read
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: long
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - args: {args}
        operator: CelExpr
        values: ["{expr}"]
"""


def test_cel_args_name_the_variables() -> None:
    """argK is the hook argument at position args[K] (typed by it): args [1, 0] makes
    arg0 the long and arg1 the int."""
    hook = _hook(ARGS_POLICY.format(args="[1, 0]", expr="arg0 == 5 && arg1 == int32(3)"))
    ops = _program(hook)
    assert [(op, a) for op, a, _v in ops if op == celexpr.ARG] == [(celexpr.ARG, 1),
                                                                   (celexpr.ARG, 0)]


def test_cel_args_types_follow_the_positions(tmp_path: Path) -> None:
    """arg0 is args[0]'s argument: an int (s32) there cannot be compared with 5."""
    res = _check(tmp_path, ARGS_POLICY.format(args="[0, 1]", expr="arg0 == 5"))
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert "matchArgs[0].values[0]" in diag and "s32 == int" in diag
    ok = ARGS_POLICY.format(args="[0, 1, 2]", expr="arg0 - int32(10) == arg2 + int32(5)")
    assert _check(tmp_path, ok)["verdict"] == "ok"


def test_cel_args_position_out_of_range_is_located(tmp_path: Path) -> None:
    res = _check(tmp_path, ARGS_POLICY.format(args="[0, 3]", expr="arg0 == int32(1)"))
    assert res["verdict"] == "invalid"
    assert any(".matchArgs[0].args[1]: args position 3 is out of range" in d
               for d in res["diagnostics"]), res["diagnostics"]
