"""Exec / clone / exit records -> events through the real Pipeline (pure): how processes
link and what they are called, as Tetragon reports the same process histories.

Records are packed with the generated ABI layouts, as the base sensor writes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from vigil.abi import _generated as abi
from vigil.events.decode import executed_binary
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.process import procfs
from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import ExecFlag, ProcessInfo

BOOT_WALL = 1_700_000_000_000_000_000
NODE = "n"


def _pack(st: Any, ix: dict[str, int], fields: dict[str, int]) -> bytearray:
    vals: list[Any] = list(st.unpack(bytes(st.size)))
    for k, v in fields.items():
        vals[ix[k]] = v
    return bytearray(st.pack(*vals))


def exec_rec(pid: int, ppid: int, ktime: int, filename: bytes, argv: list[bytes],
             cwd: bytes = b"/tmp") -> bytes:
    tail = filename + cwd + b"\0".join(argv) + b"\0"
    args_len = len(tail) - len(filename) - len(cwd)
    head = _pack(abi.VG_EXEC_MSG, abi.VG_EXEC_MSG_INDEX, {
        "hdr.op": abi.MsgOp.EXEC, "hdr.ktime": ktime, "pid": pid, "tid": pid, "ppid": ppid,
        "flags": abi.ExecFlag.EXECVE, "auid": 1000, "path_len": len(filename),
        "cwd_len": len(cwd), "args_len": args_len, "args_size": args_len})
    rec = bytes(head) + tail
    return rec[:4] + len(rec).to_bytes(4, "little") + rec[8:]


def clone_rec(pid: int, ppid: int, ktime: int) -> bytes:
    return bytes(_pack(abi.VG_CLONE_MSG, abi.VG_CLONE_MSG_INDEX, {
        "hdr.op": abi.MsgOp.CLONE, "hdr.size": abi.VG_CLONE_MSG.size, "hdr.ktime": ktime,
        "pid": pid, "tid": pid, "ppid": ppid, "start_ktime": ktime}))


def exit_rec(pid: int, ktime: int, code: int = 0) -> bytes:
    return bytes(_pack(abi.VG_EXIT_MSG, abi.VG_EXIT_MSG_INDEX, {
        "hdr.op": abi.MsgOp.EXIT, "hdr.size": abi.VG_EXIT_MSG.size, "hdr.ktime": ktime,
        "pid": pid, "tid": pid, "exit_code": code}))


@pytest.fixture
def pipe() -> Pipeline:
    p = Pipeline(ProcessCache(), EventOptions(node_name=NODE), lambda: BOOT_WALL)
    # the test's shell, as the /proc scan finds it
    shell = ProcessInfo(exec_id=exec_id(NODE, 10, 50), pid=50, tid=50, ktime=10,
                        start_time_ns=BOOT_WALL + 10, binary="/usr/bin/bash",
                        flags=int(ExecFlag.PROCFS))
    p.bootstrap([shell])
    return p


@pytest.mark.parametrize(("raw", "cwd", "binary"), [
    (b"/bin/sh", "/tmp", "/bin/sh"),                 # as executed: the symlink is kept
    (b"./run.sh", "/home/u", "/home/u/run.sh"),      # relative: joined with the cwd
    (b"../bin/x", "/usr/lib", "/usr/bin/x"),         # ... and cleaned
    (b"x", "/", "/x"),
    (b"", "/tmp", ""),                               # unreadable in the kernel
])
def test_executed_binary(raw: bytes, cwd: str, binary: str) -> None:
    assert executed_binary(raw, cwd) == binary


def test_binary_is_the_executed_name_made_absolute(pipe: Pipeline) -> None:
    [a, b] = pipe.handle([exec_rec(60, 50, 100, b"/bin/sh", [b"sh", b"-c", b"x"]),
                          exec_rec(61, 50, 200, b"./tool", [b"./tool"], cwd=b"/opt/t")])
    assert a["process_exec"]["process"]["binary"] == "/bin/sh"
    assert b["process_exec"]["process"]["binary"] == "/opt/t/tool"


def test_exec_after_fork_has_the_forking_process_as_parent(pipe: Pipeline) -> None:
    evs = pipe.handle([clone_rec(60, 50, 100),
                       exec_rec(60, 50, 200, b"/bin/sh", [b"sh", b"-c", b"exec /bin/echo hi"])])
    [ev] = evs
    body = ev["process_exec"]
    assert body["process"]["flags"] == "execve clone"
    assert body["parent"]["pid"] == 50 and body["parent"]["binary"] == "/usr/bin/bash"


def test_exec_without_fork_has_the_previous_program_as_parent(pipe: Pipeline) -> None:
    """``sh -c 'exec /bin/echo hi'``, ``env /bin/true``: the pid's previous program is
    the parent (Tetragon links to the exec being replaced), not the forking shell."""
    evs = pipe.handle([clone_rec(60, 50, 100),
                       exec_rec(60, 50, 200, b"/usr/bin/env", [b"env", b"/bin/true"]),
                       exec_rec(60, 50, 300, b"/bin/true", [b"/bin/true"]),
                       exit_rec(60, 400)])
    env_ev, true_ev, exit_ev = evs
    env_p = env_ev["process_exec"]["process"]
    true_body = true_ev["process_exec"]
    assert true_body["process"]["flags"] == "execve"        # no fork in between
    assert true_body["process"]["parent_exec_id"] == env_p["exec_id"]
    assert true_body["parent"]["binary"] == "/usr/bin/env"
    assert exit_ev["process_exit"]["parent"]["exec_id"] == env_p["exec_id"]


def test_exec_of_an_unknown_pid_links_to_the_real_parent(pipe: Pipeline) -> None:
    [ev] = pipe.handle([exec_rec(70, 50, 100, b"/bin/true", [b"true"])])
    assert ev["process_exec"]["parent"]["pid"] == 50
    assert ev["process_exec"]["process"]["flags"] == "execve"


def test_fork_only_child_exits_with_tetragons_clone_flags(pipe: Pipeline) -> None:
    """A subshell that exits without exec: Tetragon's clone entry, flags "execve" (its
    BPF marks clones with the bit that decodes so) and refcnt 1."""
    [ev] = pipe.handle([clone_rec(60, 50, 100), exit_rec(60, 200, 3 << 8)])
    body = ev["process_exit"]
    proc = body["process"]
    assert proc["flags"] == "execve"
    assert proc["refcnt"] == 1
    assert proc["binary"] == "/usr/bin/bash" and proc["pid"] == 60
    assert list(proc).index("refcnt") == list(proc).index("parent_exec_id") + 1
    assert body["parent"]["pid"] == 50 and body["status"] == 3
    # the fork child's own child links to it; its dict shows the same clone entry
    [ex] = pipe.handle([clone_rec(61, 50, 300), clone_rec(62, 61, 310),
                        exec_rec(62, 61, 320, b"/bin/true", [b"true"])])
    assert ex["process_exec"]["parent"]["refcnt"] == 1
    assert ex["process_exec"]["parent"]["flags"] == "execve"
    assert "refcnt" not in ex["process_exec"]["process"]


def test_bootstrap_announces_kernel_and_not_kernel_threads(tmp_path: Any) -> None:
    pipe = Pipeline(ProcessCache(), EventOptions(node_name=NODE), lambda: BOOT_WALL)
    kernel = procfs.kernel_process(NODE, BOOT_WALL)
    kthreadd = ProcessInfo(exec_id=exec_id(NODE, 5, 2), pid=2, tid=2, ktime=5,
                           start_time_ns=BOOT_WALL + 5, binary="[kthreadd]",
                           flags=int(ExecFlag.PROCFS), parent_exec_id=kernel.exec_id,
                           kthread=True)
    init = ProcessInfo(exec_id=exec_id(NODE, 5, 1), pid=1, tid=1, ktime=5,
                       start_time_ns=BOOT_WALL + 5, binary="/sbin/init",
                       flags=int(ExecFlag.PROCFS), parent_exec_id=kernel.exec_id)
    evs = pipe.bootstrap([kernel, init, kthreadd])
    assert [e["process_exec"]["process"]["pid"] for e in evs] == [0, 1]
    assert evs[0]["process_exec"]["process"]["binary"] == "<kernel>"
    assert evs[1]["process_exec"]["parent"]["binary"] == "<kernel>"
    assert pipe.cache.current(2) is kthreadd                 # cached all the same
    # a usermode helper forked by a kernel thread names it in brackets
    [ev] = pipe.handle([exec_rec(90, 2, 100, b"/sbin/modprobe", [b"modprobe", b"x"])])
    assert ev["process_exec"]["parent"]["binary"] == "[kthreadd]"


def test_kernel_threads_forked_later_are_not_announced_either() -> None:
    pipe = Pipeline(ProcessCache(), EventOptions(node_name=NODE), lambda: BOOT_WALL)
    kernel = procfs.kernel_process(NODE, BOOT_WALL)
    kthreadd = ProcessInfo(exec_id=exec_id(NODE, 5, 2), pid=2, tid=2, ktime=5,
                           start_time_ns=BOOT_WALL + 5, binary="[kthreadd]",
                           flags=int(ExecFlag.PROCFS), parent_exec_id=kernel.exec_id,
                           kthread=True)
    pipe.bootstrap([kernel, kthreadd])
    # a new kworker comes and goes: nothing exported
    assert pipe.handle([clone_rec(300, 2, 100), exit_rec(300, 200)]) == []
    assert pipe.cache.current(300).exited
    # one that becomes a usermode helper is announced from its exec on, its parent named
    # as Tetragon names kernel threads
    evs = pipe.handle([clone_rec(301, 2, 300),
                       exec_rec(301, 2, 310, b"/sbin/modprobe", [b"modprobe", b"x"]),
                       exit_rec(301, 320)])
    assert [next(iter(e)) for e in evs] == ["process_exec", "process_exit"]
    assert evs[0]["process_exec"]["parent"]["binary"] == "[kthreadd]"
    assert evs[0]["process_exec"]["process"]["flags"] == "execve clone"
