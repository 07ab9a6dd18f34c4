"""The agent's start-up table: every step comes after what it needs, and a part of it
(what a test harness asks for) runs with its dependencies, in the table's order."""

from __future__ import annotations

import pytest

from vigil.daemon.startup import STEPS, Step, plan


def _noop(_agent: object) -> None:
    return None


def test_table_is_ordered_by_its_dependencies() -> None:
    assert [s.name for s in plan(STEPS)] == [s.name for s in STEPS]
    assert STEPS[-1].name == "health-server"


def test_a_part_brings_what_it_needs_in_table_order() -> None:
    names = [s.name for s in plan(STEPS, ["policy-engine", "procfs-scan"])]
    assert names == ["privileges", "btf", "signing-key", "mounts", "base-sensor",
                     "policy-engine", "procfs-scan"]
    assert "reader" in [s.name for s in plan(STEPS, ["health-server"])]


def test_unknown_step_is_refused() -> None:
    with pytest.raises(ValueError, match="no start-up step 'nope'"):
        plan(STEPS, ["nope"])


def test_a_step_before_its_need_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 'b', which is not listed before it"):
        plan([Step("a", _noop, ("b",)), Step("b", _noop)])
    with pytest.raises(ValueError, match="listed twice"):
        plan([Step("a", _noop), Step("a", _noop)])
