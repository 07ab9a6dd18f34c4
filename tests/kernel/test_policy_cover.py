"""The policy feature matrix in the real kernel (docs/policies.md "Test coverage").

Each test loads real policies through the real PolicyManager, runs real triggers and
asserts the exact events — and that the calls that must not match produce none. Helpers
and the module's Env come from test_policies.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import (CAT, ME, PY, Env, _body, _cat, _my_links,  # noqa: F401 - fixtures
                                        env, opened_paths, openat_policy, tdir, touch,
                                        uprobe_target)
from vigil.errors import PolicyError

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
NR_OPENAT, NR_PRCTL = 257, 157


def policy(name: str, body: str) -> str:
    return (f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
            f"  name: {name}\nspec:\n{body}")


def args_of(evs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [_body(e)["args"] for e in evs]


# ---- argument types ---------------------------------------------------------------------

SEEK_SET, SEEK_HOLE = 0, 4
BIG = 0x1_8000_8085  # low byte 0x85, low 16 bits 0x8085, low 32 bits 0x80008085
_INT_TYPES = {
    # type: (rendering of BIG, rendering of -2)
    "int": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "sint32": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "int32": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "sint16": ({"int_arg": -32635}, {"int_arg": -2}),
    "int16": ({"int_arg": -32635}, {"int_arg": -2}),
    "sint8": ({"int_arg": -123}, {"int_arg": -2}),
    "int8": ({"int_arg": -123}, {"int_arg": -2}),
    "uint32": ({"uint_arg": 0x80008085}, {"uint_arg": 0xFFFFFFFE}),
    "uint16": ({"uint_arg": 0x8085}, {"uint_arg": 0xFFFE}),
    "uint8": ({"uint_arg": 0x85}, {"uint_arg": 0xFE}),
    "long": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "sint64": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "int64": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "ulong": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
    "uint64": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
    "size_t": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
}
_GROUPS = [list(_INT_TYPES)[i:i + 4] for i in range(0, len(_INT_TYPES), 4)]


@pytest.mark.parametrize("types", _GROUPS, ids=["-".join(g) for g in _GROUPS])
def test_integer_types(env: Env, tdir: Path, types: list[str]) -> None:
    """lseek's off_t argument read as each integer type (truncation and sign), filtered on
    whence: the SEEK_SET call must not produce an event."""
    args = "".join(f"    - index: 1\n      type: {t}\n" for t in types)
    pol = policy("vc-ints", f"""  kprobes:
  - call: sys_lseek
    args:
    - index: 2
      type: uint32
{args}    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["{SEEK_HOLE}"]
""")
    f = tdir / "seek"
    f.write_bytes(b"x")
    fd = os.open(f, os.O_RDONLY)

    def trigger() -> None:
        for off, whence in ((BIG, SEEK_HOLE), (0, SEEK_SET), (-2, SEEK_HOLE)):
            try:
                os.lseek(fd, off, whence)
            except OSError:
                pass
    try:
        with env.policy(pol):
            evs = env.run(trigger, ME)
    finally:
        os.close(fd)
    assert args_of(evs) == [
        [{"uint_arg": SEEK_HOLE}] + [_INT_TYPES[t][0] for t in types],
        [{"uint_arg": SEEK_HOLE}] + [_INT_TYPES[t][1] for t in types]]


def test_capability_arg(env: Env) -> None:
    """prctl(PR_CAPBSET_READ, cap): the cap as capability_arg, filtered by CAP_ name."""
    pol = policy("vc-cap", f"""  kprobes:
  - call: sys_prctl
    args:
    - index: 0
      type: int
    - index: 1
      type: capability
      label: cap
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["23"]
      - index: 1
        operator: Equal
        values: ["CAP_SYS_ADMIN", "CAP_BPF"]
