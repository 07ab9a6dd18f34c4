"""`vigil tracingpolicy check` on policies the schema accepts but this version cannot honour:
each is refused whole with file:line:col, the field path and why (never silently ignored).

The kernel is described by a fixed view (no kprobes, trampolines or BPF LSM, like the
hardened host) and tracepoint formats from tests/fixtures/tracefs, so the result does not
depend on the machine. Load goes through the same compiler (``compile_policy``), so the
agent refuses the same policies with the same diagnostics (tests/kernel/test_policies.py
checks one at load).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.cli.policycheck import _check_one, _Formats, _Target
from vigil.policy.compiler import KernelView
from vigil.policy.tracefs import read_format

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFUSED = sorted((FIXTURES / "policies" / "refused").glob("*.yaml"))
TRACEFS = str(FIXTURES / "tracefs")


def fixture_view() -> KernelView:
    return KernelView(formats=lambda s, e: read_format(s, e, root=TRACEFS))


def fixture_target() -> _Target:
    return _Target(fixture_view(), "fixture", _Formats())


def test_corpus() -> None:
    assert len(REFUSED) >= 10


@pytest.mark.parametrize("path", REFUSED, ids=[p.name for p in REFUSED])
def test_refused_with_location(path: Path) -> None:
    res = _check_one(str(path), fixture_target())
    assert res["verdict"] in ("invalid", "unsupported")
    got = [d.replace(str(path.parent) + "/", "") for d in res["diagnostics"]]
    assert got == path.with_suffix(".expected").read_text().splitlines()
