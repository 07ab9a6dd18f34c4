"""Compatibility report: Tetragon's real example policies (tests/tetragon_examples.py,
read in place), each loaded into this kernel unchanged and exercised with a real trigger
that satisfies its selectors.

Every file ends in one verdict, written to build/kernel-lane/results/compat-<kernel>.json
(docs/kernels.md's table comes from there: tools/compat_report.py):

- ``pass``: loaded, triggered for real, and the expected events (or kill, errno) seen;
- ``loads``: loaded, not exercised here, with the reason: through another mechanism than
  the example's hook (fanotify, cgroup programs: their own tests cover them), or no
  trigger that is safe or possible on this machine;
- ``refused-kernel``: refused for a kernel capability, which the reason names (kprobes,
  BPF trampolines, BPF LSM, fmod_ret, ...) and this kernel's probe confirms is missing;
- ``refused-vigil``: refused on a kernel with every feature too: the reason is the one
  ``FULL_PROFILE`` records (tests/unit/test_compat_profile.py);
- ``refused-host``: the file names a path that does not exist on this machine (a uprobe
  on ``/lib64/libc.so.6``, a container's ``/procRoot``).

Triggers never change host files: files the examples watch (``/etc/passwd``, a binary in
``/usr/bin``) are reached in a private mount namespace, over a scratch copy.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lane import expected
from tests.kernel.test_policies import Env, _body
from tests.tetragon_examples import FULL_PROFILE, examples_dir, full_view, refusal
from vigil.errors import FeatureNotSupported, PolicyError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "kernel-lane" / "results"
PY = os.path.realpath(sys.executable)
Event = dict[str, Any]
Check = Callable[[list[Event], Any, Path], None]


@dataclass
class Exercise:
    """Run ``trigger`` (in the test's tmpfs) while the file is loaded; ``check`` the
    policy events it caused with the trigger's result."""
    trigger: Callable[[Path], Any]
    check: Check
    note: str = ""
    # a path the hook attaches to: uprobes on overlayfs files do not fire (the process
    # maps the layer's file), so there the file only loads
    uprobe_path: str = ""
    # why the trigger cannot satisfy the file on this kernel ("": it can)
    applies: Callable[[], str] = lambda: ""
    # paths the file names that this machine lays out elsewhere: (path the file names,
    # real file) made visible to the loader only, in a private mount namespace
    provide: tuple[tuple[str, str], ...] = ()


@dataclass
class Loads:
    """Loaded and attached, not exercised here: ``why``."""
    why: str


# ---- triggers ----------------------------------------------------------------------------

def _libc() -> Any:
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _syscall(nr: int, *args: Any) -> int:
    return int(_libc().syscall(nr, *args))


def _run(argv: list[str], **kw: Any) -> int:
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          **kw).returncode


def _private_ns(script: str) -> int:
    """``script`` (sh) in a private mount namespace: its mounts vanish with it."""
    return _run(["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-ec", script])


def _private_net(script: str) -> int:
    """``script`` in a fresh network namespace whose loopback also owns the given
    non-local addresses (the connect reaches tcp_connect without any route outside)."""
    return _run(["/usr/bin/unshare", "-n", "/bin/sh", "-c", "ip link set lo up; " + script])


def _read(d: Path) -> None:
    (d / "watched").write_text("x")
    (d / "watched").read_text()


def _mkdir(d: Path) -> int:
    return _run(["/bin/mkdir", str(d / "newdir")])


def _setuid_child(d: Path) -> int:
    return _run([PY, "-c", "import os; os.setgid(65534); os.setuid(65534)"])


def _setuid_in_pidns(d: Path) -> int:
    """setresgid + setuid by a process in a new pid namespace (not the host's)."""
    return _run(["/usr/bin/unshare", "--pid", "--fork", PY, "-c",
                 "import os; os.setresgid(65534, 65534, 65534); os.setuid(65534)"])


def _setuid_sys(d: Path) -> int:
    return _run([PY, "-c", "import os; os.setresgid(65534, 65534, 65534); os.setuid(65534)"])


def _tcp_send(d: Path) -> int:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"x")
    return port


def _tcp(d: Path) -> int:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            pass
    return port


def _listen_31337(d: Path) -> None:
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 31337))
        srv.listen()


def _bash_dup2(d: Path) -> int:
    """/usr/bin/bash redirects with dup2 (exec 3>&1), then would print."""
    return _run(["/usr/bin/bash", "-c", "exec 3>&1; echo survived"])


def _udp_lo(d: Path) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.sendto(b"q", ("127.0.0.1", port))
    return port