""")

    def trigger() -> None:
        for cap in (21, 12, 39):  # CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF
            LIBC.prctl(23, cap, 0, 0, 0)
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert args_of(evs) == [
        [{"int_arg": 23}, {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}, "label": "cap"}],
        [{"int_arg": 23}, {"capability_arg": {"value": 39, "name": "CAP_BPF"}, "label": "cap"}]]


def test_filename_and_user_strings_read_safely(env: Env, tdir: Path) -> None:
    """`filename` is a user string like `string`; an unreadable pointer and a path longer
    than the capture limit are handled without losing the event."""
    pol = policy("vc-strings", f"""  kprobes:
  - call: sys_openat
    args:
    - index: 1
      type: filename
      label: name
    - index: 2
      type: int
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["{os.O_NOFOLLOW | os.O_CLOEXEC}"]
""")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC  # the marker the selector matches
    long_name = "/" + "a" * 5000

    def openat(path: Any, fl: int) -> None:
        LIBC.syscall(NR_OPENAT, -100, path, fl, 0)

    def trigger() -> None:
        openat(ctypes.c_char_p(str(tdir / "f").encode()), flags)
        openat(ctypes.c_void_p(8), flags)  # EFAULT for the kernel; empty for Vigil
        openat(ctypes.c_char_p(long_name.encode()), flags)  # ENAMETOOLONG
        openat(ctypes.c_char_p(str(tdir / "g").encode()), 0)  # other flags: no event
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert args_of(evs) == [
        [{"string_arg": str(tdir / "f"), "label": "name"}, {"int_arg": flags}],
        [{"string_arg": "", "label": "name"}, {"int_arg": flags}],
        [{"string_arg": long_name[:4095], "label": "name"}, {"int_arg": flags}]]


# ---- sockaddr operators -----------------------------------------------------------------

@pytest.fixture(scope="module")
def servers() -> Any:
    v4 = socket.socket()
    v4.bind(("127.0.0.1", 0))
    v4.listen(16)
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    v6.listen(16)
    yield v4.getsockname()[1], v6.getsockname()[1]
    v4.close()
    v6.close()


def _connects(p4: int, p6: int, unix_path: str) -> dict[str, tuple[int, Any]]:
    """Label -> (family, address) of every connect the sockaddr tests make, in order."""
    return {"v4": (socket.AF_INET, ("127.0.0.1", p4)),
            "v4b": (socket.AF_INET, ("127.0.0.2", p6)),  # refused: nothing listens there
            "v6": (socket.AF_INET6, ("::1", p6)),
            "unix": (socket.AF_UNIX, unix_path)}


@pytest.mark.parametrize("ops,expect", [
    ([("SAddr", ["127.0.0.1"])], ["v4"]),
    ([("SAddr", ["127.0.0.0/8"])], ["v4", "v4b"]),
    ([("SAddr", ["::1/128"])], ["v6"]),
    ([("SAddr", ["::/0", "127.0.0.2/32"])], ["v4b", "v6"]),
    # Not*: a sockaddr without an inet address (AF_UNIX) is not in the set either
    ([("NotSAddr", ["127.0.0.1/32"])], ["v4b", "v6", "unix"]),
    ([("NotSAddr", ["127.0.0.0/8", "::1"])], ["unix"]),
    ([("SPort", ["{p6}"])], ["v4b", "v6"]),
    ([("SPort", ["{p4}", "1:2"])], ["v4"]),
    ([("NotSPort", ["{p4}:{p4}"])], ["v4b", "v6", "unix"]),
    ([("Family", ["AF_INET6"])], ["v6"]),
    ([("Family", ["AF_UNIX", "2"])], ["v4", "v4b", "unix"]),
    # filters AND: an address and a port
    ([("SAddr", ["127.0.0.0/8"]), ("NotSPort", ["{p4}"])], ["v4b"]),
], ids=lambda v: "-".join(f"{o}" for o, _ in v) if v and isinstance(v[0], tuple) else "")
def test_sockaddr_operators(env: Env, tdir: Path, servers: tuple[int, int],
                            ops: list[tuple[str, list[str]]], expect: list[str]) -> None:
    p4, p6 = servers
    unix = socket.socket(socket.AF_UNIX)
    upath = str(tdir / "sock")
    unix.bind(upath)
    unix.listen(4)
    conns = _connects(p4, p6, upath)
    filters = "".join(
        f"""      - index: 1
        operator: {op}
        values: [{", ".join(f'"{v.format(p4=p4, p6=p6)}"' for v in vals)}]
