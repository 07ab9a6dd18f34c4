"""Tetragon's example policies on a kernel offering every BPF feature (the full profile):
each of the 71 real files, read in place, is accepted by the compiler or refused for the
reason its line in ``tests.tetragon_examples.FULL_PROFILE`` records. Pure logic: the
host's BTF (functions and their parameters) and fixed tracepoint formats
(tests/fixtures/tracefs), no privileges.

When a feature lands, the files it lets through fail here until their lines say
``ACCEPTED``; then tests/kernel/test_compat.py needs a trigger for them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.tetragon_examples import FULL_PROFILE, examples_dir, example_files, full_view, refusal

BTF_PATH = "/sys/kernel/btf/vmlinux"
TRACEFS = str(Path(__file__).resolve().parents[1] / "fixtures" / "tracefs")


@functools.cache
def _view() -> object:
    from vigil.policy.kbtf import KernelBtf
    from vigil.policy.tracefs import read_format
    return full_view(KernelBtf.load(BTF_PATH), lambda s, e: read_format(s, e, root=TRACEFS))


@pytest.fixture(scope="module")
def examples() -> Path:
    try:
        return examples_dir()
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def view() -> object:
    import os
    if not os.access(BTF_PATH, os.R_OK):
        pytest.skip(f"no readable kernel BTF ({BTF_PATH})")
    return _view()


def test_the_table_lists_every_file(examples: Path) -> None:
    files = example_files(examples)
    assert len(files) == 71, files
    assert sorted(FULL_PROFILE) == files


@pytest.mark.parametrize("name", sorted(FULL_PROFILE))
def test_full_profile(examples: Path, view: object, name: str) -> None:
    why = refusal(examples / name, view)
    want = FULL_PROFILE[name]
    if want is None:
        assert why is None, f"{name} is refused (its line says ACCEPTED): {why}"
        return
    assert why is not None, f"{name} is now accepted: set its line to ACCEPTED (was {want})"
    assert want[1] in why, f"{name}: the refusal changed: {why!r} (the line says {want})"

