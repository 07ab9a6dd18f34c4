"""creds.bpf.o in the kernel: the base sensor's credential programs load and attach, and
each successful credential syscall sends the task's credentials after it (VG_MSG_CREDS);
failed calls, no-op setfsuid and prctl options other than securebits send nothing. Both
ways: the syscall exit tracepoints, and commit_creds (fentry or kprobe) where the kernel
allows it, which must report the same calls with the same credentials.

Runs in the kernel lane too (stock 6.1 and 6.12, where fentry on commit_creds is
allowed: the agent's default there)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.kernel import lane
from vigil.abi import _generated as abi
from vigil.bpf import features, mounts
from vigil.events.decode import CredsRecord, decode_creds
from vigil.sensors.base import CRED_PROGRAMS, BaseSensor, BaseSensorConfig

NOBODY = 65534


@pytest.fixture(scope="module", params=["syscalls", "auto"])
def sensor(request: pytest.FixtureRequest) -> Iterator[BaseSensor]:
    """The base sensor following credentials by the syscall exit tracepoints, and as the
    agent does by default (commit_creds where the kernel allows fentry or a kprobe)."""
    report = mounts.ensure(("tracefs",))
    s = BaseSensor(BaseSensorConfig(ring_bytes=1 << 22, creds_hook=request.param))
    s.load()
    try:
        yield s
    finally:
        s.close()
        for where in report.mounted.values():  # leave the machine as found
            subprocess.run(["umount", where], check=False)


def records_of(s: BaseSensor, pid: int) -> list[CredsRecord]:
    assert s.ring is not None
    out = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out += [decode_creds(r) for r in s.ring.drain()
                if r and r[0] == abi.MsgOp.CREDS and decode_creds(r).pid == pid]
        if out and s.ring.pending_bytes() == 0:
            break
        time.sleep(0.05)
    return out


def in_child(fn: object) -> int:
    """Run ``fn`` in a forked child (single-threaded: one record per call); its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()  # type: ignore[operator]
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def test_programs_attached(sensor: BaseSensor) -> None:
    if sensor.cfg.creds_hook == "auto" and "fentry" in lane.expected():
        # the kernel lane: a stock kernel must take the commit_creds hook
        assert sensor.creds_tracking == "on (fentry commit_creds)", sensor.creds_tracking
    elif sensor.cfg.creds_hook == "auto" and features.probe("fentry").ok:
        assert sensor.creds_tracking == "on (fentry commit_creds)"
    elif sensor.cfg.creds_hook == "auto" and features.probe("kprobe").ok:
        assert sensor.creds_tracking == "on (kprobe commit_creds)"
    else:
        assert sensor.creds_tracking == "on (syscall exit tracepoints)"
    assert len(CRED_PROGRAMS) == 11


def test_setresuid_reports_the_new_credentials(sensor: BaseSensor) -> None:
    def drop() -> None:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        try:
            os.setuid(0)  # refused: nothing sent
        except PermissionError:
            pass
    pid = in_child(drop)
    recs = records_of(sensor, pid)
    assert [r.call for r in recs] == ["setgroups", "setresgid", "setresuid"]
    assert recs[0].groups == () and recs[0].ngroups == 0
    gid, uid = recs[1].creds, recs[2].creds
    assert (gid.gid, gid.egid, gid.sgid, gid.fsgid, gid.uid) == (NOBODY,) * 4 + (0,)
    assert (uid.uid, uid.euid, uid.suid, uid.fsuid) == (NOBODY,) * 4
    assert uid.cap_effective == uid.cap_permitted == 0
    assert all(r.tid == pid for r in recs)


def test_capset_fsuid_and_prctl(sensor: BaseSensor) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    net_raw = 1 << 13

    def run() -> None:
        hdr, data = Hdr(0x20080522, 0), (Data * 2)()
        assert libc.syscall(125, ctypes.byref(hdr), data) == 0        # capget
        data[0].effective &= ~net_raw
        assert libc.syscall(126, ctypes.byref(Hdr(0x20080522, 0)), data) == 0  # capset
        assert libc.prctl(15, b"x", 0, 0, 0) == 0      # PR_SET_NAME: not a credential
        assert libc.prctl(8, 1, 0, 0, 0) == 0          # PR_SET_KEEPCAPS
        libc.setfsuid(0)                               # already 0: no change, no record
        libc.setfsuid(123)
    pid = in_child(run)
    recs = records_of(sensor, pid)
    assert [r.call for r in recs] == ["capset", "prctl", "setfsuid"]
    assert not recs[0].creds.cap_effective & net_raw
    assert recs[0].creds.cap_permitted & net_raw
    assert recs[1].creds.securebits == 0x10  # SECBIT_KEEP_CAPS
    assert recs[2].creds.fsuid == 123 and recs[2].creds.euid == 0