def _udp_closed_port(d: Path) -> int:
    """A datagram to a closed port on the loopback: the kernel frees it unread
    (kfree_skb_reason, SKB_DROP_REASON_NO_SOCKET)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"q", ("127.0.0.1", port))
    return port


def _stacks(name: str) -> Check:
    """An event of ``name`` with a symbolized kernel stack trace."""
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        got = [b for b in _mine(evs) if _name(b) == name]
        assert got, [_name(b) for b in _mine(evs)][:20]
        kst = [b["kernel_stack_trace"] for b in got if b.get("kernel_stack_trace")]
        assert kst and any(f.get("symbol") for f in kst[0]), got[0]
    return check


def _dns_query_child(d: Path) -> int:
    """A child sends a UDP datagram to 127.0.0.1:53 (no server needed)."""
    return _run([PY, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 "s.sendto(b'q', ('127.0.0.1', 53))"])


def _curl_to(addr: str) -> Callable[[Path], int]:
    def trigger(d: Path) -> int:
        return _private_net(f"ip addr add {addr}/32 dev lo; "
                            f"exec /usr/bin/curl -s --max-time 5 http://{addr}:9/")
    return trigger


def _curl_local(d: Path) -> int:
    return _private_net("exec /usr/bin/curl -s --max-time 5 http://127.0.0.1:9/")


def _python_connect_to(addr: str) -> Callable[[Path], int]:
    def trigger(d: Path) -> int:
        return _private_net(f"ip addr add {addr}/32 dev lo; exec {PY} -c \"import socket; "
                            f"socket.create_connection(('{addr}', 9), timeout=5)\"")
    return trigger


def _symlink(d: Path) -> None:
    (d / "target").write_text("t")
    (d / "link").symlink_to(d / "target")
    (d / "link").read_text()


def _cat_passwd(d: Path) -> int:
    """/usr/bin/cat reads /etc/passwd (only reads it)."""
    return _run(["/usr/bin/cat", "/etc/passwd"])


def _open_passwd_for_write(d: Path) -> int:
    """open("/etc/passwd", O_WRONLY) in a private mount namespace where /etc/passwd is a
    scratch copy bind-mounted over the real one (which is never opened for writing)."""
    shutil.copy("/etc/passwd", d / "passwd")
    return _private_ns(f"mount --bind {d}/passwd /etc/passwd; exec {PY} -c "
                       "\"import os; os.close(os.open('/etc/passwd', os.O_WRONLY))\"")


def _link_passwd(d: Path) -> int:
    """linkat("/etc/passwd" -> the tmpfs): refused with EXDEV, the syscall ran."""
    import ctypes
    if _libc().linkat(-100, b"/etc/passwd", -100, str(d / "lnk").encode(), 0) == 0:
        return 0
    return ctypes.get_errno()


def _symlink_passwd(d: Path) -> int:
    """symlinkat("/etc/passwd", the tmpfs/sl): a new link on the tmpfs, nothing else."""
    import ctypes
    if _libc().symlinkat(b"/etc/passwd", -100, str(d / "sl").encode()) == 0:
        return 0
    return ctypes.get_errno()


def _libc_dups(d: Path) -> None:
    """dup() and dup2() themselves (os.dup is fcntl(F_DUPFD_CLOEXEC))."""
    fd = _libc().dup(0)
    _libc().dup2(fd, fd)
    os.close(fd)


def _kill(d: Path) -> int:
    """/usr/bin/kill -0 (a kill() of this process with no signal), then kill -l (signal
    names written to a pipe)."""
    subprocess.run(["/usr/bin/kill", "-0", str(os.getpid())], check=True, timeout=20)
    p = subprocess.run(["/usr/bin/kill", "-l"], check=True, timeout=20, capture_output=True)
    return len(p.stdout)


def _exec_grandchild(d: Path) -> str:
    """This process -> sh -> sh -> true: the exec of true, two parents below this one;
    returns this process's comm (the exec's grandparent)."""
    subprocess.run(["/bin/sh", "-c", "/bin/sh -c /bin/true; :"], check=True, timeout=20)
    return Path("/proc/self/comm").read_text().strip()


def _exec_sample(d: Path) -> int:
    """Run /usr/bin/sample-exec: a copy of /bin/true shown in /usr/bin by a read-only
    overlay (lower layers: a scratch dir, then /usr/bin) in a private mount namespace."""
    (d / "extra").mkdir()
    shutil.copy("/bin/true", d / "extra" / "sample-exec")
    return _private_ns(f"mount -t overlay vkc-bin -o lowerdir={d}/extra:/usr/bin /usr/bin; "
                       "exec /usr/bin/sample-exec")


def _exec_copy(d: Path) -> int:
    """Run a copy of /bin/true from the tmpfs ({d}/exe)."""
    shutil.copy("/bin/true", d / "exe")
    return _run([str(d / "exe")])


def _write_passwd(d: Path) -> int:
    """write() to /etc/passwd in a private mount namespace where /etc/passwd is a scratch
    copy bind-mounted over the real one (which is never written)."""
    shutil.copy("/etc/passwd", d / "passwd")
    return _private_ns(f"mount --bind {d}/passwd /etc/passwd; echo >> /etc/passwd")


def _perf_software_event(d: Path) -> int:
    """perf_event_open of a software event (PERF_COUNT_SW_CONTEXT_SWITCHES) of this
    process, closed at once."""
    attr = bytearray(128)  # struct perf_event_attr
    attr[0:4] = (1).to_bytes(4, "little")    # PERF_TYPE_SOFTWARE
    attr[4:8] = len(attr).to_bytes(4, "little")
    attr[8:16] = (3).to_bytes(8, "little")   # PERF_COUNT_SW_CONTEXT_SWITCHES
    attr[40:48] = (1).to_bytes(8, "little")  # disabled
    import ctypes
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = _syscall(298, buf, 0, -1, -1, 0)
    if fd >= 0:
        os.close(fd)
    return fd


_UNPRIVILEGED = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _userns_unprivileged(d: Path) -> int:
    """An unprivileged process (uid 65534, no capabilities) creates a user namespace."""
    return _run(_UNPRIVILEGED + ["/usr/bin/unshare", "-U", "/bin/true"])


def _userns_unprivileged_in_pidns(d: Path) -> int:
    """The same, in a new pid namespace (not the host's); the shell there passes the
    status on (unshare --fork exits 1 for a child killed by a signal)."""
    inner = " ".join(_UNPRIVILEGED + ["/usr/bin/unshare", "-U", "/bin/true"])
    return _run(["/usr/bin/unshare", "--pid", "--fork", "/bin/sh", "-c",
                 f"{inner}; status=$?; exit $status"])


def _cat_in_userns(d: Path) -> int:
    """root of a new user namespace (its capabilities are namespace ones) reads a file."""
    (d / "watched").write_text("x")
    return _run(["/usr/bin/unshare", "-Ur", "/usr/bin/cat", str(d / "watched")])


# capset(2) from Python: drop the effective set, keep the permitted one
_DROP_EFFECTIVE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
if libc.capget(hdr, data) != 0:
    sys.exit(2)
data[0] = data[3] = 0
if libc.capset(hdr, data) != 0:
    sys.exit(3)
os.close(os.open(sys.argv[1], os.O_RDONLY))
"""


def _drop_caps_in_userns(d: Path) -> int:
    """root of a new user namespace drops its effective capabilities (capset), then opens a
    file: a change from the capabilities it had at exec."""
    (d / "watched").write_text("x")
    return _run(["/usr/bin/unshare", "-Ur", PY, "-c", _DROP_EFFECTIVE, str(d / "watched")])


def _pty_write(d: Path) -> int:
    """This process writes 8000 bytes to a new pty (read back from its master)."""
    master, slave = os.openpty()
    try:
        n = os.write(slave, b"x" * 8000)
        os.read(master, 65536)
        return n
    finally:
        os.close(slave)
        os.close(master)


def _mount(d: Path) -> None:
    (d / "m").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vkc-m", str(d / "m")], check=True)
    subprocess.run(["umount", str(d / "m")], check=True)


def _ptrace(d: Path) -> int:
    return _syscall(101, 0x4206, 0x7ffffff0, 0, 0)  # PTRACE_SEIZE, no such pid: ESRCH


def _getpid(d: Path) -> None:
    os.getpid()
    os.getppid()


def _dup(d: Path) -> None:
    os.close(os.dup(0))
    spare = os.dup(0)  # dup2 onto a descriptor of our own: never one the agent holds
    try:
        os.dup2(0, spare)
    finally:
        os.close(spare)


def _bash(d: Path) -> int:
    """/usr/bin/bash starts (main, malloc) and runs a command."""
    p = subprocess.Popen(["/usr/bin/bash", "-c", "echo vk"], stdout=subprocess.DEVNULL)
    p.wait()
    return p.pid


VFS_CAP_V2 = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)  # effective CAP_NET_BIND_SERVICE


