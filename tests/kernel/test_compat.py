"""Compatibility report: Vigil's own equivalents of Tetragon's public example policies
(examples/tracingpolicy), each loaded and exercised with a real trigger on this kernel.

A case whose features this kernel has must load, fire and pass its check; a case whose
features it lacks must be refused with a reason (recorded, then skipped). Every outcome
goes to build/kernel-lane/results/compat-<kernel>.json, from which docs/kernels.md's
table is written (tools/compat_report.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_kprobes import ModeEnv, _body
from vigil.errors import FeatureNotSupported, PolicyError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "kernel-lane" / "results"
PY = os.path.realpath(sys.executable)
Event = dict[str, Any]


@dataclass
class Case:
    example: str                      # the Tetragon example this stands for
    spec: str                         # our own policy (spec: body), {d} = a fresh tmpfs dir
    trigger: Callable[[Path], Any] | None   # None: loaded, not exercised (see note)
    check: Callable[[list[Event], Any, Path], None]
    # features the BPF mechanism needs ("a|b": either). Without them the case must be
    # refused with a reason, or load through another mechanism (recorded, not exercised)
    needs: tuple[str, ...] = ("kprobe|fentry",)
    note: str = ""
    # a feature of the example this version of Vigil refuses on every kernel: the case
    # must be refused with a reason containing this text (the row says why)
    refused: str = ""


# ---- triggers ---------------------------------------------------------------------------

def _read(d: Path) -> None:
    (d / "watched").write_text("x")
    (d / "watched").read_text()


def _exec_copy(d: Path) -> int:
    exe = d / "vk-prog"
    shutil.copy("/bin/true", exe)
    try:
        return subprocess.run([str(exe)]).returncode
    except OSError as err:
        return -(err.errno or 0)


def _mkdir(d: Path) -> int:
    r = subprocess.run(["/bin/mkdir", str(d / "newdir")], capture_output=True)
    return r.returncode


def _setuid_child(d: Path) -> int:
    return subprocess.run([PY, "-c", "import os; os.setgid(65534); os.setuid(65534)"]).returncode


def _tcp(d: Path) -> int:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            pass
    return port


def _udp(d: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"q", ("127.0.0.1", 53))


def _bind_priv(d: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 1023))


def _symlink(d: Path) -> None:
    (d / "target").write_text("t")
    (d / "link").symlink_to(d / "target")
    (d / "link").read_text()


def _userns_unpriv(d: Path) -> int:
    return subprocess.run(["/usr/bin/unshare", "-U", "/bin/true"], user=65534, group=65534,
                          extra_groups=[]).returncode


def _link(d: Path) -> int:
    (d / "src").write_text("s")  # linkat(2) itself (os.link calls link(2))
    libc = _libc()
    if libc.linkat(-100, str(d / "src").encode(), -100, str(d / "dst").encode(), 0) == 0:
        return 0
    import ctypes
    return ctypes.get_errno()


def _libc() -> Any:
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _syscall(nr: int, *args: Any) -> int:
    return int(_libc().syscall(nr, *args))


def _udp_lo(d: Path) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.sendto(b"q", ("127.0.0.1", port))
    return port


def _tcp_send(d: Path) -> int:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"x")
    return port


def _bash_connect(addr: str) -> Callable[[Path], int]:
    def trigger(d: Path) -> int:
        return subprocess.run(["/bin/bash", "-c", f"exec 3<>/dev/tcp/{addr}/9"],
                              stderr=subprocess.DEVNULL).returncode
    return trigger


def _mmap(d: Path) -> None:
    import mmap
    (d / "watched").write_bytes(b"x" * 4096)
    with open(d / "watched", "rb") as f, mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ):
        pass


def _copy_up(d: Path) -> int:
    lower, upper, work, merged = (d / n for n in ("lower", "upper", "work", "merged"))
    for x in (lower, upper, work, merged):
        x.mkdir()
    (lower / "f").write_text("l")
    os.setxattr(lower / "f", "trusted.vk", b"1")
    subprocess.run(["mount", "-t", "overlay", "vkc-ovl", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        with open(merged / "f", "a"):
            return 0
    except OSError as err:
        return err.errno or 0
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def _module_request(d: Path) -> None:
    try:
        socket.socket(12, socket.SOCK_STREAM).close()  # AF_DECnet: gone, so requested
    except OSError:
        pass


def _finit_module(d: Path) -> int:
    (d / "watched").write_bytes(b"not a module")
    fd = os.open(d / "watched", os.O_RDONLY)
    try:
        return _syscall(313, fd, b"", 0)  # finit_module: read, then refused (ENOEXEC)
    finally:
        os.close(fd)


def _setuid_sys(d: Path) -> int:
    return subprocess.run([PY, "-c", "import os; os.setresgid(65534, 65534, 65534); "
                           "os.setuid(65534)"]).returncode


def _open_wr(d: Path) -> None:
    (d / "watched").write_text("x")
    os.close(os.open(d / "watched", os.O_WRONLY))


def _symlink_sys(d: Path) -> int:
    import ctypes  # symlinkat(2) itself (os.symlink calls symlink(2))
    if _libc().symlinkat(b"/nonexistent-vk", -100, str(d / "sl").encode()) == 0:
        return 0
    return ctypes.get_errno()


def _clock_settime(d: Path) -> None:
    try:
        time.clock_settime(time.CLOCK_MONOTONIC, 0)  # refused (EINVAL): the syscall ran
    except OSError:
        pass


def _mount(d: Path) -> None:
    (d / "m").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vkc-m", str(d / "m")], check=True)
    subprocess.run(["umount", str(d / "m")], check=True)


def _pivot_root(d: Path) -> int:
    return _syscall(155, b"/nonexistent-vk", b"/nonexistent-vk")  # ENOENT


def _ptrace(d: Path) -> int:
    return _syscall(101, 0x4206, 0x7ffffff0, 0, 0)  # PTRACE_SEIZE, no such pid: ESRCH


def _write_fd(d: Path) -> None:
    fd = os.open(d / "watched", os.O_WRONLY | os.O_CREAT, 0o644)
    os.dup2(fd, 987)
    os.close(fd)
    try:
        os.write(987, b"w")
    finally:
        os.close(987)


def _getpid(d: Path) -> None:
    os.getpid()
    os.getppid()


def _pty(d: Path) -> None:
    m, s = os.openpty()
    try:
        os.write(s, b"vk\n")
    finally:
        os.close(s)
        os.close(m)


def _userns_in_pidns(d: Path) -> int:
    # the shell (pid 1 of the new pid namespace) says how the unprivileged unshare ended
    r = subprocess.run(["/usr/bin/unshare", "--pid", "--fork", "/bin/sh", "-c",
                        "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "
                        "/usr/bin/unshare -U /bin/true; echo $?"], capture_output=True, text=True)
    return -9 if r.stdout.strip() == "137" else int(r.stdout.strip() or r.returncode)


def _target(d: Path) -> str:
    out = d / "uprobe_target"
    if not out.exists():
        subprocess.run(["gcc", "-O1", "-o", str(out), str(ROOT / "tests/progs/uprobe_target.c")],
                       check=True)
    return str(out)


def _run_target(d: Path) -> int:
    return subprocess.run([_target(d), "a", "b"]).returncode


def _call_so(d: Path) -> int:
    """vigil_target called in this process, from a library on the test's tmpfs (the
    lane's system libraries are on overlayfs, whose mappings are of the layer's file)."""
    import ctypes
    so = d / "libvk.so"  # built before the policy loaded
    return int(ctypes.CDLL(str(so)).vigil_target(1, b"a"))


def _bpf_load(d: Path) -> None:
    from vigil.bpf import features as F
    F.clear_cache()
    F.probe("raw_tp")


# ---- checks -------------------------------------------------------------------------------

def _mine(evs: list[Event]) -> list[dict[str, Any]]:
    return [_body(e) for e in evs]


def _has_path(key: str, path_of: Callable[[Path], str]) -> Callable[[list[Event], Any, Path], None]:
    def check(evs: list[Event], _r: Any, d: Path) -> None:
        want = path_of(d)
        paths = [a[key]["path"] for b in _mine(evs) for a in b.get("args", []) if key in a]
        assert want in paths, paths
    return check


def _nonempty(evs: list[Event], _r: Any, _d: Path) -> None:
    assert evs


def _override_mkdir(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc != 0 and evs and _body(evs[0])["action"] == "KPROBE_ACTION_OVERRIDE"


def _creds_changed(evs: list[Event], _r: Any, _d: Path) -> None:
    uids = [a["process_credentials_arg"]["uid"] for b in _mine(evs) for a in b.get("args", [])
            if "process_credentials_arg" in a]
    assert 65534 in uids, uids


def _tcp_seen(evs: list[Event], port: Any, _d: Path) -> None:
    socks = [a["sock_arg"] for b in _mine(evs) for a in b["args"] if "sock_arg" in a]
    assert any(s.get("dport") == port and s.get("daddr") == "127.0.0.1" for s in socks), socks


def _udp_53(evs: list[Event], _r: Any, _d: Path) -> None:
    skbs = [a["skb_arg"] for b in _mine(evs) for a in b["args"] if "skb_arg" in a]
    assert any(s.get("dport") == 53 and s.get("protocol") == "IPPROTO_UDP" for s in skbs), skbs


def _killed(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == -9 and any(_body(e)["action"] == "KPROBE_ACTION_SIGKILL" for e in evs), rc


def _denied_exec(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == -errno.EPERM and evs and _body(evs[0])["action"] == "KPROBE_ACTION_OVERRIDE"


def _bpf_seen(evs: list[Event], _r: Any, _d: Path) -> None:
    names = [a["bpf_attr_arg"].get("ProgName") for b in _mine(evs) for a in b["args"]
             if "bpf_attr_arg" in a]
    assert "vg_p_raw_tp" in names, names


def _link_refused(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc == errno.EPERM and evs


def _name(b: dict[str, Any]) -> str:
    return str(b.get("function_name") or b.get("symbol") or b.get("event") or "").removeprefix("__x64_")


def _fired(*names: str) -> Callable[[list[Event], Any, Path], None]:
    """An event of each hook named (function, tracepoint event or uprobe symbol)."""
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        seen = {_name(b) for b in _mine(evs)}
        assert all(n in seen for n in names), (names, seen)
    return check


def _fired_by_me(name: str) -> Callable[[list[Event], Any, Path], None]:
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        mine = [b for b in _mine(evs) if b["process"]["pid"] == os.getpid() and _name(b) == name]
        assert mine, [(_name(b), b["process"]["pid"]) for b in _mine(evs)]
    return check


def _skb_port(evs: list[Event], port: Any, _d: Path) -> None:
    skbs = [a["skb_arg"] for b in _mine(evs) for a in b.get("args", []) if "skb_arg" in a]
    assert any(s.get("dport") == port for s in skbs), skbs


def _str_arg(name: str, want: Callable[[Path], str]) -> Callable[[list[Event], Any, Path], None]:
    def check(evs: list[Event], _r: Any, d: Path) -> None:
        got = [a.get("string_arg") for b in _mine(evs) if _name(b) == name for a in b.get("args", [])]
        assert want(d) in got, got
    return check


def _bash_killed(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc in (-9, 137) and any(_body(e)["action"] == "KPROBE_ACTION_SIGKILL" for e in evs), rc


def _denied(name: str) -> Callable[[list[Event], Any, Path], None]:
    def check(evs: list[Event], rc: Any, _d: Path) -> None:
        assert rc == errno.EPERM, rc
        assert any(_name(b) == name and b["action"] == "KPROBE_ACTION_OVERRIDE" for b in _mine(evs))
    return check


def _connect_refused(d: Path) -> int:
    try:
        _tcp(d)
        return 0
    except OSError as err:
        return err.errno or 0


def _userns_killed(evs: list[Event], rc: Any, _d: Path) -> None:
    assert rc in (-9, 137) and any(_body(e)["action"] == "KPROBE_ACTION_SIGKILL" for e in evs), rc


def _uprobe_target(evs: list[Event], _r: Any, d: Path) -> None:
    got = [(b["symbol"], b["path"]) for b in _mine(evs)]
    assert ("vigil_target", str(d / "uprobe_target")) in got, got


CASES = [
    Case("fd_install_caps.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - {index: 0, type: int}
    - {index: 1, type: file}
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("kprobe_commit_creds.yaml", """
  kprobes:
  - call: commit_creds
    syscall: false
    args: [{index: 0, type: cred}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _setuid_child, _creds_changed),
    Case("security_bprm_check.yaml", """
  kprobes:
  - call: security_bprm_check
    syscall: false
    args: [{index: 0, type: linux_binprm}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/vk-prog"]}]
""", _exec_copy, _has_path("linux_binprm_arg", lambda d: f"{d}/vk-prog")),
    Case("process-exec/process-exec-elf-begin.yaml", """
  kprobes:
  - call: security_bprm_creds_from_file
    syscall: false
    args: [{index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Postfix, values: ["/vk-prog"]}]
""", _exec_copy, _has_path("file_arg", lambda d: f"{d}/vk-prog")),
    Case("security_inode_follow_link.yaml", """
  kprobes:
  - call: security_inode_follow_link
    syscall: false
    args: [{index: 0, type: dentry}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["/link"]}]
""", _symlink, _has_path("path_arg", lambda d: "/link"),
         note="dentry paths are relative to their filesystem"),
    Case("filename_monitoring.yaml", """
  kprobes:
  - call: security_file_permission
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}, {index: 1, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Prefix, values: ["{d}/"]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("override-security.yaml", """
  kprobes:
  - call: security_inode_mkdir
    syscall: false
    args: [{index: 1, type: dentry}]
    selectors:
    - matchBinaries: [{operator: In, values: ["/usr/bin/mkdir", "/bin/mkdir"]}]
      matchActions: [{action: Override, argError: -1}]
""", _mkdir, _override_mkdir, needs=("fmod_ret_security",)),
    Case("tcp-connect.yaml", """
  kprobes:
  - call: tcp_connect
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: DAddr, values: ["127.0.0.1"]}]
""", _tcp, _tcp_seen),
    Case("dns-only-specified-servers.yaml", """
  kprobes:
  - call: ip_output
    syscall: false
    args: [{index: 2, type: skb}]
    selectors:
    - matchArgs:
      - {index: 2, operator: DPort, values: ["53"]}
      - {index: 2, operator: Protocol, values: ["IPPROTO_UDP"]}
