"""Hook arguments in the real kernel: several ``maxData`` buffers in one hook, ``pt_regs``
data on a return uprobe, ``maxData`` on a ``char_iovec`` (accepted, ignored), and
``resolve`` on syscall arguments (user pointers followed in the process's memory).

- a uprobe on a function of a program built here that takes two buffers, both longer
  than a record holds: each arrives whole (its VG_MSG_DATA chunks name their argument);
- a return uprobe with ``data`` from ``pt_regs``: the registers at the call's entry;
- ``syscalls/sys_enter_connect``'s ``uservaddr`` and a ``sys_connect`` syscall hook's
  address argument, resolved to ``sa_family`` (from the format's ``struct sockaddr *``)
  and, with ``btfType: sockaddr_in``, to ``sin_port``.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env, _body, uprobe_target  # noqa: F401 (a fixture)

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


def _policy(name: str, body: str) -> str:
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
            f"metadata:\n  name: {name}\nspec:\n{body}")


@pytest.fixture(scope="module")
def bufs_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("bufs") / "bufs_target"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(ROOT / "tests/progs/bufs_target.c")],
                   check=True, timeout=60)
    return str(out)


def _run(env: Env, argv: list[str]) -> tuple[list[dict[str, Any]], int]:
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen(argv))
        procs[0].wait(timeout=10)
    evs = env.run(trigger)
    pid = procs[0].pid
    return [_body(e) for e in evs if _body(e)["process"]["pid"] == pid], pid


def _letters(n: int) -> bytes:
    return bytes(ord("a") + i % 26 for i in range(n))


def _digits(n: int) -> bytes:
    return bytes(ord("0") + i % 10 for i in range(n))


def test_two_max_data_buffers_arrive_whole(env: Env, bufs_target: str) -> None:
    """vigil_two_bufs(a, alen, b, blen) with 10000 and 70000 bytes, then 5000 and
    400000 (beyond 327360: truncated with its size, the other one whole)."""
    pol = _policy("vk-args-twobufs", f"""  uprobes:
  - path: "{bufs_target}"
    symbols: ["vigil_two_bufs"]
    args:
    - {{index: 0, type: char_buf, sizeArgIndex: 2, maxData: true}}
    - {{index: 1, type: size_t}}
    - {{index: 2, type: char_buf, sizeArgIndex: 4, maxData: true}}
    - {{index: 3, type: size_t}}
""")
    with env.policy(pol):
        first, _ = _run(env, [bufs_target, "10000", "70000"])
        second, _ = _run(env, [bufs_target, "5000", "400000"])
    assert len(first) == 1 and len(second) == 1
    a = first[0]["args"]
    assert base64.b64decode(a[0]["bytes_arg"]) == _letters(10000)
    assert a[1] == {"size_arg": "10000"}
    assert base64.b64decode(a[2]["bytes_arg"]) == _digits(70000)
    assert a[3] == {"size_arg": "70000"}
    b = second[0]["args"]
    assert base64.b64decode(b[0]["bytes_arg"]) == _letters(5000)
    trunc = b[2]["truncated_bytes_arg"]
    assert base64.b64decode(trunc["bytes_arg"]) == _digits(327360)
    assert trunc["orig_size"] == "400000"


def test_return_uprobe_pt_regs_are_the_calls(env: Env, uprobe_target: str) -> None:  # noqa: F811
    """return: true with data from pt_regs: edi and rsi as vigil_target(n, s) got them
    (read by the entry uprobe), with the returned n + s[0]."""
    pol = _policy("vk-args-uretregs", f"""  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_target"]
    return: true
    returnArg: {{index: 0, type: int}}
    data:
    - {{index: 0, type: int, source: pt_regs, resolve: edi, label: n}}
    - {{index: 1, type: string, source: pt_regs, resolve: rsi, label: s}}
""")
    with env.policy(pol):
        evs, _ = _run(env, [uprobe_target, "a", "bc"])
    # a uprobe's return value renders as its args (process_uprobe has no return field)
    assert [(e["data"], e["args"]) for e in evs] == [
        ([{"int_arg": n, "label": "n"}, {"string_arg": s, "label": "s"}],
         [{"int_arg": n + ord(s[0])}]) for n, s in ((10, "a"), (20, "bc"))]


def _connect(port: int) -> None:
    """connect(2) of a UDP socket to 127.0.0.1: nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))


PORT = 0x1234  # sin_port holds it in network byte order: read as a u16, 0x3412


def test_sys_enter_connect_resolves_the_user_sockaddr(env: Env) -> None:
    pol = _policy("vk-args-tpconnect", f"""  tracepoints:
  - subsystem: syscalls
    event: sys_enter_connect
    args:
    - {{index: 6, type: uint16, resolve: sa_family}}
    - {{index: 6, type: uint16, btfType: sockaddr_in, resolve: sin_port}}
    selectors:
    - matchPIDs:
      - {{operator: In, values: [{os.getpid()}]}}
      matchArgs:
      - {{index: 1, operator: Equal, values: ["{0x3412}"]}}
""")
    with env.policy(pol):
        evs = env.run(lambda: (_connect(PORT), _connect(PORT + 1)), {os.getpid()})
    assert [_body(e)["args"] for e in evs] == [[{"uint_arg": socket.AF_INET},
                                                {"uint_arg": 0x3412}]]


def test_syscall_hook_resolves_the_user_sockaddr(env: Env) -> None:
    pol = _policy("vk-args-sysconnect", f"""  kprobes:
  - call: sys_connect
    syscall: true
    args:
    - {{index: 1, type: uint16, resolve: sa_family}}
    - {{index: 1, type: uint16, btfType: sockaddr_in, resolve: sin_port}}
    - {{index: 1, type: sockaddr}}
    selectors:
    - matchPIDs:
      - {{operator: In, values: [{os.getpid()}]}}
""")
    with env.policy(pol):
        evs = env.run(lambda: _connect(PORT), {os.getpid()})
    (args,) = [_body(e)["args"] for e in evs]
    assert args[:2] == [{"uint_arg": socket.AF_INET}, {"uint_arg": 0x3412}]
    assert args[2]["sockaddr_arg"]["port"] == PORT


def test_max_data_on_char_iovec_is_ignored(env: Env) -> None:
    """writev(2) of 6000 bytes with maxData on its char_iovec: accepted, and the iovecs'
    first 4096 bytes are read, as without it (Tetragon documents maxData for char_buf
    data only)."""
    pol = _policy("vk-args-iovec", f"""  kprobes:
  - call: sys_writev
    syscall: true
    args:
    - {{index: 1, type: char_iovec, sizeArgIndex: 3, maxData: true}}
    - {{index: 2, type: uint64}}
    selectors:
    - matchPIDs:
      - {{operator: In, values: [{os.getpid()}]}}
""")
    data = [_letters(3000), _digits(3000)]
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        with env.policy(pol):
            evs = env.run(lambda: os.writev(fd, data), {os.getpid()})
    finally:
        os.close(fd)
    (args,) = [_body(e)["args"] for e in evs]
    trunc = args[0]["truncated_bytes_arg"]
    assert base64.b64decode(trunc["bytes_arg"]) == b"".join(data)[:4096]
    assert trunc["orig_size"] == "6000" and args[1] == {"size_arg": "2"}
