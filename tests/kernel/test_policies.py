"""Tracing policies in the real kernel: every hook kind, arg type, operator and action.

Each test loads a policy through the real PolicyManager (validate -> compile -> load),
runs real processes or syscalls, drains the real ring buffer and asserts the exact
events, and that the calls that must not match produced none.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import links_of
from vigil.errors import FeatureNotSupported, PolicyError

CAT = os.path.realpath("/bin/cat")
ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


class Env:
    """An agent built by the agent's own start-up steps, up to its policy engine and the
    /proc scan: no reader thread (the tests drain the ring themselves), no exporters."""

    def __init__(self) -> None:
        from vigil.daemon.agent import Agent, AgentConfig
        # policy events only: the processes' credential changes are followed, not exported
        self.agent = Agent(AgentConfig(node_name="test", rb_size_total=16 << 20,
                                       process_cred_changes="follow", self_protection=False))
        self.agent.start(steps=("policy-engine", "procfs-scan"))
        self.base = self.agent.sensor
        self.pipe = self.agent.pipeline
        self.policy_events = self.agent.policy_events
        self.manager = self.agent.policies

    @contextlib.contextmanager
    def policy(self, yaml_text: str) -> Iterator[Any]:
        info = self.manager.add(yaml_text, source="test")
        try:
            yield info
        finally:
            self.manager.delete(info.name, info.namespace)

    def run(self, trigger: Callable[[], Any], pids: set[int] | None = None) -> list[Event]:
        """Policy events caused while ``trigger`` ran (optionally only these pids)."""
        self.pipe.handle(self.base.ring.drain())
        result = trigger()
        time.sleep(0.3)
        events = self.pipe.handle(self.base.ring.drain())
        del result
        out = [e for e in events if next(iter(e)) in
               ("process_kprobe", "process_tracepoint", "process_uprobe")]
        if pids:
            out = [e for e in out if _body(e)["process"]["pid"] in pids]
        return out

    def close(self) -> None:
        self.agent.stop()


def _body(e: Event) -> dict[str, Any]:
    return e[next(iter(e))]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@pytest.fixture
def tdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path("/tmp") / f"vk-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def openat_policy(name: str, selectors: str, args: str = "") -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
      label: path
    - index: 2
      type: int
{args}
    selectors:
{selectors}
"""


def touch(*paths: Path, flags: int = os.O_RDONLY) -> None:
    for p in paths:
        try:
            os.close(os.open(p, flags | os.O_CREAT, 0o644))
        except OSError:
            pass


def opened_paths(events: list[Event]) -> list[str]:
    return [_body(e)["args"][1]["string_arg"] for e in events]


ME = {os.getpid()}


# ---- syscall hooks on tracepoints, strings --------------------------------------------

def test_openat_prefix_event_fields(env: Env, tdir: Path) -> None:
    pol = openat_policy("vk-prefix", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/in"]""")
    with env.policy(pol) as info:
        assert "sys_enter_openat" in info.info
        evs = env.run(lambda: touch(tdir / "in-a", tdir / "out-b", tdir / "in-c"), ME)
    assert opened_paths(evs) == [f"{tdir}/in-a", f"{tdir}/in-c"]
    body = _body(evs[0])
    assert next(iter(evs[0])) == "process_kprobe"
    assert body["function_name"] == "__x64_sys_openat"
    assert body["args"][0] == {"int_arg": -100}
    assert body["args"][1] == {"string_arg": f"{tdir}/in-a", "label": "path"}
    assert body["args"][2]["int_arg"] & os.O_CREAT
    assert body["action"] == "KPROBE_ACTION_POST"
    assert body["policy_name"] == "vk-prefix"
    assert body["process"]["pid"] == os.getpid()
    assert evs[0]["node_name"] == "test" and evs[0]["time"].endswith("Z")


@pytest.mark.parametrize("op,values,expect", [
    ("Equal", ["{d}/a.conf"], ["a.conf"]),
    ("NotEqual", ["{d}/a.conf"], ["b.txt", "c.conf"]),
    ("Postfix", [".conf"], ["a.conf", "c.conf"]),
    ("NotPostfix", [".conf"], ["b.txt"]),
    ("NotPrefix", ["{d}/a", "{d}/c"], ["b.txt"]),
    ("Prefix", ["{d}/a", "{d}/b"], ["a.conf", "b.txt"]),
])
def test_string_operators(env: Env, tdir: Path, op: str, values: list[str],
                          expect: list[str]) -> None:
    vals = ", ".join(f'"{v.format(d=tdir)}"' for v in values)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: {op}
        values: [{vals}]"""
    with env.policy(openat_policy("vk-strops", sel)):
        evs = env.run(lambda: touch(tdir / "a.conf", tdir / "b.txt", tdir / "c.conf"), ME)
    got = [p for p in opened_paths(evs) if p.startswith(str(tdir))]
    assert got == [f"{tdir}/{n}" for n in expect]


# ---- SubString: kernel functions bpf_strnstr (6.17) / bpf_strncasestr (6.19) ----------

def _kfunc(name: str) -> bool:
    from vigil.policy.kbtf import has_kfunc
    return has_kfunc(name)


_SUBSTRING_KFUNCS = {"SubString": ("bpf_strnstr", "6.17"),
                     "SubStringIgnCase": ("bpf_strncasestr", "6.19")}


@pytest.mark.parametrize("op,values,expect", [
    ("SubString", ["conf"], ["a.conf", "c.conf"]),
    ("SubString", ["nowhere", "b.t"], ["b.txt"]),
    # the value at the very end of the string, and the whole string
    ("SubString", ["c.conf", "{d}/a.conf"], ["a.conf", "c.conf"]),
    ("SubString", ["CONF", "a.conf/"], []),
    ("SubStringIgnCase", ["CONF"], ["a.conf", "c.conf"]),
    ("SubStringIgnCase", ["B.TxT"], ["b.txt"]),
])
def test_substring(env: Env, tdir: Path, op: str, values: list[str],
                   expect: list[str]) -> None:
    """A value matches where it occurs anywhere in the string (values OR), on a syscall
    tracepoint; the kernel searches with bpf_strnstr / bpf_strncasestr."""
    kfunc, since = _SUBSTRING_KFUNCS[op]
    if not _kfunc(kfunc):
        pytest.skip(f"{op} needs {kfunc} (Linux {since} or later)")
    vals = ", ".join(f'"{v.format(d=tdir)}"' for v in values)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      - index: 1
        operator: {op}
        values: [{vals}]"""
    with env.policy(openat_policy("vk-substr", sel)) as info:
        assert "sys_enter_openat" in info.info
        evs = env.run(lambda: touch(tdir / "a.conf", tdir / "b.txt", tdir / "c.conf"), ME)
    assert opened_paths(evs) == [f"{tdir}/{n}" for n in expect]