""", _udp, _udp_53, note="observe only here (the example's Sigkill is tested elsewhere)"),
    Case("security-socket-connect.yaml", """
  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]
    selectors:
    - matchArgs: [{index: 1, operator: Family, values: ["AF_INET"]}]
""", _tcp, _nonempty),
    Case("process-credentials/creds-capability-usage.yaml", """
  kprobes:
  - call: cap_capable
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 2, type: capability}]
    selectors:
    - matchArgs: [{index: 2, operator: Equal, values: ["10"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
""", _bind_priv, _nonempty),
    Case("bpf.yaml", """
  kprobes:
  - call: bpf_check
    syscall: false
    args: [{index: 1, type: bpf_attr}]
""", _bpf_load, _bpf_seen),
    Case("sandbox/.../kill_unprivileged_user_namespace.yaml", """
  kprobes:
  - call: create_user_ns
    syscall: false
    selectors:
    - matchCapabilities: [{type: Effective, operator: NotIn, values: [CAP_SYS_ADMIN]}]
      matchBinaries: [{operator: In, values: ["/usr/bin/unshare"]}]
      matchActions: [{action: Sigkill}]
""", _userns_unpriv, _killed),
    Case("lsm_file_open.yaml", """
  lsmhooks:
  - hook: file_open
    args: [{index: 0, type: file}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["{d}/watched"]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched"), needs=("lsm",)),
    Case("lsm_bprm_check.yaml", """
  lsmhooks:
  - hook: bprm_check_security
    args: [{index: 0, type: linux_binprm}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/vk-prog"]}]
      matchActions: [{action: Override, argError: -1}]
""", _exec_copy, _denied_exec, needs=("lsm",), note="without the example's imaHash"),
    Case("hardlink-override.yaml", """
  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Postfix, values: ["/src"]}]
      matchActions: [{action: Override, argError: -1}]
""", _link, _link_refused, needs=("fmod_ret_syscall",)),
]


SYSCALL = ()        # syscall hooks run on tracepoints: every kernel
NOT_YET = "not supported by this version of Vigil"

CASES += [
    Case("cves/cve-2023-2640-overlayfs-ubuntu.yaml", """
  kprobes:
  - call: security_inode_copy_up_xattr
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
      matchActions: [{action: Override, argError: -1}]
""" % PY, _copy_up, _denied("security_inode_copy_up_xattr"), needs=("fmod_ret_security",),
         note="refuses every copied-up xattr of one binary (the example: one name, outside the host's namespaces)"),
    Case("cves/cve-2024-3094-xz-ssh.yaml", """
  kprobes:
  - call: security_mmap_file
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/watched"]}]
      matchBinaries: [{operator: In, values: ["%s"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
""" % PY, _mmap, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("datagram-with-selectors.yaml", """
  kprobes:
  - call: __cgroup_bpf_run_filter_skb
    syscall: false
    args: [{index: 1, type: skb}]
    selectors:
    - matchArgs: [{index: 1, operator: DAddr, values: ["127.0.0.1"]}, {index: 1, operator: Protocol, values: ["IPPROTO_UDP"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
""", None, _nonempty, note="runs only where a cgroup skb program is attached: loaded, not exercised"),
    Case("datagram-with-sock-tracking.yaml", """
  kprobes:
  - call: sk_alloc
    syscall: false
    return: true
    returnArg: {index: 0, type: sock}
    returnArgAction: TrackSock
""", None, _nonempty, refused="TrackSock"),
    Case("datagram.yaml", """
  kprobes:
  - call: __cgroup_bpf_run_filter_skb
    syscall: false
    args: [{index: 1, type: skb}]
""", None, _nonempty, note="runs only where a cgroup skb program is attached: loaded, not exercised"),
    Case("datagram_518.yaml", """
  kprobes:
  - call: __sk_free
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchActions: [{action: UntrackSock, argSock: 0}]
""", None, _nonempty, refused="UntrackSock"),
    Case("dev_hard_start_xmit.yaml", """
  kprobes:
  - call: dev_hard_start_xmit
    syscall: false
    args: [{index: 0, type: skb}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _udp_lo, _skb_port),
    Case("dev_queue_xmit.yaml", """
  kprobes:
  - call: __dev_queue_xmit
    syscall: false
    args: [{index: 0, type: skb}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _udp_lo, _skb_port,
         note="__dev_queue_xmit: dev_queue_xmit is an inline wrapper of it in these kernels"),
    Case("fd_install_cap_changes.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchCapabilityChanges: [{type: Effective, operator: In, isNamespaceCapability: false, values: [CAP_SYS_ADMIN]}]
""", None, _nonempty, refused="matchCapabilityChanges"),
    Case("fd_install_ns.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchNamespaces: [{namespace: Pid, operator: In, values: [host_ns]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("fd_install_ns_host.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchNamespaces: [{namespace: Mnt, operator: In, values: [host_ns]}, {namespace: Net, operator: In, values: [host_ns]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("filename_monitoring_filtered.yaml", """
  kprobes:
  - call: security_file_permission
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}, {index: 1, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["{d}/watched"]}, {index: 1, operator: Mask, values: ["4"]}]
""", _read, _has_path("file_arg", lambda d: f"{d}/watched")),
    Case("hardlink-observe.yaml", """
  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}, {index: 3, type: string}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/src"]}]
""", _link, _str_arg("sys_linkat", lambda d: f"{d}/src"), needs=SYSCALL),
    Case("host-changes/monitor-kernel-modules.yaml", """
  kprobes:
  - call: security_kernel_module_request
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: string}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["net-pf-12"]}]
  - call: do_init_module
    syscall: false
  - call: free_module
    syscall: false
""", _module_request, _str_arg("security_kernel_module_request", lambda d: "net-pf-12"),
         note="request_module exercised; module load/unload hooks loaded"),
    Case("host-changes/monitor-signed-kernel-modules.yaml", """
  kprobes:
  - call: security_kernel_read_file
    syscall: false
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 0, type: file}, {index: 1, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["{d}/watched"]}]
""", _finit_module, _has_path("file_arg", lambda d: f"{d}/watched"),
         note="finit_module of a non-module: read, then refused; the example's "
              "find_module_sections is not in these kernels' BTF (inlined)"),
    Case("killer.yaml", """
  lists:
  - {name: dups, type: syscalls, values: [sys_dup, sys_dup2]}
  enforcers:
  - calls: ["list:dups"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args: [{index: 4, type: syscall64}]
    selectors:
    - matchArgs: [{index: 4, operator: InMap, values: ["list:dups"]}]
      matchActions: [{action: NotifyEnforcer, argError: -1}]
""", None, _nonempty, needs=(), refused="NotifyEnforcer"),
    Case("list-generated-ftrace.yaml", """
  lists:
  - {name: ksys, type: generated_ftrace, pattern: "^ksys_read$"}
  kprobes:
  - call: "list:ksys"
    syscall: false
""", None, _nonempty, refused="list:"),
    Case("list-syscalls-generated.yaml", """
  lists:
  - {name: all-syscalls, type: generated_syscalls}
  kprobes:
  - call: "list:all-syscalls"
    syscall: true
    selectors:
    - matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), None, _nonempty, refused="list:"),
    Case("list-syscalls-tracepoint.yaml", """
  lists:
  - {name: ids, type: syscalls, values: [sys_getppid]}
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args: [{index: 4, type: syscall64}]
    selectors:
    - matchArgs: [{index: 4, operator: InMap, values: ["list:ids"]}]
      matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), _getpid, _fired_by_me("sys_enter"), needs=SYSCALL),
    Case("list-syscalls.yaml", """
  lists:
  - {name: ids, type: syscalls, values: [sys_getpid, sys_getppid]}
  kprobes:
  - call: "list:ids"
    syscall: true
    selectors:
    - matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), None, _nonempty, refused="list:"),
    Case("loader.yaml", """
  loader: true
""", None, _nonempty, refused="loader"),
    Case("lsm_track_grandparent.yml", """
  lsmhooks:
  - hook: bprm_check_security
    args: [{index: 0, type: linux_binprm}]
    selectors:
    - matchActions: [{action: Post}]
""", _exec_copy, _has_path("linux_binprm_arg", lambda d: f"{d}/vk-prog"), needs=("lsm",)),
    Case("modules-nohost.yaml", """
  podSelector: {matchLabels: {app: vk}}
  kprobes:
  - call: security_kernel_module_request
    syscall: false
    args: [{index: 0, type: string}]
""", None, _nonempty, refused="pod"),
    Case("open_dnsrequest.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchActions: [{action: DnsLookup, argFqdn: "vk.example"}]
""", None, _nonempty, refused="DnsLookup"),
    Case("open_geturl.yaml", """
  kprobes:
  - call: fd_install
    syscall: false
    args: [{index: 0, type: int}, {index: 1, type: file}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}]
      matchActions: [{action: GetUrl, argUrl: "http://vk.example/"}]
