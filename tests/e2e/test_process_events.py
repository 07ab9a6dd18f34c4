"""The base sensor end to end: real agent, real processes, every field of the events."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess, exec_of, exit_of, links_of, live_links

SH = os.path.realpath("/bin/sh")
TRUE = os.path.realpath("/bin/true")
SLEEP = os.path.realpath("/bin/sleep")
NODE = socket.gethostname()


@pytest.fixture(scope="module")
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that exists before the agent starts (must come from the /proc scan)."""
    p = subprocess.Popen([SLEEP, "300"])
    yield p
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory,
          sleeper: subprocess.Popen[bytes]) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("agent")
    with AgentProcess(tmp, "--enable-process-cred", "--enable-process-ns",
                      "--enable-ancestors", "base", "--export-file-max-size-mb", "1000",
                      "--self-protection=false") as a:  # the base sensor alone
        links = links_of(a.proc.pid)
        # exec, fork, exit, and commit_creds or the 11 credential syscalls' exits
        assert len(links) in (3 + 1, 3 + 11), links
        yield a
        a.stop()
        assert not live_links(links), "agent exit detached every program"
        assert "lost" not in "".join(a.stderr), "".join(a.stderr)


def run(args: list[Any], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, **kw)


def spawn_and_wait(agent: AgentProcess, args: list[Any], **kw: Any) -> tuple[dict, dict, int]:
    """Run a process; return its exec event, its exit event and its pid."""
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    p.wait()
    execs = agent.wait_for(exec_of(p.pid))
    exits = agent.wait_for(exit_of(p.pid))
    assert execs, f"no exec event for pid {p.pid} {args}"
    assert exits, f"no exit event for pid {p.pid} {args}"
    return execs[-1]["process_exec"], exits[-1]["process_exit"], p.pid


def procfs_self(agent: AgentProcess) -> dict:
    [ev] = agent.wait_for(exec_of(os.getpid()))
    return ev["process_exec"]["process"]