def _copy_up_capability(d: Path) -> bool:
    """In a new user and mount namespace (not the host's), open for writing, through an
    overlay, a file whose lower copy has a security.capability xattr: the copy-up copies
    its xattrs. Returns whether the upper copy got security.capability."""
    for n in ("lower", "upper", "work", "merged"):
        (d / n).mkdir()
    shutil.copy("/bin/true", d / "lower" / "f")
    os.setxattr(d / "lower" / "f", "security.capability", VFS_CAP_V2)
    _run(["/usr/bin/unshare", "-U", "-r", "-m", "/bin/sh", "-ec",
          f"mount -t overlay vkc-ovl -o lowerdir={d}/lower,upperdir={d}/upper,"
          f"workdir={d}/work {d}/merged; exec {PY} -c "
          f"\"open('{d}/merged/f', 'a').close()\""])
    try:
        os.getxattr(d / "upper" / "f", "security.capability")
        return True
    except OSError:
        return False


def _copy_up_hook_takes_name() -> str:
    """The example reads the xattr name as argument 0: until 6.9 the hook's only one."""
    from vigil.policy.kbtf import kernel_btf
    kb = kernel_btf()
    params = kb.func_params("security_inode_copy_up_xattr") if kb else None
    if params and params[0].name != "name":
        return (f"security_inode_copy_up_xattr here takes "
                f"({', '.join(p.name for p in params)}): argument 0 is not the xattr name "
                "the example matches, so it never fires")
    return ""


