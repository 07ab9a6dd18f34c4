"""Override on syscall hooks by fmod_ret on the syscall function (``__x64_sys_X``), on
kernels that allow it (sid's 7.2; bookworm's 6.1 and 6.12 refuse fmod_ret there, and the
policy is refused with that reason). Tetragon's hardlink-override / symlink-override
examples, on paths of the test's own: the matching call really fails with ``argError``
and changes nothing; other calls run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lane import need
from tests.kernel.test_kprobes import ModeEnv
from tests.kernel.test_policies import _body

ME = {os.getpid()}
LIBC = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def linkat(src: Path, dst: Path) -> int:
    """linkat(2) itself (os.link calls link(2)); 0 or the errno."""
    if LIBC.linkat(AT_FDCWD, str(src).encode(), AT_FDCWD, str(dst).encode(), 0) == 0:
        return 0
    return ctypes.get_errno()


def symlinkat(target: Path, link: Path) -> int:
    """symlinkat(2) itself (os.symlink calls symlink(2)); 0 or the errno."""
    if LIBC.symlinkat(str(target).encode(), AT_FDCWD, str(link).encode()) == 0:
        return 0
    return ctypes.get_errno()


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    need("fmod_ret_syscall")
    e = ModeEnv()
    yield e
    e.close()


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vko-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _linkat(target: Path, mode: str = "enforce") -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-linkat-override
spec:
  options:
  - name: policy-mode
    value: {mode}
  kprobes:
  - call: "sys_linkat"
    syscall: true
    args:
    - index: 0
      type: "int"
    - index: 1
      type: "string"
    - index: 2
      type: "int"
    - index: 3
      type: "string"
    - index: 4
      type: "int"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Equal"
        values:
        - "{target}"
      matchActions:
      - action: Override
        argError: -1
"""


def test_linkat_override_refuses_the_call(env: ModeEnv, tdir: Path) -> None:
    secret, other = tdir / "secret", tdir / "other"
    secret.write_text("s")
    other.write_text("o")
    with env.policy(_linkat(secret)) as info:
        assert info.info.startswith("fmod_ret __x64_sys_linkat"), info.info
        err: list[int] = []

        def trigger() -> None:
            err.append(linkat(secret, tdir / "copy"))
            err.append(linkat(other, tdir / "other2"))  # not matched: runs
        evs = env.run_all(trigger, ME)
    assert err == [errno.EPERM, 0]  # argError -1
    assert not (tdir / "copy").exists()
    assert (tdir / "other2").exists()
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["function_name"] == "__x64_sys_linkat"
    assert b["action"] == "KPROBE_ACTION_OVERRIDE"
    assert b["args"][1] == {"string_arg": str(secret)}
    assert b["args"][3] == {"string_arg": str(tdir / "copy")}


def test_symlinkat_override_in_monitor_mode_only_reports(env: ModeEnv, tdir: Path) -> None:
    target = tdir / "secret"
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-symlink-override
spec:
  options:
  - name: policy-mode
    value: monitor
  kprobes:
  - call: "sys_symlinkat"
    syscall: true
    args:
    - index: 0
      type: "string"
    - index: 1
      type: "int"
    - index: 2
      type: "string"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values:
        - "{target}"
      matchActions:
      - action: Override
        argError: -1
"""
    with env.policy(pol):
        evs = env.run_all(lambda: symlinkat(target, tdir / "link"), ME)
    assert (tdir / "link").is_symlink()  # monitor: reported, not refused
    assert len(evs) == 1 and _body(evs[0])["function_name"] == "__x64_sys_symlinkat"


def test_syscall_list_override_one_fmod_ret_per_syscall(env: ModeEnv, tdir: Path) -> None:
    """Override on a syscall list: one fmod_ret hook per syscall function of the list;
    each named syscall with the matched path fails with argError, others run."""
    secret, other = tdir / "secret", tdir / "other"
    secret.write_text("s")
    other.write_text("o")
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-list-override
spec:
  lists:
  - name: links
    type: syscalls
    values: ["sys_linkat", "sys_symlinkat"]
  kprobes:
  - call: "list:links"
    syscall: true
    args:
    - index: 1
      type: "string"
    selectors:
    - matchArgs:
      - index: 1
        operator: "Prefix"
        values:
        - "{secret}"
      matchActions:
      - action: Override
        argError: -13
"""
    with env.policy(pol) as info:
        assert "fmod_ret __x64_sys_linkat" in info.info, info.info
        assert "fmod_ret __x64_sys_symlinkat" in info.info, info.info
        err: list[int] = []

        def trigger() -> None:
            err.append(linkat(secret, tdir / "copy"))      # arg 1: the old path
            err.append(linkat(other, tdir / "other2"))     # not matched: runs
            err.append(symlinkat(tdir / "x", secret))      # arg 1 of symlinkat: newdirfd
        evs = env.run_all(trigger, ME)
    assert err[:2] == [errno.EACCES, 0]
    assert not (tdir / "copy").exists() and (tdir / "other2").exists()
    names = [_body(e)["function_name"] for e in evs]
    assert names == ["__x64_sys_linkat"], names
    assert _body(evs[0])["action"] == "KPROBE_ACTION_OVERRIDE"
