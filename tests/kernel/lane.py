"""Feature gates for kernel tests that need what only some kernels allow.

A test calls ``need("fentry", ...)``: where the kernel refuses a feature the test skips
with the probe's reason; but inside the kernel lane (tools/kernel-lane.sh), where
``VIGIL_EXPECT_FEATURES`` lists what a stock kernel of that version must allow, a refusal
of a listed feature fails the test instead: a lane run cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest


def expected() -> set[str]:
    return set(os.environ.get("VIGIL_EXPECT_FEATURES", "").split())


def need(*names: str) -> None:
    from vigil.bpf import features as F
    for name in names:
        res = F.probe(name)
        if res.ok:
            continue
        if name in expected():
            pytest.fail(f"kernel {os.uname().release} should allow {name} "
                        f"(VIGIL_EXPECT_FEATURES): {res.reason}")
        pytest.skip(f"this kernel refuses {name}: {res.reason}")
