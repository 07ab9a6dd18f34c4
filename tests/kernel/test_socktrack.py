"""TrackSock: a hook that runs in softirq context reports the socket's owner.

Over loopback, the data a process sends is received (tcp_rcv_established on the peer's
socket) in softirq context on the sender's CPU: the current task is the sender. With the
peer's socket tracked (TrackSock at tcp_connect), the event names the peer process that
owns the socket. Kernel-function hooks: the kernel lane runs this (the host skips it with
the probe's reason).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.kernel.test_kprobes import ModeEnv, policy
from tests.kernel.test_policies import _body

pytestmark = pytest.mark.kernel

CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sys.stdout.write("connected\\n"); sys.stdout.flush()
s.recv(16)
"""


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    from tests.kernel.lane import need
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        need("kprobe")
    e = ModeEnv()
    yield e
    e.close()


def _hooks(port: int, track: bool, actions: str = "", ret: bool = False) -> str:
    """tcp_connect (with `actions`, or TrackSock when `track`) and tcp_rcv_established;
    `ret`: tcp_connect with return: true (matchReturnActions run at its return)."""
    action = actions or ("""
      matchActions:
      - action: TrackSock
        argSock: 0""" if track else "")
    ret_spec = """
    return: true
    returnArg:
      index: 0
      type: int""" if ret else ""
    return f"""
  kprobes:
  - call: tcp_connect
    syscall: false{ret_spec}
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DPort
        values: ["{port}"]{action}
  - call: tcp_rcv_established
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DPort
        values: ["{port}"]
"""


def _exchange(env: ModeEnv, port: int, srv: socket.socket) -> tuple[int, list]:
    """A client process connects and waits; this process sends it data. Returns the
    client's pid and the tcp_rcv_established events."""
    out: dict[str, object] = {}

    def trigger() -> None:
        p = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)],
                             stdout=subprocess.PIPE)
        try:
            assert p.stdout is not None and p.stdout.readline() == b"connected\n"
            conn, _ = srv.accept()
            time.sleep(0.2)  # the client is asleep in recv(): receive runs in softirq
            conn.sendall(b"hello")
            p.wait(timeout=20)
            conn.close()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        out["pid"] = p.pid

    evs = env.run_all(trigger)
    rcv = [e for e in evs if _body(e)["function_name"] == "tcp_rcv_established"]
    return int(out["pid"]), rcv  # type: ignore[arg-type]


def test_track_sock_reports_the_owner_in_softirq(env: ModeEnv) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        with env.policy(policy("vst-untracked", _hooks(port, track=False))):
            pid0, untracked = _exchange(env, port, srv)
        with env.policy(policy("vst-tracked", _hooks(port, track=True))):
            pid1, tracked = _exchange(env, port, srv)
    finally:
        srv.close()
    # without tracking: the task the softirq interrupted (this process, the sender)
    assert untracked and all(_body(e)["process"]["pid"] != pid0 for e in untracked)
    assert {_body(e)["process"]["pid"] for e in untracked} == {os.getpid()}
    # tracked: the client process that owns the socket
    assert tracked and {_body(e)["process"]["pid"] for e in tracked} == {pid1}


def test_track_and_untrack_sock_at_the_return(env: ModeEnv) -> None:
    """matchReturnActions TrackSock with argSock (tcp_connect's sock, as read at its
    entry), run at tcp_connect's return: the receive names the client. UntrackSock in
    matchReturnActions after an entry TrackSock of the same selector: the return's
    untracking comes last, and the receive names the interrupted sender again."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    track_at_return = """
      matchReturnActions:
      - action: TrackSock
        argSock: 0"""
    untrack_at_return = """
      matchActions:
      - action: TrackSock
        argSock: 0
      matchReturnActions:
      - action: UntrackSock
        argSock: 0"""
    try:
        with env.policy(policy("vst-ret-track", _hooks(port, True, track_at_return,
                                                       ret=True))):
            pid1, tracked = _exchange(env, port, srv)
        with env.policy(policy("vst-ret-untrack", _hooks(port, True, untrack_at_return,
                                                         ret=True))):
            _pid2, untracked = _exchange(env, port, srv)
    finally:
        srv.close()
    assert tracked and {_body(e)["process"]["pid"] for e in tracked} == {pid1}
    assert untracked and {_body(e)["process"]["pid"] for e in untracked} == {os.getpid()}