def test_substring_tracepoint_section(env: Env, tdir: Path) -> None:
    """SubString on a tracepoints: entry (the filename field), real processes: only the
    cat whose path holds the value is reported."""
    if not _kfunc("bpf_strnstr"):
        pytest.skip("SubString needs bpf_strnstr (Linux 6.17 or later)")
    (tdir / "has-needle-in").write_text("x")
    (tdir / "plain").write_text("x")
    pol = _tp_openat_policy("vk-tp-substr", 6, "needle").replace("Prefix", "SubString")
    with env.policy(pol):
        evs = env.run(lambda: (_cat(tdir / "has-needle-in"), _cat(tdir / "plain")))
    mine = [e for e in evs if _body(e)["process"]["binary"] == CAT]
    assert [_body(e)["args"] for e in mine] == [[{"string_arg": f"{tdir}/has-needle-in"}]]


@pytest.mark.parametrize("op", ["SubString", "SubStringIgnCase"])
def test_substring_refused_without_kfunc(env: Env, tmp_path: Path, op: str) -> None:
    """A kernel without the kernel function: the policy is valid, not for this kernel
    (refused whole, with the reason; `check` exits 4 naming the feature)."""
    kfunc, since = _SUBSTRING_KFUNCS[op]
    if _kfunc(kfunc):
        pytest.skip(f"this kernel has {kfunc}")
    # SubStringIgnCase calls both functions: the refusal names each one missing
    missing = [f for f in ("bpf_strnstr", kfunc) if not _kfunc(f)]
    missing = list(dict.fromkeys(missing))
    before = _my_links()
    sel = f"""
    - matchArgs:
      - index: 1
        operator: {op}
        values: ["needle"]"""
    pol = openat_policy("vk-substr-refused", sel)
    why = (f"{op} needs the kernel function{'s' if len(missing) > 1 else ''} "
           f"{' and '.join(missing)} (Linux {since} or later)")
    with pytest.raises(FeatureNotSupported, match=r"matchArgs\[0\]\.operator: " + re.escape(why)):
        env.manager.add(pol, source="test")
    assert _my_links() == before
    assert [p.name for p in env.manager.list()] == []
    path = tmp_path / "p.yaml"
    path.write_text(pol)
    out = subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", "check", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "valid, but this kernel cannot load" in out.stdout and why in out.stdout, out.stdout
    needs = out.stdout.split("it would load with: ", 1)[-1]
    for f in missing:
        assert f"kfunc_{f.removeprefix('bpf_')}: the BPF kernel function {f}" in needs, out.stdout


# os.open() adds O_CREAT (touch) and O_CLOEXEC (Python's fds are non-inheritable)
_BASE = os.O_CREAT | os.O_CLOEXEC


@pytest.mark.parametrize("op,values,expect", [
    ("Equal", [str(os.O_WRONLY | _BASE)], ["w"]),
    ("Mask", [str(os.O_RDWR)], ["rw", "excl"]),
    ("GT", [hex(os.O_RDWR | _BASE)], ["excl"]),
    ("LT", [hex(os.O_WRONLY | _BASE)], ["r"]),
    ("InRange", [f"{_BASE}:{_BASE | os.O_RDWR}"], ["r", "w", "rw"]),
    # several values OR: greater than any = greater than the smallest
    ("GT", [hex(os.O_RDWR | _BASE), hex(_BASE)], ["w", "rw", "excl"]),
    ("LT", [hex(os.O_WRONLY | _BASE), hex(os.O_RDWR | _BASE)], ["r", "w"]),
    # InMap with a min:max range and a single value
    ("InMap", [f"{_BASE}:{_BASE | os.O_WRONLY}", str(os.O_RDWR | os.O_EXCL | _BASE)],
     ["r", "w", "excl"]),
    ("NotInMap", [f"{_BASE}:{_BASE | os.O_WRONLY}"], ["rw", "excl"]),
    # four ranges (Tetragon's limit counts ranges, not their ends); the last one counts
    ("InRange", [f"{_BASE}:{_BASE}", f"{_BASE | os.O_WRONLY}:{_BASE | os.O_WRONLY}", "1:2",
                 f"{_BASE | os.O_RDWR | os.O_EXCL}:{_BASE | os.O_RDWR | os.O_EXCL}"],
     ["r", "w", "excl"]),
    # unsigned 32-bit ends on an int argument: the same 32 bits (negative above 2^31 - 1)
    ("InRange", ["0:4294967295"], ["r", "w", "rw", "excl"]),
    ("NotInRange", ["2147483648:4294967295"], ["r", "w", "rw", "excl"]),
    ("InRange", ["2147483648:4294967295"], []),
])
def test_int_operators(env: Env, tdir: Path, op: str, values: list[str],
                       expect: list[str]) -> None:
    vals = ", ".join(f'"{v}"' for v in values)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      - index: 2
        operator: {op}
        values: [{vals}]"""
    files = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR, "excl": os.O_RDWR | os.O_EXCL}

    def trigger() -> None:
        for name, flags in files.items():
            touch(tdir / name, flags=flags)
    with env.policy(openat_policy("vk-intops", sel)):
        evs = env.run(trigger, ME)
    assert [p.rsplit("/", 1)[1] for p in opened_paths(evs)] == expect


# ---- selectors on the process ---------------------------------------------------------

def _cat(path: Path, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([CAT, str(path)], capture_output=True, **kw)


@pytest.mark.parametrize("op,values,matches_cat", [
    ("In", [CAT], True), ("NotIn", [CAT], False), ("Postfix", ["/cat"], True),
    ("Prefix", ["/nonexistent/"], False),
])
def test_match_binaries(env: Env, tdir: Path, op: str, values: list[str],
                        matches_cat: bool) -> None:
    target = tdir / "f"
    target.write_text("x")
    vals = ", ".join(f'"{v}"' for v in values)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchBinaries:
      - operator: {op}
        values: [{vals}]"""
    procs: list[int] = []

    def trigger() -> None:
        p = subprocess.Popen([CAT, str(target)], stdout=subprocess.DEVNULL)
        p.wait()
        procs.append(p.pid)
        touch(target)  # this python process
    with env.policy(openat_policy("vk-bins", sel)):
        evs = env.run(trigger)
    pids = [_body(e)["process"]["pid"] for e in evs if opened_paths([e]) == [str(target)]]
    assert (procs[0] in pids) == matches_cat
    assert (os.getpid() in pids) == (op in ("NotIn",))


