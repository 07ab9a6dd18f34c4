"""Function lists, data sources and BTF-typed tracepoint arguments in the real kernel.

``call: "list:NAME"``: syscall lists run on ``raw_syscalls`` tracepoints on every kernel
(this host too); lists of kernel functions need kprobe.multi or kprobes (the kernel lane:
skipped here with the probe's reason). Each test asserts the exact events, each naming
the function that fired, and that calls outside the list produce none. Then a hook's
``data`` (``current_task``, ``pt_regs``) with ``matchData`` (kernel lane), and ``resolve``
/ ``btfType`` on raw tracepoint arguments (here).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lane import need
from tests.kernel.test_kprobes import ModeEnv, mode
from tests.kernel.test_policies import _body

ME = {os.getpid()}
LIBC = ctypes.CDLL(None, use_errno=True)  # os.dup() is fcntl(F_DUPFD_CLOEXEC), not dup()


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    e = ModeEnv()
    yield e
    e.close()


def _policy(name: str, body: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
{body}"""


# ---- syscall lists: raw_syscalls tracepoints, here and everywhere ------------------------

DUPS = f"""
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  kprobes:
  - call: "list:dups"
    args:
    - index: 0
      type: int
      label: fd
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
"""


def test_syscall_list_names_each_syscall(env: ModeEnv) -> None:
    with env.policy(_policy("vk-list-dups", DUPS)) as info:
        assert "raw_syscalls/sys_enter for the 2 syscalls of list dups" in info.info

        def trigger() -> None:
            fd = LIBC.dup(1)
            LIBC.dup2(fd, fd)  # the same fd: dup2 returns it without closing anything
            os.getppid()     # not in the list
            os.close(fd)
        evs = env.run_all(trigger, ME)
    got = [(_body(e)["function_name"], _body(e)["args"]) for e in evs]
    assert got[0] == ("__x64_sys_dup", [{"int_arg": 1, "label": "fd"}])
    assert got[1][0] == "__x64_sys_dup2" and len(got) == 2, got
    assert all(_body(e)["policy_name"] == "vk-list-dups" for e in evs)


def test_syscall_list_return_value(env: ModeEnv) -> None:
    body = DUPS.replace('    args:\n', '    return: true\n    returnArg:\n      index: 0\n'
                        '      type: int\n    args:\n', 1)
    with env.policy(_policy("vk-list-dups-ret", body)) as info:
        assert "sys_enter + sys_exit" in info.info

        def trigger() -> None:
            fd = LIBC.dup(1)
            os.close(fd)
            trigger.fd = fd  # type: ignore[attr-defined]
        evs = env.run_all(trigger, ME)
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["function_name"] == "__x64_sys_dup"
    assert b["return"] == {"int_arg": trigger.fd}  # type: ignore[attr-defined]
    assert b["args"] == [{"int_arg": 1, "label": "fd"}]


def test_generated_syscalls_follow_one_binary(env: ModeEnv, tmp_path: Path) -> None:
    """Tetragon's list-syscalls-generated example, with a binary of our own: every
    syscall of that binary, none of anybody else's."""
    exe = Path("/tmp") / f"vk-list-true-{os.getpid()}"
    shutil.copy("/bin/true", exe)
    body = f"""
  lists:
  - name: all-syscalls
    type: generated_syscalls
  kprobes:
  - call: "list:all-syscalls"
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{exe}"]
"""
    try:
        with env.policy(_policy("vk-list-all", body)):
            evs = env.run_all(lambda: subprocess.run([str(exe)], check=True, timeout=10))
    finally:
        exe.unlink()
    names = [_body(e)["function_name"] for e in evs]
    assert names and names[-1] == "__x64_sys_exit_group", names
    assert "__x64_sys_execve" not in names  # it ran in the parent's binary
    assert {_body(e)["process"]["binary"] for e in evs} == {str(exe)}
    assert len({_body(e)["process"]["pid"] for e in evs}) == 1


# ---- lists of kernel functions: kprobe.multi, or one kprobe per function ----------------

@pytest.fixture
def kdir() -> Iterator[Path]:
    """A fresh tmpfs (see tests/kernel/test_kprobes.py's tdir)."""
    d = Path("/tmp") / f"vkl-{os.getpid()}"
    d.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "vkl", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _file_list(kdir: Path, lists: str, name: str = "fns") -> str:
    return f"""
  lists:
{lists}
  kprobes:
  - call: "list:{name}"
    args:
    - index: 0
      type: file
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Prefix
        values: ["{kdir}/"]
"""


PLAIN = """  - name: fns
    values: ["security_file_open", "security_file_permission"]"""
