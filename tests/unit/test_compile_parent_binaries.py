"""matchParentBinaries compiled (pure: no kernel, no root): the operator and the string
set of the parent's binary in the selector's slot (pbin_op, pbin_set), beside and apart
from matchBinaries; malformed filters refused with their location, as `vigil
tracingpolicy check` reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_policy_refused import fixture_target, fixture_view
from vigil.abi import _generated as abi
from vigil.abi.keys import eq_key, pfx_key
from vigil.abi.pack import unpack_field
from vigil.cli.policycheck import _check_one
from vigil.policy.compiler import compile_policy
from vigil.policy.loader import load_policy

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: parent-bin
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
    - matchParentBinaries:
      - operator: {op}
        values: {values}
{extra}"""


def _hook(op: str, values: list[str], extra: str = ""):  # type: ignore[no-untyped-def]
    text = POLICY.format(op=op, values=values, extra=extra)
    return compile_policy(load_policy(text, source="t.yaml"), fixture_view()).hooks[0]


def _field(hook, name: str) -> int:  # type: ignore[no-untyped-def]
    return unpack_field("vg_hook_cfg", f"sel[0].{name}", hook.config)


@pytest.mark.parametrize("op,code,table,key", [
    ("In", abi.Op.IN, "vg_str_eq", lambda s: eq_key(s, b"/bin/sh")),
    ("NotIn", abi.Op.NOTIN, "vg_str_eq", lambda s: eq_key(s, b"/bin/sh")),
    ("Prefix", abi.Op.PREFIX, "vg_str_pfx", lambda s: pfx_key(s, b"/bin/sh")),
    ("NotPrefix", abi.Op.NOTPREFIX, "vg_str_pfx", lambda s: pfx_key(s, b"/bin/sh")),
    ("Postfix", abi.Op.POSTFIX, "vg_str_sfx", lambda s: pfx_key(s, b"hs/nib/")),
    ("NotPostfix", abi.Op.NOTPOSTFIX, "vg_str_sfx", lambda s: pfx_key(s, b"hs/nib/")),
])
def test_each_operator_sets_the_parent_slot(op: str, code: int, table: str, key) -> None:  # type: ignore[no-untyped-def]
    hook = _hook(op, ["/bin/sh"])
    assert _field(hook, "pbin_op") == int(code)
    assert _field(hook, "bin_op") == 0  # the caller's own binary is not filtered
    assert hook.map_keys[table] == (key(_field(hook, "pbin_set")),)


def test_parent_and_own_binaries_are_separate_sets() -> None:
    extra = "      matchBinaries:\n      - operator: In\n        values: [/usr/bin/cat]\n"
    hook = _hook("In", ["/bin/sh"], extra)
    own, parent = _field(hook, "bin_set"), _field(hook, "pbin_set")
    assert own != parent
    assert _field(hook, "bin_op") == _field(hook, "pbin_op") == int(abi.Op.IN)
    assert set(hook.map_keys["vg_str_eq"]) == {eq_key(own, b"/usr/bin/cat"),
                                                eq_key(parent, b"/bin/sh")}


def _check(tmp_path: Path, op: str, values: list[str], extra: str = "") -> dict:  # type: ignore[type-arg]
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(op=op, values=values, extra=extra))
    res = _check_one(str(path), fixture_target())
    res["diagnostics"] = [d.replace(str(tmp_path) + "/", "")
                          for d in res.get("diagnostics", ())]
    return res


def test_check_accepts_it(tmp_path: Path) -> None:
    assert _check(tmp_path, "NotPostfix", ["/sshd"])["verdict"] == "ok"


def test_unknown_operator_is_located(tmp_path: Path) -> None:
    res = _check(tmp_path, "Equal", ["/bin/sh"])
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:14:19: error: spec.tracepoints[0].selectors[0]"
                           ".matchParentBinaries[0].operator:")


def test_missing_values_are_located(tmp_path: Path) -> None:
    res = _check(tmp_path, "In", [])
    assert res["verdict"] == "invalid"
    assert res["diagnostics"] == [
        "p.yaml:15:17: error: spec.tracepoints[0].selectors[0].matchParentBinaries[0]"
        ".values: operator In needs at least one value"]


def test_too_long_value_is_located(tmp_path: Path) -> None:
    res = _check(tmp_path, "In", ["/" + "x" * 300])
    assert res["verdict"] == "invalid"
    assert res["diagnostics"] == [
        "p.yaml:15:18: error: spec.tracepoints[0].selectors[0].matchParentBinaries[0]"
        ".values[0]: too long: 301 characters (at most 255)"]


def test_follow_children_is_refused_with_the_reason(tmp_path: Path) -> None:
    res = _check(tmp_path, "In", ["/bin/sh"], "        followChildren: true\n")
    assert res["verdict"] == "unsupported"
    [diag] = res["diagnostics"]
    assert ".matchParentBinaries[0].followChildren:" in diag
    assert "not supported" in diag
