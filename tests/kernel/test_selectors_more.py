"""Selectors with the real BPF objects and real processes: ``matchNamespaceChanges``,
``CelExpr`` in ``matchReturnArgs`` and ``followChildren`` on ``matchParentBinaries``.
Every hook here is a syscall hook (tracepoints on this host)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.test_policies import Env, _body

PY = sys.executable


def _policy(name: str, spec: str) -> str:
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
            f"metadata:\n  name: {name}\nspec:\n{spec}")


def _openat(name: str, target: Path, selector: str) -> str:
    return _policy(name, f"""  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
{selector}
""")


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vsm-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def target(tdir: Path) -> Path:
    f = tdir / "t"
    f.write_text("x")
    return f


def _run_py(code: str, procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(subprocess.Popen([PY, "-c", code]))
    procs[-1].wait()
    assert procs[-1].returncode == 0


# ---- matchNamespaceChanges ----------------------------------------------------------

# unshare(2) for the child programs (os.unshare is Python 3.12's)
_UNSHARE = ("import ctypes, os\n"
            "def unshare(flags):\n"
            "    if ctypes.CDLL(None, use_errno=True).unshare(flags):\n"
            "        raise OSError(ctypes.get_errno(), 'unshare')\n"
            "CLONE_NEWNS, CLONE_NEWUTS = 0x20000, 0x4000000\n")


def _opens(target: Path, *steps: str) -> str:
    """A Python program that opens target, then does each step and opens it again."""
    code = f"{_UNSHARE}T = {str(target)!r}\nopen(T).close()\n"
    for step in steps:
        code += f"{step}\nopen(T).close()\n"
    return code


def test_namespace_changes_in(env: Env, target: Path) -> None:
    """In [Uts]: the opens after the process left the uts namespace it had at exec post
    once (the change becomes the reference); a process that changed nothing, or
    another namespace only, posts nothing."""
    pol = _openat("vsm-nschg-in", target, """      matchNamespaceChanges:
      - operator: In
        values: ["Uts"]""")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        _run_py(_opens(target, "unshare(CLONE_NEWUTS)", "pass"), procs)
        _run_py(_opens(target, "pass"), procs)
        _run_py(_opens(target, "unshare(CLONE_NEWNS)"), procs)
    with env.policy(pol):
        evs = env.run(trigger)
    assert [_body(e)["process"]["pid"] for e in evs] == [procs[0].pid]
    assert _body(evs[0])["args"] == [{"string_arg": str(target)}]


def test_namespace_changes_not_in(env: Env, target: Path) -> None:
    """NotIn [Uts]: a change of another namespace (mnt) posts; leaving the uts namespace
    does not. Values are looked up without case, as Tetragon does."""
    pol = _openat("vsm-nschg-notin", target, """      matchNamespaceChanges:
      - operator: NotIn
        values: ["uts"]""")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        _run_py(_opens(target, "unshare(CLONE_NEWUTS)"), procs)
        _run_py(_opens(target, "unshare(CLONE_NEWNS)"), procs)
    with env.policy(pol):
        evs = env.run(trigger)
    assert [_body(e)["process"]["pid"] for e in evs] == [procs[1].pid]


def test_namespace_changes_reset_by_exec(env: Env, target: Path) -> None:
    """An exec records the namespaces again: unshare(1) leaves the mount namespace, then
    execs cat, whose namespaces at exec are the new ones (no event); a child forked
    after the change starts from its namespaces at fork."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    pol = _openat("vsm-nschg-exec", target, """      matchNamespaceChanges:
      - operator: In
        values: ["Mnt"]""")
    procs: list[subprocess.Popen[bytes]] = []
    fork = (f"{_UNSHARE}unshare(CLONE_NEWNS)\npid = os.fork()\n"
            f"if pid == 0:\n    open({str(target)!r}).close()\n    os._exit(0)\n"
            f"os.waitpid(pid, 0)\n")
    runs: list[subprocess.CompletedProcess[bytes]] = []

    def trigger() -> None:
        runs.append(subprocess.run(["unshare", "--mount", "cat", str(target)],
                                   capture_output=True))
        _run_py(fork, procs)
    with env.policy(pol):
        evs = env.run(trigger)
    assert runs[0].returncode == 0, runs[0].stderr
    assert evs == []


# ---- CelExpr on the return value ----------------------------------------------------

def _ret_policy(name: str, tdir: Path, ret_filter: str) -> str:
    return _policy(name, f"""  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    returnArg:
      index: 0
      type: int
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchReturnArgs:
{ret_filter}
""")


def test_cel_on_the_return_value(env: Env, tdir: Path, target: Path) -> None:
    """arg0 is the return value, typed by returnArg (int: s32, so its literals are
    int32()): failed opens only, then successful ones only (args: [0] names it too)."""
    missing = tdir / "missing"

    def trigger() -> None:
        open(target).close()
        with pytest.raises(FileNotFoundError), open(missing):
            pass
    failed = _ret_policy("vsm-cel-ret", tdir, """      - operator: CelExpr
        values: ["arg0 < int32(0) && arg0 != int32(-1)"]""")
    with env.policy(failed):
        evs = env.run(trigger, pids={os.getpid()})
    assert [(_body(e)["args"], _body(e)["return"]) for e in evs] == [
        ([{"string_arg": str(missing)}], {"int_arg": -2})]
    ok = _ret_policy("vsm-cel-ret-ok", tdir, """      - operator: CelExpr
        args: [0]
        values: ["arg0 >= int32(0)"]""")
    with env.policy(ok):
        evs = env.run(trigger, pids={os.getpid()})
    assert [_body(e)["args"] for e in evs] == [[{"string_arg": str(target)}]]
    assert _body(evs[0])["return"]["int_arg"] >= 0


def _lseek_policy(name: str, cel: str) -> str:
    return _policy(name, f"""  kprobes:
  - call: sys_lseek
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: int
    - index: 2
      type: int
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
{cel}
""")


def _seek(fd: int, off: int) -> None:
    with pytest.raises(OSError):
        os.lseek(fd, off, 0)


def test_cel_variables_are_the_args_positions(env: Env) -> None:
    """With args, argK is the hook argument at position args[K], as Tetragon declares
    them (its own lseek test: args [0, 1, 2]); in another order they follow it."""
    tetragon = _lseek_policy("vsm-cel-args", """      - args: [0, 1, 2]
        operator: CelExpr
        values: ["arg0 - int32(10) == arg1 + int32(5)"]""")
    with env.policy(tetragon):
        evs = env.run(lambda: (_seek(-1, -16), _seek(-1, -17)), pids={os.getpid()})
    assert [_body(e)["args"][1] for e in evs] == [{"int_arg": -16}]
    swapped = _lseek_policy("vsm-cel-args-swap", """      - args: [1, 0]
        operator: CelExpr
        values: ["arg0 == int32(-17) && arg1 == int32(-1)"]""")
    with env.policy(swapped):
        evs = env.run(lambda: (_seek(-1, -16), _seek(-1, -17)), pids={os.getpid()})
    assert [_body(e)["args"][1] for e in evs] == [{"int_arg": -17}]


# ---- followChildren on matchParentBinaries --------------------------------------------

@pytest.fixture
def shell(tdir: Path) -> Path:
    """A copy of the shell under its own path: the binary the parent filter names."""
    exe = tdir / "vsm-sh"
    shutil.copy(os.path.realpath("/bin/sh"), exe)
    exe.chmod(0o755)
    return exe


def _parent_policy(name: str, target: Path, op: str, shell: Path, follow: bool) -> str:
    return _openat(name, target, f"""      matchParentBinaries:
      - operator: {op}
        followChildren: {str(follow).lower()}
        values: ["{shell}"]""")


def _cat_trees(target: Path, shell: Path) -> list[list[str]]:
    """cat as a child of the shell copy, as its grandchild (through /bin/sh), and as a
    grandchild of /bin/sh alone ('; true' keeps each shell from exec'ing cat)."""
    cat = f"cat {target} >/dev/null; true"
    return [[str(shell), "-c", cat],
            [str(shell), "-c", f"/bin/sh -c '{cat}'; true"],
            ["/bin/sh", "-c", f"/bin/sh -c '{cat}'; true"]]


def _cat_parents(env: Env, pol: str, target: Path, shell: Path) -> list[int]:
    """Which of the three trees posted (by index), each run once."""
    out = []
    with env.policy(pol):
        for i, argv in enumerate(_cat_trees(target, shell)):
            evs = env.run(lambda argv=argv: subprocess.run(argv, check=True))
            assert all(_body(e)["process"]["binary"].endswith("/cat") for e in evs)
            out += [i] * len(evs)
    return out


def test_parent_binaries_follow_children(env: Env, target: Path, shell: Path) -> None:
    """In + followChildren: cat posts when its parent runs the shell copy or descends from
    a process that did; without followChildren only the direct child posts."""
    follow = _parent_policy("vsm-pbin-follow", target, "In", shell, True)
    assert _cat_parents(env, follow, target, shell) == [0, 1]
    direct = _parent_policy("vsm-pbin-direct", target, "In", shell, False)
    assert _cat_parents(env, direct, target, shell) == [0]


def test_parent_binaries_follow_children_not_in(env: Env, target: Path,
                                                shell: Path) -> None:
    """NotIn + followChildren: only the cat whose parent neither runs the shell copy nor
    descends from it posts."""
    pol = _parent_policy("vsm-pbin-notin", target, "NotIn", shell, True)
    assert _cat_parents(env, pol, target, shell) == [2]


def test_parent_binaries_follow_children_seeded(env: Env, target: Path,
                                                shell: Path) -> None:
    """A shell copy already running when the policy loads: its descendants are marked
    from /proc (its grandchild's cat posts)."""
    ready = target.parent / "ready"
    go = target.parent / "go"
    script = (f"touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done; "
              f"/bin/sh -c 'cat {target} >/dev/null; true'; true")
    root = subprocess.Popen([str(shell), "-c", script])
    try:
        while not ready.exists():
            assert root.poll() is None
        pol = _parent_policy("vsm-pbin-seed", target, "In", shell, True)
        with env.policy(pol):
            evs = env.run(lambda: (go.touch(), root.wait()))
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
    assert len(evs) == 1
    assert _body(evs[0])["process"]["binary"].endswith("/cat")