def test_exec_and_exit_fields(agent: AgentProcess, tmp_path: Path) -> None:
    cwd = tmp_path / "dir with space"
    cwd.mkdir()
    t0 = time.time()
    ex, xt, pid = spawn_and_wait(agent, [SH, "-c", "exit 7"], cwd=cwd)
    proc = ex["process"]
    assert proc["pid"] == pid and proc["tid"] == pid
    assert proc["binary"] == SH
    assert proc["arguments"] == '-c "exit 7"'
    assert proc["cwd"] == str(cwd.resolve())
    assert proc["uid"] == 0
    assert proc["auid"] == int(Path("/proc/self/loginuid").read_text())
    assert proc["flags"] == "execve clone"
    assert proc["in_init_tree"] is False
    node, ktime, epid = base64.b64decode(proc["exec_id"]).decode().rsplit(":", 2)
    assert (node, int(epid)) == (NODE, pid) and int(ktime) > 0
    start = proc["start_time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z", start)
    ts = time.mktime(time.strptime(start[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(ts - t0) < 5
    # parent: this test process (found by the /proc scan, it predates the agent)
    me = procfs_self(agent)
    assert ex["parent"]["exec_id"] == me["exec_id"] == proc["parent_exec_id"]
    assert ex["parent"]["pid"] == os.getpid()
    assert me["binary"] == os.path.realpath(sys.executable)
    # exit: same process, status 7, no signal, exit time after start
    assert xt["process"]["exec_id"] == proc["exec_id"]
    assert xt["status"] == 7 and "signal" not in xt
    assert xt["time"] >= proc["start_time"]
    assert xt["parent"]["exec_id"] == me["exec_id"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_exit_by_signal(agent: AgentProcess, sig: signal.Signals) -> None:
    _ex, xt, _pid = spawn_and_wait(agent, [SH, "-c", f"kill -{sig.name[3:]} $$"])
    assert xt["signal"] == sig.name
    assert "status" not in xt


def test_arguments_quoting_and_invalid_utf8(agent: AgentProcess) -> None:
    args = [TRUE, "a b", 'q"uote', b"\xff\xfeok", "é"]
    ex, _xt, _ = spawn_and_wait(agent, args)
    assert ex["process"]["arguments"] == ' "a b" q"uote \ufffd\ufffdok é'


def test_long_argv_is_complete_up_to_the_limit(agent: AgentProcess) -> None:
    big = "x" * 5000
    ex, _, _ = spawn_and_wait(agent, [TRUE, big, "end"])
    assert ex["process"]["arguments"] == f"{big} end"
    assert "truncArgs" not in ex["process"]["flags"]


def test_huge_argv_is_truncated_and_flagged(agent: AgentProcess) -> None:
    huge = ["y" * 1000 for _ in range(40)]  # 40 KB of argv
    ex, _, _ = spawn_and_wait(agent, [TRUE, *huge])
    proc = ex["process"]
    assert proc["flags"].split() == ["execve", "truncArgs", "clone"]
    assert " ".join(huge).startswith(proc["arguments"])
    assert 15000 < len(proc["arguments"]) < 16128


def test_credentials_of_a_setuid_nobody_child(agent: AgentProcess) -> None:
    ex, _, _ = spawn_and_wait(agent, [TRUE, "as-nobody"], user=65534, group=65534,
                              extra_groups=[])
    proc = ex["process"]
    assert proc["uid"] == 65534
    creds = proc["process_credentials"]
    for key in ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid"):
        assert creds[key] == 65534, key
    assert "permitted" not in proc.get("cap", {})  # nobody keeps no capabilities
    root = procfs_self(agent)
    assert "CAP_SYS_ADMIN" in root["cap"]["effective"]


def _inum(pid: int | str, name: str) -> int:
    return int(re.search(r"\[(\d+)\]", os.readlink(f"/proc/{pid}/ns/{name}")).group(1))


def test_namespaces_are_the_hosts(agent: AgentProcess) -> None:
    ex, _, _ = spawn_and_wait(agent, [TRUE, "ns"])
    ns = ex["process"]["ns"]
    for name in ("uts", "ipc", "mnt", "pid", "net", "cgroup", "user"):
        inum = _inum("self", name)
        assert ns[name]["inum"] == inum, name
        # the host's: kthreadd's (make test runs in a private mount namespace: not the host's)
        assert ns[name].get("is_host", False) is (inum == _inum(2, name)), name


def test_is_host_is_the_hosts_not_the_agents(agent: AgentProcess) -> None:
    """is_host compares with the host's namespaces, learned from the kernel where /proc/1/ns
    is unreadable: a process in its own network namespace is not in the host's."""
    p = subprocess.Popen(["unshare", "--net", TRUE, "own-netns"])
    p.wait()
    # two execs of one pid (unshare, then true): wait for the second
    [ev] = agent.wait_for(lambda e: exec_of(p.pid)(e) and
                          e["process_exec"]["process"]["binary"] == TRUE) or [None]
    assert ev is not None, "no exec event of true"
    ex = ev["process_exec"]
    ns = ex["process"]["ns"]
    assert ex["process"]["binary"] == TRUE
    assert not ns["net"].get("is_host") and ns["uts"]["is_host"]
    assert ns["mnt"].get("is_host", False) is (_inum("self", "mnt") == _inum(2, "mnt"))
    try:
        os.readlink("/proc/1/ns/net")
        source = "/proc/1/ns"
    except OSError:
        source = "the kernel (BPF task iterator): pid 1's"
    assert f"host namespaces from {source}" in "".join(agent.stderr)


def test_ancestors_and_parent_links(agent: AgentProcess) -> None:
    outer = subprocess.Popen([SH, "-c", f'{SH} -c "{TRUE} ancestry-marker; :"; :'])
    outer.wait()
    # the marker is in both shells' arguments too: wait for the exec of true itself
    evs = agent.wait_for(lambda e: e.get("process_exec", {}).get("process", {}).get(
        "arguments") == "ancestry-marker")
    assert evs
    ex = evs[-1]["process_exec"]
    assert ex["process"]["binary"] == TRUE
    inner_sh = ex["parent"]
    assert inner_sh["binary"] == SH
    assert inner_sh["arguments"] == f'-c "{TRUE} ancestry-marker; :"'
    ancestors = ex["ancestors"]
    assert ancestors[0]["pid"] == outer.pid and ancestors[0]["binary"] == SH
    assert ancestors[1]["pid"] == os.getpid()
    # each link is the next one's parent_exec_id
    chain = [ex["process"], inner_sh, *ancestors]
    for child, parent in zip(chain, chain[1:]):
        assert child["parent_exec_id"] == parent["exec_id"]


def test_processes_running_before_start_come_from_procfs(
        agent: AgentProcess, sleeper: subprocess.Popen[bytes]) -> None:
    [ev] = agent.wait_for(exec_of(sleeper.pid))
    proc = ev["process_exec"]["process"]
    assert proc["flags"] == "procFS"
    assert proc["binary"] == SLEEP and proc["arguments"] == "300"
    assert ev["process_exec"]["parent"]["pid"] == os.getpid()
    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()
    [xt] = agent.wait_for(exit_of(sleeper.pid))
    assert xt["process_exit"]["signal"] == "SIGKILL"
    assert xt["process_exit"]["process"]["exec_id"] == proc["exec_id"]


def test_no_event_lost_at_500_execs_per_second(agent: AgentProcess) -> None:
    n, rate = 1500, 500.0
    pids = []
    t0 = time.monotonic()
    for i in range(n):
        pids.append(os.posix_spawn(TRUE, [TRUE, "storm"], os.environ))
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for pid in pids:
        os.waitpid(pid, 0)
    want = set(pids)
    deadline = time.monotonic() + 30
    while True:
        evs = agent.events()
        execs = {e["process_exec"]["process"]["pid"] for e in evs
                 if "process_exec" in e and e["process_exec"]["process"].get("arguments") == "storm"}
        exits = {e["process_exit"]["process"]["pid"] for e in evs
                 if "process_exit" in e and e["process_exit"]["process"].get("arguments") == "storm"}
        if want <= execs and want <= exits or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not want - execs, f"{len(want - execs)} exec events missing"
    assert not want - exits, f"{len(want - exits)} exit events missing"


def test_export_rotation_keeps_0600(tmp_path: Path) -> None:
    os.umask(0o022)
    with AgentProcess(tmp_path, "--export-file-max-size-mb", "0.05",
                      "--export-file-max-backups", "2") as a:
        for _ in range(30):
            run([TRUE, "r" * 2000])
        a.wait_for(lambda e: False, timeout=1.5)
    files = sorted(tmp_path.glob("events*"))
    backups = [f for f in files if f.name != "events.log"]
    assert len(backups) == 2, [f.name for f in files]
    for f in backups:
        assert re.fullmatch(r"events-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log", f.name)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_missing_capabilities_is_a_clear_error(tmp_path: Path) -> None:
    """uid 0 without capabilities (the bounding set cleared) cannot load BPF: say so."""
    r = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--",
                        sys.executable, "-m", "vigil", "agent", "--no-export-stdout",
                        "--server-address", f"unix://{tmp_path}/s.sock"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)" in r.stderr


# ----------------------------------------------------------- what Tetragon calls things


def test_binary_is_the_executed_name_and_exec_without_fork_links_to_the_previous_program(
        agent: AgentProcess) -> None:
    """``/bin/sh -c 'exec /bin/echo hi'``: the binaries are the names executed (on
    Debian /bin links to /usr/bin, the resolved files are /usr/bin/dash and
    /usr/bin/echo), and echo's parent is the sh it replaced."""
    p = subprocess.Popen(["/bin/sh", "-c", "exec /bin/echo hi"], stdout=subprocess.DEVNULL)
    p.wait()
    [sh_ev, echo_ev] = agent.wait_for(exec_of(p.pid), count=2)
    sh = sh_ev["process_exec"]["process"]
    echo = echo_ev["process_exec"]
    assert sh["binary"] == "/bin/sh" and sh["flags"] == "execve clone"
    assert echo["process"]["binary"] == "/bin/echo" and echo["process"]["arguments"] == "hi"
    assert echo["process"]["flags"] == "execve"
    assert echo["parent"]["binary"] == "/bin/sh"
    assert echo["parent"]["exec_id"] == sh["exec_id"] == echo["process"]["parent_exec_id"]
    [xt] = agent.wait_for(exit_of(p.pid))
    assert xt["process_exit"]["process"]["exec_id"] == echo["process"]["exec_id"]
    assert xt["process_exit"]["parent"]["binary"] == "/bin/sh"


def test_env_exec_has_env_as_parent(agent: AgentProcess) -> None:
    p = subprocess.Popen(["/usr/bin/env", "/bin/true"])
    p.wait()
    [env_ev, true_ev] = agent.wait_for(exec_of(p.pid), count=2)
    assert env_ev["process_exec"]["process"]["binary"] == "/usr/bin/env"
    assert env_ev["process_exec"]["parent"]["pid"] == os.getpid()
    body = true_ev["process_exec"]
    assert body["process"]["binary"] == "/bin/true"
    assert body["parent"]["binary"] == "/usr/bin/env"
    assert body["parent"]["exec_id"] == env_ev["process_exec"]["process"]["exec_id"]


def test_relative_exec_is_made_absolute_against_the_cwd(agent: AgentProcess,
                                                        tmp_path: Path) -> None:
    p = subprocess.Popen(["/bin/sh", "-c", "cd /usr && exec ./bin/true relative-marker"])
    p.wait()
    evs = agent.wait_for(lambda e: e.get("process_exec", {}).get("process", {})
                         .get("arguments") == "relative-marker")
    assert evs and evs[-1]["process_exec"]["process"]["binary"] == "/usr/bin/true"


def test_fork_only_child_exit_has_tetragons_clone_flags(agent: AgentProcess) -> None:
    """A subshell that exits without exec: flags "execve" and refcnt 1, as Tetragon
    reports its clone entries; its parent is the shell that forked it."""
    p = subprocess.Popen(["/bin/sh", "-c", "(exit 3); true"])
    p.wait()
    [sh_ev] = agent.wait_for(exec_of(p.pid))
    sh = sh_ev["process_exec"]["process"]
    exits = agent.wait_for(lambda e: e.get("process_exit", {}).get("process", {})
                           .get("parent_exec_id") == sh["exec_id"])
    assert exits, "no exit of the forked subshell"
    xt = exits[-1]["process_exit"]
    assert xt["process"]["pid"] != p.pid
    assert xt["process"]["flags"] == "execve"
    assert xt["process"]["refcnt"] == 1
    assert xt["process"]["binary"] == "/bin/sh"          # the shell's, copied at fork
    assert xt["status"] == 3
    assert xt["parent"]["exec_id"] == sh["exec_id"]


def test_startup_scan_announces_kernel_and_no_kernel_threads(agent: AgentProcess) -> None:
    [kev] = agent.wait_for(exec_of(0))
    kernel = kev["process_exec"]["process"]
    assert kernel["binary"] == "<kernel>" and kernel["flags"] == "procFS"
    node, ktime, pid = base64.b64decode(kernel["exec_id"]).decode().rsplit(":", 2)
    assert (ktime, pid) == ("1", "0")
    procfs_execs = [e["process_exec"]["process"] for e in agent.events()
                    if "procFS" in e.get("process_exec", {}).get("process", {}).get("flags", "")]
    kthreads = {int(d) for d in os.listdir("/proc") if d.isdigit()
                and _is_kthread(int(d))}
    assert kthreads, "this host has kernel threads"
    assert not [p for p in procfs_execs if p["pid"] in kthreads]
    assert not [p for p in procfs_execs if p.get("binary", "").startswith("[")]
    # pid 1 (its exe and cwd are unreadable on some hosts: the record still exists)
    # is a child of <kernel>
    init = [p for p in procfs_execs if p["pid"] == 1]
    if Path("/proc/1/stat").exists():
        assert init and init[0]["parent_exec_id"] == kernel["exec_id"]
        [iev] = agent.wait_for(exec_of(1))
        assert iev["process_exec"]["parent"]["binary"] == "<kernel>"


def _is_kthread(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return bool(int(stat[stat.rindex(")") + 2:].split()[6]) & 0x00200000)


POLICY_REFCNT = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: refcnt-test
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_fchmodat
    args:
    - index: 7
      type: int
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{chmod}"]
  kprobes:
  - call: sys_fchmodat
    syscall: true
    return: true
    args:
    - index: 2
      type: int
    returnArg:
      index: 0
      type: int
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{chmod}"]
"""


def test_policy_events_carry_refcnt_and_return_action(tmp_path: Path) -> None:
    """A tracepoint and a return kprobe on the same call: the process carries the cache's
    reference count (1: running, no children) and the return probe's event has
    return_action, as Tetragon's; matchBinaries matches the resolved file while the
    event names the binary as executed (/bin/chmod)."""
    chmod = os.path.realpath("/bin/chmod")
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY_REFCNT.replace("{chmod}", chmod))
    target = tmp_path / "f"
    target.touch()
    with AgentProcess(tmp_path, "--tracing-policy", str(pol)) as a:
        p = subprocess.Popen(["/bin/chmod", "600", str(target)])
        p.wait()
        tp = a.wait_for(lambda e: e.get("process_tracepoint", {}).get("process", {})
                        .get("pid") == p.pid)
        kp = a.wait_for(lambda e: e.get("process_kprobe", {}).get("process", {})
                        .get("pid") == p.pid)
        [ex] = a.wait_for(exec_of(p.pid))
    assert tp and kp
    tpe, kpe = tp[-1]["process_tracepoint"], kp[-1]["process_kprobe"]
    for body in (tpe, kpe):
        assert body["process"]["binary"] == "/bin/chmod"
        assert body["process"]["refcnt"] == 1
        assert "refcnt" not in body["parent"]
    assert "return_action" not in tpe                     # ProcessTracepoint has none
    assert kpe["return"] == {"int_arg": 0}
    assert kpe["action"] == kpe["return_action"] == "KPROBE_ACTION_POST"
    keys = list(kpe)
    assert keys.index("policy_name") + 1 == keys.index("return_action")
    # the exec event's process has no refcnt (Tetragon's exec'd processes carry none)
    assert "refcnt" not in ex["process_exec"]["process"]


def test_script_binary_is_the_script(agent: AgentProcess, tmp_path: Path) -> None:
    """A ``#!`` script: the binary is the script executed (bprm->filename, as Tetragon),
    the arguments those the interpreter got after its own name."""
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    ex, _, _ = spawn_and_wait(agent, [str(script), "script-marker"])
    assert ex["process"]["binary"] == str(script)
    assert ex["process"]["arguments"] == f"{script} script-marker"
