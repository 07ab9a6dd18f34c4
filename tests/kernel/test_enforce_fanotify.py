"""fanotify enforcement on the real kernel: lsmhooks file_open and
bprm_check_security with Override, decided by the decider process.

Every victim runs in a cgroup of its own (the policies' vigil-cgroups scope) and every
rule names files in a private directory (or a private tmpfs), so nothing outside the
test is refused. Checked for each enforced operation: the errno, that the side effect
did not happen, the event, that a process outside the scope is unaffected; plus monitor
mode, the watchdog (fail-open / fail-closed), and that killing the decider or its owner
with SIGKILL releases a task blocked on a decision within a bound. Cleans up: the
decider exits (its fanotify groups and marks with it), cgroups and mounts are removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vigil.bench.flood import Cgroup
from vigil.enforce.service import EnforceConfig, Enforcement
from vigil.policy.compiler import KernelView, compile_policy
from vigil.policy.loader import load_policy
from vigil.stream.throttle import cgroup2_mount

PY = os.path.realpath(sys.executable)
VICTIM = textwrap.dedent("""\
    import json, os, sys
    op, path = sys.argv[1], sys.argv[2]
    try:
        if op == "open-trunc":
            os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
            out = {"ok": True}
        elif op in ("read", "read-ready"):
            if op == "read-ready":  # the next system call is the open of path
                print("ready", flush=True)
            with open(path) as f:
                out = {"ok": True, "data": f.read()}
        else:
            os.execv(path, [path] + sys.argv[3:])
    except OSError as e:
        out = {"ok": False, "errno": e.errno}
    print(json.dumps(out), flush=True)
