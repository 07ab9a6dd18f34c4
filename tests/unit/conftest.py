"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os

import pytest

BTF_PATH = "/sys/kernel/btf/vmlinux"


@pytest.fixture(scope="session")
def btf():
    """The host kernel's BTF, parsed once: the compiler resolves hook prototypes in it."""
    if not os.access(BTF_PATH, os.R_OK):
        pytest.skip("no readable kernel BTF")
    from vigil.policy.kbtf import KernelBtf
    return KernelBtf.load(BTF_PATH)