def _libc_path() -> str:
    """The machine's libc (where the dynamic loader found it for this process)."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if os.path.basename(path).startswith("libc.so"):
                return path
    raise FileNotFoundError("libc is not mapped in this process")


USDT_TESTER = ROOT / "build" / "tests" / "usdt_tetragon"


def _usdt_tester() -> str:
    """tests/progs/usdt_tetragon.c, built once (in the project: not on an overlay, where
    a uprobe would not fire)."""
    if not USDT_TESTER.exists():
        USDT_TESTER.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O0", "-o", str(USDT_TESTER),
                        str(ROOT / "tests/progs/usdt_tetragon.c")], check=True, timeout=60)
    return str(USDT_TESTER)


def _run_usdt_tester(_d: Path) -> tuple[int, str]:
    p = subprocess.run([_usdt_tester()], capture_output=True, text=True, timeout=30,
                       check=True)
    return 0, p.stdout


def _usdt_fired(name: str, args: list[dict[str, Any]], action: str = "KPROBE_ACTION_POST",
                out: str = "1 2 3\n") -> Check:
    """A process_usdt of probe ``name`` from the tester, with these arguments; the
    tester printed ``out`` (a Set action shows there)."""
    def check(evs: list[Event], result: Any, _d: Path) -> None:
        got = [b for e in evs if "process_usdt" in e
               for b in [e["process_usdt"]] if b["process"].get("binary") == _usdt_tester()
               and b["name"] == name]
        assert [(b["args"], b["action"]) for b in got] == [(args, action)], got
        assert result[1] == out, result[1]
    return check


def _libraries_with_build_ids(evs: list[Event], pid: Any, _d: Path) -> None:
    """process_loader of the cat the trigger ran: its libc, with a build id."""
    got = [e["process_loader"] for e in evs if "process_loader" in e
           and e["process_loader"]["process"]["pid"] == pid]
    libc = [b for b in got if os.path.basename(b["path"]).startswith("libc.so")]
    assert libc and libc[0].get("buildid"), got


def _cat_pid(_d: Path) -> int:
    """cat starts (the dynamic loader maps its libraries) and exits."""
    p = subprocess.Popen(["/bin/cat", "/dev/null"], stdout=subprocess.DEVNULL)
    p.wait(timeout=30)
    return p.pid


def _module_request(d: Path) -> None:
    try:
        socket.socket(12, socket.SOCK_STREAM).close()  # AF_DECnet: gone, so requested
    except OSError:
        pass


# ---- checks ------------------------------------------------------------------------------

def _mine(evs: list[Event]) -> list[dict[str, Any]]:
    return [_body(e) for e in evs]


def _name(b: dict[str, Any]) -> str:
    return str(b.get("function_name") or b.get("symbol") or b.get("event") or "").removeprefix("__x64_")


def _has_path(key: str, want: str) -> Check:
    def check(evs: list[Event], _r: Any, d: Path) -> None:
        paths = [a[key]["path"] for b in _mine(evs) for a in b.get("args", []) if key in a]
        assert want.format(d=d) in paths, paths
    return check


def _fired(*names: str) -> Check:
    """An event of each hook named (function, tracepoint event or uprobe symbol)."""
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        seen = {_name(b) for b in _mine(evs)}
        assert all(n in seen for n in names), (names, seen)
    return check


def _fired_by_me(name: str) -> Check:
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        mine = [b for b in _mine(evs) if b["process"]["pid"] == os.getpid() and _name(b) == name]
        assert mine, [(_name(b), b["process"]["pid"]) for b in _mine(evs)][:20]
    return check


def _fired_by_child(name: str) -> Check:
    """An event of ``name`` from the process whose pid the trigger returned."""
    def check(evs: list[Event], pid: Any, _d: Path) -> None:
        got = [b for b in _mine(evs) if b["process"]["pid"] == pid and _name(b) == name]
        assert got, [(_name(b), b["process"]["pid"]) for b in _mine(evs)][:20]
    return check


def _str_arg(name: str, want: str) -> Check:
    def check(evs: list[Event], _r: Any, d: Path) -> None:
        got = [a.get("string_arg") for b in _mine(evs) if _name(b) == name
               for a in b.get("args", [])]
        assert want.format(d=d) in got, got
    return check


def _list_dups(evs: list[Event], _r: Any, _d: Path) -> None:
    """Each event of this process names dup or dup2, both fired."""
    mine = {_name(b) for b in _mine(evs) if b["process"]["pid"] == os.getpid()}
    assert mine == {"sys_dup", "sys_dup2"}, mine


def _by_kill(*names: str, prefix: str = "") -> Check:
    """Events only from /usr/bin/kill, among them ``names`` (or one starting ``prefix``)."""
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        bins = {b["process"]["binary"] for b in _mine(evs)}
        seen = {_name(b) for b in _mine(evs)}
        assert bins == {"/usr/bin/kill"}, bins
        assert all(n in seen for n in names), (names, sorted(seen))
        assert not prefix or any(n.startswith(prefix) for n in seen), sorted(seen)
    return check


def _grandparent_comm(evs: list[Event], comm: Any, _d: Path) -> None:
    """The exec of true (by the inner sh, still that binary when the hook runs) reports
    this process's comm: mm.owner is the executing task, two real_parent hops up."""
    got = [b["args"][0].get("string_arg") for b in _mine(evs) if b.get("args")]
    assert comm in got, (comm, got)


def _refused_eperm(name: str, made: str) -> Check:
    """The call failed with EPERM (argError -1) before running: ``made`` does not exist."""
    def check(evs: list[Event], rc: Any, d: Path) -> None:
        assert rc == errno.EPERM, rc
        assert not os.path.lexists(d / made)
        assert any(_name(b) == name and b["action"] == "KPROBE_ACTION_OVERRIDE"
                   for b in _mine(evs)), [(_name(b), b.get("action")) for b in _mine(evs)][:20]
    return check


def _copy_up_skipped(evs: list[Event], copied: Any, _d: Path) -> None:
    assert copied is False, "security.capability was copied up"
    assert any(_name(b) == "security_inode_copy_up_xattr" and b["action"] == "KPROBE_ACTION_OVERRIDE"
               for b in _mine(evs)), [(_name(b), b.get("action")) for b in _mine(evs)][:20]


def _creds_changed(evs: list[Event], _r: Any, _d: Path) -> None:
    uids = [a["process_credentials_arg"]["uid"] for b in _mine(evs) for a in b.get("args", [])
            if "process_credentials_arg" in a]
    assert 65534 in uids, uids


def _skb_port(evs: list[Event], port: Any, _d: Path) -> None:
    skbs = [a["skb_arg"] for b in _mine(evs) for a in b.get("args", []) if "skb_arg" in a]
    assert any(s.get("dport") == port for s in skbs), skbs


def _killed(name: str) -> Check:
    def check(evs: list[Event], rc: Any, _d: Path) -> None:
        assert rc in (-9, 137), rc
        assert any(_name(b) == name and b["action"] == "KPROBE_ACTION_SIGKILL" for b in _mine(evs))
    return check


def _acted(name: str, action: str) -> Check:
    """An event of ``name`` with ``action`` (GetUrl / DnsLookup: the test's pipeline makes
    no request, so nothing leaves the machine)."""
    def check(evs: list[Event], _r: Any, _d: Path) -> None:
        assert any(_name(b) == name and b["action"] == action for b in _mine(evs)), \
            [(_name(b), b.get("action")) for b in _mine(evs)][:20]
    return check


def _enforced(name: str) -> Check:
    def check(evs: list[Event], rc: Any, _d: Path) -> None:
        assert rc in (-9, 137), rc
        assert any(_name(b) == name and b["action"] == "KPROBE_ACTION_NOTIFYENFORCER"
                   for b in _mine(evs)), [(_name(b), b.get("action")) for b in _mine(evs)][:20]
    return check


