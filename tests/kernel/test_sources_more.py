"""Data sources on syscall hooks and uprobes, and ``resolve`` / ``btfType`` on classic
tracepoint fields, in the real kernel.

- a syscall hook (``syscalls/sys_enter_X``, with ``sys_exit_X`` for a return hook) and a
  syscall list (``raw_syscalls``) with ``data`` from ``current_task`` and ``matchData`` on
  it: real processes, and the ones the filter must drop;
- a uprobe with ``data`` from its ``pt_regs`` (an integer and a string register) and
  ``current_task``, ``matchData`` on a register;
- ``resolve`` through a tracepoint's pointer field (``mmap/exit_mmap``'s ``struct
  mm_struct *mm``, typed by ``trace_event_raw_exit_mmap``; ``mmap_lock_start_locking``,
  whose record struct is its class's), and ``btfType`` on the same field.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env, _body, uprobe_target  # noqa: F401 (a fixture)

LIBC = ctypes.CDLL(None, use_errno=True)  # os.dup() is fcntl(F_DUPFD_CLOEXEC), not dup()


def _policy(name: str, body: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
{body}"""


def _events(env: Env, trigger: Any, kind: str) -> list[dict[str, Any]]:
    env.pipe.handle(env.base.ring.drain())
    trigger()
    time.sleep(0.3)
    return [e for e in env.pipe.handle(env.base.ring.drain()) if next(iter(e)) == kind]


# ---- data on syscall hooks: current_task ------------------------------------------------

def _syscall_data(path: Path, ret: bool) -> str:
    extra = """
    return: true
    returnArg:
      index: 0
      type: int""" if ret else ""
    return f"""
  kprobes:
  - call: sys_openat
    syscall: true{extra}
    args:
    - index: 1
      type: string
    data:
    - index: 0
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    - index: 1
      type: int
      source: current_task
      resolve: pid
      label: tid
    - index: 2
      type: int
      source: current_task
      resolve: real_parent.tgid
      label: ppid
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{path}"]
      matchData:
      - index: 2
        operator: Equal
        values: ["{os.getpid()}"]
"""


@pytest.mark.parametrize("ret", [False, True], ids=["enter", "enter+exit"])
def test_syscall_current_task_data_and_match_data(env: Env, tmp_path: Path, ret: bool) -> None:
    f = tmp_path / "vk-src-data"
    f.write_bytes(b"x")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        # a child of this process (matchData: its parent is us), then a grandchild (its
        # parent is sh): only the first opens pass
        p = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL)
        p.wait(timeout=10)
        procs.append(p)
        subprocess.run(["sh", "-c", f"cat {f}; true"], check=True, timeout=10,
                       stdout=subprocess.DEVNULL)
    with env.policy(_policy("vk-src-sysdata", _syscall_data(f, ret))) as info:
        assert "syscalls/sys_enter_openat" in info.info, info.info
        evs = _events(env, trigger, "process_kprobe")
    assert len(evs) == 1, evs
    b = _body(evs[0])
    pid = procs[0].pid
    assert b["process"]["pid"] == pid
    assert b["function_name"] == "__x64_sys_openat"
    assert b["args"] == [{"string_arg": str(f)}]
    assert b["data"] == [{"int_arg": pid, "label": "tgid"}, {"int_arg": pid, "label": "tid"},
                         {"int_arg": os.getpid(), "label": "ppid"}], b["data"]
    if ret:
        assert b["return"]["int_arg"] >= 0
    assert list(b)[-1] == "data"


def test_syscall_list_current_task_data(env: Env) -> None:
    body = f"""
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  kprobes:
  - call: "list:dups"
    args:
    - index: 0
      type: int
    data:
    - index: 0
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    selectors:
    - matchData:
      - index: 0
        operator: Equal
        values: ["{os.getpid()}"]
"""

    def trigger() -> None:
        fd = LIBC.dup(0)
        os.close(fd)
        # another process's dup: matchData drops it
        subprocess.run(["sh", "-c", "exec 7>&1"], check=True, timeout=10)
    with env.policy(_policy("vk-src-listdata", body)):
        evs = _events(env, trigger, "process_kprobe")
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["function_name"] == "__x64_sys_dup"
    assert b["args"] == [{"int_arg": 0}]
    assert b["data"] == [{"int_arg": os.getpid(), "label": "tgid"}]