""")


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.victim = tmp / "victim.py"
        self.victim.write_text(VICTIM)
        self.data = tmp / "d"   # what the rules name (the victim itself is outside it)
        self.data.mkdir()
        self.cg = Cgroup(f"vigil-enforce-test-{os.getpid()}-{time.monotonic_ns() % 10**6}")
        self.scope = "/" + self.cg.name
        self.events: list[dict[str, Any]] = []
        self.enf: Enforcement | None = None

    def enforcement(self, **cfg: Any) -> Enforcement:
        if self.enf is not None:
            self.enf.close()
        cfg.setdefault("settle", 0.05)
        self.enf = Enforcement(EnforceConfig(**cfg), publish=self.events.extend)
        return self.enf

    def load(self, yaml_text: str, **cfg: Any) -> Any:
        plan = compile_policy(load_policy(yaml_text), KernelView())
        enf = self.enf or self.enforcement(**cfg)
        return enf.load(plan)

    def run(self, *args: str, scoped: bool = True, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        """Run the victim (pid, its JSON result); in the test cgroup when ``scoped``."""
        cmd = f"exec {PY} {self.victim} " + " ".join(f"'{a}'" for a in args)
        if scoped:
            cmd = f"echo $$ > {self.cg.procs_file} && {cmd}"
        p = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        return p.pid, json.loads(lines[-1]) if lines else {"rc": p.returncode}

    def sh(self, script: str, scoped: bool = True) -> subprocess.CompletedProcess[str]:
        if scoped:
            script = f"echo $$ > {self.cg.procs_file} && {script}"
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)

    def lsm_events(self, pid: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = [e["process_lsm"] for e in self.events if "process_lsm" in e
                   and (pid is None or e["process_lsm"]["process"]["pid"] == pid)]
            if got or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def close(self) -> None:
        if self.enf is not None:
            self.enf.close()
        self.cg.remove()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if not cgroup2_mount():
        pytest.skip("needs a cgroup2 mount")
    os.chmod(tmp_path, 0o755)
    e = Env(tmp_path)
    try:
        yield e
    finally:
        pid = e.enf.decider_pid if e.enf else None
        e.close()
        if pid:
            assert not Path(f"/proc/{pid}").exists(), "the decider exited with the test"


def policy(scope: str, hook: str, op: str, values: list[str], actions: str = "[{action: Override, argError: -1}]",
           extra: str = "", mode: str = "") -> str:
    arg = "linux_binprm" if hook == "bprm_check_security" else "file"
    opts = f"[{{name: vigil-cgroups, value: {scope}}}" + (
        f", {{name: policy-mode, value: {mode}}}]" if mode else "]")
    head = textwrap.dedent(f"""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {{name: enforce-test}}
        spec:
          options: {opts}
          lsmhooks:
          - hook: {hook}
            message: enforce-test
            args: [{{index: 0, type: {arg}}}]
            selectors:
            - matchArgs: [{{index: 0, operator: {op}, values: {json.dumps(values)}}}]
        """)
    return head + extra + f"      matchActions: {actions}\n"


# ---- file_open ---------------------------------------------------------------------------

def test_open_refused_in_scope_with_errno_no_side_effect_and_event(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("top secret")
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)]))
    pid, res = env.run("open-trunc", str(secret))
    assert res == {"ok": False, "errno": errno.EPERM}
    assert secret.read_text() == "top secret", "O_TRUNC happened: the file was opened"
    (ev,) = env.lsm_events(pid)
    assert ev["function_name"] == "file_open" and ev["policy_name"] == "enforce-test"
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE" and ev["message"] == "enforce-test"
    assert ev["args"] == [{"file_arg": {"path": str(secret), "permission": "-rw-r--r--"}}]
    assert ev["process"]["binary"] == PY
    # out of scope: unaffected, and nothing reported
    pid2, res2 = env.run("read", str(secret), scoped=False)
    assert res2 == {"ok": True, "data": "top secret"}
    time.sleep(0.3)
    assert not env.lsm_events(pid2, timeout=0)
    # only the named file is marked: its neighbours never reach the decider
    before = env.enf.decider_stats()["groups"]["enforce-test"]["events"]  # type: ignore[union-attr]
    other = env.data / "other"
    other.write_text("o")
    for _ in range(3):
        assert env.run("read", str(other))[1] == {"ok": True, "data": "o"}
    stats = env.enf.decider_stats()  # type: ignore[union-attr]
    assert stats["groups"]["enforce-test"]["events"] == before


def test_named_file_replaced_by_rename_stays_protected(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("old")
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)]))
    new = env.data / "secret.new"
    new.write_text("new")
    os.rename(new, secret)           # as passwd does with /etc/shadow: a new inode
    time.sleep(0.2)
    assert env.run("read", str(secret))[1] == {"ok": False, "errno": errno.EPERM}
    assert env.enf.decider_stats()["groups"]["enforce-test"]["remarked"] >= 1  # type: ignore[union-attr]


def test_named_file_created_after_the_policy_is_protected(env: Env) -> None:
    later = env.data / "later"
    env.load(policy(env.scope, "file_open", "Equal", [str(later)]))
    later.write_text("x")
    assert env.run("read", str(later))[1] == {"ok": False, "errno": errno.EPERM}


def _deny_errno_supported() -> bool:
    from vigil.bpf import fanotify as F
    fd = F.init(F.FAN_CLASS_PRE_CONTENT | F.FAN_CLOEXEC)
    try:
        return F.has_deny_errno(fd)
    finally:
        os.close(fd)


def test_open_custom_errno(env: Env) -> None:
    if not _deny_errno_supported():
        pytest.skip("this kernel refuses FAN_DENY_ERRNO (Linux < 6.14): only EPERM")
    secret = env.data / "secret"
    secret.write_text("x")
    env.load(policy(env.scope, "file_open", "Postfix", ["/secret"],
                    actions="[{action: Override, argError: -5}]"))
    assert env.run("read", str(secret))[1] == {"ok": False, "errno": errno.EIO}


def test_monitor_mode_only_reports(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("top secret")
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)], mode="monitor"))
    pid, res = env.run("read", str(secret))
    assert res == {"ok": True, "data": "top secret"}
    (ev,) = env.lsm_events(pid)
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE"   # what would have happened
    assert env.enf.events.monitor[("enforce-test", "KPROBE_ACTION_OVERRIDE")] == 1  # type: ignore[union-attr]


def test_sigkill_kills_the_opener(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("x")
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)],
                    actions="[{action: Sigkill}]"))
    r = env.sh(f"exec {PY} {env.victim} read {secret}")
    assert r.returncode == -signal.SIGKILL or r.returncode == 128 + 9, r
    assert r.stdout == ""
    (ev,) = env.lsm_events()
    assert ev["action"] == "KPROBE_ACTION_SIGKILL"


def test_prefix_rule_marks_only_its_filesystem(env: Env) -> None:
    mnt = env.tmp / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vigil-test", str(mnt)], check=True)
    try:
        (mnt / "secret").mkdir()
        (mnt / "secret" / "deep").mkdir()
        (mnt / "secret" / "deep" / "f").write_text("s")
        (mnt / "public").write_text("p")
        loaded = env.load(policy(env.scope, "file_open", "Prefix", [f"{mnt}/secret/"]))
        assert loaded.marks == [f"fs {mnt} 0x10000"]
        assert env.run("read", f"{mnt}/secret/deep/f")[1] == {"ok": False, "errno": errno.EPERM}
        for _ in range(3):
            assert env.run("read", f"{mnt}/public")[1] == {"ok": True, "data": "p"}
        g = env.enf.decider_stats()["groups"]["enforce-test"]  # type: ignore[union-attr]
        assert g["cached"] == 1 and g["denied"] == 1
        env.enf.unload(loaded)  # type: ignore[union-attr]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_new_mount_under_a_prefix_is_marked(env: Env) -> None:
    mnt = env.tmp / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vigil-test", str(mnt)], check=True)
    sub = mnt / "sub"
    try:
        sub.mkdir()
        env.load(policy(env.scope, "file_open", "Prefix", [f"{mnt}/"]))
        subprocess.run(["mount", "-t", "tmpfs", "vigil-test2", str(sub)], check=True)
        (sub / "f").write_text("x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if env.run("read", str(sub / "f"))[1] == {"ok": False, "errno": errno.EPERM}:
                break
            time.sleep(0.1)
        else:
            pytest.fail("a filesystem mounted under the prefix after the policy was not marked")
    finally:
        subprocess.run(["umount", str(sub)], check=False)
        subprocess.run(["umount", str(mnt)], check=True)


# ---- bprm_check_security -------------------------------------------------------------------

def _script(path: Path, marker: Path) -> Path:
    path.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    path.chmod(0o755)
    return path


def test_exec_refused_binary_does_not_run(env: Env) -> None:
    marker = env.data / "marker"
    prog = _script(env.data / "prog", marker)
    env.load(policy(env.scope, "bprm_check_security", "Equal", [str(prog)]))
    pid, res = env.run("exec", str(prog))
    assert res == {"ok": False, "errno": errno.EPERM}
    assert not marker.exists(), "the refused program ran"
    (ev,) = env.lsm_events(pid)
    assert ev["function_name"] == "bprm_check_security"
    assert ev["args"] == [{"linux_binprm_arg": {"path": str(prog), "permission": "-rwxr-xr-x"}}]
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE"
    # the same program outside the scope runs
    assert env.sh(str(prog), scoped=False).returncode == 0
    assert marker.read_text() == "ran\n"


def test_allow_list_only_listed_binaries_run_in_the_cgroup(env: Env) -> None:
    true, sh, cat = (os.path.realpath(p) for p in ("/bin/true", "/bin/sh", "/bin/cat"))
    listed = [true, sh, cat, PY]
    env.load(policy(env.scope, "bprm_check_security", "NotEqual", listed))
    marker = env.data / "marker"
    prog = _script(env.data / "prog", marker)
    loader = os.path.realpath("/lib64/ld-linux-x86-64.so.2") \
        if os.path.exists("/lib64/ld-linux-x86-64.so.2") else ""
    script = (f"{true}; echo true=$?; {cat} /dev/null; echo cat=$?; /usr/bin/id >/dev/null 2>&1; "
              f"echo id=$?; {prog} 2>/dev/null; echo prog=$?")
    if loader:  # the dynamic loader run directly is a program, and not listed
        script += f"; {loader} {true} 2>/dev/null; echo ldso=$?"
    r = env.sh(script)
    got = dict(line.split("=") for line in r.stdout.split())
    assert got["true"] == "0" and got["cat"] == "0", r  # listed, dynamically linked
    assert got["id"] == "126" and got["prog"] == "126"
    assert not marker.exists()
    if loader:
        assert got["ldso"] == "126"
    deadline = time.monotonic() + 20  # reports arrive asynchronously
    while True:
        paths = sorted(e["args"][0]["linux_binprm_arg"]["path"] for e in env.lsm_events())
        if {"/usr/bin/id", str(prog)} <= set(paths) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "/usr/bin/id" in paths and str(prog) in paths
    assert all(p not in paths for p in listed)
    assert env.sh("/usr/bin/id >/dev/null", scoped=False).returncode == 0  # outside: unaffected
    g = env.enf.decider_stats()["groups"]["enforce-test"]  # type: ignore[union-attr]
    assert g["interpreter"] >= 2  # ld.so of true and cat, not judged as programs


def test_allow_list_on_overlayfs_judges_the_path_the_task_named(env: Env) -> None:
    """An exec on overlayfs opens the file the task named and, inside overlayfs, the
    layer's real file (reported since 6.8 with a path relative to the layer, on a mount
    no task can reach): the listed program runs, an unlisted one is refused."""
    base = env.tmp / "ovl"  # a tmpfs: the lane's /tmp is itself an overlay (no upper there)
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vigil-test-ovl-base", str(base)], check=True)
    lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower / "bin", upper, work, merged):
        d.mkdir(parents=True)
    for name in ("ok", "no"):
        shutil.copy(os.path.realpath("/bin/true"), lower / "bin" / name)
    subprocess.run(["mount", "-t", "overlay", "vigil-test-ovl", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        sh = os.path.realpath("/bin/sh")
        env.load(policy(env.scope, "bprm_check_security", "NotEqual", [f"{merged}/bin/ok", sh, PY]))
        r = env.sh(f"{merged}/bin/ok; echo ok=$?; {merged}/bin/no; echo no=$?")
        got = dict(line.split("=") for line in r.stdout.split())
        assert got == {"ok": "0", "no": "126"}, r
        paths = [e["args"][0]["linux_binprm_arg"]["path"] for e in env.lsm_events()]
        assert paths == [f"{merged}/bin/no"], paths
    finally:
        subprocess.run(["umount", str(merged)], check=True)
        subprocess.run(["umount", str(base)], check=True)


# ---- safety ------------------------------------------------------------------------------

def _blocked_open(env: Env, path: Path, scoped: bool = True,
                  wait: bool = False) -> tuple[subprocess.Popen[str], float]:
    """Start a victim reading ``path``; with ``wait``, return once it is inside that
    open(2) (it said so, and /proc shows it in openat): blocked on the decision."""
    op = "read-ready" if wait else "read"
    cmd = f"exec {PY} {env.victim} {op} {path}"
    if scoped:
        cmd = f"echo $$ > {env.cg.procs_file} && {cmd}"
    p = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, text=True)
    if wait:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{p.pid}/syscall").read_text().startswith("257 "):
            assert time.monotonic() < deadline and p.poll() is None, "the victim never blocked"
            time.sleep(0.02)
    return p, time.monotonic()


def _result(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("fail_closed", [False, True])
def test_watchdog_answers_a_late_decision(env: Env, fail_closed: bool) -> None:
    """Every decision takes 2 s, the deadline is 0.3 s: the watchdog's verdict reaches
    the task, not the decision's. The rule decides the opposite of the watchdog (deny
    when the watchdog allows, allow when it denies), so the result itself shows who
    answered, whatever the machine's speed (no timing in the assertion)."""
    other = env.data / "other"
    other.write_text("o")
    env.enforcement(decision_timeout=0.3, debug_delay=2.0, fail_closed=fail_closed)
    never = "      matchBinaries: [{operator: In, values: [/nonexistent]}]\n"
    env.load(policy(env.scope, "file_open", "Equal", [str(other)],
                    extra=never if fail_closed else ""))  # the decision: allow / deny
    p, _ = _blocked_open(env, other)
    res = _result(p, timeout=30)
    assert res == ({"ok": False, "errno": errno.EPERM} if fail_closed else {"ok": True, "data": "o"})
    # the slow decision finishes later: it finds the event answered, neither answers
    # twice nor reports
    deadline = time.monotonic() + 30
    while env.enf.decider_stats()["groups"]["enforce-test"].get("late", 0) < 1:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the late decision never finished"
        time.sleep(0.1)
    g = env.enf.decider_stats()  # type: ignore[union-attr]
    assert g["global"][f"watchdog_{'deny' if fail_closed else 'allow'}"] >= 1
    assert g["groups"]["enforce-test"].get("denied", 0) == 0
    assert env.enf.watchdog_answers >= 1  # type: ignore[union-attr]
    assert not env.lsm_events(timeout=0.5)