""" for op, vals in ops)
    pol = policy("vc-sockaddr", f"""  kprobes:
  - call: sys_connect
    args:
    - index: 0
      type: int
    - index: 1
      type: sockaddr
      label: to
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
{filters}""")

    def trigger() -> None:
        for fam, addr in conns.values():
            with socket.socket(fam) as s:
                try:
                    s.connect(addr)
                except OSError:
                    pass
    try:
        with env.policy(pol):
            evs = env.run(trigger, ME)
    finally:
        unix.close()
    rendered = {
        "v4": {"family": "AF_INET", "addr": "127.0.0.1", "port": p4},
        "v4b": {"family": "AF_INET", "addr": "127.0.0.2", "port": p6},
        "v6": {"family": "AF_INET6", "addr": "::1", "port": p6},
        "unix": {"family": "AF_UNIX"},
    }
    assert [a[1] for a in args_of(evs)] == [
        {"sockaddr_arg": rendered[k], "label": "to"} for k in expect]


@pytest.mark.parametrize("op,value", [
    ("DAddr", "127.0.0.1"), ("NotDAddr", "::1"), ("DPort", "80"), ("NotDPort", "80"),
    ("Protocol", "IPPROTO_TCP"),
])
def test_sockaddr_operators_tetragon_refuses(env: Env, op: str, value: str) -> None:
    """A syscall's sockaddr takes SAddr/SPort/Family (and Not*) only, as in Tetragon:
    the others are refused with their location and nothing is attached."""
    before = _my_links()
    pol = policy("vc-sockaddr-refused", f"""  kprobes:
  - call: sys_connect
    args:
    - index: 1
      type: sockaddr
    selectors:
    - matchArgs:
      - index: 1
        operator: {op}
        values: ["{value}"]
