"""Test tiers by directory: unit/ (no privileges), kernel/ (loads BPF), e2e/ (runs the agent).

Kernel and e2e tests need root, BTF and the built objects. Without them they skip with
the reason, unless VIGIL_TEST_STRICT=1 (set by `make test`), which turns such a skip
into a failure so a run that cannot reach the kernel never passes empty.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OBJECTS = ROOT / "src" / "vigil" / "bpf" / "objects"


@functools.cache
def kernel_unavailable() -> str:
    """Why kernel tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "kernel tests need root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel tests need BTF (/sys/kernel/btf/vmlinux)"
    if not (OBJECTS / "process.bpf.o").exists():
        return "BPF objects not built (run `make bpf`)"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "kernel" in parts:
            item.add_marker(pytest.mark.kernel)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not (item.get_closest_marker("kernel") or item.get_closest_marker("e2e")):
        return
    reason = kernel_unavailable()
    if not reason:
        return
    if os.environ.get("VIGIL_TEST_STRICT") == "1":
        pytest.fail(f"strict mode: {reason}")
    pytest.skip(reason)