def test_match_pids(env: Env, tdir: Path) -> None:
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchPIDs:
      - operator: In
        values: [{os.getpid()}]"""
    with env.policy(openat_policy("vk-pids", sel)):
        evs = env.run(lambda: (touch(tdir / "me"), _cat(tdir / "me")))
    assert [_body(e)["process"]["pid"] for e in evs] == [os.getpid()]


def test_several_match_pids_filters_all_hold(env: Env, tdir: Path) -> None:
    """Two matchPIDs filters in one selector are AND-ed, as in Tetragon: NotIn [0, 1, me]
    drops this process, isNamespacePID NotIn [1] drops the init of a new pid namespace;
    only a plain child of neither kind matches."""
    target = tdir / "pids"
    target.write_text("x")
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchPIDs:
      - operator: NotIn
        values: [0, 1, {os.getpid()}]
      - operator: NotIn
        isNamespacePID: true
        values: [1]"""
    plain: list[subprocess.CompletedProcess[bytes]] = []
    with env.policy(openat_policy("vk-pids-and", sel)):
        evs = env.run(lambda: (touch(target),
                               subprocess.run(["unshare", "--pid", "--fork", CAT, str(target)],
                                              capture_output=True, check=True),
                               plain.append(_cat(target))))
    assert len(evs) == 1
    body = _body(evs[0])
    assert body["process"]["binary"] == CAT
    assert body["parent"]["pid"] == os.getpid()  # the plain cat, not unshare's child


def _tp_openat_policy(name: str, match_index: int, prefix: str) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
    - matchArgs:
      - index: {match_index}
        operator: Prefix
        values: ["{prefix}"]
"""


@pytest.mark.parametrize("match_index", [6, 0], ids=["field-index", "position"])
def test_tracepoint_match_args_index_field_or_position(env: Env, tdir: Path,
                                                       match_index: int) -> None:
    """A tracepoint matchArgs index names the format field (6: filename) or, as Tetragon
    reads an index no argument has, the position in args (0): the same filter."""
    (tdir / "in").write_text("x")
    with env.policy(_tp_openat_policy("vk-tp-index", match_index, f"{tdir}/")):
        evs = env.run(lambda: (_cat(tdir / "in"), _cat(Path("/dev/null"))))
    mine = [e for e in evs if _body(e)["process"]["binary"] == CAT]
    assert [_body(e)["args"] for e in mine] == [[{"string_arg": f"{tdir}/in"}]]


# ---- followChildren / followForks -----------------------------------------------------

SH = os.path.realpath("/bin/sh")
PY = os.path.realpath(sys.executable)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _started(cmd: list[str], nchildren: int = 0) -> subprocess.Popen[bytes]:
    """A process waiting on its stdin, and once it has `nchildren` children forked."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while len(_children(p.pid)) < nchildren and time.monotonic() < deadline:
        time.sleep(0.01)
    if len(_children(p.pid)) < nchildren:
        p.kill()
        p.wait()
        pytest.fail(f"{cmd} did not fork {nchildren} children")
    return p


