"""Self-protection through the real agent: signals, ptrace and bpf() aimed at the agent
from other processes, and writes to its policy file, each become an event of the
built-in policy ``vigil-self-protection``; the same calls aimed at other processes,
objects and files do not; the built-in can be disabled like any policy, and is off with
``--self-protection=false``. The fanotify decider (a helper process of the agent) is
protected like the agent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess, Event, links_of

NAME = "vigil-self-protection"
PTRACE_ATTEMPT = textwrap.dedent("""\
    import ctypes, os, sys
    os.setuid(65534)  # an unprivileged attempt: refused, but still an attempt
    libc = ctypes.CDLL(None, use_errno=True)
    print(libc.ptrace(16, int(sys.argv[1]), 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
""")
LINK_BY_ID = textwrap.dedent("""\
    import ctypes, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("<I", int(sys.argv[1])), 16)
    print(libc.syscall(321, 30, attr, 16), ctypes.get_errno())  # bpf(BPF_LINK_GET_FD_BY_ID)
""")
POLICY = textwrap.dedent("""\
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata: {name: selfprot-e2e-dummy}
    spec:
      tracepoints:
      - subsystem: syscalls
        event: sys_enter_sethostname
        args: [{index: 6, type: int}]
    """)


def mine(e: Event) -> dict[str, Any] | None:
    for kind in ("process_tracepoint", "process_kprobe"):
        body = e.get(kind)
        if body is not None and body.get("policy_name") == NAME:
            return dict(body)
    return None


def arg(body: dict[str, Any], label: str) -> Any:
    for a in body.get("args", ()):
        if a.get("label") == label:
            return next(v for k, v in a.items() if k != "label")
    return None


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "300"])
    yield p
    p.kill()
    p.wait()


def test_attempts_on_the_agent_are_reported(tmp_path: Path, policy: Path,
                                            sleeper: subprocess.Popen[bytes]) -> None:
    other_file = tmp_path / "other.yaml"
    other_file.write_text(POLICY)
    with AgentProcess(tmp_path, "--tracing-policy", str(policy)) as agent:
        apid = agent.proc.pid
        link = min(links_of(apid))
        # first the same calls aimed elsewhere: none of them is reported
        run("/bin/kill", "-0", str(sleeper.pid))
        run(sys.executable, "-c", PTRACE_ATTEMPT, str(sleeper.pid))
        run(sys.executable, "-c", LINK_BY_ID, str(0x7FFFFFF0))  # no such link
        with open(other_file, "a") as f:
            f.write("# other\n")
        # then at the agent
        run("/bin/kill", "-0", str(apid))
        run("/bin/kill", "-HUP", str(apid))  # the agent reopens its export file on HUP
        run(sys.executable, "-c", PTRACE_ATTEMPT, str(apid))
        run("bpftool", "link", "show", "id", str(link))
        with open(policy, "a") as f:
            f.write("# changed\n")
        run("/bin/kill", "-0", str(apid))  # the last: every earlier record came first

        def last_kill(e: Event) -> bool:
            b = mine(e)
            return b is not None and b.get("event") == "sys_enter_kill" and \
                arg(b, "signal") == 0 and b["process"].get("binary", "").endswith("/kill")
        assert len(agent.wait_for(last_kill, count=2)) == 2, agent.stderr[-20:]
        assert agent.wait_for(lambda e: (mine(e) or {}).get("function_name") ==
                              "fanotify_modify" and (arg(mine(e), "path") or {}).get("path") == str(policy))
        events = [b for e in agent.events() if (b := mine(e)) is not None]
    assert agent.proc.returncode == 0

    def of(event: str) -> list[dict[str, Any]]:
        return [b for b in events if b.get("event") == event]

    kills = of("sys_enter_kill")
    assert {(arg(b, "target_pid"), arg(b, "signal")) for b in kills} == {(apid, 0), (apid, 1)}
    # SIGHUP generated for the agent (kill -0 generates no signal)
    gen = of("signal_generate")
    assert [(arg(b, "target_pid"), arg(b, "signal")) for b in gen] == [(apid, 1)]
    (pt,) = of("sys_enter_ptrace")
    assert arg(pt, "target_pid") == apid and arg(pt, "request") == "16"
    assert pt["process"]["binary"] in (sys.executable, os.path.realpath(sys.executable))
    bpf = of("sys_enter_bpf")
    assert bpf and all(b["process"]["binary"].endswith("bpftool") for b in bpf)
    assert any(arg(b, "cmd_name") == "BPF_LINK_GET_FD_BY_ID" and arg(b, "link_id") == link
               for b in bpf), bpf
    writes = [b for b in events if b.get("function_name") == "fanotify_modify"]
    assert {arg(b, "path")["path"] for b in writes} == {str(policy)}
    assert writes[0]["process"]["pid"] == os.getpid()
    # nothing about the sleeper, the unknown link or the other file
    assert not [b for b in events if arg(b, "target_pid") == sleeper.pid]
    assert not [b for b in events if arg(b, "link_id") == 0x7FFFFFF0]
    # the agent's own calls (its SIGTERM handling, its bpf() calls) are not reported
    assert not [b for b in events if b["process"].get("pid") == apid]


def test_builtin_can_be_disabled_and_deleted(tmp_path: Path) -> None:
    with AgentProcess(tmp_path) as agent:
        apid = agent.proc.pid
        addr = f"unix://{agent.socket}"

        def tp(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", *args,
                                   "--server-address", addr], capture_output=True, text=True,
                                  timeout=30)
        listed = tp("list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert NAME in listed.stdout
        r = tp("disable", NAME, "--domain", "static")
        assert r.returncode == 0, r.stderr
        sentinel = subprocess.run(["/bin/kill", "-0", str(apid)])
        # the exit of that kill is in the export file: its sys_enter_kill would be before
        assert agent.wait_for(lambda e: e.get("process_exit", {}).get("process", {}).get(
            "binary", "").endswith("/kill"))
        assert sentinel.returncode == 0
        assert not [e for e in agent.events() if mine(e)]
        r = tp("enable", NAME, "--domain", "static")
        assert r.returncode == 0, r.stderr
        run("/bin/kill", "-0", str(apid))
        assert agent.wait_for(lambda e: (mine(e) or {}).get("event") == "sys_enter_kill")
        r = tp("delete", NAME, "--domain", "static")
        assert r.returncode == 0, r.stderr
        assert NAME not in tp("list", "-o", "json").stdout


def test_self_protection_off(tmp_path: Path, policy: Path) -> None:
    with AgentProcess(tmp_path, "--tracing-policy", str(policy),
                      "--self-protection=false") as agent:
        apid = agent.proc.pid
        listed = subprocess.run([sys.executable, "-m", "vigil", "tracingpolicy", "list",
                                 "-o", "json", "--server-address", f"unix://{agent.socket}"],
                                capture_output=True, text=True, timeout=30)
        assert NAME not in listed.stdout and "selfprot-e2e-dummy" in listed.stdout
        with open(policy, "a") as f:
            f.write("# changed\n")
        run("/bin/kill", "-0", str(apid))
        assert agent.wait_for(lambda e: e.get("process_exit", {}).get("process", {}).get(
            "binary", "").endswith("/kill"))
        assert not [e for e in agent.events() if mine(e)]
        assert any("self-protection off" in line for line in agent.stderr)


def test_the_decider_is_protected(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    secret = tmp_path / "secret"
    secret.write_text("x")
    pol = tmp_path / "enforce.yaml"
    pol.write_text(textwrap.dedent(f"""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {{name: selfprot-e2e-enforce}}
        spec:
          lsmhooks:
          - hook: file_open
            args: [{{index: 0, type: file}}]
            selectors:
            - matchArgs: [{{index: 0, operator: Equal, values: ["{secret}"]}}]
              matchActions: [{{action: Override, argError: -1}}]
        """))
    with AgentProcess(tmp_path, "--tracing-policy", str(pol)) as agent:
        out = run("pgrep", "-P", str(agent.proc.pid), "-f", "vigil.enforce.decider").split()
        if not out:
            pytest.skip("enforcement here does not run a fanotify decider")
        decider = int(out[0])
        run("/bin/kill", "-0", str(decider))
        found = agent.wait_for(lambda e: arg(mine(e) or {}, "target_pid") == decider)
        assert found and mine(found[0])["event"] == "sys_enter_kill"
        # killed, the decider is restarted; the built-in follows it to its new pid
        run("/bin/kill", "-KILL", str(decider))
        assert agent.wait_for(lambda e: arg(mine(e) or {}, "target_pid") == decider and
                              arg(mine(e) or {}, "signal") == 9)
        assert agent.wait_for(lambda _e: any("policy vigil-self-protection reloaded for pids"
                                             in line and str(decider) not in line and
                                             "," in line for line in agent.stderr),
                              timeout=30)
        (new,) = run("pgrep", "-P", str(agent.proc.pid), "-f", "vigil.enforce.decider").split()
        run("/bin/kill", "-0", new)
        assert agent.wait_for(lambda e: arg(mine(e) or {}, "target_pid") == int(new)), \
            (new, [x for x in agent.stderr if "self-prot" in x or "decider" in x])
