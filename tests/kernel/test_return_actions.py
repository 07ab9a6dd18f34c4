"""matchReturnActions in the real kernel: a selector's actions on the return path.

Each test loads a policy through the real PolicyManager, runs real processes and asserts
their exit status and the exact events (``action``, ``return_action``, ``return``). The
syscall hooks run on sys_exit_openat here; the uprobe hook on a uretprobe. Helpers and
the module's Env come from test_policies.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env, _body, _cat, _my_links
from vigil.errors import PolicyError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vr-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def uprobe_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("uprobe") / "uprobe_target"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(ROOT / "tests/progs/uprobe_target.c")],
                   check=True)
    return str(out)

FAILED_OPEN = """
      matchReturnArgs:
      - index: 0
        operator: LT
        values: ["0"]"""


def openat_return_policy(name: str, selectors: str, mode: str = "") -> str:
    options = (f"\n  options:\n  - name: policy-mode\n    value: {mode}" if mode else "")
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:{options}
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args:
    - index: 1
      type: string
    returnArg:
      index: 0
      type: int
    selectors:{selectors}
"""


def _summary(evs: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    return [(_body(e)["args"][0]["string_arg"], _body(e)["action"],
             _body(e)["return_action"], _body(e)["return"]["int_arg"]) for e in evs]


def test_failed_open_kills_on_return(env: Env, tdir: Path) -> None:
    """A failed open under tdir (openat returns -ENOENT: matchReturnArgs LT 0) kills the
    caller from the return path; a successful open, or a failed one elsewhere, does not.
    The event's action is the entry's (Post), its return_action the kill."""
    present = tdir / "present"
    present.write_text("x")
    missing, outside = tdir / "missing", Path(f"{tdir}-nowhere")
    pol = openat_return_policy("vr-kill", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]{FAILED_OPEN}
      matchReturnActions:
      - action: Sigkill""")
    rcs: list[int] = []
    with env.policy(pol) as info:
        assert "sys_exit_openat" in info.info
        evs = env.run(lambda: [rcs.append(_cat(p).returncode)
                               for p in (present, missing, outside)])
    assert rcs == [0, -9, 1]
    assert _summary(evs) == [
        (str(missing), "KPROBE_ACTION_POST", "KPROBE_ACTION_SIGKILL", -2)]


def test_return_post_nopost_and_signal(env: Env, tdir: Path) -> None:
    """The first selector that matches, matchReturnArgs included, runs its
    matchReturnActions: NoPost on a failed open of a `.quiet` file (no event), Signal 15
    on a failed open of a `.term` file, Post otherwise. A successful open of a `.quiet`
    file fails selector 0's matchReturnArgs and is posted by selector 2."""
    loud = tdir / "loud.quiet"
    loud.write_text("x")
    quiet, term, other = tdir / "a.quiet", tdir / "b.term", tdir / "c"
    pol = openat_return_policy("vr-post", f"""
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".quiet"]{FAILED_OPEN}
      matchReturnActions:
      - action: NoPost
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".term"]{FAILED_OPEN}
      matchReturnActions:
      - action: Signal
        argSig: 15
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]
      matchReturnActions:
      - action: Post""")
    rcs: list[int] = []
    with env.policy(pol):
        evs = env.run(lambda: [rcs.append(_cat(p).returncode)
                               for p in (quiet, loud, term, other)])
    assert rcs == [1, 0, -15, 1]
    assert _summary(evs) == [
        (str(loud), "KPROBE_ACTION_POST", "KPROBE_ACTION_POST", 3),
        (str(term), "KPROBE_ACTION_POST", "KPROBE_ACTION_SIGNAL", -2),
        (str(other), "KPROBE_ACTION_POST", "KPROBE_ACTION_POST", -2)]


def test_return_action_without_return_actions_is_the_action(env: Env, tdir: Path) -> None:
    """A selector without matchReturnActions: return_action repeats the event's action
    (Tetragon's return probe leaves the entry's action in place); matchActions and
    matchReturnActions together: both run, NoPost in either drops the event."""
    term, both, silent = tdir / "x.term", tdir / "y.both", tdir / "z.silent"
    pol = openat_return_policy("vr-same", """
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".term"]
      matchActions:
      - action: Signal
        argSig: 15
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".both"]
      matchActions:
      - action: Signal
        argSig: 28
      matchReturnActions:
      - action: Sigkill
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".silent"]
      matchActions:
      - action: Post
      matchReturnActions:
      - action: Sigkill
      - action: NoPost""")
    rcs: list[int] = []
    with env.policy(pol):
        evs = env.run(lambda: [rcs.append(_cat(p).returncode) for p in (term, both, silent)])
    # (SIGWINCH, 28, is ignored by default: the return path's SIGKILL ends the process)
    assert rcs == [-15, -9, -9]
    assert _summary(evs) == [
        (str(term), "KPROBE_ACTION_SIGNAL", "KPROBE_ACTION_SIGNAL", -2),
        (str(both), "KPROBE_ACTION_SIGNAL", "KPROBE_ACTION_SIGKILL", -2)]


def test_monitor_mode_only_reports_return_kill(env: Env, tdir: Path) -> None:
    """policy-mode monitor: the return path's Sigkill is reported, not sent."""
    missing = tdir / "missing"
    pol = openat_return_policy("vr-monitor", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]{FAILED_OPEN}
      matchReturnActions:
      - action: Sigkill""", mode="monitor")
    rcs: list[int] = []
    with env.policy(pol):
        evs = env.run(lambda: rcs.append(_cat(missing).returncode))
    assert rcs == [1]
    assert _summary(evs) == [
        (str(missing), "KPROBE_ACTION_POST", "KPROBE_ACTION_SIGKILL", -2)]


def test_return_post_rate_limit(env: Env, tdir: Path) -> None:
    """rateLimit on a matchReturnActions Post: the same failed open is posted once per
    minute (its own state: the selector's matchActions Post is not limited)."""
    missing = tdir / "missing"
    pol = openat_return_policy("vr-rate", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]{FAILED_OPEN}
      matchReturnActions:
      - action: Post
        rateLimit: 1m
        rateLimitScope: global""")
    with env.policy(pol):
        evs = env.run(lambda: [_cat(missing) for _ in range(3)])
        again = env.run(lambda: _cat(tdir / "other"))
    assert [s[0] for s in _summary(evs)] == [str(missing)]
    assert [s[0] for s in _summary(again)] == [str(tdir / "other")]


def test_uretprobe_return_kill(env: Env, uprobe_target: str) -> None:
    """On a uretprobe: the call that returns 20 + 'b' kills the process at the return;
    the calls before it ran, the one after never does."""
    pol = f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vr-uretprobe
spec:
  uprobes:
  - path: "{uprobe_target}"
    symbols: ["vigil_target"]
    return: true
    returnArg:
      index: 0
      type: int
    args:
    - index: 0
      type: int
    selectors:
    - matchReturnArgs:
      - index: 0
        operator: Equal
        values: ["{20 + ord("b")}"]
      matchReturnActions:
      - action: Sigkill
"""
    procs: list[subprocess.Popen[bytes]] = []
    with env.policy(pol):
        evs = env.run(lambda: (procs.append(subprocess.Popen([uprobe_target, "a", "bc", "d"])),
                               procs[0].wait()))
    assert procs[0].returncode == -9
    assert [(_body(e)["args"], _body(e)["action"]) for e in evs] == [
        ([{"int_arg": 20}, {"int_arg": 20 + ord("b")}], "KPROBE_ACTION_POST")]


def test_refused_return_action_leaves_nothing(env: Env) -> None:
    """A return action this version does not honour is refused, located, and nothing of
    the policy stays loaded."""
    before = _my_links()
    pol = openat_return_policy("vr-override", f"""
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["/nonexistent/"]{FAILED_OPEN}
      matchReturnActions:
      - action: Override
        argError: -1""")
    with pytest.raises(PolicyError) as err:
        env.manager.add(pol, source="test")
    [d] = err.value.diagnostics
    assert d.path == "spec.kprobes[0].selectors[0].matchReturnActions[0].action"
    assert "the call has already run" in d.message and d.line > 0 and d.col > 0
    assert _my_links() == before