def test_decider_sigkill_releases_waiters_then_it_is_restarted(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("s")
    env.enforcement(decision_timeout=60, debug_delay=30, supervise_interval=0.2)
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)]))
    pid = env.enf.decider_pid  # type: ignore[union-attr]
    p, _ = _blocked_open(env, secret, wait=True)  # waits on a 30 s decision
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    res = _result(p, timeout=25)  # released by the kill, long before the decision
    assert res == {"ok": True, "data": "s"}  # a dead decider releases with allow
    deadline = time.monotonic() + 20
    while env.enf.decider_pid in (None, pid) and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)
    assert env.enf.restarts >= 1 and env.enf.decider_pid not in (None, pid)  # type: ignore[union-attr]


def test_stalled_decider_is_killed_by_the_supervisor(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("s")
    # the victim must reach its open before the supervisor replaces the stalled decider
    # (the new one would judge it): stall_kill scaled by this machine's victim start-up
    t0 = time.monotonic()
    env.run("read", str(secret))
    stall = max(1.0, 3 * (time.monotonic() - t0))
    env.enforcement(decision_timeout=0.5, supervise_interval=0.2, stall_kill=stall)
    env.load(policy(env.scope, "file_open", "Equal", [str(secret)]))
    pid = env.enf.decider_pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        p, _ = _blocked_open(env, secret)
        res = _result(p, timeout=60)  # a stopped decider never answers: the kill released it
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
    assert res == {"ok": True, "data": "s"}
    deadline = time.monotonic() + 20
    while env.enf.decider_pid in (None, pid) and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)
    # restarted with the policy: enforced again
    assert env.run("read", str(secret))[1] == {"ok": False, "errno": errno.EPERM}


