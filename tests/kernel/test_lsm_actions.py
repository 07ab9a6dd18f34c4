"""Actions on kernel-function and BPF LSM hooks: imaHash (a sleepable BPF LSM program
hashes the executed file) and stack traces on a kernel function. They need BPF LSM and
trampolines or kprobes: the kernel lane runs them; the host skips with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lane import need
from tests.kernel.test_kprobes import ModeEnv, policy, tdir  # noqa: F401 - fixture
from tests.kernel.test_policies import _body

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        need("kprobe")
    e = ModeEnv()
    yield e
    e.close()


@pytest.mark.parametrize("override", [False, True])
def test_ima_hash_of_the_executed_file(env: ModeEnv, tdir: Path, override: bool) -> None:  # noqa: F811
    need("lsm")
    exe = tdir / "va-true"
    shutil.copy("/bin/true", exe)
    deny = """
      - action: Override
        argError: -1""" if override else ""
    body = f"""
  lsmhooks:
  - hook: bprm_check_security
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/va-true"]
      matchActions:{deny}
      - action: Post
        imaHash: true
"""
    codes: list[int] = []

    def trigger() -> None:
        try:
            codes.append(subprocess.run([str(exe)], timeout=20).returncode)
        except OSError as err:
            codes.append(-(err.errno or 0))
    with env.policy(policy("va-ima", body)):
        evs = env.run_all(trigger)
    assert codes == ([-errno.EPERM] if override else [0])
    assert len(evs) == 1
    b = _body(evs[0])
    algo, _, digest = b["ima_hash"].partition(":")
    assert digest == hashlib.new(algo, exe.read_bytes()).hexdigest()
    print("ima_hash:", b["ima_hash"])


def test_kernel_stack_trace_on_a_kernel_function(env: ModeEnv, tdir: Path) -> None:  # noqa: F811
    target = tdir / "stacked"
    target.write_text("x")
    body = f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{target}"]
      matchActions:
      - action: Post
        kernelStackTrace: true
        userStackTrace: true
"""
    with env.policy(policy("va-kstack", body)):
        evs = env.run_all(lambda: target.read_text(), {os.getpid()})
    assert len(evs) == 1
    syms = [e.get("symbol") for e in _body(evs[0])["kernel_stack_trace"]]
    assert "do_sys_openat2" in syms or "do_filp_open" in syms, syms
    assert _body(evs[0])["user_stack_trace"][0]["module"].endswith("libc.so.6")
    print("kernel_stack_trace:", _body(evs[0])["kernel_stack_trace"][:3])