def _release(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        p.wait(timeout=10)


def _opener(path: Path) -> str:
    return f"import sys; sys.stdin.readline(); open({str(path)!r}).close()"


def _events_by_path(evs: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in evs:
        out.setdefault(_body(e)["args"][1]["string_arg"], []).append(e)
    return out


@pytest.fixture
def own_sh(tdir: Path) -> Iterator[str]:
    """A private copy of the shell on its own tmpfs: the followed binary must not be an
    ancestor of the test itself (in the kernel lane pytest runs under /bin/sh)."""
    d = tdir / "bin"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=755", "vk-sh", str(d)], check=True)
    try:
        shutil.copy(SH, d / "vk-sh")
        yield str(d / "vk-sh")
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_follow_children_in(env: Env, tdir: Path, own_sh: str) -> None:
    """A shell's descendants (forked before or after the policy loaded) match; others not."""
    for n in ("before", "after", "direct", "grand"):
        (tdir / n).write_text("x")
    # running before the policy: sh -> python (forked, different binary) waiting on stdin
    early = _started([own_sh, "-c", f"{PY} -c {shlex.quote(_opener(tdir / 'before'))}; true"],
                     nchildren=1)
    [early_child] = _children(early.pid)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchBinaries:
      - operator: In
        values: ["{own_sh}"]
        followChildren: true"""
    late: list[int] = []

    def trigger() -> None:
        _release(early)
        p = subprocess.run([own_sh, "-c", f"{CAT} {tdir}/after; {own_sh} -c '{CAT} {tdir}/grand; true'; true"],
                           capture_output=True, check=True)
        del p
        d = subprocess.Popen([CAT, str(tdir / "direct")], stdout=subprocess.DEVNULL)
        d.wait()
        late.append(d.pid)
        touch(tdir / "direct")
    with env.policy(openat_policy("vk-follow-in", sel)):
        evs = env.run(trigger)
    by = _events_by_path(evs)
    assert set(by) == {f"{tdir}/before", f"{tdir}/after", f"{tdir}/grand"}
    assert [_body(e)["process"]["pid"] for e in by[f"{tdir}/before"]] == [early_child]
    assert [_body(e)["process"]["binary"] for e in by[f"{tdir}/after"]] == [CAT]
    assert [_body(e)["process"]["binary"] for e in by[f"{tdir}/grand"]] == [CAT]
    assert _body(by[f"{tdir}/grand"][0])["parent"]["binary"] == own_sh


def test_follow_children_notin(env: Env, tdir: Path, own_sh: str) -> None:
    (tdir / "f").write_text("x")
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{tdir}/f"]
      matchBinaries:
      - operator: NotIn
        values: ["{own_sh}"]
        followChildren: true"""
    direct: list[int] = []

    def trigger() -> None:
        subprocess.run([own_sh, "-c", f"{CAT} {tdir}/f; true"], capture_output=True, check=True)
        d = subprocess.Popen([CAT, str(tdir / "f")], stdout=subprocess.DEVNULL)
        d.wait()
        direct.append(d.pid)
    with env.policy(openat_policy("vk-follow-notin", sel)):
        evs = env.run(trigger)
    assert [_body(e)["process"]["pid"] for e in evs] == direct


# ---- matchParentBinaries ----------------------------------------------------------------

def _tp_parent_policy(name: str, prefix: str, op: str, values: list[str]) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
    - matchArgs:
      - index: 6
        operator: Prefix
        values: ["{prefix}"]
      matchParentBinaries:
      - operator: {op}
        values: {values!r}
"""


@pytest.mark.parametrize("op,values,from_sh", [
    ("In", ["{sh}"], True), ("NotIn", ["{sh}"], False), ("Prefix", ["{bin}/"], True),
    ("NotPrefix", ["{bin}/"], False), ("Postfix", ["/vk-sh"], True),
    ("In", ["/nonexistent/sh"], None),
], ids=["in", "notin", "prefix", "notprefix", "postfix", "in-other"])
def test_match_parent_binaries(env: Env, tdir: Path, own_sh: str, op: str,
                               values: list[str], from_sh: bool | None) -> None:
    """The same cat opens a file as a child of a shell and as a child of python; the
    selector compares the parent's binary, not the caller's: the shell's own open (its
    parent is this test's python) goes with the python side."""
    for n in ("sh-child", "sh-self", "py-child"):
        (tdir / n).write_text("x")
    values = [v.format(sh=own_sh, bin=str(Path(own_sh).parent)) for v in values]
    spawn = f"import subprocess; subprocess.run([{CAT!r}, {str(tdir / 'py-child')!r}])"

    def trigger() -> None:
        subprocess.run([own_sh, "-c", f"{CAT} {tdir}/sh-child; : < {tdir}/sh-self; true"],
                       capture_output=True, check=True)
        subprocess.run([PY, "-c", spawn], capture_output=True, check=True)
    with env.policy(_tp_parent_policy("vk-parent-bin", f"{tdir}/", op, values)):
        evs = env.run(trigger)
    got = {_body(e)["args"][0]["string_arg"]: _body(e) for e in evs}
    want = {True: {"sh-child"}, False: {"sh-self", "py-child"}, None: set()}[from_sh]
    assert set(got) == {f"{tdir}/{n}" for n in want}
    parents = {own_sh if from_sh else PY} if want else set()
    assert {b["parent"]["binary"] for b in got.values()} == parents


@pytest.mark.parametrize("op,values", [
    ("In", ["{sh}"]), ("Prefix", ["{bin}/"]), ("NotIn", ["{sh}"]), ("NotPostfix", ["/vk-sh"]),
], ids=["in", "prefix", "notin", "notpostfix"])
def test_match_parent_binaries_parent_without_record(env: Env, tdir: Path, own_sh: str,
                                                     op: str, values: list[str]) -> None:
    """A parent with no process record (vg_procs; removed here) matches only the Not*
    operators, as an unknown caller does under matchBinaries: each case here decides the
    other way round from the same shell with its record."""
    from vigil.bpf.object import MapFd
    (tdir / "f").write_text("x")
    values = [v.format(sh=own_sh, bin=str(Path(own_sh).parent)) for v in values]
    sh = _started([own_sh, "-c", f"read x; {CAT} {tdir}/f; true"])
    with env.policy(_tp_parent_policy("vk-parent-unknown", f"{tdir}/", op, values)):
        MapFd(env.base.shared_maps()["vg_procs"], "vg_procs").delete(sh.pid.to_bytes(4, "little"))
        evs = env.run(lambda: _release(sh))
    got = [(_body(e)["args"][0]["string_arg"], _body(e)["parent"]["pid"]) for e in evs]
    assert got == ([(f"{tdir}/f", sh.pid)] if op.startswith("Not") else [])


def test_follow_forks(env: Env, tdir: Path) -> None:
    """matchPIDs In [P] followForks: P's children from before the load (seeded from /proc)
    and after it match; P itself matches; unrelated processes do not."""
    for n in ("seeded", "forked", "self", "other"):
        (tdir / n).write_text("x")
    script = (f"import os, sys, subprocess\n"
              f"pid = os.fork()\n"
              f"if pid == 0:\n"
              f"    sys.stdin.readline(); open({str(tdir / 'seeded')!r}).close(); os._exit(0)\n"
              f"os.waitpid(pid, 0)\n"
              f"open({str(tdir / 'self')!r}).close()\n"
              f"subprocess.run([{CAT!r}, {str(tdir / 'forked')!r}], stdout=subprocess.DEVNULL)\n")
    root = _started([PY, "-c", script], nchildren=1)
    [seeded_child] = _children(root.pid)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchPIDs:
      - operator: In
        values: [{root.pid}]
        followForks: true"""

    def trigger() -> None:
        _release(root)
        subprocess.run([CAT, str(tdir / "other")], capture_output=True, check=True)
        touch(tdir / "other")
    with env.policy(openat_policy("vk-follow-forks", sel)):
        evs = env.run(trigger)
    by = _events_by_path(evs)
    assert set(by) == {f"{tdir}/seeded", f"{tdir}/self", f"{tdir}/forked"}
    assert [_body(e)["process"]["pid"] for e in by[f"{tdir}/seeded"]] == [seeded_child]
    assert [_body(e)["process"]["pid"] for e in by[f"{tdir}/self"]] == [root.pid]
    [forked] = by[f"{tdir}/forked"]
    assert _body(forked)["process"]["binary"] == CAT
    assert _body(forked)["parent"]["pid"] == root.pid


def test_match_capabilities(env: Env, tdir: Path) -> None:
    target = tdir / "caps"
    target.write_text("x")
    tdir.chmod(0o755)
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchCapabilities:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN"]"""
    with env.policy(openat_policy("vk-caps", sel)):
        root = []
        evs = env.run(lambda: (root.append(_cat(target)),
                               _cat(target, user=65534, group=65534, extra_groups=[])))
    assert len(evs) == 1
    assert evs[0]["process_kprobe"]["process"]["binary"] == CAT


def test_match_namespaces_host_net(env: Env, tdir: Path) -> None:
    target = tdir / "ns"
    target.write_text("x")
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchNamespaces:
      - namespace: Net
        operator: In
        values: ["host_ns"]"""
    with env.policy(openat_policy("vk-ns", sel)):
        evs = env.run(lambda: (_cat(target), subprocess.run(
            ["unshare", "--net", CAT, str(target)], capture_output=True)))
    assert len(evs) == 1  # the process in its own network namespace does not match


def test_raw_syscalls_syscall64_inmap(env: Env) -> None:
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-raw-syscalls
spec:
  lists:
  - name: ids
    type: syscalls
    values: ["sys_getpgrp"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: syscall64
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 4
        operator: InMap
        values: ["110", "list:ids"]
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 4
        operator: Equal
        values: ["sys_getsid", "x64/getpgid"]
"""
    with env.policy(pol):
        evs = env.run(lambda: [os.getppid(), os.getpgrp(), os.getppid(), os.getpid(),
                               os.getsid(0), os.getpgid(0), os.getuid()], ME)
    assert [_body(e)["args"][0]["syscall_id"] for e in evs] == [
        {"id": 110, "abi": "x64"}, {"id": 111, "abi": "x64"}, {"id": 110, "abi": "x64"},
        {"id": 124, "abi": "x64"}, {"id": 121, "abi": "x64"}]
    assert all(_body(e)["subsys"] == "raw_syscalls" for e in evs)


# ---- actions ----------------------------------------------------------------------------

def test_nopost_emits_nothing(env: Env, tdir: Path) -> None:
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchActions:
      - action: NoPost"""
    with env.policy(openat_policy("vk-nopost", sel)):
        assert env.run(lambda: touch(tdir / "x"), ME) == []


@pytest.mark.parametrize("action,sig,name", [
    ("action: Sigkill", 9, "KPROBE_ACTION_SIGKILL"),
    ("action: Signal\n        argSig: 10", 10, "KPROBE_ACTION_SIGNAL"),
])
def test_signal_actions_kill_the_caller(env: Env, tdir: Path, action: str, sig: int,
                                        name: str) -> None:
    target = tdir / "forbidden"
    target.write_text("x")
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
      matchBinaries:
      - operator: In
        values: ["{CAT}"]
      matchActions:
      - {action}"""
    with env.policy(openat_policy("vk-kill", sel)):
        procs: list[subprocess.CompletedProcess[bytes]] = []
        evs = env.run(lambda: procs.append(_cat(target)))
    assert procs[0].returncode == -sig
    assert procs[0].stdout == b""  # killed before it could print the file
    assert [_body(e)["action"] for e in evs] == [name]


def test_rate_limit(env: Env, tdir: Path) -> None:
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchActions:
      - action: Post
        rateLimit: "1m"
        rateLimitScope: process"""

    def trigger() -> None:
        for _ in range(5):
            touch(tdir / "same")
        touch(tdir / "other")
    with env.policy(openat_policy("vk-rate", sel)):
        evs = env.run(trigger, ME)
    assert opened_paths(evs) == [f"{tdir}/same", f"{tdir}/other"]


# ---- argument types --------------------------------------------------------------------

def test_write_fd_char_buf_size(env: Env, tdir: Path) -> None:
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-write
spec:
  kprobes:
  - call: sys_write
    args:
    - index: 0
      type: fd
    - index: 1
      type: char_buf
      sizeArgIndex: 3
    - index: 2
      type: size_t
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{tdir}/"]
"""
    target = tdir / "written"

    def trigger() -> None:
        with open(target, "wb", buffering=0) as f:
            f.write(b"hello vigil")
        with open(os.devnull, "wb", buffering=0) as f:
            f.write(b"not this")
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert [_body(e)["args"] for e in evs] == [[
        {"file_arg": {"path": str(target)}},
        {"bytes_arg": base64.b64encode(b"hello vigil").decode()},
        {"size_arg": "11"},
    ]]


def test_read_return_copy_and_return_value(env: Env, tdir: Path) -> None:
    src = tdir / "data"
    src.write_bytes(b"data1234")
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-read
spec:
  kprobes:
  - call: sys_read
    return: true
    returnArg:
      index: 0
      type: long
    args:
    - index: 0
      type: fd
    - index: 1
      type: char_buf
      returnCopy: true
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{src}"]
      matchReturnArgs:
      - index: 0
        operator: GT
        values: ["0"]
"""

    def trigger() -> None:
        with open(src, "rb", buffering=0) as f:
            f.read(100)
            f.read(100)  # returns 0: filtered by matchReturnArgs
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert len(evs) == 1
    body = _body(evs[0])
    assert body["args"] == [{"file_arg": {"path": str(src)}},
                            {"bytes_arg": base64.b64encode(b"data1234").decode()}]
    assert body["return"] == {"long_arg": "8"}


def test_connect_sockaddr_daddr_dport(env: Env) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-connect
spec:
  kprobes:
  - call: sys_connect
    args:
    - index: 0
      type: int
    - index: 1
      type: sockaddr
    selectors:
    - matchArgs:
      - index: 1
        operator: SAddr
        values: ["127.0.0.0/8"]
      - index: 1
        operator: SPort
        values: ["{port}"]
"""

    def trigger() -> None:
        for host in ("127.0.0.1", "127.0.0.1"):
            with socket.create_connection((host, port)):
                pass
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as s6:
            s6.settimeout(0.2)
            s6.connect(("::1", port))  # other family: no match
    try:
        with env.policy(pol):
            evs = env.run(trigger, ME)
    finally:
        srv.close()
    assert [_body(e)["args"][1] for e in evs] == [
        {"sockaddr_arg": {"family": "AF_INET", "addr": "127.0.0.1", "port": port}}] * 2


# ---- tracepoints and uprobes -------------------------------------------------------------

def test_tracepoint_data_loc_and_int_fields(env: Env) -> None:
    pol = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-tp-exec
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    args:
    - index: 4
    - index: 5
      label: pid
    selectors:
    - matchArgs:
      - index: 4
        operator: Postfix
        values: ["/vk-true-marker"]
"""
    exe = Path("/tmp/vk-true-marker")
    shutil.copy("/bin/true", exe)
    try:
        with env.policy(pol):
            procs: list[subprocess.Popen[bytes]] = []
            evs = env.run(lambda: (procs.append(subprocess.Popen([str(exe)])), procs[0].wait(),
                                   subprocess.run(["/bin/true"])))
    finally:
        exe.unlink()
    assert len(evs) == 1
    body = _body(evs[0])
    assert (body["subsys"], body["event"]) == ("sched", "sched_process_exec")
    assert body["args"] == [{"string_arg": str(exe)}, {"int_arg": procs[0].pid, "label": "pid"}]


@pytest.mark.parametrize("op,value", [("Equal", "{name}"), ("Prefix", "{name}"[:9])])
def test_tracepoint_char_array_is_a_string(env: Env, op: str, value: str) -> None:
    """`char comm[16]` of sched_process_exit is read as a string, and filtered as one."""
    name = f"vkc{uuid.uuid4().hex[:8]}"
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-tp-comm
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_exit
    args:
    - index: 4
      label: comm
    - index: 5
    selectors:
    - matchArgs:
      - index: 4
        operator: {op}
        values: ["{value.format(name=name)}"]
"""
    code = (f"import ctypes; ctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([PY, "-c", code]))
        procs[0].wait()
        _cat(Path("/dev/null"))
    with env.policy(pol):
        evs = env.run(trigger)
    assert [_body(e)["args"] for e in evs] == [
        [{"string_arg": name, "label": "comm"}, {"int_arg": procs[0].pid}]]


def test_syscall_arg_index_beyond_arity_is_refused(env: Env) -> None:
    before = _my_links()
    pol = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-arity
spec:
  kprobes:
  - call: sys_dup2
    args:
    - index: 1
      type: int
    - index: 2
      type: int
"""
    with pytest.raises(PolicyError, match=r"test:12:14: error: spec.kprobes\[0\].args\[1\].index: "
                       r"dup2 takes 2 arguments \(index 0..1\), per syscalls/sys_enter_dup2"):
        env.manager.add(pol, source="test")
    assert _my_links() == before


@pytest.fixture(scope="module")
def uprobe_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("uprobe") / "uprobe_target"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(ROOT / "tests/progs/uprobe_target.c")],
                   check=True)
    return str(out)


def test_uprobe_symbol_args(env: Env, uprobe_target: str) -> None:
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uprobe
spec:
  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_target"]
    message: "target called"
    tags: ["test"]
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 0
        operator: NotEqual
        values: ["20"]
"""
    with env.policy(pol):
        procs: list[subprocess.Popen[bytes]] = []
        evs = env.run(lambda: (procs.append(subprocess.Popen([uprobe_target, "a", "bc", "d e"])),
                               procs[0].wait()))
    bodies = [_body(e) for e in evs]
    assert [b["args"] for b in bodies] == [
        [{"int_arg": 10}, {"string_arg": "a"}], [{"int_arg": 30}, {"string_arg": "d e"}]]
    assert {next(iter(e)) for e in evs} == {"process_uprobe"}
    assert bodies[0]["path"] == uprobe_target and bodies[0]["symbol"] == "vigil_target"
    assert bodies[0]["message"] == "target called" and bodies[0]["tags"] == ["test"]
    assert bodies[0]["process"]["pid"] == procs[0].pid


def test_uretprobe_args_and_return_value(env: Env, uprobe_target: str) -> None:
    """return: true with args: arguments saved at entry, return value appended to args."""
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uretprobe
spec:
  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_target"]
    return: true
    returnArg:
      index: 0
      type: int
      label: ret
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:
    - matchReturnArgs:
      - index: 0
        operator: NotEqual
        values: ["{20 + ord("b")}"]
"""
    with env.policy(pol) as info:
        assert "uretprobe" in info.info and "arguments read at entry" in info.info
        procs: list[subprocess.Popen[bytes]] = []
        evs = env.run(lambda: (procs.append(subprocess.Popen([uprobe_target, "a", "bc", "d e"])),
                               procs[0].wait()))
    assert [_body(e)["args"] for e in evs] == [
        [{"int_arg": 10}, {"string_arg": "a"}, {"int_arg": 10 + ord("a"), "label": "ret"}],
        [{"int_arg": 30}, {"string_arg": "d e"}, {"int_arg": 30 + ord("d"), "label": "ret"}]]
    assert all(_body(e)["process"]["pid"] == procs[0].pid for e in evs)


def _file_offset(binary: str, symbol: str) -> int:
    """The file offset of `symbol` (its address mapped through the LOAD segments)."""
    nm = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    addr = next(int(ln.split()[0], 16) for ln in nm.splitlines() if ln.endswith(f" {symbol}"))
    hdrs = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True,
                          check=True).stdout
    for ln in hdrs.splitlines():
        f = ln.split()
        if f and f[0] == "LOAD":
            off, vaddr, memsz = int(f[1], 16), int(f[2], 16), int(f[5], 16)
            if vaddr <= addr < vaddr + memsz:
                return addr - vaddr + off
    raise AssertionError(f"{symbol} is in no LOAD segment")


def test_uprobe_by_offset_reports_the_offset(env: Env, uprobe_target: str) -> None:
    off = _file_offset(uprobe_target, "vigil_target")
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uprobe-off
spec:
  uprobes:
  - path: "{uprobe_target}"
    offsets: [{off}]
    args:
    - index: 0
      type: int
"""
    with env.policy(pol):
        procs: list[subprocess.Popen[bytes]] = []
        evs = env.run(lambda: (procs.append(subprocess.Popen([uprobe_target, "a", "b"])),
                               procs[0].wait()))
    bodies = [_body(e) for e in evs]
    assert [b["args"] for b in bodies] == [[{"int_arg": 10}], [{"int_arg": 20}]]
    assert all(b["offset"] == str(off) and "symbol" not in b for b in bodies)
    assert list(bodies[0]).index("offset") == list(bodies[0]).index("action") - 1


# ---- lifecycle ---------------------------------------------------------------------------

def test_list_reports_action_counters_and_kernel_memory(env: Env, tdir: Path) -> None:
    for n in ("a", "b", "c"):
        (tdir / n).write_text("x")
    sel = f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{tdir}/a"]
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{tdir}/b"]
      matchActions:
      - action: NoPost
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{tdir}/c"]
      matchActions:
      - action: Sigkill
      - action: NoPost"""
    monitor = openat_policy("vk-count-mon", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{tdir}/c"]
      matchActions:
      - action: Sigkill""").replace("spec:\n", "spec:\n  options:\n  - name: policy-mode\n"
                                    "    value: monitor\n", 1)
    killed: list[int] = []

    def trigger() -> None:
        touch(tdir / "a", tdir / "a", tdir / "b")
        killed.append(_cat(tdir / "c").returncode)
    with env.policy(openat_policy("vk-count", sel)), env.policy(monitor):
        env.run(trigger, ME)
        infos = {i.name: i for i in env.manager.list()}
    assert killed == [-9]
    st = infos["vk-count"].stats
    assert (st.post, st.nopost, st.signal, st.monitor_signal) == (2, 2, 1, 0)
    mon = infos["vk-count-mon"].stats
    assert (mon.post, mon.nopost, mon.signal, mon.monitor_signal) == (1, 0, 0, 1)
    # the hook's own maps and programs (its per-CPU heap alone is > 28 KiB per CPU)
    assert 28 << 10 < infos["vk-count"].kernel_memory_bytes < 256 << 20


def _my_links() -> set[int]:
    return links_of(os.getpid())


def test_remove_and_disable_detach_everything(env: Env, tdir: Path) -> None:
    before = _my_links()
    pol = openat_policy("vk-life", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]""")
    info = env.manager.add(pol, source="test")
    assert len(_my_links() - before) == 1
    env.manager.disable(info.name)
    assert _my_links() == before
    assert env.run(lambda: touch(tdir / "off"), ME) == []
    env.manager.enable(info.name)
    assert len(env.run(lambda: touch(tdir / "on"), ME)) == 1
    env.manager.delete(info.name)
    assert _my_links() == before
    assert env.run(lambda: touch(tdir / "gone"), ME) == []


def test_policy_that_cannot_load_is_rejected_whole(env: Env) -> None:
    before = _my_links()
    pol = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-half
spec:
  kprobes:
  - call: sys_openat
    args:
    - index: 1
      type: string
  - call: vigil_no_such_function
    syscall: false
    args:
    - index: 0
      type: int
"""
    # refused on every kernel: no such function in the kernel's BTF (a policy for another
    # kernel build, so "not supported on this kernel", not an invalid policy)
    with pytest.raises(FeatureNotSupported,
                       match=r"spec.kprobes\[1\].call: vigil_no_such_function"):
        env.manager.add(pol, source="test")
    assert _my_links() == before
    assert [p.name for p in env.manager.list()] == []


# ---- CelExpr ----------------------------------------------------------------------------

def _lseek_cel_policy(name: str, expr: str, types: tuple[str, str, str]) -> str:
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: sys_lseek
    syscall: true
    args:
    - index: 0
      type: {types[0]}
    - index: 1
      type: {types[1]}
    - index: 2
      type: {types[2]}
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: CelExpr
        values: [{expr!r}]
"""


_SEEKS = [(3, 10, 0), (3, 17, 0), (0, 100, 0), (3, 4294967291, 0), (3, 5, 2), (3, -1, 2),
          (3, 1 << 40, 1)]


@pytest.mark.parametrize("expr,types,expect", [
    # 64-bit signed arithmetic and comparisons, && over two clauses (fd 0 never matches)
    ("arg1 + 16 > 32 && arg0 != 0", ("int64", "int64", "uint32"),
     [(3, 17, 0), (3, 4294967291, 0), (3, 1 << 40, 1)]),
    # int32(): the offset's low 32 bits as a signed number
    ("int32(arg1) < int32(0) || !(arg1 >= 0)", ("int64", "int64", "uint32"),
     [(3, 4294967291, 0), (3, -1, 2)]),
    # u32 arithmetic wraps in 32 bits: whence + 0xffffffff == whence - 1
    ("arg2 + uint32(4294967295u) == uint32(1u)", ("int64", "int64", "uint32"),
     [(3, 5, 2), (3, -1, 2)]),
    # uint: unsigned compare, -1 is the largest; 2**40 is not below 2**32
    ("arg1 > 4294967296u && arg1 - 1u != 18446744073709551614u", ("int64", "uint64", "uint32"),
     [(3, 1 << 40, 1)]),
    # s32 argument: fd as int
    ("arg0 == int32(3) && arg1 <= 17 && arg1 - 10 >= 0", ("int", "int64", "uint32"),
     [(3, 10, 0), (3, 17, 0)]),
])
def test_cel_expr_selector(env: Env, tdir: Path, expr: str, types: tuple[str, str, str],
                           expect: list[tuple[int, int, int]]) -> None:
    """CelExpr evaluated in the kernel: an event for each lseek the expression holds for."""
    path = tdir / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    real = {3: fd, 0: 0}  # in the cases, 3 stands for the file's descriptor

    def trigger() -> None:
        for f, off, whence in _SEEKS:
            with contextlib.suppress(OSError):
                os.lseek(real[f], off, whence)
    try:
        with env.policy(_lseek_cel_policy("vk-cel", expr.replace("int32(3)",
                                                                 f"int32({fd})"), types)):
            evs = env.run(trigger, ME)
    finally:
        os.close(fd)
    got = [tuple(int(next(iter(x.values()))) for x in _body(e)["args"]) for e in evs]
    mask = (1 << 64) - 1 if types[1] == "uint64" else -1
    want = [(real[f], off & mask if mask > 0 else off, whence) for f, off, whence in expect]
    assert got == want


@pytest.mark.parametrize("expr,why", [
    ("arg0 + 1u > 2u", "no matching overload for int + uint"),
    ("arg1 + 1", "not bool"),
    ("size(arg0) > 1", "undeclared reference to 'size'"),
])
def test_cel_expr_invalid_is_refused(env: Env, expr: str, why: str) -> None:
    """Refused whole, with the location and the reason (the checker's, as Tetragon's)."""
    before = _my_links()
    with pytest.raises(PolicyError) as err:
        env.manager.add(_lseek_cel_policy("vk-cel-bad", expr, ("int64", "int64", "uint32")),
                        source="test")
    text = "\n".join(str(d) for d in err.value.diagnostics) or str(err.value)
    assert "selectors[0].matchArgs[0].values[0]" in text and why in text, text
    assert _my_links() == before


# ---- string return values ----------------------------------------------------------------

def _uret_string_policy(uprobe_target: str, op: str, values: list[str]) -> str:
    vals = ", ".join(f'"{v}"' for v in values)
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vk-uret-str
spec:
  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_name"]
    return: true
    returnArg:
      index: 0
      type: string
      label: name
    selectors:
    - matchReturnArgs:
      - index: 0
        operator: {op}
        values: [{vals}]
"""


@pytest.mark.parametrize("op,values,expect", [
    ("Equal", ["lpha"], ["lpha"]),
    ("NotEqual", ["lpha", ""], ["eta", "amma-ray"]),
    ("Prefix", ["amm", "e"], ["eta", "amma-ray"]),
    ("NotPrefix", ["e"], ["lpha", "amma-ray", ""]),
    ("Postfix", ["ray", "ha"], ["lpha", "amma-ray"]),
    ("NotPostfix", ["ray"], ["lpha", "eta", ""]),
])
def test_uretprobe_string_return_value(env: Env, uprobe_target: str, op: str,
                                       values: list[str], expect: list[str]) -> None:
    """returnArg type string: the char * read at return (user memory), filtered in the
    kernel with the string operators, reported as the last of args with its label."""
    with env.policy(_uret_string_policy(uprobe_target, op, values)):
        procs: list[subprocess.Popen[bytes]] = []
        evs = env.run(lambda: (procs.append(subprocess.Popen(
            [uprobe_target, "alpha", "beta", "gamma-ray", "x"])), procs[0].wait()))
    assert [_body(e)["args"] for e in evs] == [
        [{"string_arg": s, "label": "name"}] for s in expect]
    assert all(_body(e)["process"]["pid"] == procs[0].pid for e in evs)
    assert all(_body(e)["symbol"] == "vigil_name" for e in evs)
