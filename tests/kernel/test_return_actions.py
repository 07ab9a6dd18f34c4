"""matchReturnActions in the real kernel: a selector's actions on the return path.

Each test loads a policy through the real PolicyManager, runs real processes and asserts
their exit status and the exact events (``action``, ``return_action``, ``return``), the
requests the agent made (GetUrl / DnsLookup, to local servers), what the enforcer did
(NotifyEnforcer, CleanupEnforcerNotification) and the stacks of a return Post. The
syscall hooks run on sys_exit_openat here; the uprobe hook on a uretprobe (TrackSock at
the return: tests/kernel/test_socktrack.py, kernel functions). Helpers and the module's
Env come from test_policies and test_policy_actions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import Env, _body, _cat, _my_links, touch
from tests.kernel import test_policy_actions as _actions
from tests.kernel.test_policy_actions import PY, _Dns, _wait
from vigil.actions_net import RequestLimits, Requester
from vigil.errors import PolicyError

ROOT = Path(__file__).resolve().parents[2]


# the local HTTP server and DNS responder of the entry-path request tests
http_server = _actions.http_server
dns_server = _actions.dns_server


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


# ---- GetUrl / DnsLookup, NotifyEnforcer / CleanupEnforcerNotification, stacks ----------

def test_return_get_url_and_dns_lookup(env: Env, tdir: Path,
                                       http_server: tuple[str, list[str]],
                                       dns_server: _Dns) -> None:
    """A selector with GetUrl in both lists makes both requests (each its own URL); a
    DnsLookup among the return actions only on a failed open. The event's action is the
    entry's, its return_action the return list's."""
    base, seen = http_server
    req = Requester(RequestLimits(timeout=3.0, dns_servers=("127.0.0.1",),
                                  dns_port=dns_server.port))
    env.policy_events.request = req.submit
    fetch, resolve = tdir / "fetch", tdir / "resolve"
    fetch.write_text("x")
    pol = openat_return_policy("vr-requests", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{fetch}"]
      matchActions:
      - action: GetUrl
        argUrl: {base}/entry
      matchReturnActions:
      - action: GetUrl
        argUrl: {base}/return
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{resolve}"]{FAILED_OPEN}
      matchReturnActions:
      - action: DnsLookup
        argFqdn: vigil-return.example""")
    try:
        with env.policy(pol):
            evs = env.run(lambda: [_cat(p) for p in (fetch, resolve)])
        assert _summary(evs) == [
            (str(fetch), "KPROBE_ACTION_GETURL", "KPROBE_ACTION_GETURL", 3),
            (str(resolve), "KPROBE_ACTION_POST", "KPROBE_ACTION_DNSLOOKUP", -2)]
        assert _wait(lambda: sorted(seen) == ["/entry", "/return"]), seen
        assert _wait(lambda: ("vigil-return.example.", "A") in dns_server.names), \
            dns_server.names
        assert _wait(lambda: req.counts[("url", "ok")] == 2 and
                     req.counts[("dns", "ok")] == 1), req.counts
    finally:
        env.policy_events.request = None
        req.stop()


def _enforced_return_policy(tdir: Path) -> str:
    """Failed opens under tdir notify the enforcer from the return path (argSig 9 at the
    thread's next dup / dup2); a failed open of a `.clean` file withdraws the
    notification from the return path, of a `.mclean` file from matchActions."""
    return f"""
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vr-enforcer
spec:
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  enforcers:
  - calls: ["list:dups"]
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
    selectors:
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".clean"]{FAILED_OPEN}
      matchReturnActions:
      - action: CleanupEnforcerNotification
    - matchArgs:
      - index: 1
        operator: Postfix
        values: [".mclean"]{FAILED_OPEN}
      matchActions:
      - action: CleanupEnforcerNotification
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{tdir}/"]{FAILED_OPEN}
      matchReturnActions:
      - action: NotifyEnforcer
        argSig: 9
"""