""", None, _nonempty, refused="GetUrl"),
    Case("openat_write.yaml", """
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    returnArg: {index: 0, type: int}
    args: [{index: 1, type: string}, {index: 2, type: int}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: ["{d}/watched"]}, {index: 2, operator: Mask, values: ["1"]}]
      matchReturnArgs: [{index: 0, operator: GT, values: ["0"]}]
""", _open_wr, _str_arg("sys_openat", lambda d: f"{d}/watched"), needs=SYSCALL),
    Case("process-credentials/process-creds-changed.yaml", """
  kprobes:
  - call: commit_creds
    syscall: false
    args: [{index: 0, type: cred}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
      matchNamespaces: [{namespace: Pid, operator: NotIn, values: ["1"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
  - call: override_creds
    syscall: false
  - call: revert_creds
    syscall: false
""" % PY, _setuid_child, _creds_changed),
    Case("process-credentials/process-creds-installed.yaml", """
  kprobes:
  - call: commit_creds
    syscall: false
    args: [{index: 0, type: cred}]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
      matchNamespaces: [{namespace: Pid, operator: NotIn, values: ["1"]}]
      matchActions: [{action: Post, rateLimit: "1m"}]
""" % PY, _setuid_child, _creds_changed),
    Case("process-credentials/process.credentials.changes.at.syscalls.yaml", """
  kprobes:
  - {call: sys_setuid, syscall: true, args: [{index: 0, type: int}]}
  - {call: sys_setgid, syscall: true, args: [{index: 0, type: int}]}
  - {call: sys_setreuid, syscall: true}
  - {call: sys_setregid, syscall: true}
  - {call: sys_setresuid, syscall: true}
  - {call: sys_setresgid, syscall: true, args: [{index: 0, type: int}]}
  - {call: sys_setfsuid, syscall: true}
  - {call: sys_setfsgid, syscall: true}
""", _setuid_sys, _fired("sys_setuid", "sys_setresgid"), needs=SYSCALL),
    Case("raw_syscalls.yaml", """
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args: [{index: 4, type: syscall64}]
    selectors:
    - matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), _getpid, _fired_by_me("sys_enter"), needs=SYSCALL,
         note="only this test's pid"),
    Case("rawtp.yaml", """
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
""", _exec_copy, _fired("sched_process_exec"), needs=SYSCALL,
         note="without arguments: reading a raw tracepoint's arguments is refused by the verifier (open bug)"),
    Case("sandbox/linux-namespaces/kill_unprivileged_user_namespace_in_pid_namespace.yaml", """
  kprobes:
  - call: create_user_ns
    syscall: false
    selectors:
    - matchCapabilities: [{type: Effective, operator: NotIn, values: [CAP_SYS_ADMIN]}]
      matchNamespaces: [{namespace: Pid, operator: NotIn, values: [host_ns]}]
      matchBinaries: [{operator: In, values: ["/usr/bin/unshare"]}]
      matchActions: [{action: Sigkill}]
""", _userns_in_pidns, _userns_killed),
    Case("security-socket-connect-block-others.yaml", """
  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]
    selectors:
    - matchArgs: [{index: 1, operator: Family, values: ["AF_INET"]}]
      matchBinaries: [{operator: In, values: ["%s"]}]
      matchActions: [{action: Override, argError: -1}]
""" % PY, _connect_refused, _denied("security_socket_connect"), needs=("fmod_ret_security",),
         note="refuses IPv4 connects of one binary (the example: all but one address)"),
    Case("stack_traces.yaml", """
  kprobes:
  - call: consume_skb
    syscall: false
    selectors:
    - matchActions: [{action: Post, kernelStackTrace: true, userStackTrace: true}]
""", None, _nonempty, refused="StackTrace",
         note="consume_skb: kfree_skb_reason is not in these kernels' BTF"),
    Case("symlink-observe.yaml", """
  kprobes:
  - call: sys_symlinkat
    syscall: true
    args: [{index: 0, type: string}, {index: 2, type: string}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["/nonexistent-vk"]}]
""", _symlink_sys, _str_arg("sys_symlinkat", lambda d: "/nonexistent-vk"), needs=SYSCALL),
    Case("symlink-override.yaml", """
  kprobes:
  - call: sys_symlinkat
    syscall: true
    args: [{index: 0, type: string}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["/nonexistent-vk"]}]
      matchActions: [{action: Override, argError: -1}]
""", _symlink_sys, _nonempty, needs=("fmod_ret_syscall",)),
    Case("sys_clock_settime.yaml", """
  kprobes:
  - call: sys_clock_settime
    syscall: true
    args: [{index: 0, type: int}]
    selectors:
    - matchPIDs: [{operator: NotIn, followForks: false, isNamespacePID: false, values: [1]}]
""", _clock_settime, _fired_by_me("sys_clock_settime"), needs=SYSCALL,
         note="CLOCK_MONOTONIC: refused by the kernel, the clock is untouched"),
    Case("sys_mount.yaml", """
  kprobes:
  - call: sys_mount
    syscall: true
    args: [{index: 0, type: string}, {index: 1, type: string}, {index: 2, type: string}]
""", _mount, _str_arg("sys_mount", lambda d: f"{d}/m"), needs=SYSCALL),
    Case("sys_pivot_root.yaml", """
  kprobes:
  - call: sys_pivot_root
    syscall: true
    args: [{index: 0, type: string}, {index: 1, type: string}]
    selectors:
    - matchPIDs: [{operator: NotIn, followForks: false, isNamespacePID: false, values: [1]}]
""", _pivot_root, _str_arg("sys_pivot_root", lambda d: "/nonexistent-vk"), needs=SYSCALL,
         note="on paths that do not exist: refused by the kernel"),
    Case("sys_ptrace.yaml", """
  kprobes:
  - call: sys_ptrace
    syscall: true
    args: [{index: 0, type: int}, {index: 1, type: int}]
""", _ptrace, _fired_by_me("sys_ptrace"), needs=SYSCALL),
    Case("sys_setuid.yaml", """
  kprobes:
  - call: sys_setuid
    syscall: true
    args: [{index: 0, type: int}]
""", _setuid_sys, _fired("sys_setuid"), needs=SYSCALL),
    Case("tcp-accept.yaml", """
  kprobes:
  - call: tcp_create_openreq_child
    syscall: false
    return: true
    returnArg: {index: 0, type: sock}
    returnArgAction: TrackSock
""", None, _nonempty, refused="TrackSock"),
    Case("tcp-connect-only-local-addrs.yaml", """
  kprobes:
  - call: tcp_connect
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: NotDAddr, values: ["127.0.0.1"]}]
      matchBinaries: [{operator: In, values: ["/usr/bin/bash"]}]
      matchActions: [{action: Sigkill}]
""", _bash_connect("127.0.0.2"), _bash_killed),
    Case("tcp-connect-only-private-addrs.yaml", """
  kprobes:
  - call: tcp_connect
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: NotDAddr, values: ["127.0.0.1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}]
      matchBinaries: [{operator: In, values: ["/usr/bin/bash"]}]
      matchActions: [{action: Sigkill}]
""", _bash_connect("127.0.0.3"), _bash_killed,
         note="one binary only (the example: every process)"),
    Case("tcp-connect-with-selectors.yaml", """
  kprobes:
  - call: tcp_connect
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: DAddr, values: ["127.0.0.1"]}]
  - call: tcp_close
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchArgs: [{index: 0, operator: DAddr, values: ["127.0.0.1"]}]
  - call: tcp_sendmsg
    syscall: false
    args: [{index: 0, type: sock}, {index: 2, type: int}]
    selectors:
    - matchArgs: [{index: 0, operator: DAddr, values: ["127.0.0.1"]}]
""", _tcp_send, _fired("tcp_connect", "tcp_sendmsg", "tcp_close")),
    Case("tcp-listen.yaml", """
  kprobes:
  - call: inet_csk_listen_start
    syscall: false
    args: [{index: 0, type: sock}]
    selectors:
    - matchActions: [{action: NoPost}, {action: UntrackSock, argSock: 0}]
""", None, _nonempty, refused="UntrackSock"),
    Case("tty.yaml", """
  kprobes:
  - call: tty_write
    syscall: false
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _pty, _fired_by_me("tty_write")),
    Case("tty_54.yaml", """
  kprobes:
  - call: tty_write
    syscall: false
    args: [{index: 1, type: int}]
    selectors:
    - matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), _pty, _fired_by_me("tty_write")),
    Case("uprobe-binaries.yaml", """
  uprobes:
  - path: "{d}/libvk.so"
    symbols: ["vigil_target"]
    selectors:
    - matchBinaries: [{operator: In, values: ["%s"]}]
""" % PY, _call_so, _fired_by_me("vigil_target"), needs=SYSCALL,
         note="a test library (the example: libc malloc)"),
    Case("uprobe-host.yaml", """
  uprobes:
  - path: "{d}/uprobe_target"
    symbols: ["main"]
""", _run_target, _fired("main"), needs=SYSCALL,
         note="a test program's main by its host path (the example: bash's _start through "
              "/procRoot/1/root; through /proc/1/root the kernel's uprobe attach says EACCES)"),
    Case("uprobe-pid.yaml", """
  uprobes:
  - path: "{d}/libvk.so"
    symbols: ["vigil_target"]
    selectors:
    - matchPIDs: [{operator: In, followForks: false, isNamespacePID: false, values: [%d]}]
""" % os.getpid(), _call_so, _fired_by_me("vigil_target"), needs=SYSCALL,
         note="a test library (the example: bash readline)"),
    Case("uprobe.yaml", """
  uprobes:
  - path: "{d}/uprobe_target"
    symbols: ["main", "vigil_target"]
""", _run_target, _fired("main", "vigil_target"), needs=SYSCALL,
         note="a test program (the example: bash readline, main)"),
    Case("usdt-set.yaml", """
  usdts:
  - path: "/usr/bin/true"
    provider: vk
    name: probe
    selectors:
    - matchActions: [{action: Set, argIndex: 0, argValue: 1}]
""", None, _nonempty, needs=(), refused="usdts"),
    Case("usdt.yaml", """
  usdts:
  - path: "/usr/bin/true"
    provider: vk
    name: probe
""", None, _nonempty, needs=(), refused="usdts"),
    Case("write.yaml", """
  kprobes:
  - call: sys_write
    syscall: true
    args: [{index: 0, type: int}, {index: 1, type: char_buf, sizeArgIndex: 3}, {index: 2, type: size_t}]
    selectors:
    - matchArgs: [{index: 0, operator: Equal, values: ["987"]}]
      matchPIDs: [{operator: NotIn, followForks: false, isNamespacePID: false, values: [1]}]
""", _write_fd, _fired_by_me("sys_write"), needs=SYSCALL),
]
CASES.sort(key=lambda c: c.example.replace("sandbox/.../", "sandbox/linux-namespaces/"))


