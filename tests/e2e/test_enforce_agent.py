"""Enforcement through the real agent: `vigil agent --tracing-policy` with an
lsmhooks file_open Override and a security_socket_connect Override, scoped to a test
cgroup. Checked: refusals with their errno, the events in the export file (full
process info), processes outside the cgroup unaffected, and SIGKILL of the agent while
a task is blocked on a decision releases it within a bound and leaves nothing behind
(the decider exits, every cgroup link is gone).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess, links_of, live_links
from vigil.bench.flood import Cgroup
from vigil.stream.throttle import cgroup2_mount

PY = os.path.realpath(sys.executable)
VICTIM = textwrap.dedent("""\
    import json, os, socket, sys
    op, arg = sys.argv[1], sys.argv[2]
    try:
        if op == "read":
            with open(arg) as f:
                out = {"ok": True, "data": f.read()}
        else:
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", int(arg)))
            out = {"ok": True}
    except OSError as e:
        out = {"ok": False, "errno": e.errno}
    print(json.dumps(out), flush=True)
""")


def wired_for_lsm_events() -> bool:
    """Whether the agent hands the decider's reports to its hub (the lead's wiring)."""
    out = subprocess.run([sys.executable, "-m", "vigil", "agent", "--help"], capture_output=True,
                         text=True).stdout
    return "--enforcement-fail-closed" in out


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.victim = tmp / "victim.py"
        self.victim.write_text(VICTIM)
        self.data = tmp / "d"
        self.data.mkdir()
        self.secret = self.data / "secret"
        self.secret.write_text("top secret")
        self.cg = Cgroup(f"vigil-enforce-e2e-{os.getpid()}")
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(textwrap.dedent(f"""\
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {{name: e2e-enforce}}
            spec:
              options: [{{name: vigil-cgroups, value: /{self.cg.name}}}]
              lsmhooks:
              - hook: file_open
                args: [{{index: 0, type: file}}]
                selectors:
                - matchArgs: [{{index: 0, operator: Equal, values: ["{self.secret}"]}}]
                  matchActions: [{{action: Override, argError: -1}}]
              kprobes:
              - call: security_socket_connect
                syscall: false
                args: [{{index: 1, type: sockaddr}}]
                selectors:
                - matchArgs: [{{index: 1, operator: SPort, values: ["{self.port}"]}}]
                  matchActions: [{{action: Override, argError: -111}}]
            """))

    def run(self, op: str, arg: str, scoped: bool = True) -> subprocess.Popen[str]:
        cmd = f"exec {PY} {self.victim} {op} {arg}"
        if scoped:
            cmd = f"echo $$ > {self.cg.procs_file} && {cmd}"
        return subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, text=True)

    def result(self, p: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
        out, _ = p.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def accepted(self) -> int:
        n = 0
        time.sleep(0.1)
        while True:
            try:
                self.server.accept()[0].close()
                n += 1
            except BlockingIOError:
                return n

    def close(self) -> None:
        self.server.close()
        self.cg.remove()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if not cgroup2_mount():
        pytest.skip("needs a cgroup2 mount")
    os.chmod(tmp_path, 0o755)
    e = Env(tmp_path)
    yield e
    e.close()


def decider_of(agent_pid: int) -> int | None:
    out = subprocess.run(["pgrep", "-P", str(agent_pid), "-f", "vigil.enforce.decider"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def test_agent_enforces_and_reports(env: Env) -> None:
    with AgentProcess(env.tmp, "--tracing-policy", str(env.policy)) as agent:
        links = links_of(agent.proc.pid)
        p = env.run("read", str(env.secret))
        assert env.result(p) == {"ok": False, "errno": errno.EPERM}
        q = env.run("connect", str(env.port))
        assert env.result(q) == {"ok": False, "errno": errno.ECONNREFUSED}
        assert env.accepted() == 0
        assert env.result(env.run("read", str(env.secret), scoped=False))["ok"] is True
        assert env.result(env.run("connect", str(env.port), scoped=False)) == {"ok": True}
        assert env.accepted() == 1
        [kp] = agent.wait_for(lambda e: e.get("process_kprobe", {}).get("process", {})
                              .get("pid") == q.pid)
        body = kp["process_kprobe"]
        assert body["function_name"] == "security_socket_connect"
        assert body["process"]["binary"] == PY and body["process"]["exec_id"]
        assert body["args"] == [{"sockaddr_arg": {"family": "AF_INET", "addr": "127.0.0.1",
                                                  "port": env.port}}]
        assert body["action"] == "KPROBE_ACTION_OVERRIDE"
        if wired_for_lsm_events():
            [lsm] = agent.wait_for(lambda e: e.get("process_lsm", {}).get("process", {})
                                   .get("pid") == p.pid)
            body = lsm["process_lsm"]
            assert body["function_name"] == "file_open" and body["process"]["exec_id"]
            assert body["process"]["binary"] == PY and body["parent"]["pid"]
            assert body["args"][0]["file_arg"]["path"] == str(env.secret)
            assert body["action"] == "KPROBE_ACTION_OVERRIDE"
        decider = decider_of(agent.proc.pid)
        assert decider is not None
        agent.stop()
    assert not live_links(links), "cgroup programs left attached"
    assert not Path(f"/proc/{decider}").exists(), "the decider outlived the agent"


def test_agent_sigkill_releases_a_blocked_task(env: Env) -> None:
    agent = AgentProcess(env.tmp, "--tracing-policy", str(env.policy))
    try:
        links = links_of(agent.proc.pid)
        decider = decider_of(agent.proc.pid)
        assert decider is not None
        os.kill(decider, signal.SIGSTOP)   # nobody answers: the victim blocks in open()
        p = env.run("read", str(env.secret))
        time.sleep(0.5)
        assert p.poll() is None, "the open should be waiting on a decision"
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait()
        t0 = time.monotonic()
        os.kill(decider, signal.SIGCONT)   # it finds its agent gone
        res = env.result(p, timeout=10)
        assert time.monotonic() - t0 < 2.0
        assert res == {"ok": True, "data": "top secret"}   # released (fail-open)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{decider}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{decider}").exists()
        assert not live_links(links), "the agent's cgroup links died with it"
        assert env.result(env.run("read", str(env.secret)))["ok"] is True
    finally:
        agent.stop()