OWNER = textwrap.dedent("""\
    import sys, time
    from vigil.enforce.service import EnforceConfig, Enforcement
    from vigil.policy.compiler import KernelView, compile_policy
    from vigil.policy.loader import load_policy
    enf = Enforcement(EnforceConfig(decision_timeout=60, debug_delay=30))
    enf.load(compile_policy(load_policy(open(sys.argv[1]).read()), KernelView()))
    print(enf.decider_pid, flush=True)
    time.sleep(600)
""")


def test_owner_sigkill_releases_waiters(env: Env) -> None:
    """The agent (here a stand-in process owning an Enforcement) dies with SIGKILL while a
    task waits on a decision: the decider notices and exits, the kernel releases the task."""
    secret = env.data / "secret"
    secret.write_text("s")
    pol = env.tmp / "policy.yaml"
    pol.write_text(policy(env.scope, "file_open", "Equal", [str(secret)]))
    owner_py = env.tmp / "owner.py"
    owner_py.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(owner_py), str(pol)], stdout=subprocess.PIPE, text=True)
    try:
        decider = int(owner.stdout.readline())  # type: ignore[union-attr]
        p, _ = _blocked_open(env, secret, wait=True)  # waits on a 30 s decision
        owner.kill()
        res = _result(p, timeout=25)  # released when the decider followed its owner
        assert res == {"ok": True, "data": "s"}
        deadline = time.monotonic() + 20
        while Path(f"/proc/{decider}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{decider}").exists(), "the decider outlived its owner"
    finally:
        owner.kill()
        owner.wait()


def test_unload_releases_marks(env: Env) -> None:
    secret = env.data / "secret"
    secret.write_text("s")
    loaded = env.load(policy(env.scope, "file_open", "Equal", [str(secret)]))
    assert env.run("read", str(secret))[1]["ok"] is False
    env.enf.unload(loaded)  # type: ignore[union-attr]
    assert env.run("read", str(secret))[1] == {"ok": True, "data": "s"}
    pid = env.enf.decider_pid  # type: ignore[union-attr]
    fanotify_fds = [f for f in os.listdir(f"/proc/{pid}/fd")
                    if "anon_inode:[fanotify]" in os.readlink(f"/proc/{pid}/fd/{f}")]
    assert fanotify_fds == []