def _overridden(name: str) -> Check:
    def check(evs: list[Event], rc: Any, _d: Path) -> None:
        assert rc != 0, rc
        assert any(_name(b) == name and b["action"] == "KPROBE_ACTION_OVERRIDE"
                   for b in _mine(evs)), [(_name(b), b.get("action")) for b in _mine(evs)][:20]
    return check


# ---- what each file accepted on the full profile meets here -----------------------------

CGROUP_SKB = ("__cgroup_bpf_run_filter_skb runs only for sockets of a cgroup with a BPF skb "
              "program attached, which this machine has none of")
UPROBE_PID = ("fires only for host pid 61697 running bash's readline: no such process is "
              "made here (small machines' pid_max is 32768)")

# matchPIDs NotIn [1] with followForks: the descendants of pid 1 (in their pid namespace)
# never match, which is every process of the host; Tetragon's check walks up to ten
# ancestors, so it too matches only processes deeper than that below an init
FOLLOW_NOT_1 = ("its matchPIDs is NotIn [1] with followForks: every process descends from "
                "pid 1, so none matches (Tetragon: none within ten generations of an init)")


def _dup_ids_by_me(evs: list[Event], _r: Any, _d: Path) -> None:
    """raw_syscalls/sys_enter events of this process carry only dup's and dup2's ids."""
    mine = [b for b in _mine(evs) if b["process"]["pid"] == os.getpid()]
    ids = {b["args"][0]["size_arg"] for b in mine}
    assert ids and ids <= {"32", "33"}, ids


