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
                      "--enable-ancestors", "base", "--export-file-max-size-mb", "1000") as a:
        links = links_of(a.proc.pid)
        assert len(links) == 3, "exec, fork and exit programs attached"
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
    evs = agent.wait_for(lambda e: "ancestry-marker" in
                         e.get("process_exec", {}).get("process", {}).get("arguments", ""))
    assert evs
    ex = evs[-1]["process_exec"]
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
