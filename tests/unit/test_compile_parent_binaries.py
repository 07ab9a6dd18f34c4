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
from vigil.policy.follow import pbin_bit
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


def test_follow_children_marks_descendants_of_the_binaries() -> None:
    """followChildren: the selector's matchParentBinaries follow bit, apart from the
    matchBinaries one of the same selector; /proc seeding follows the parent's values."""
    extra = ("        followChildren: true\n      matchBinaries:\n      - operator: In\n"
             "        followChildren: true\n        values: [/usr/bin/cat]\n")
    hook = _hook("In", ["/bin/sh"], extra)
    flags = _field(hook, "follow")
    assert flags == int(abi.FollowFlag.BIN) | int(abi.FollowFlag.PBIN)
    assert {(f.selector, f.binaries) for f in hook.follow} == {
        (0, ("/usr/bin/cat",)), (pbin_bit(0), ("/bin/sh",))}
    assert unpack_field("vg_hook_cfg", "follow", hook.config) == 1
    assert "follow descendants" in hook.mechanism


def test_follow_bits_never_collide() -> None:
    """Each selector's parent bit is one the others (followChildren: bit si; followForks:
    VG_FOLLOW_PID_BIT + si * VG_GEN_PIDF + k) leave free, within the 32-bit value."""
    n, pidf = int(abi.GenLimits.GEN_SELECTORS), int(abi.GenLimits.GEN_PIDF)
    others = set(range(n)) | {int(abi.FollowFlag.PID_BIT) + si * pidf + k
                              for si in range(n) for k in range(pidf)}
    mine = [pbin_bit(si) for si in range(n)]
    assert len(set(mine)) == n and not set(mine) & others and max(mine) < 32
    assert mine[0] == int(abi.FollowFlag.PBIN_BIT)
    assert mine[3] == int(abi.FollowFlag.PBIN_BIT2)


def test_follow_children_needs_in_or_not_in(tmp_path: Path) -> None:
    res = _check(tmp_path, "Prefix", ["/bin/"], "        followChildren: true\n")
    assert res["verdict"] == "invalid"
    [diag] = res["diagnostics"]
    assert diag.startswith("p.yaml:16:25: error: spec.tracepoints[0].selectors[0]"
                           ".matchParentBinaries[0].followChildren: followChildren is only "
                           "supported with operators In and NotIn")


def test_check_accepts_follow_children(tmp_path: Path) -> None:
    assert _check(tmp_path, "NotIn", ["/bin/sh"],
                  "        followChildren: true\n")["verdict"] == "ok"