PLAN: dict[str, Exercise | Loads] = {
    "cves/cve-2023-2640-overlayfs-ubuntu.yaml": Exercise(
        _copy_up_capability, _copy_up_skipped, applies=_copy_up_hook_takes_name,
        note="a copy-up of a file with security.capability, in a new user namespace: "
             "the xattr is not copied"),
    "modules-nohost.yaml": Loads(
        "pod-scoped (podSelector): its hooks run only in pods' cgroups and no pod runs here "
        "(tests/kernel/test_pod_scope.py exercises pod scoping)"),
    "datagram-with-selectors.yaml": Loads(CGROUP_SKB),
    "datagram-with-sock-tracking.yaml": Loads(CGROUP_SKB),
    "datagram.yaml": Loads(CGROUP_SKB),
    "datagram_518.yaml": Exercise(_udp_lo, _fired("ip_output")),
    "dev_queue_xmit.yaml": Exercise(_udp_lo, _skb_port),
    "stack_traces.yaml": Exercise(
        _udp_closed_port, _stacks("kfree_skb_reason"),
        note="a datagram to a closed loopback port is dropped: kfree_skb_reason's event "
             "carries the kernel stack"),
    "dns-only-specified-servers.yaml": Exercise(
        _dns_query_child, _killed("ip_output"),
        note="a child sending a UDP datagram to 127.0.0.1:53 is killed"),
    "fd_install_ns.yaml": Loads(
        "its Mnt values are the fixed inums of the initial pid, cgroup and time namespaces, "
        "which no mount namespace has: it never matches"),
    "fd_install_ns_host.yaml": Exercise(_read, _has_path("file_arg", "{d}/watched")),
    "hardlink-override.yaml": Exercise(
        _link_passwd, _refused_eperm("sys_linkat", "lnk"),
        note="linkat of /etc/passwd onto a tmpfs: refused with EPERM before it runs "
             "(fmod_ret on __x64_sys_linkat)"),
    "list-generated-ftrace.yaml": Exercise(_kill, _by_kill(prefix="ksys_"),
                                           note="/usr/bin/kill -0, kill -l"),
    "list-syscalls-generated.yaml": Exercise(_kill, _by_kill("sys_kill", "sys_exit_group"),
                                             note="/usr/bin/kill -0, kill -l"),
    "list-syscalls.yaml": Exercise(_libc_dups, _list_dups),
    "lsm_track_grandparent.yml": Exercise(
        _exec_grandchild, _grandparent_comm,
        note="this process runs sh, which runs sh, which executes true"),
    "symlink-override.yaml": Exercise(
        _symlink_passwd, _refused_eperm("sys_symlinkat", "sl"),
        note="symlinkat to /etc/passwd on a tmpfs: refused with EPERM before it runs "
             "(fmod_ret on __x64_sys_symlinkat)"),
    "hardlink-observe.yaml": Exercise(
        _link_passwd, _str_arg("sys_linkat", "/etc/passwd"),
        note="linkat of /etc/passwd onto a tmpfs: refused (EXDEV) after the hook"),
    "host-changes/monitor-kernel-modules.yaml": Exercise(
        _module_request, _str_arg("security_kernel_module_request", "net-pf-12"),
        note="request_module exercised (socket of a family no module provides); module "
             "load/unload hooks loaded"),
    "killer.yaml": Exercise(
        _bash_dup2, _enforced("sys_enter"),
        note="/usr/bin/bash's dup2 (exec 3>&1): the enforcer kills it at the syscall"),
    "kprobe_commit_creds.yaml": Exercise(_setuid_child, _creds_changed),
    "lsm_bprm_check.yaml": Loads(
        "it watches Tetragon's own test program (contrib/tester-progs/nop) executed by "
        "bash or zsh; imaHash is exercised by tests/kernel/test_lsm_actions.py"),
    "open_dnsrequest.yaml": Exercise(
        _cat_passwd, _acted("fd_install", "KPROBE_ACTION_DNSLOOKUP"),
        note="/usr/bin/cat opens /etc/passwd; the lookup itself is not made (no internet)"),
    "open_geturl.yaml": Exercise(
        _cat_passwd, _acted("fd_install", "KPROBE_ACTION_GETURL"),
        note="/usr/bin/cat opens /etc/passwd; the request itself is not made (no internet)"),
    "lsm_file_open.yaml": Exercise(
        _cat_passwd, _has_path("file_arg", "/etc/passwd"),
        note="/usr/bin/cat reads /etc/passwd"),
    "openat_write.yaml": Exercise(
        _open_passwd_for_write, _str_arg("sys_openat", "/etc/passwd"),
        note="O_WRONLY open of a scratch copy bind-mounted over /etc/passwd in a private "
             "mount namespace"),
    "override-security.yaml": Exercise(
        _mkdir, _overridden("security_inode_mkdir"),
        note="its second selector has no filter: every mkdir fails while it is loaded"),
    "process-credentials/process-creds-changed.yaml": Exercise(
        _setuid_in_pidns, _creds_changed, note="setuid in a new pid namespace"),
    "process-credentials/process-creds-installed.yaml": Exercise(
        _setuid_in_pidns, _creds_changed, note="setuid in a new pid namespace"),
    "process-credentials/process.credentials.changes.at.syscalls.yaml": Exercise(
        _setuid_in_pidns, _fired("sys_setuid", "sys_setresgid"),
        note="setresgid + setuid in a new pid namespace"),
    "raw_syscalls.yaml": Exercise(_getpid, _fired_by_me("sys_enter")),
    "security-socket-connect.yaml": Exercise(_tcp, _fired_by_me("security_socket_connect")),
    "security-socket-connect-block-others.yaml": Exercise(
        _curl_local, _overridden("security_socket_connect"),
        note="curl to 127.0.0.1 in a private network namespace: the second selector "
             "overrides the connect with 1"),
    "security_bprm_check.yaml": Exercise(
        _exec_sample, _has_path("linux_binprm_arg", "/usr/bin/sample-exec"),
        note="/usr/bin/sample-exec shown by an overlay in a private mount namespace"),
    "security_inode_follow_link.yaml": Exercise(
        _symlink, _has_path("path_arg", "/link"),
        note="dentry paths are relative to their filesystem"),
    "symlink-observe.yaml": Exercise(
        _symlink_passwd, _str_arg("sys_symlinkat", "/etc/passwd"),
        note="a symlink to /etc/passwd on the test's tmpfs"),
    "sys_mount.yaml": Exercise(_mount, _str_arg("sys_mount", "{d}/m")),
    "sys_ptrace.yaml": Exercise(_ptrace, _fired_by_me("sys_ptrace")),
    "sys_setuid.yaml": Exercise(_setuid_sys, _fired("sys_setuid")),
    "tcp-connect-only-local-addrs.yaml": Exercise(
        _curl_to("192.0.2.1"), _killed("tcp_connect"),
        note="curl to 192.0.2.1, an address of lo in a private network namespace"),
    "tcp-connect-only-private-addrs.yaml": Exercise(
        _python_connect_to("198.51.100.1"), _killed("tcp_connect"),
        note="a connect to 198.51.100.1, an address of lo in a private network namespace"),
    "tcp-connect-with-selectors.yaml": Exercise(
        _tcp_send, _fired("tcp_connect", "tcp_sendmsg", "tcp_close")),
    "tcp-connect.yaml": Exercise(_tcp_send, _fired("tcp_connect", "tcp_sendmsg", "tcp_close")),
    "tcp-accept.yaml": Exercise(_tcp, _fired("tcp_close")),
    "tcp-listen.yaml": Exercise(_listen_31337, _fired("inet_csk_listen_start")),
    "uprobe-binaries.yaml": Exercise(
        _bash, _fired_by_child("malloc"), uprobe_path="libc",
        provide=(("/lib64/libc.so.6", "libc"),),
        note="/lib64/libc.so.6 (a Fedora path) shown to the loader, in a private mount "
             "namespace, as a symlink to this machine's libc"),
    "uprobe-host.yaml": Exercise(
        _bash, _fired_by_child("_start"), uprobe_path="/procRoot/1/root/usr/bin/bash",
        note="/procRoot is where Tetragon's pod mounts the host's /proc"),
    "uprobe-pid.yaml": Loads(UPROBE_PID),
    "uprobe.yaml": Exercise(_bash, _fired_by_child("main"), uprobe_path="/bin/bash"),
    "write.yaml": Loads(FOLLOW_NOT_1),
    "sys_clock_settime.yaml": Loads(FOLLOW_NOT_1),
    "sys_pivot_root.yaml": Loads(FOLLOW_NOT_1),
    "list-syscalls-tracepoint.yaml": Exercise(_dup, _dup_ids_by_me),
    "usdt.yaml": Exercise(
        _run_usdt_tester,
        _usdt_fired("usdt3", [{"int_arg": 42}, {"long_arg": "1234567890123"}]),
        uprobe_path="usdt-tester",
        provide=(("/home/jolsa/tetragon/contrib/tester-progs/usdt", "usdt-tester"),),
        note="the file's tester program: tests/progs/usdt_tetragon.c"),
    "usdt-set.yaml": Exercise(
        _run_usdt_tester,
        _usdt_fired("test_4B", [{"int_arg": 1}, {"int_arg": 2}, {"int_arg": 3}],
                    "KPROBE_ACTION_SET", "32 2 3\n"),
        uprobe_path="usdt-tester",
        provide=(("/home/jolsa/tetragon/contrib/tester-progs/usdt-override", "usdt-tester"),),
        note="the file's tester program: tests/progs/usdt_tetragon.c; Set writes argument 0"),
    "loader.yaml": Exercise(_cat_pid, _libraries_with_build_ids),
    "rawtp.yaml": Exercise(_exec_copy, _has_path("linux_binprm_arg", "{d}/exe")),
    "tty.yaml": Exercise(_pty_write, _fired_by_me("tty_write")),
    "process-exec/process-exec-elf-begin.yaml": Exercise(
        _exec_copy, _has_path("file_arg", "{d}/exe")),
    "bpf.yaml": Exercise(_perf_software_event, _fired_by_me("security_perf_event_alloc")),
    "dev_hard_start_xmit.yaml": Exercise(_udp_lo, _str_arg("dev_hard_start_xmit", "lo")),
    "filename_monitoring.yaml": Exercise(_cat_passwd, _has_path("file_arg", "/etc/passwd")),
    "filename_monitoring_filtered.yaml": Exercise(
        _write_passwd, _has_path("file_arg", "/etc/passwd"),
        note="a write to a scratch copy bind-mounted over /etc/passwd, in a private mount "
             "namespace"),
    "cves/cve-2024-3094-xz-ssh.yaml": Loads(
        "it matches /usr/sbin/sshd mapping liblzma 5.6.0 or 5.6.1, which this machine does "
        "not have"),
    "process-credentials/creds-capability-usage.yaml": Exercise(
        _setuid_in_pidns, _fired("cap_capable")),
    "fd_install_caps.yaml": Exercise(
        _cat_in_userns, _has_path("file_arg", "{d}/watched"),
        note="cat run as root of a new user namespace"),
    "fd_install_cap_changes.yaml": Exercise(
        _drop_caps_in_userns, _has_path("file_arg", "{d}/watched"),
        note="root of a new user namespace drops its effective capabilities, then opens "
             "a file"),
    "sandbox/linux-namespaces/kill_unprivileged_user_namespace.yaml": Exercise(
        _userns_unprivileged, _killed("create_user_ns"),
        note="an unprivileged process creating a user namespace is killed"),
    "sandbox/linux-namespaces/kill_unprivileged_user_namespace_in_pid_namespace.yaml":
        Exercise(_userns_unprivileged_in_pidns, _killed("create_user_ns"),
                 note="the same, in a new pid namespace"),
}