FTRACE = """  - name: fns
    type: generated_ftrace
    pattern: "^security_file_(open|permission)$\""""


def _open_and_read(path: Path) -> None:
    with open(path, "rb") as f:
        f.read()


@pytest.mark.parametrize("how", ["kprobe_multi", "kprobe"])
@pytest.mark.parametrize("lists", [PLAIN, FTRACE], ids=["values", "generated_ftrace"])
def test_function_list(env: ModeEnv, kdir: Path, how: str, lists: str) -> None:
    need("kprobe")
    f = kdir / "data"
    f.write_bytes(b"x" * 10)
    with mode(env, how), env.policy(_policy("vk-list-fns", _file_list(kdir, lists))) as info:
        want = ("kprobe.multi on the 2 functions of list fns" if how == "kprobe_multi" else
                "one kprobe per function of list fns (2")
        assert want in info.info, info.info
        evs = env.run_all(lambda: _open_and_read(f), ME)
    got = [(_body(e)["function_name"], _body(e)["args"][0]["file_arg"]["path"]) for e in evs]
    assert got[0] == ("security_file_open", str(f)), got
    assert ("security_file_permission", str(f)) in got[1:], got
    assert {g[0] for g in got} == {"security_file_open", "security_file_permission"}


# ---- data sources and matchData (kernel-function hooks) ---------------------------------

def _data_policy(kdir: Path, regs: bool) -> str:
    reg = """
    - index: 2
      type: uint64
      source: pt_regs
      resolve: rdi
      label: rdi""" if regs else ""
    return f"""
  kprobes:
  - call: security_file_open
    args:
    - index: 0
      type: file
    data:
    - index: 0
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    - index: 1
      type: int
      source: current_task
      resolve: real_parent.tgid
      label: ppid{reg}
    selectors:
    - matchData:
      - index: 0
        operator: Equal
        values: ["{os.getpid()}"]
      matchArgs:
      - index: 0
        operator: Prefix
        values: ["{kdir}/"]
"""


@pytest.mark.parametrize("how,regs", [("kprobe", True), ("fentry", False)])
def test_data_sources_and_match_data(env: ModeEnv, kdir: Path, how: str, regs: bool) -> None:
    need("kprobe" if how == "kprobe" else "fentry")
    f = kdir / "data"
    f.write_bytes(b"x")
    with mode(env, how), env.policy(_policy("vk-data", _data_policy(kdir, regs))) as info:
        assert info.info.startswith(f"{how} security_file_open"), info.info
        evs = env.run_all(lambda: _open_and_read(f))
        # another process opening the same file: matchData (tgid) filters it out
        other = env.run_all(lambda: subprocess.run(["cat", str(f)], check=True, timeout=10,
                                                   stdout=subprocess.DEVNULL))
    assert other == []
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["args"] == [{"file_arg": {"path": str(f)}}]
    data = b["data"]
    assert data[:2] == [{"int_arg": os.getpid(), "label": "tgid"},
                        {"int_arg": os.getppid(), "label": "ppid"}], data
    if regs:  # security_file_open(struct file *): rdi holds the file pointer
        assert data[2]["label"] == "rdi" and int(data[2]["size_arg"]) >= 0xff00000000000000
    assert list(b)[-1] == "data"


# ---- resolve on BTF-typed (raw) tracepoint arguments -------------------------------------

def test_raw_tracepoint_resolve(env: ModeEnv, tmp_path: Path) -> None:
    """sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm):
    fields reached from its arguments with the types of its BTF prototype (or btfType)."""
    body = """
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 0
      type: int
      resolve: real_parent.tgid
      label: ppid
    - index: 2
      type: string
      resolve: filename
    - index: 0
      type: int
      btfType: task_struct
      resolve: tgid
    selectors:
    - matchArgs:
      - index: 2
        operator: Postfix
        values: ["/vk-rawtp-true"]
"""
    exe = tmp_path / "vk-rawtp-true"
    shutil.copy("/bin/true", exe)
    procs: list[int] = []

    def trigger() -> None:
        p = subprocess.Popen([str(exe)])
        p.wait(timeout=10)
        procs.append(p.pid)
    with env.policy(_policy("vk-rawtp-resolve", body)):
        env.pipe.handle(env.base.ring.drain())
        trigger()
        import time
        time.sleep(0.3)
        evs = [e for e in env.pipe.handle(env.base.ring.drain())
               if next(iter(e)) == "process_tracepoint"]
    assert len(evs) == 1, evs
    assert _body(evs[0])["args"] == [{"int_arg": os.getpid(), "label": "ppid"},
                                      {"string_arg": str(exe)},
                                      {"int_arg": procs[0]}]
