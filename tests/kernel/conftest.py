"""Fixtures shared by the kernel tests: one agent per test module, and the skip (or, in
the kernel lane, the failure) of tests that need kernel-function hooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kernel.lane import need
from tests.kernel.test_policies import Env


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    """An agent up to its policy engine (``Env``), shared by the module's tests; a module
    that needs another kind defines its own ``env``."""
    e = Env()
    yield e
    e.close()


@pytest.fixture
def kfuncs() -> None:
    """Kernel-function hooks (kprobes or fentry) are available, else skip (fail in the
    lane, where the kernel must have them)."""
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        need("kprobe")