# a refusal for what this kernel's BTF says of the function the file names
BTF_FACTS = ("no such function in this kernel", " parameters (0..")

# words of a kernel refusal -> the probe (vigil.bpf.features) that must then fail here
KERNEL_FEATURES = (("kprobes are not available", ("kprobe",)),
                   ("no BPF trampolines", ("fentry", "fexit")),
                   ("fmod_ret on syscall", ("fmod_ret_syscall",)),
                   ("fmod_ret", ("fmod_ret_security",)),
                   ("BPF LSM", ("lsm",)),
                   ("bpf_override_return", ("override_return",)),
                   ("bpf_probe_write_user", ("probe_write_user",)))


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples() -> Path:
    try:
        return examples_dir()
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    from vigil.k8s.pods import PodWatcher
    from vigil.k8s.scopes import ScopeManager
    from vigil.sensors.policyfilter import PolicyFilter
    e = Env()
    # pod-scoped examples load as the agent with --enable-k8s-api loads them on a node
    # without pods: scoped to no cgroup
    e.manager.scopes = ScopeManager(PolicyFilter(), PodWatcher(), "/nonexistent")
    yield e
    e.close()
    e.manager.scopes.filter.close()


@pytest.fixture(scope="module")
def report() -> Iterator[list[dict[str, str]]]:
    rows: list[dict[str, str]] = []
    yield rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compat-{os.uname().release}.json"
    rows.sort(key=lambda r: r["example"])
    out.write_text(json.dumps({"kernel": os.uname().release, "cases": rows}, indent=1) + "\n")


@pytest.fixture
def tdir() -> Iterator[Path]:
    """A fresh tmpfs: in the lane /tmp is an overlay, where one open() reaches the file
    hooks twice (overlay file, then the real one)."""
    d = Path("/tmp") / f"vkc-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=755", "vkc", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def this_kernel_full_view() -> object:
    """The full profile with this kernel's BTF and tracepoint formats."""
    from vigil.policy.kbtf import kernel_btf
    from vigil.policy.tracefs import read_format
    return full_view(kernel_btf(), read_format)


# ---- the test ----------------------------------------------------------------------------

def _reason(err: Exception) -> str:
    diags = getattr(err, "diagnostics", None)
    if diags:
        return "; ".join(f"{d.path}: {d.message}" for d in diags)
    return str(getattr(err, "reason", "") or err).split("\n")[0]