@pytest.fixture(scope="module")
def env() -> Iterator[ModeEnv]:
    e = ModeEnv()
    yield e
    e.close()


@pytest.fixture(scope="module")
def report() -> Iterator[list[dict[str, str]]]:
    rows: list[dict[str, str]] = []
    yield rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compat-{os.uname().release}.json"
    out.write_text(json.dumps({"kernel": os.uname().release, "cases": rows}, indent=1) + "\n")


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vkc-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=755", "vkc", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _missing(needs: tuple[str, ...]) -> list[str]:
    from vigil.bpf import features as F
    return [n for n in needs if not any(F.probe(x).ok for x in n.split("|"))]


def _reason(err: Exception) -> str:
    diags = getattr(err, "diagnostics", None)
    if diags:  # a generic message says what by its field: name it
        return "; ".join(f"{d.path.rsplit('.', 1)[-1]}: {d.message}"
                         if d.message.startswith("not supported") else d.message
                         for d in diags)
    return str(err).split("\n")[0]


def _events(env: ModeEnv, trigger: Callable[[], Any]) -> list[Event]:
    env.pipe.handle(env.base.ring.drain())
    trigger()
    time.sleep(0.3)
    kinds = ("process_kprobe", "process_lsm", "process_tracepoint", "process_uprobe")
    return [e for e in env.pipe.handle(env.base.ring.drain()) if next(iter(e)) in kinds]