_OPEN_THEN_DUP = """
import os, sys
for p in sys.argv[1:]:
    try:
        open(p)
    except OSError:
        pass
sys.stdout.write("opened\\n"); sys.stdout.flush()
os.dup2(1, 7)
sys.stdout.write("after\\n")
"""


def test_return_notify_enforcer_and_cleanup(env: Env, tdir: Path) -> None:
    """NotifyEnforcer from the return path: the process is killed at its next dup2, after
    the open; CleanupEnforcerNotification (return path or matchActions) after the
    notification: the dup2 runs."""
    runs = {name: [str(tdir / "notify"), *(str(tdir / c) for c in clean)]
            for name, clean in (("kill", ()), ("ret", ("x.clean",)), ("act", ("y.mclean",)))}
    procs: dict[str, subprocess.CompletedProcess[bytes]] = {}
    with env.policy(_enforced_return_policy(tdir)) as info:
        evs = env.run(lambda: [procs.__setitem__(k, subprocess.run(
            [PY, "-c", _OPEN_THEN_DUP, *paths], capture_output=True, timeout=30))
            for k, paths in runs.items()])
    assert ("raw_tp sys_exit filtered to dup, dup2" in info.info or
            "fmod_ret __x64_sys_dup, __x64_sys_dup2" in info.info), info.info
    assert (procs["kill"].returncode, procs["kill"].stdout) == (-9, b"opened\n")
    for k in ("ret", "act"):
        assert (procs[k].returncode, procs[k].stdout) == (0, b"opened\nafter\n"), k
    notify, clean = "KPROBE_ACTION_NOTIFYENFORCER", "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION"
    assert _summary(evs) == [
        (str(tdir / "notify"), "KPROBE_ACTION_POST", notify, -2),
        (str(tdir / "notify"), "KPROBE_ACTION_POST", notify, -2),
        (str(tdir / "x.clean"), "KPROBE_ACTION_POST", clean, -2),
        (str(tdir / "notify"), "KPROBE_ACTION_POST", notify, -2),
        (str(tdir / "y.mclean"), clean, clean, -2)]


def test_return_post_stack_traces(env: Env, tdir: Path) -> None:
    """kernelStackTrace / userStackTrace on a return Post: taken at the return probe
    (here sys_exit_openat), the user stack's first frame in libc's openat wrapper. The
    open is this process's (user addresses are symbolized from the live process)."""
    made = tdir / "stacked"
    pol = openat_return_policy("vr-stacks", f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{made}"]
      matchReturnActions:
      - action: Post
        kernelStackTrace: true
        userStackTrace: true""")
    with env.policy(pol):
        evs = env.run(lambda: touch(made), {os.getpid()})
    assert len(evs) == 1
    body = _body(evs[0])
    assert body["return_action"] == "KPROBE_ACTION_POST"
    top = body["user_stack_trace"][0]
    assert top["module"].endswith("/libc.so.6") and "open" in top["symbol"], top
    # the kernel stack on a syscall tracepoint: some kernels (Debian's 6.1) give none
    kst = body.get("kernel_stack_trace")
    if kst is not None:
        assert "do_syscall_64" in [e.get("symbol") for e in kst], kst


def test_return_post_kernel_stack_on_a_kernel_function(env: Env, tdir: Path) -> None:
    """kernelStackTrace on a return Post of a kernel function (security_file_open,
    return: true): the stack the return program sees, on the syscall's path. Kernel lane
    (kprobes or trampolines)."""
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        from tests.kernel.lane import need
        need("kprobe")
    made = tdir / "kstacked"
    pol = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vr-kstack
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    return: true
    args:
    - index: 0
      type: file
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{made}"]
      matchReturnActions:
      - action: Post
        kernelStackTrace: true
"""
    with env.policy(pol) as info:
        evs = env.run(lambda: touch(made), {os.getpid()})
    assert evs, info.info
    body = _body(evs[0])
    assert body["return_action"] == "KPROBE_ACTION_POST"
    kst = body["kernel_stack_trace"]
    syms = [e.get("symbol") for e in kst]
    print(f"return kernel_stack_trace ({info.info}):", syms[:6])
    assert "do_syscall_64" in syms, syms