def _fs_type(path: str) -> str:
    r = subprocess.run(["stat", "-f", "-L", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip()


def _events(env: Env, trigger: Callable[[], Any]) -> list[Event]:
    env.pipe.handle(env.base.ring.drain())
    trigger()
    time.sleep(0.3)
    kinds = ("process_kprobe", "process_lsm", "process_tracepoint", "process_uprobe",
             "process_usdt", "process_loader")
    return [e for e in env.pipe.handle(env.base.ring.drain()) if next(iter(e)) in kinds]


def _real(path: str) -> str:
    if path == "usdt-tester":
        return _usdt_tester()
    return _libc_path() if path == "libc" else path




def _add_in_private_ns(env: Env, text: str, source: str, provide: tuple[tuple[str, str], ...],
                       tdir: Path) -> Any:
    """``env.manager.add`` in a thread with its own mount namespace, where each path the
    file names is a symlink to the machine's file (an overlay adds it to the directory):
    the loader resolves the names there, the hooks then live on the real files."""
    out: list[Any] = []

    def run() -> None:
        try:
            if _libc().unshare(0x00020000) != 0:  # CLONE_NEWNS (and CLONE_FS) for this thread
                raise OSError(ctypes_errno(), "unshare(CLONE_NEWNS)")
            # children forked from this thread inherit its mount namespace
            subprocess.run(["mount", "--make-rprivate", "/"], check=True)
            for i, (name, real) in enumerate(provide):
                extra = tdir / f"provide{i}"
                # the overlay goes on the deepest directory that exists; the missing
                # ones come from the upper layer
                where = os.path.dirname(name)
                while not os.path.isdir(where):
                    where = os.path.dirname(where)
                sub = extra / os.path.relpath(os.path.dirname(name), where)
                sub.mkdir(parents=True)
                (sub / os.path.basename(name)).symlink_to(_real(real))
                where = os.path.realpath(where)
                subprocess.run(["mount", "-t", "overlay", "vkc-provide", "-o",
                                f"lowerdir={extra}:{where}", where], check=True)
            out.append(env.manager.add(text, source=source))
        except BaseException as err:
            out.append(err)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def ctypes_errno() -> int:
    import ctypes
    return ctypes.get_errno()


@contextlib.contextmanager
def _loaded(env: Env, path: Path, provide: tuple[tuple[str, str], ...] = (),
            tdir: Path | None = None) -> Iterator[Any]:
    if provide:
        assert tdir is not None
        info = _add_in_private_ns(env, path.read_text(), str(path), provide, tdir)
    else:
        info = env.manager.add(path.read_text(), source=str(path))
    try:
        yield info
    finally:
        env.manager.delete(info.name, info.namespace)


def _kernel_refusal(name: str, reason: str) -> str:
    """The kernel feature a kernel refusal names; fails unless this kernel's probe
    confirms it is missing (in the lane, also unless the kernel need not have it)."""
    from vigil.bpf import features as F
    for words, probes in KERNEL_FEATURES:
        if words in reason:
            missing = [p for p in probes if not F.probe(p).ok]
            assert missing, f"{name}: refused for {probes}, which this kernel has: {reason}"
            lane = [p for p in missing if p in expected()]
            assert not lane, f"{name}: kernel {os.uname().release} should allow {lane}: {reason}"
            return probes[0]
    if "attach" in reason and "EBUSY" in reason:  # in BTF, but ftrace cannot patch it here
        return "traceable function (attach: EBUSY)"
    pytest.fail(f"{name}: refused at load, for no kernel feature named: {reason}")


@pytest.mark.parametrize("name", sorted(FULL_PROFILE))
def test_example(examples: Path, env: Env, tdir: Path, report: list[dict[str, str]],
                 this_kernel_full_view: object, name: str) -> None:
    path = examples / name
    plan = PLAN.get(name)
    row = {"example": name, "note": getattr(plan, "note", "")}

    def record(status: str, detail: str) -> None:
        row.update(status=status, detail=detail)
        report.append(row)

    absent = _real(plan.uprobe_path) if isinstance(plan, Exercise) and plan.uprobe_path else ""
    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(
                _loaded(env, path, plan.provide if isinstance(plan, Exercise) else (), tdir))
        except PolicyError as err:  # refused on a kernel with every feature too
            why = _reason(err)
            full = refusal(path, this_kernel_full_view)
            assert full is not None, f"{name}: refused here, accepted on the full profile: {why}"
            if any(w in full for w in BTF_FACTS):  # this kernel lacks the function named
                record("refused-kernel", f"btf: {full}")
                return
            record("refused-vigil", full)  # why on every kernel, not only this one
            want = FULL_PROFILE[name]
            assert want is not None, f"{name}: FULL_PROFILE says ACCEPTED, refused here: {why}"
            if want[0] == "vigil":  # the same missing feature on every kernel
                assert want[1] in full, f"{name}: refused for {full!r}, the table says {want}"
            return
        except FeatureNotSupported as err:
            why = _reason(err)
            if any(w in why for w in BTF_FACTS):  # this kernel lacks the function named
                record("refused-kernel", f"btf: {why.rsplit(' error: ', 1)[-1]}")
                return
            if absent and not os.path.exists(absent):
                record("refused-host", f"{absent} does not exist on this machine: {why}")
                return
            feature = _kernel_refusal(name, why)
            record("refused-kernel", f"{feature}: {why.rsplit(' error: ', 1)[-1]}")
            return
        mech = info.info
        row["mechanism"] = mech
        assert FULL_PROFILE[name] is None or FULL_PROFILE[name][0] == "btf", \
            f"{name} loads, though FULL_PROFILE says {FULL_PROFILE[name]}: exercise it"
        assert plan is not None, f"{name} loads ({mech}): write its trigger in PLAN"
        if isinstance(plan, Loads):
            record("loads", plan.why)
            return
        if "fanotify" in mech or "cgroup/" in mech:
            record("loads", f"through {mech}, not the example's hook (the enforcement tests "
                            "exercise these mechanisms)")
            return
        target = _real(plan.uprobe_path) if plan.uprobe_path else ""
        if target and _fs_type(target) == "overlayfs":
            record("loads", f"{target} is on overlayfs, where a uprobe does not fire "
                            "(processes map the layer's file)")
            return
        why_not = plan.applies()
        if why_not:
            record("loads", why_not)
            return
        trigger = plan.trigger
        result: list[Any] = []
        evs = _events(env, lambda: result.append(trigger(tdir)))
        try:
            plan.check(evs, result[0], tdir)
        except AssertionError as err:
            record("FAIL", str(err).split("\n")[0][:300])
            raise
        record("pass", f"{len(evs)} event(s)")


def test_results_name_every_file(examples: Path) -> None:
    from tests.tetragon_examples import example_files
    assert sorted(FULL_PROFILE) == example_files(examples)
    assert set(PLAN) <= set(FULL_PROFILE)