@pytest.mark.parametrize("case", CASES, ids=[c.example.rsplit("/", 1)[-1] for c in CASES])
def test_example(env: ModeEnv, tdir: Path, report: list[dict[str, str]], case: Case) -> None:
    doc = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
           f"  name: compat-{uuid.uuid4().hex[:6]}\nspec:" + case.spec.replace("{d}", str(tdir)))
    missing = _missing(case.needs)
    row = {"example": case.example, "note": case.note}
    if "uprobe_target" in case.spec:
        _target(tdir)  # the uprobe's file must exist before the policy loads
    if "libvk.so" in case.spec:
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(tdir / "libvk.so"),
                        str(ROOT / "tests/progs/uprobe_target.c")], check=True)
    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(env.policy(doc))
        except (PolicyError, FeatureNotSupported) as err:
            row.update(status="cannot run", detail=_reason(err))
            report.append(row)
            if case.refused and not missing:  # what this version of Vigil refuses
                assert case.refused.lower() in row["detail"].lower(), row["detail"]
                return
            if not missing:
                raise  # this kernel has what the case needs: it must load
            pytest.skip(f"{case.example}: {row['detail']}")
        assert not case.refused, f"{case.example} now loads: exercise it ({info.info})"
        row["mechanism"] = info.info
        if missing:  # loaded through another mechanism (fanotify, cgroup programs): not
            # exercised here, the enforcement tests of that mechanism cover it
            row.update(status="loads", detail=f"without {', '.join(missing)}: {info.info}")
            report.append(row)
            pytest.skip(f"{case.example}: {row['detail']}")
        if case.trigger is None:  # loaded and attached; no trigger that is safe here
            row.update(status="loads", detail=": ".join(x for x in (info.info, case.note) if x))
            report.append(row)
            return
        trigger = case.trigger
        result: list[Any] = []
        evs = _events(env, lambda: result.append(trigger(tdir)))
        try:
            case.check(evs, result[0], tdir)
        except AssertionError as err:
            row.update(status="FAIL", detail=str(err).split("\n")[0])
            report.append(row)
            raise
        row.update(status="pass", detail=f"{len(evs)} event(s)")
        report.append(row)