# ---- data on uprobes: the uprobe's registers and the task --------------------------------

def test_uprobe_pt_regs_and_current_task_data(env: Env, uprobe_target: str) -> None:  # noqa: F811
    body = f"""
  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_target"]
    data:
    - index: 0
      type: int
      source: pt_regs
      resolve: edi
      label: n
    - index: 1
      type: string
      source: pt_regs
      resolve: rsi
      label: s
    - index: 2
      type: int
      source: current_task
      resolve: tgid
    selectors:
    - matchData:
      - index: 0
        operator: NotEqual
        values: ["20"]
"""
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([uprobe_target, "a", "bc", "d e"]))
        procs[0].wait(timeout=10)
    with env.policy(_policy("vk-src-updata", body)):
        evs = _events(env, trigger, "process_uprobe")
    pid = procs[0].pid
    # vigil_target(10, "a"), (20, "bc"): dropped by matchData, (30, "d e")
    assert [_body(e)["data"] for e in evs] == [
        [{"int_arg": n, "label": "n"}, {"string_arg": s, "label": "s"}, {"int_arg": pid}]
        for n, s in ((10, "a"), (30, "d e"))]
    assert all(_body(e)["process"]["pid"] == pid and "args" not in _body(e) for e in evs)


# ---- resolve / btfType on classic tracepoint fields --------------------------------------

def _exe(tmp_path: Path, name: str) -> Path:
    exe = tmp_path / name
    shutil.copy("/bin/true", exe)
    return exe


def test_tracepoint_field_resolve(env: Env, tmp_path: Path) -> None:
    """exit_mmap(struct mm_struct *mm, ...): when a process's last mm user goes, the name of
    its executable and its inode number, through the mm pointer in the record."""
    exe = _exe(tmp_path, "vk-tpres-true")
    body = f"""
  tracepoints:
  - subsystem: mmap
    event: exit_mmap
    args:
    - index: 4
      type: string
      resolve: exe_file.f_path.dentry.d_name.name
      label: exe
    - index: 4
      type: uint64
      btfType: mm_struct
      resolve: exe_file.f_inode.i_ino
      label: ino
    selectors:
    - matchArgs:
      - index: 4
        operator: Equal
        values: ["{exe.name}"]
"""
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([str(exe)]))
        procs[0].wait(timeout=10)
        subprocess.run(["/bin/true"], check=True, timeout=10)  # another name: dropped
    with env.policy(_policy("vk-src-tpres", body)) as info:
        assert info.info.startswith("tracepoint mmap/exit_mmap"), info.info
        evs = _events(env, trigger, "process_tracepoint")
    assert len(evs) == 1, evs
    b = _body(evs[0])
    pid = procs[0].pid
    assert b["process"]["pid"] == pid
    assert b["args"] == [{"string_arg": exe.name, "label": "exe"},
                         {"size_arg": str(exe.stat().st_ino), "label": "ino"}], b["args"]


def test_tracepoint_field_resolve_class_struct(env: Env, tmp_path: Path) -> None:
    """mmap_lock_start_locking's record is struct trace_event_raw_mmap_lock (its class's):
    the field's type comes from the format's `struct mm_struct *`."""
    exe = _exe(tmp_path, "vk-tplock-true")
    body = f"""
  tracepoints:
  - subsystem: mmap_lock
    event: mmap_lock_start_locking
    args:
    - index: 4
      type: string
      resolve: exe_file.f_path.dentry.d_name.name
    selectors:
    - matchArgs:
      - index: 4
        operator: Equal
        values: ["{exe.name}"]
"""
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([str(exe)]))
        procs[0].wait(timeout=10)
    with env.policy(_policy("vk-src-tplock", body)):
        evs = _events(env, trigger, "process_tracepoint")
    assert evs, "no mmap_lock_start_locking event for the new process"
    assert {_body(e)["process"]["pid"] for e in evs} == {procs[0].pid}
    assert all(_body(e)["args"] == [{"string_arg": exe.name}] for e in evs)