""")
    with pytest.raises(PolicyError) as err:
        env.manager.add(pol, source="test")
    assert [str(d) for d in err.value.diagnostics] == [
        f"test:14:19: error: spec.kprobes[0].selectors[0].matchArgs[0].operator: "
        f"operator {op} cannot be used on an argument of type sockaddr"]
    assert _my_links() == before


# ---- tracepoints: syscalls/* with user-memory types, raw tracepoints ---------------------

def _tp(name: str, subsys: str, event: str, args: str, selectors: str,
        extra: str = "") -> str:
    return policy(name, f"""  tracepoints:
  - subsystem: {subsys}
    event: {event}
{extra}    args:
{args}    selectors:
{selectors}""")


def test_syscalls_tracepoint_fd_char_buf_size(env: Env, tdir: Path) -> None:
    """syscalls/sys_enter_write: fields 5.. are the syscall's arguments; fd resolved to a
    path, char_buf sized by the count field (sizeArgIndex = that arg's index + 1)."""
    pol = _tp("vc-tp-write", "syscalls", "sys_enter_write", """    - index: 5
      type: fd
      label: file
    - index: 6
      type: char_buf
      sizeArgIndex: 8
    - index: 7
      type: size_t
""", f"""    - matchArgs:
      - index: 5
        operator: Prefix
        values: ["{tdir}/"]
""")
    target = tdir / "w"

    def trigger() -> None:
        with open(target, "wb", buffering=0) as f:
            f.write(b"abc")
        with open(os.devnull, "wb", buffering=0) as f:
            f.write(b"not this")
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert {next(iter(e)) for e in evs} == {"process_tracepoint"}
    assert [(_body(e)["subsys"], _body(e)["event"]) for e in evs] == [
        ("syscalls", "sys_enter_write")]
    assert args_of(evs) == [[{"file_arg": {"path": str(target)}, "label": "file"},
                             {"bytes_arg": "YWJj"}, {"size_arg": "3"}]]


def test_syscalls_tracepoint_user_string_and_sockaddr(env: Env, tdir: Path,
                                                     servers: tuple[int, int]) -> None:
    """A `char *` field of syscalls/* is a user string; a `struct sockaddr *` a sockaddr."""
    opens = _tp("vc-tp-open", "syscalls", "sys_enter_openat", """    - index: 6
      type: string
    - index: 7
      type: int
""", """    - matchArgs:
      - index: 6
        operator: Postfix
        values: ["/yes"]
""")
    conns = _tp("vc-tp-conn", "syscalls", "sys_enter_connect", """    - index: 6
      type: sockaddr
""", f"""    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 6
        operator: SAddr
        values: ["::1"]
""")
    p4, p6 = servers

    def trigger() -> None:
        touch(tdir / "yes", tdir / "no")
        for fam, addr in ((socket.AF_INET, ("127.0.0.1", p4)), (socket.AF_INET6, ("::1", p6))):
            with socket.socket(fam) as s:
                s.connect(addr)
    with env.policy(opens), env.policy(conns):
        evs = env.run(trigger, ME)
    assert [(_body(e)["policy_name"], _body(e)["args"]) for e in evs] == [
        ("vc-tp-open", [{"string_arg": str(tdir / "yes")},
                        {"int_arg": os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC}]),
        ("vc-tp-conn", [{"sockaddr_arg": {"family": "AF_INET6", "addr": "::1", "port": p6}}])]


def test_raw_tracepoints(env: Env) -> None:
    """raw: true: index into the raw arguments; raw_syscalls/sys_enter's id (long) and
    task/task_rename's comm (a kernel string)."""
    name = f"vcr{os.getpid() % 100000}"
    ids = _tp("vc-raw-ids", "raw_syscalls", "sys_enter", """    - index: 1
      type: long
      label: id
""", f"""    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 1
        operator: Equal
        values: ["121"]
""", extra="    raw: true\n")
    rename = _tp("vc-raw-rename", "task", "task_rename", """    - index: 1
      type: string
""", f"""    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{name}"]
""", extra="    raw: true\n")
    code = ("import ctypes; c = ctypes.CDLL(None); "
            f"c.prctl(15, b'other', 0, 0, 0); c.prctl(15, b'{name}x', 0, 0, 0)")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        os.getpgid(0)
        os.getsid(0)
        procs.append(subprocess.Popen([PY, "-c", code]))
        procs[0].wait()
    with env.policy(ids) as info, env.policy(rename):
        assert "raw" in info.info
        evs = env.run(trigger)
    got = [(_body(e)["policy_name"], _body(e)["process"]["pid"], _body(e)["args"]) for e in evs]
    assert got == [("vc-raw-ids", os.getpid(), [{"long_arg": "121", "label": "id"}]),
                   ("vc-raw-rename", procs[0].pid, [{"string_arg": f"{name}x"}])]
    assert (_body(evs[1])["subsys"], _body(evs[1])["event"]) == ("task", "task_rename")


# ---- selectors on the process -----------------------------------------------------------

def _opens_by(env: Env, pol: str, target: Path, runs: list[dict[str, Any]]) -> tuple[
        list[int], list[int]]:
    """Run every subprocess in `runs` (kwargs of subprocess.run, "cmd" included) and this
    process opening `target`; the pids that opened it, and the pids of the events."""
    pids: list[int] = []

    def trigger() -> None:
        for r in runs:
            kw = dict(r)
            p = subprocess.Popen(kw.pop("cmd"), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, **kw)
            p.wait()
            pids.append(p.pid)
        touch(target)
    with env.policy(pol):
        evs = env.run(trigger)
    return pids, [_body(e)["process"]["pid"] for e in evs
                  if _body(e)["args"][1]["string_arg"] == str(target)]


@pytest.mark.parametrize("op,values,cat,me", [
    ("Prefix", [CAT[:-1]], True, False),
    ("NotPrefix", [CAT[:-2]], False, True),
    ("NotPostfix", ["/cat"], False, True),
    ("NotPostfix", ["/nonexistent"], True, True),
    ("Postfix", ["/cat", "/nonexistent"], True, False),  # values OR
])
def test_match_binaries_more(env: Env, tdir: Path, op: str, values: list[str], cat: bool,
                             me: bool) -> None:
    target = tdir / "f"
    target.write_text("x")
    vals = ", ".join(f'"{v}"' for v in values)
    pol = openat_policy("vc-bins", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchBinaries:
      - operator: {op}
        values: [{vals}]""")
    (cat_pid,), pids = _opens_by(env, pol, target, [{"cmd": [CAT, str(target)]}])
    assert pids == [cat_pid] * cat + [os.getpid()] * me


def test_match_pids_notin_and_namespace_pid(env: Env, tdir: Path) -> None:
    """NotIn [me]: only the others; In [1] isNamespacePID: only the process that is pid 1
    of its own pid namespace (not init, not the plain cat)."""
    target = tdir / "p"
    target.write_text("x")
    runs = [{"cmd": [CAT, str(target)]},
            {"cmd": ["unshare", "--pid", "--fork", CAT, str(target)]}]
    notin = openat_policy("vc-pid-notin", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchPIDs:
      - operator: NotIn
        values: [{os.getpid()}]""")
    nspid = openat_policy("vc-pid-ns", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchPIDs:
      - operator: In
        values: [1]
        isNamespacePID: true""")
    (plain, unshare), pids = _opens_by(env, notin, target, runs)
    # the plain cat, and unshare's child (pid 1 inside its namespace, another pid here)
    assert len(pids) == 2 and pids[0] == plain and pids[1] not in (unshare, os.getpid())
    (plain, unshare), pids = _opens_by(env, nspid, target, runs)
    assert len(pids) == 1 and pids[0] not in (plain, unshare, os.getpid(), 1)


def test_match_namespaces_notin(env: Env, tdir: Path) -> None:
    target = tdir / "n"
    target.write_text("x")
    # the test's own mount namespace (make test runs in a private one, not the host's)
    mnt = os.readlink("/proc/self/ns/mnt").split("[")[1].rstrip("]")
    pol = openat_policy("vc-ns-notin", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchNamespaces:
      - namespace: Net
        operator: NotIn
        values: ["host_ns"]
      - namespace: Mnt
        operator: In
        values: ["{mnt}"]""")
    runs = [{"cmd": [CAT, str(target)]},
            {"cmd": ["unshare", "--net", CAT, str(target)]},
            {"cmd": ["unshare", "--net", "--mount", CAT, str(target)]}]
    (_, in_netns, _), pids = _opens_by(env, pol, target, runs)
    assert pids == [in_netns]  # not the host one, not the one with its own mount ns


@pytest.mark.parametrize("ctype,op,root,nobody", [
    ("Effective", "NotIn", False, True),
    ("Permitted", "In", True, False),
    ("Inheritable", "In", False, False),
])
def test_match_capabilities_more(env: Env, tdir: Path, ctype: str, op: str, root: bool,
                                 nobody: bool) -> None:
    target = tdir / "caps"
    target.write_text("x")
    tdir.chmod(0o755)
    pol = openat_policy("vc-caps", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchCapabilities:
      - type: {ctype}
        operator: {op}
        values: ["CAP_SYS_ADMIN", "CAP_NET_RAW"]""")
    runs = [{"cmd": [CAT, str(target)]},
            {"cmd": [CAT, str(target)], "user": 65534, "group": 65534, "extra_groups": []}]
    (root_pid, nobody_pid), pids = _opens_by(env, pol, target, runs)
    me_matches = ctype != "Inheritable" and op == "In"  # this process is root
    assert pids == [root_pid] * root + [nobody_pid] * nobody + [os.getpid()] * me_matches


def test_workloads_without_kubernetes_refused(env: Env) -> None:
    """matchWorkloads (here host processes only) without the Kubernetes API is refused,
    not applied host-wide, and nothing of the policy stays loaded."""
    from vigil.errors import FeatureNotSupported
    before = _my_links()
    pol = openat_policy("vc-workloads-host", """
    - matchWorkloads:
        hostSelector: {}""")
    with pytest.raises(FeatureNotSupported, match="matchWorkloads needs the Kubernetes API"):
        env.manager.add(pol, source="test")
    assert _my_links() == before


# ---- actions and selector semantics -------------------------------------------------------

@pytest.mark.parametrize("scope,expect", [
    ("thread", ["main:same", "thread:same", "cat:same", "main:other"]),
    ("process", ["main:same", "cat:same", "main:other"]),
    ("global", ["main:same", "main:other"]),
])
def test_rate_limit_scopes(env: Env, tdir: Path, scope: str, expect: list[str]) -> None:
    import threading
    pol = policy("vc-rate", f"""  kprobes:
  - call: sys_openat
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchActions:
      - action: Post
        rateLimit: "1m"
        rateLimitScope: {scope}
""")
    same, other = tdir / "same", tdir / "other"
    same.write_text("x")
    who: dict[tuple[int, int], str] = {}

    def in_thread() -> None:
        who[(os.getpid(), threading.get_native_id())] = "thread"
        touch(same)

    def trigger() -> None:
        who[(os.getpid(), threading.get_native_id())] = "main"
        touch(same, same, same)
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        p = subprocess.Popen([CAT, str(same)], stdout=subprocess.DEVNULL)
        p.wait()
        who[(p.pid, p.pid)] = "cat"
        touch(other)
    with env.policy(pol):
        evs = env.run(trigger)
    got = [(_body(e)["process"]["pid"], _body(e)["process"]["tid"],
            _body(e)["args"][0]["string_arg"]) for e in evs]
    assert [f"{who[(pid, tid)]}:{Path(path).name}" for pid, tid, path in got] == expect


def test_first_matching_selector_wins(env: Env, tdir: Path) -> None:
    """Selectors in order, the first that matches decides: `.quiet` files under tdir are
    not posted (selector 0), other files under tdir are posted (1) — also a `.kill` file,
    which selector 2 would kill for; a `.kill` file elsewhere is killed (2)."""
    outside = Path(f"{tdir}-x.kill")
    for p in (tdir / "a.quiet", tdir / "b.txt", tdir / "c.kill", outside):
        p.write_text("x")
    pol = openat_policy("vc-order", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      - index: 1
        operator: Postfix
        values: [".quiet"]
      matchActions:
      - action: NoPost
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
    - matchArgs:
      - index: 1
        operator: Postfix
        values: ["{tdir.name}-x.kill"]
      matchActions:
      - action: Sigkill""")
    rcs: list[int] = []

    def trigger() -> None:
        for p in (tdir / "a.quiet", tdir / "b.txt", tdir / "c.kill", outside):
            rcs.append(_cat(p).returncode)
    try:
        with env.policy(pol):
            evs = env.run(trigger)
    finally:
        outside.unlink()
    assert rcs == [0, 0, 0, -9]
    assert [(_body(e)["args"][1]["string_arg"], _body(e)["action"]) for e in evs] == [
        (str(tdir / "b.txt"), "KPROBE_ACTION_POST"),
        (str(tdir / "c.kill"), "KPROBE_ACTION_POST"),
        (str(outside), "KPROBE_ACTION_SIGKILL")]


def test_signal_nopost_kills_silently(env: Env, tdir: Path) -> None:
    target = tdir / "quiet"
    target.write_text("x")
    pol = openat_policy("vc-silent", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchBinaries:
      - operator: In
        values: ["{CAT}"]
      matchActions:
      - action: Signal
        argSig: 15
      - action: NoPost""")
    with env.policy(pol):
        rcs: list[int] = []
        evs = env.run(lambda: (rcs.append(_cat(target).returncode),
                               rcs.append(_cat(tdir).returncode)))
    assert rcs == [-15, 1] and evs == []


# ---- event fields -------------------------------------------------------------------------

def test_message_tags_process_parent_on_every_event_kind(env: Env, tdir: Path) -> None:
    target = tdir / "fields"
    target.write_text("x")
    pol = policy("vc-fields", f"""  kprobes:
  - call: sys_openat
    message: "opened by a child"
    tags: ["cover", "kprobe"]
    args:
    - index: 1
      type: string
      label: path
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_getpgid
    message: "getpgid"
    tags: ["cover", "tracepoint"]
    args:
    - index: 5
      type: int
    selectors:
    - matchArgs:
      - index: 5
        operator: Equal
        values: ["777777"]
      matchPIDs:
      - operator: NotIn
        values: [{os.getpid()}]
""")
    code = (f"import os; open({str(target)!r}).close()\n"
            "try: os.getpgid(777777)\nexcept OSError: pass")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        for pid in (777777, 0):  # this process: not matched by the tracepoint
            try:
                os.getpgid(pid)
            except OSError:
                pass
        procs.append(subprocess.Popen([PY, "-c", code]))
        procs[0].wait()
    with env.policy(pol):
        evs = env.run(trigger)
    child = procs[0].pid
    assert [next(iter(e)) for e in evs] == ["process_kprobe", "process_tracepoint"]
    kp, tp = (_body(e) for e in evs)
    assert (kp["message"], kp["tags"], kp["args"]) == (
        "opened by a child", ["cover", "kprobe"], [{"string_arg": str(target), "label": "path"}])
    assert (tp["message"], tp["tags"], tp["subsys"], tp["event"]) == (
        "getpgid", ["cover", "tracepoint"], "syscalls", "sys_enter_getpgid")
    assert tp["args"] == [{"int_arg": 777777}]
    for b in (kp, tp):
        assert b["policy_name"] == "vc-fields" and b["action"] == "KPROBE_ACTION_POST"
        assert (b["process"]["pid"], b["process"]["binary"]) == (child, PY)
        assert (b["parent"]["pid"], b["parent"]["binary"]) == (os.getpid(), PY)
        assert b["process"]["parent_exec_id"] == b["parent"]["exec_id"]


# ---- lifecycle: add/remove leaves nothing attached, for every hook kind -------------------

def _my_bpf_ids(kind: str) -> set[int]:
    """Ids of the BPF objects (`prog_id` / `map_id`) whose fds this process holds."""
    ids = set()
    fdinfo = Path(f"/proc/{os.getpid()}/fdinfo")
    for f in fdinfo.iterdir():
        try:
            for line in f.read_text().splitlines():
                if line.startswith(f"{kind}:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def _kernel_ids(what: str) -> set[int]:
    out = subprocess.run(["bpftool", "-j", what, "list"], capture_output=True, text=True,
                         check=True)
    return {o["id"] for o in json.loads(out.stdout or "[]")}


_HOOKS = {
    "syscall-enter": ("""  kprobes:
  - call: sys_openat
    args:
    - index: 1
      type: string
""", 1),
    "syscall-enter-exit": ("""  kprobes:
  - call: sys_read
    return: true
    returnArg:
      index: 0
      type: long
""", 2),
    "tracepoint": ("""  tracepoints:
  - subsystem: sched
    event: sched_process_exit
""", 1),
    "raw-tracepoint": ("""  tracepoints:
  - subsystem: task
    event: task_rename
    raw: true
""", 1),
    "uprobe": ("""  uprobes:
  - path: "{target}"
    symbols: ["vigil_target", "main"]
""", 2),
    "uretprobe-args": ("""  uprobes:
  - path: "{target}"
    symbols: ["vigil_target"]
    return: true
    returnArg:
      index: 0
      type: int
    args:
    - index: 0
      type: int
""", 2),
    "follow": ("""  kprobes:
  - call: sys_openat
    selectors:
    - matchBinaries:
      - operator: In
        values: ["/bin/true"]
        followChildren: true
""", 4),
}


@pytest.mark.parametrize("kind", list(_HOOKS))
def test_add_delete_leaves_nothing_attached(env: Env, uprobe_target: str, kind: str) -> None:
    body, nlinks = _HOOKS[kind]
    before = (_my_links(), _my_bpf_ids("prog_id"), _my_bpf_ids("map_id"))
    info = env.manager.add(policy(f"vc-life-{kind}", body.format(target=uprobe_target)),
                           source="test")
    try:
        links = _my_links() - before[0]
        progs = _my_bpf_ids("prog_id") - before[1]
        maps = _my_bpf_ids("map_id") - before[2]
        assert len(links) == nlinks
        assert links <= _kernel_ids("link") and progs <= _kernel_ids("prog")
        assert len(progs) >= nlinks and maps
        env.manager.disable(info.name)
        assert _my_links() == before[0] and not links & _kernel_ids("link")
        env.manager.enable(info.name)
        assert len(_my_links() - before[0]) == nlinks
    finally:
        env.manager.delete(info.name)
    assert (_my_links(), _my_bpf_ids("prog_id"), _my_bpf_ids("map_id")) == before
    # (maps are not checked in the kernel's list: a program releases them after an RCU
    # grace period; this process's map fds are checked above)
    assert not links & _kernel_ids("link") and not progs & _kernel_ids("prog")
