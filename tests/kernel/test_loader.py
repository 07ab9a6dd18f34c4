"""``spec.loader: true`` in the real kernel: ``process_loader`` for each executable file
mapping a real program makes (its shared libraries), with the build id readelf reads
from the same file."""

from __future__ import annotations

import base64
import os
import subprocess
import time

import pytest

from tests.kernel.test_policies import Env

pytestmark = pytest.mark.kernel

POLICY = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-loader
spec:
  loader: true
"""


def _readelf_build_id(path: str) -> str:
    out = subprocess.run(["readelf", "-nW", path], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return next(ln.split()[-1] for ln in out.splitlines() if "Build ID:" in ln)


def _libs(pid: int) -> set[str]:
    """Executable file mappings of a running process, from /proc/PID/maps."""
    with open(f"/proc/{pid}/maps") as f:
        return {ln.split(maxsplit=5)[5].strip() for ln in f
                if len(ln.split()) >= 6 and "x" in ln.split()[1]}


def test_loader_reports_each_library_with_its_build_id(env: Env) -> None:
    cat = os.path.realpath("/bin/cat")
    with env.policy(POLICY) as info:
        assert "sys_enter_mmap" in info.info
        env.pipe.handle(env.base.ring.drain())
        proc = subprocess.Popen([cat], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            expected = {p for p in _libs(proc.pid) if p != cat and not p.startswith("[")}
        finally:
            proc.communicate(b"", timeout=10)
        time.sleep(0.3)
        evs = [e["process_loader"] for e in env.pipe.handle(env.base.ring.drain())
               if "process_loader" in e and e["process_loader"]["process"]["pid"] == proc.pid]
    # ld.so is mapped by the kernel during execve, the libraries by ld.so with mmap(2)
    interp = {p for p in expected if "/ld-linux" in p}
    assert expected - interp, expected
    got = {e["path"] for e in evs}
    assert got == expected - interp
    libc = next(e for e in evs if "libc.so" in e["path"])
    st = os.stat(libc["path"])
    assert list(libc) == ["process", "path", "buildid", "parent"], \
        (st.st_dev, st.st_ino, st.st_size, env.policy_events.build_ids.unreadable)
    assert base64.b64decode(libc["buildid"]).hex() == _readelf_build_id(libc["path"])
    assert libc["process"]["binary"] == cat
    assert env.policy_events.build_ids.reads >= 1
