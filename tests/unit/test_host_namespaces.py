"""Which source the host's namespaces come from (vigil.daemon.agent.learn_host_namespaces),
on fake /proc trees and without privileges: never the process's own namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.daemon.agent import INIT_PID_NS_INUM, learn_host_namespaces
from vigil.process.model import Namespaces

NAMES = tuple(Namespaces.__dataclass_fields__)


def fake_proc(root: Path, pid_ns: int, skip: tuple[str, ...] = ()) -> str:
    """A /proc whose pid 1 has namespace links like the kernel's (``net:[1005]``)."""
    d = root / "1" / "ns"
    d.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        if name in skip:
            continue
        inum = pid_ns if name == "pid" else 1000 + i
        os.symlink(f"{name.removesuffix('_for_children')}:[{inum}]", d / name)
    return str(root)


@pytest.fixture
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 65534)


def test_proc_1_of_the_initial_pid_namespace(tmp_path: Path, unprivileged: None) -> None:
    proc = fake_proc(tmp_path, INIT_PID_NS_INUM)
    got = learn_host_namespaces(proc)
    assert got.source == f"{proc}/1/ns"
    assert got.ns is not None and got.ns.net == 1005 and got.ns.pid == INIT_PID_NS_INUM


def test_kernel_without_time_namespaces(tmp_path: Path, unprivileged: None) -> None:
    proc = fake_proc(tmp_path, INIT_PID_NS_INUM, skip=("time", "time_for_children"))
    got = learn_host_namespaces(proc)
    assert got.ns is not None and got.ns.time == 0 and got.ns.uts == 1000


def test_container_proc_is_not_the_hosts(tmp_path: Path, unprivileged: None) -> None:
    proc = fake_proc(tmp_path, 4026532999)
    got = learn_host_namespaces(proc)
    assert got.ns is None
    assert got.source == (f"{proc}/1 is not the host's pid 1 (its pid namespace 4026532999 is "
                          "not the initial one), and only root may ask the kernel (BPF)")


def test_unreadable_and_unprivileged_is_unknown(tmp_path: Path, unprivileged: None) -> None:
    got = learn_host_namespaces(str(tmp_path))
    assert got.ns is None  # not this process's own namespaces
    assert got.source == f"cannot read {tmp_path}/1/ns, and only root may ask the kernel (BPF)"
