"""``data`` where it needs a kprobe, or the syscall function, in the real kernel.

- a syscall hook with ``pt_regs`` data: as in Tetragon, the registers are those of a
  kprobe on ``__x64_sys_X`` (``di``: the address of the caller's saved registers, on the
  kernel stack), so the hook runs there, the syscall's arguments read from the saved
  registers; with ``return: true`` the kretprobe adds the return value. The same for a
  syscall list. Without kprobes (this host), the policy is refused naming them;
- a list of kernel functions with ``pt_regs`` and ``current_task`` data and
  ``matchData`` (kprobe.multi or one kprobe per function);
- Override on a syscall function (fmod_ret, where the kernel allows it) with
  ``current_task`` data and ``matchData``: the matching call fails, the others run.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lane import need
from tests.kernel.test_kprobes import policy as _policy
from tests.kernel.test_policies import Env, _body
from tests.kernel.test_sources_more import _events as _kind_events
from vigil.errors import FeatureNotSupported



def _kernel_address(v: int) -> bool:
    """x86_64 kernel half (4- or 5-level paging), 8-byte aligned: where the saved
    registers the syscall function takes live (the top of the task's kernel stack)."""
    return v >= 1 << 63 and v % 8 == 0


def _events(env: Env, trigger: Any) -> list[dict[str, Any]]:
    return _kind_events(env, trigger, "process_kprobe")


def _openat_regs(path: Path, ret: bool) -> str:
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
    - index: 2
      type: int
    data:
    - index: 0
      type: uint64
      source: pt_regs
      resolve: rdi
      label: regs
    - index: 1
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{path}"]
      matchData:
      - index: 1
        operator: Equal
        values: ["{os.getpid()}"]
"""


def _has_kprobes() -> bool:
    from vigil.bpf import features as F
    return F.probe("kprobe").ok


def test_syscall_pt_regs_refused_without_kprobes(env: Env, tmp_path: Path) -> None:
    """Where the kernel has no kprobes: refused naming them, never as unsupported."""
    if _has_kprobes():
        pytest.skip("this kernel has kprobes (the hook loads: see the tests below)")
    with pytest.raises(FeatureNotSupported, match=r"spec.kprobes\[0\].data\[0\].source: "
                       r"pt_regs on a syscall hook: .*kprobes are not available") as err:
        env.manager.add(_policy("vk-data-sysregs", _openat_regs(tmp_path / "f", False)),
                        source="test")
    assert "version" not in str(err.value)
    assert [p.name for p in env.manager.list()] == []


@pytest.mark.parametrize("ret", [False, True], ids=["kprobe", "kprobe+kretprobe"])
def test_syscall_pt_regs_data(env: Env, tmp_path: Path, ret: bool) -> None:
    need("kprobe")
    if ret:
        need("kretprobe")
    f = tmp_path / "vk-data-regs"
    f.write_bytes(b"x")
    fds: list[int] = []

    def trigger() -> None:
        fds.append(os.open(f, os.O_RDONLY | os.O_CLOEXEC))
        os.close(fds[0])
        # another process's open: matchData (tgid) drops it
        subprocess.run(["cat", str(f)], check=True, timeout=10, stdout=subprocess.DEVNULL)
    with env.policy(_policy("vk-data-sysregs", _openat_regs(f, ret))) as info:
        assert "__x64_sys_openat" in info.info and "kprobe" in info.info, info.info
        assert "pt_regs data" in info.info, info.info
        evs = _events(env, trigger)
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["process"]["pid"] == os.getpid()
    assert b["function_name"] == "__x64_sys_openat"
    # the syscall's arguments, from the saved registers the syscall function takes
    assert b["args"] == [{"string_arg": str(f)},
                         {"int_arg": os.O_RDONLY | os.O_CLOEXEC}], b["args"]
    regs, tgid = b["data"]
    assert regs["label"] == "regs" and _kernel_address(int(regs["size_arg"])), regs
    assert tgid == {"int_arg": os.getpid(), "label": "tgid"}
    if ret:
        assert b["return"]["int_arg"] == fds[0]


def test_syscall_list_pt_regs_data(env: Env) -> None:
    need("kprobe")
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
      type: uint64
      source: pt_regs
      resolve: rdi
    - index: 1
      type: int
      source: current_task
      resolve: tgid
    selectors:
    - matchData:
      - index: 1
        operator: Equal
        values: ["{os.getpid()}"]
"""

    def trigger() -> None:
        fd = os.dup(0)  # fcntl(F_DUPFD_CLOEXEC): not in the list
        os.dup2(fd, fd + 1)
        os.close(fd + 1)
        os.close(fd)
        subprocess.run(["sh", "-c", "exec 7>&1"], check=True, timeout=10)  # another process
    with env.policy(_policy("vk-data-listregs", body)) as info:
        assert "syscall functions: pt_regs data" in info.info, info.info
        evs = _events(env, trigger)
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["function_name"] == "__x64_sys_dup2"
    assert b["args"][0]["int_arg"] >= 0
    assert _kernel_address(int(b["data"][0]["size_arg"])), b["data"]
    assert b["data"][1] == {"int_arg": os.getpid()}


def test_function_list_data(env: Env, tmp_path: Path) -> None:
    """fd_install(unsigned int fd, struct file *file): edi is the new descriptor."""
    need("kprobe")
    body = f"""
  lists:
  - name: fds
    values: ["fd_install", "security_file_open"]
  kprobes:
  - call: "list:fds"
    syscall: false
    data:
    - index: 0
      type: int
      source: pt_regs
      resolve: edi
      label: edi
    - index: 1
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    selectors:
    - matchData:
      - index: 1
        operator: Equal
        values: ["{os.getpid()}"]
"""
    f = tmp_path / "vk-data-fnlist"
    f.write_bytes(b"x")
    fds: list[int] = []

    def trigger() -> None:
        fds.append(os.open(f, os.O_RDONLY))
        os.close(fds[0])
        subprocess.run(["cat", str(f)], check=True, timeout=10, stdout=subprocess.DEVNULL)
    with env.policy(_policy("vk-data-fnlist", body)) as info:
        assert "list fds" in info.info, info.info
        evs = _events(env, trigger)
    bodies = [_body(e) for e in evs]
    assert bodies and all(b["data"][1] == {"int_arg": os.getpid(), "label": "tgid"}
                          and b["process"]["pid"] == os.getpid() for b in bodies), bodies
    assert {"int_arg": fds[0], "label": "edi"} in [
        b["data"][0] for b in bodies if b["function_name"] == "fd_install"], bodies
    assert "security_file_open" in {b["function_name"] for b in bodies}, bodies
    assert all("args" not in b for b in bodies)


def test_syscall_override_current_task_data(env: Env, tmp_path: Path) -> None:
    """Override by fmod_ret on __x64_sys_openat with current_task data: only this
    process's open of the file fails (matchData on its tgid); a child's runs."""
    need("fmod_ret_syscall")
    f = tmp_path / "vk-data-override"
    f.write_bytes(b"x")
    body = f"""
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    data:
    - index: 0
      type: int
      source: current_task
      resolve: tgid
      label: tgid
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{f}"]
      matchData:
      - index: 0
        operator: Equal
        values: ["{os.getpid()}"]
      matchActions:
      - action: Override
        argError: -1
"""
    errs: list[int] = []
    child: list[subprocess.CompletedProcess[bytes]] = []

    def trigger() -> None:
        try:
            os.close(os.open(f, os.O_RDONLY))
            errs.append(0)
        except OSError as err:
            errs.append(err.errno or 0)
        child.append(subprocess.run(["cat", str(f)], timeout=10, capture_output=True))
    with env.policy(_policy("vk-data-override", body)) as info:
        assert info.info.startswith("fmod_ret __x64_sys_openat"), info.info
        evs = _events(env, trigger)
    assert errs == [errno.EPERM]
    assert child[0].returncode == 0 and child[0].stdout == b"x"
    assert len(evs) == 1, evs
    b = _body(evs[0])
    assert b["action"] == "KPROBE_ACTION_OVERRIDE"
    assert b["args"] == [{"string_arg": str(f)}]
    assert b["data"] == [{"int_arg": os.getpid(), "label": "tgid"}]
