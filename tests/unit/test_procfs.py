"""Unit tests for vigil.process.procfs (fake /proc trees plus one real-/proc scan)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigil.process import procfs
from vigil.process.execid import exec_id
from vigil.process.model import Credentials, ExecFlag, Namespaces

HEX64 = "2405407a0f206e11c6d30d0bc48e873a80c461e0c668f71ca0f6b026781e9edc"
WALL0 = 1_700_000_000 * 10**9
TICK_NS = 10**9 // procfs.clk_tck()

STATUS_ROOT = """Name:\tsystemd
Umask:\t0000
State:\tS (sleeping)
Tgid:\t1
Pid:\t1
PPid:\t0
Uid:\t0\t0\t0\t0
Gid:\t0\t0\t0\t0
CapInh:\t0000000000000000
CapPrm:\t000001ffffffffff
CapEff:\t000001ffffffffff
CapBnd:\t000001ffffffffff
"""

STATUS_USER = """Name:\tbash
Uid:\t1000\t1001\t1002\t1003
Gid:\t2000\t2001\t2002\t2003
CapInh:\t0000000000000400
CapPrm:\t0000000000003000
CapEff:\t0000000000002000
"""


def stat_line(pid: int, comm: str, ppid: int, start: int, state: str = "S",
              flags: int = 4194560) -> str:
    # fields 5..21 (17 values; 9 = flags), then 22 = starttime, then a few trailing fields
    middle = [str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12
    return " ".join([f"{pid} ({comm}) {state} {ppid}", *middle, str(start), "1000", "200", "0"]) + "\n"


def make_proc(
    root: Path,
    pid: int,
    *,
    comm: str,
    ppid: int,
    start: int,
    cmdline: bytes,
    exe: str | None,
    cwd: str | None = "/",
    status: str = STATUS_ROOT,
    cgroup: str = "0::/init.scope\n",
    loginuid: str | None = "4294967295",
    ns_base: int = 4026531830,
    flags: int = 4194560,
) -> Path:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(stat_line(pid, comm, ppid, start, flags=flags))
    (d / "status").write_text(status)
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_text(cgroup)
    if loginuid is not None:
        (d / "loginuid").write_text(loginuid)
    if exe is not None:
        os.symlink(exe, d / "exe")
    if cwd is not None:
        os.symlink(cwd, d / "cwd")
    (d / "ns").mkdir()
    for i, name in enumerate(("uts", "ipc", "mnt", "pid", "pid_for_children", "net",
                              "time", "time_for_children", "cgroup", "user")):
        kind = name.removesuffix("_for_children")
        os.symlink(f"{kind}:[{ns_base + i}]", d / "ns" / name)
    return d


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").symlink_to("100")          # non-numeric entries are ignored
    (root / "meminfo").write_text("MemTotal: 1 kB\n")
    make_proc(root, 1, comm="systemd", ppid=0, start=1, cmdline=b"/sbin/init\0splash\0",
              exe="/usr/lib/systemd/systemd")
    make_proc(root, 2, comm="kthreadd", ppid=0, start=1, cmdline=b"", exe=None,
              flags=procfs.PF_KTHREAD | 0x40)
    make_proc(root, 7, comm="kworker/0:1", ppid=2, start=3, cmdline=b"", exe=None,
              cgroup="0::/\n", loginuid=None)
    make_proc(root, 100, comm="my (weird) prog) x", ppid=1, start=500,
              cmdline=b"bash\0-c\0echo hi\0\0last\0", exe="/usr/bin/bash",
              cwd="/home/u", status=STATUS_USER, loginuid="1000",
              cgroup=f"0::/system.slice/docker-{HEX64}.scope\n", ns_base=4026532000)
    make_proc(root, 200, comm="tool", ppid=100, start=600,
              cmdline=b"./tool\0caf\xc3\xa9\0bad\xff\xfe\0", exe="/tmp/tool (deleted)",
              cwd="/tmp", status=STATUS_USER, loginuid="1000")
    make_proc(root, 150, comm="orphan", ppid=999, start=550, cmdline=b"/bin/orphan\0",
              exe="/bin/orphan")
    (root / "300").mkdir()                     # vanished: directory left, files gone
    return root


def by_pid(procs):
    return {p.pid: p for p in procs}


# ------------------------------------------------------------------ pure helpers


def test_parse_stat_weird_comm() -> None:
    text = stat_line(4242, "a) (b c) ", 77, 123456)
    assert procfs.parse_stat(text) == (77, 123456)
    assert procfs.parse_stat_comm(text) == "a) (b c) "


def test_parse_stat_real_shape() -> None:
    real = ("1 (systemd) S 0 1 1 0 -1 4194560 96337 2262838 155 1212 420 290 5315 2018 20 0 1 0 "
            "27 172130304 3234 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 1 0 0 0 0 0\n")
    assert procfs.parse_stat(real) == (0, 27)


@pytest.mark.parametrize("text", ["", "12 comm S 1 2 3", "12 (x) S 1 2 3", "12 (x) S notanint " + "0 " * 30])
def test_parse_stat_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        procfs.parse_stat(text)


def test_parse_status() -> None:
    creds = procfs.parse_status(STATUS_USER)
    assert creds == Credentials(
        uid=1000, euid=1001, suid=1002, fsuid=1003,
        gid=2000, egid=2001, sgid=2002, fsgid=2003,
        cap_inheritable=0x400, cap_permitted=0x3000, cap_effective=0x2000,
    )
    root = procfs.parse_status(STATUS_ROOT)
    assert root.cap_effective == 0x1FFFFFFFFFF and root.euid == 0


def test_parse_status_missing_ids_are_invalid_not_root() -> None:
    creds = procfs.parse_status("Name:\tx\nUid:\tgarbage\n")
    assert creds.uid == creds.euid == creds.gid == 0xFFFFFFFF
    assert creds.cap_effective == 0


def test_parse_cmdline() -> None:
    assert procfs.parse_cmdline(b"") == ()
    assert procfs.parse_cmdline(b"/bin/ls\0") == ()
    assert procfs.parse_cmdline(b"ls\0-l\0\0x y\0") == ("-l", "", "x y")
    assert procfs.parse_cmdline(b"a\0b\xffc") == ("b\ufffdc",)   # no trailing NUL
    assert procfs.parse_cmdline(b"nginx: master process") == ()  # setproctitle


def test_parse_ns_link() -> None:
    assert procfs.parse_ns_link("net:[4026531840]") == 4026531840
    assert procfs.parse_ns_link("pid_for_children:[4026531836]") == 4026531836
    assert procfs.parse_ns_link("garbage") == 0
    assert procfs.parse_ns_link("net:[x]") == 0


def test_parse_loginuid() -> None:
    assert procfs.parse_loginuid("1000") == 1000
    assert procfs.parse_loginuid("4294967295") == 4294967295
    assert procfs.parse_loginuid("") == 4294967295


@pytest.mark.parametrize(
    "text, name, docker",
    [
        (f"0::/system.slice/docker-{HEX64}.scope\n", f"docker-{HEX64}.scope", HEX64[:31]),
        (f"0::/kubepods/besteffort/podabc/{HEX64}\n", HEX64, HEX64[:31]),
        ("0::/user.slice/user-1000.slice/session-4.scope\n", "session-4.scope", ""),
        ("0::/\n", "", ""),
        # hybrid host: v2 root unused, v1 controllers carry the path
        (f"12:memory:/docker/{HEX64}\n1:name=systemd:/docker/{HEX64}\n0::/\n", HEX64, HEX64[:31]),
        # v1 only
        ("4:memory:/process_api/abc\n1:cpu:/\n", "abc", ""),
        ("", "", ""),
    ],
)
def test_parse_cgroup(text: str, name: str, docker: str) -> None:
    assert procfs.parse_cgroup(text) == (name, docker)
    assert len(docker) in (0, 31)


# ------------------------------------------------------------------ fake /proc scans


def test_scan_fake_tree(fake_proc: Path) -> None:
    procs = procfs.scan(str(fake_proc), node_name="node1", boot_wall_ns=WALL0)
    got = by_pid(procs)
    assert sorted(got) == [0, 1, 2, 7, 100, 150, 200]  # 300 vanished, self/meminfo ignored

    # Tetragon's <kernel> first, then parents first: sorted by (ktime, pid)
    assert [p.pid for p in procs] == [0, 1, 2, 7, 100, 150, 200]
    keys = [(p.ktime, p.pid) for p in procs[1:]]
    assert keys == sorted(keys)

    init = got[1]
    assert init.ktime == 1 * TICK_NS
    assert init.exec_id == exec_id("node1", TICK_NS, 1)
    assert init.parent_exec_id == exec_id("node1", 1, 0) and init.ppid == 0  # <kernel>
    assert not init.kthread
    assert init.binary == "/usr/lib/systemd/systemd"
    assert init.args == ("splash",)
    assert init.cwd == "/"
    assert init.flags == ExecFlag.PROCFS | ExecFlag.ROOTCWD
    assert init.start_time_ns == WALL0 + TICK_NS
    assert init.tid == 1
    assert init.cgroup_name == "init.scope" and init.docker == ""
    assert init.auid == 4294967295


def test_scan_kernel_threads(fake_proc: Path) -> None:
    got = by_pid(procfs.scan(str(fake_proc), node_name="n", boot_wall_ns=WALL0))
    kthreadd, worker = got[2], got[7]
    # Tetragon's names for kernel threads; kthreadd by PF_KTHREAD, the worker by the
    # empty cmdline and unreadable exe
    assert kthreadd.binary == "[kthreadd]" and kthreadd.args == ()
    assert kthreadd.kthread and worker.kthread
    assert kthreadd.parent_exec_id == got[0].exec_id == exec_id("n", 1, 0)
    assert worker.binary == "[kworker/0:1]" and worker.args == ()
    assert worker.parent_exec_id == kthreadd.exec_id
    assert worker.flags == ExecFlag.PROCFS | ExecFlag.ROOTCWD
    assert worker.auid == 4294967295                  # no loginuid file
    assert worker.cgroup_name == ""


def test_scan_user_process_details(fake_proc: Path) -> None:
    got = by_pid(procfs.scan(str(fake_proc), node_name="n", boot_wall_ns=WALL0))
    bash = got[100]
    assert bash.binary == "/usr/bin/bash"
    assert bash.args == ("-c", "echo hi", "", "last")
    assert bash.cwd == "/home/u"
    assert bash.flags == ExecFlag.PROCFS
    assert bash.uid == 1001                           # effective uid
    assert bash.creds.uid == 1000 and bash.creds.fsgid == 2003
    assert bash.creds.cap_permitted == 0x3000
    assert bash.auid == 1000
    assert bash.ppid == 1 and bash.parent_exec_id == got[1].exec_id
    assert bash.ktime == 500 * TICK_NS
    assert bash.start_time_ns == WALL0 + 500 * TICK_NS
    assert bash.docker == HEX64[:31]
    assert bash.cgroup_name == f"docker-{HEX64}.scope"
    assert bash.ns == Namespaces(*(4026532000 + i for i in range(10)))

    tool = got[200]
    assert tool.binary == "/tmp/tool"                 # " (deleted)" stripped
    assert tool.args == ("caf\u00e9", "bad\ufffd\ufffd")
    assert tool.parent_exec_id == bash.exec_id
    assert tool.cwd == "/tmp" and not tool.flags & ExecFlag.ROOTCWD


def test_scan_parent_not_in_tree(fake_proc: Path) -> None:
    got = by_pid(procfs.scan(str(fake_proc), boot_wall_ns=WALL0))
    assert got[150].ppid == 999 and got[150].parent_exec_id == ""


def test_scan_parent_outside_scan_result_still_linked(fake_proc: Path, monkeypatch) -> None:
    # the parent exists but is skipped by the scan (unreadable status): child still links
    real_read = procfs._read

    def read(path: str) -> bytes:
        if path.endswith(os.path.join("100", "status")):
            raise PermissionError(13, "denied")
        return real_read(path)

    monkeypatch.setattr(procfs, "_read", read)
    got = by_pid(procfs.scan(str(fake_proc), node_name="n", boot_wall_ns=WALL0))
    assert 100 not in got
    assert got[200].parent_exec_id == exec_id("n", 500 * TICK_NS, 100)


def test_scan_uses_clk_tck(fake_proc: Path, monkeypatch) -> None:
    monkeypatch.setattr(procfs, "clk_tck", lambda: 1000)
    got = by_pid(procfs.scan(str(fake_proc), boot_wall_ns=0))
    assert got[100].ktime == 500 * 10**6
    assert got[200].parent_exec_id == exec_id("", 500 * 10**6, 100)


def test_scan_vanishing_mid_scan(fake_proc: Path, monkeypatch) -> None:
    real_readlink = procfs._readlink
    victim = str(fake_proc / "100")

    def readlink(path: str) -> str:
        if path == os.path.join(victim, "exe"):
            shutil.rmtree(victim)                     # the process exits under us
            raise FileNotFoundError(2, "gone")
        return real_readlink(path)

    monkeypatch.setattr(procfs, "_readlink", readlink)
    got = by_pid(procfs.scan(str(fake_proc), boot_wall_ns=WALL0))
    assert 100 not in got
    assert {1, 2, 7, 150, 200} <= set(got)
    assert got[200].parent_exec_id == ""             # parent gone entirely


def test_scan_process_lookup_error_is_skipped(fake_proc: Path, monkeypatch) -> None:
    real_read = procfs._read

    def read(path: str) -> bytes:
        if path.endswith(os.path.join("150", "cmdline")):
            raise ProcessLookupError(3, "ESRCH")
        return real_read(path)

    monkeypatch.setattr(procfs, "_read", read)
    assert 150 not in by_pid(procfs.scan(str(fake_proc), boot_wall_ns=WALL0))


def test_scan_degrades_unreadable_optional_files(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    d = make_proc(root, 42, comm="x", ppid=0, start=9, cmdline=b"/bin/x\0a\0", exe=None, cwd=None)
    shutil.rmtree(d / "ns")
    (d / "cgroup").unlink()
    make_proc(root, 43, comm="y", ppid=0, start=9, cmdline=b"y\0", exe=None)
    (_, p, q) = procfs.scan(str(root), boot_wall_ns=WALL0)
    # user process without readable exe (pid 1 here): argv[0] when absolute, else nothing
    assert p.binary == "/bin/x" and not p.kthread
    assert p.flags == ExecFlag.PROCFS | ExecFlag.ROOTCWD | ExecFlag.ERROR_CWD
    assert q.binary == "" and q.flags & ExecFlag.ERROR_FILENAME
    assert p.cwd == ""
    assert p.args == ("a",)
    assert p.ns == Namespaces()
    assert (p.cgroup_name, p.docker) == ("", "")


def test_scan_empty_and_default_boot_wall(tmp_path: Path) -> None:
    assert [p.binary for p in procfs.scan(str(tmp_path))] == ["<kernel>"]
    make_proc(tmp_path, 5, comm="x", ppid=0, start=0, cmdline=b"x\0", exe="/x")
    (_, p) = procfs.scan(str(tmp_path))
    expected = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(p.start_time_ns - expected) < 10**9


def test_kernel_process() -> None:
    k = procfs.kernel_process("n", boot_wall_ns=WALL0)
    assert (k.pid, k.ktime, k.binary) == (0, 1, "<kernel>")
    assert k.exec_id == exec_id("n", 1, 0)
    # its own parent, as Tetragon links a ppid of 0 to <kernel>
    assert k.flags == ExecFlag.PROCFS and k.parent_exec_id == k.exec_id


# ------------------------------------------------------------------ real /proc


def test_scan_real_proc_finds_self_and_child() -> None:
    code = "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", code, "arg with space", "caf\u00e9"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        got = by_pid(procfs.scan(node_name="real"))
    finally:
        child.kill()
        child.wait()

    python = os.path.realpath(sys.executable)
    me = got[os.getpid()]
    assert me.binary == python
    assert me.args == tuple(sys.orig_argv[1:])
    assert me.flags & ExecFlag.PROCFS
    assert me.uid == os.geteuid()
    assert me.cwd == os.getcwd()
    assert me.ktime <= time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert me.start_time_ns <= time.time_ns()
    if os.getppid() in got:
        assert me.parent_exec_id == got[os.getppid()].exec_id

    kid = got[child.pid]
    assert kid.binary == python
    assert kid.args == ("-c", code, "arg with space", "caf\u00e9")
    assert kid.parent_exec_id == me.exec_id
    assert kid.ktime >= me.ktime
    assert kid.ns.pid == me.ns.pid != 0

    order = [p.pid for p in got.values()]
    assert len(order) == len(set(order))
