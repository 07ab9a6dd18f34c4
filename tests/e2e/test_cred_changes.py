"""Credentials as they are now: a process that changes its credentials after exec (setuid,
capset, prctl securebits, setgroups) is reported with the new ones in every later event,
and each change is an event of its own. Real agent, real processes, real syscalls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import AgentProcess, exit_of, links_of, live_links

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent needs root")

CRED_POLICY = "process-credentials-changed"
CAP_NET_RAW = 13
NOBODY = 65534

# The child: steps from argv, each one syscall; "open:NAME" opens a watched file (the
# policy's event says who the process is at that moment). It prints nothing.
CHILD = textwrap.dedent("""
    import ctypes, os, sys, threading, time
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_capset, SYS_capget, V3 = 126, 125, 0x20080522
    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    def caps(change):
        hdr, data = Hdr(V3, 0), (Data * 2)()
        assert libc.syscall(SYS_capget, ctypes.byref(hdr), data) == 0
        change(data[0])
        hdr = Hdr(V3, 0)
        if libc.syscall(SYS_capset, ctypes.byref(hdr), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    bit = 1 << %(net_raw)d
    watched = sys.argv[1]
    # a second thread: glibc's setxid makes it repeat each set*id call
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    for step in sys.argv[2:]:
        if step.startswith("open:"):
            try:
                os.close(os.open(os.path.join(watched, step[5:]), os.O_RDONLY))
            except OSError:
                pass
        elif step == "drop-raw":
            caps(lambda d: setattr(d, "effective", d.effective & ~bit))
        elif step == "raise-raw":
            def up(d):
                d.effective |= bit
                d.inheritable |= bit
            caps(up)
        elif step == "keepcaps":
            assert libc.prctl(8, 1, 0, 0, 0) == 0   # PR_SET_KEEPCAPS
        elif step == "nogroups":
            os.setgroups([])
        elif step == "nobody":
            os.setresgid(%(nobody)d, %(nobody)d, %(nobody)d)
            os.setresuid(%(nobody)d, %(nobody)d, %(nobody)d)
        elif step == "same":
            os.setresuid(*os.getresuid())   # changes nothing: no event
    os._exit(0)
""") % {"net_raw": CAP_NET_RAW, "nobody": NOBODY}

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: creds-watch
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
        values: ["{watched}/"]
"""


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("watched")
    for name in ("a", "b", "c"):
        (d / name).write_text(name)
    d.chmod(0o755)
    for p in (d / "a", d / "b", d / "c"):
        p.chmod(0o644)
    return d


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, watched: Path) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("credagent")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(watched=watched))
    with AgentProcess(tmp, "--enable-process-cred", "--tracing-policy", str(policy)) as a:
        links = links_of(a.proc.pid)
        yield a
        a.stop()
        assert not live_links(links), "agent exit detached every program"


def spawn(agent: AgentProcess, watched: Path, *steps: str) -> int:
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(watched), *steps])
    assert p.wait(timeout=60) == 0
    assert agent.wait_for(exit_of(p.pid)), f"no exit event for {p.pid}"
    return p.pid


def changes_of(agent: AgentProcess, pid: int) -> list[dict[str, Any]]:
    return [e["process_kprobe"] for e in agent.events()
            if e.get("process_kprobe", {}).get("policy_name") == CRED_POLICY
            and e["process_kprobe"]["process"]["pid"] == pid]


def opens_of(agent: AgentProcess, pid: int, watched: Path) -> dict[str, dict[str, Any]]:
    """Watched file name -> the process of its policy event."""
    out = {}
    for e in agent.events():
        tp = e.get("process_tracepoint")
        if tp and tp["process"]["pid"] == pid:
            out[Path(tp["args"][0]["string_arg"]).name] = tp["process"]
    return out


def exit_process(agent: AgentProcess, pid: int) -> dict[str, Any]:
    [ev] = agent.wait_for(exit_of(pid))
    return ev["process_exit"]["process"]


def test_drop_to_nobody(agent: AgentProcess, watched: Path) -> None:
    pid = spawn(agent, watched, "open:a", "nogroups", "nobody", "same", "open:b")
    opens = opens_of(agent, pid, watched)
    assert opens["a"]["uid"] == 0 and opens["a"]["process_credentials"]["uid"] == 0
    after = opens["b"]
    assert after["uid"] == NOBODY
    assert after["process_credentials"] == {
        "uid": NOBODY, "gid": NOBODY, "euid": NOBODY, "egid": NOBODY, "suid": NOBODY,
        "sgid": NOBODY, "fsuid": NOBODY, "fsgid": NOBODY}
    assert after["cap"] == {}, "root's capabilities are cleared by the switch to nobody"
    xt = exit_process(agent, pid)
    assert xt["uid"] == NOBODY and xt["process_credentials"]["euid"] == NOBODY
    assert xt["exec_id"] == after["exec_id"]

    changes = changes_of(agent, pid)
    # one event per change: the second thread's repetitions and the no-op change nothing
    assert [c["args"][1]["string_arg"] for c in changes] == ["setgroups", "setresgid",
                                                             "setresuid"]
    groups, gid, uid = changes
    assert groups["args"][2] == {"string_arg": "", "label": "groups"}
    assert gid["process"]["process_credentials"]["gid"] == 0  # before the change
    assert gid["args"][0]["process_credentials_arg"]["gid"] == NOBODY
    assert gid["args"][0]["process_credentials_arg"]["uid"] == 0
    body = uid
    assert body["function_name"] == "commit_creds"
    assert body["action"] == "KPROBE_ACTION_POST"
    assert body["process"]["uid"] == 0 and body["process"]["pid"] == pid
    assert body["process"]["process_credentials"]["gid"] == NOBODY  # after setresgid
    assert body["parent"]["pid"] == os.getpid()
    new = body["args"][0]["process_credentials_arg"]
    assert {k: new[k] for k in ("uid", "euid", "suid", "fsuid")} == dict.fromkeys(
        ("uid", "euid", "suid", "fsuid"), NOBODY)
    assert new["caps"] == {}
    assert new["user_ns"]["level"] == 0 and new["user_ns"]["ns"]["is_host"] is True
    assert body["args"][1] == {"string_arg": "setresuid", "label": "syscall"}
    assert body["message"].startswith("setresuid: uid 0->65534 euid 0->65534")
    assert body["message"].endswith("fsuid 0->65534 -permitted:all -effective:all")
    assert body["tags"] == ["credentials"]
    print(json.dumps({"process_kprobe": body}))


def test_capability_regained(agent: AgentProcess, watched: Path) -> None:
    pid = spawn(agent, watched, "drop-raw", "open:a", "raise-raw", "open:b", "keepcaps",
                "open:c")
    opens = opens_of(agent, pid, watched)
    assert "CAP_NET_RAW" not in opens["a"]["cap"]["effective"]
    assert "CAP_NET_RAW" in opens["a"]["cap"]["permitted"]
    assert "CAP_NET_RAW" in opens["b"]["cap"]["effective"]
    assert opens["b"]["cap"]["inheritable"] == ["CAP_NET_RAW"]
    assert opens["c"]["process_credentials"]["securebits"] == ["SecBitKeepCaps"]
    assert "securebits" not in opens["b"]["process_credentials"]

    drop, gain, keep = changes_of(agent, pid)
    assert drop["args"][1]["string_arg"] == "capset"
    assert drop["message"] == "capset: -effective:CAP_NET_RAW"
    assert drop["tags"] == ["credentials"]
    assert gain["message"] == "capset: +effective:CAP_NET_RAW +inheritable:CAP_NET_RAW"
    assert gain["tags"] == ["credentials", "privileges_raised"]
    caps = gain["args"][0]["process_credentials_arg"]["caps"]
    assert "CAP_NET_RAW" in caps["effective"] and caps["inheritable"] == ["CAP_NET_RAW"]
    assert "CAP_NET_RAW" not in gain["process"]["cap"]["effective"]  # before the change
    assert keep["args"][1]["string_arg"] == "prctl"
    assert keep["args"][0]["process_credentials_arg"]["securebits"] == ["SecBitKeepCaps"]
    assert exit_process(agent, pid)["process_credentials"]["securebits"] == ["SecBitKeepCaps"]
    print(json.dumps({"process_kprobe": gain}))


def test_follow_only_and_off(tmp_path: Path, watched: Path) -> None:
    """``follow``: the process is followed, no change events; ``off``: exec-time
    credentials, as Tetragon (and no credential programs attached)."""
    for mode, expect_uid in (("follow", NOBODY), ("off", 0)):
        d = tmp_path / mode
        d.mkdir()
        with AgentProcess(d, "--process-cred-changes", mode, "--self-protection=false") as ag:
            pid = spawn(ag, watched, "nobody")
            assert exit_process(ag, pid)["uid"] == expect_uid
            assert changes_of(ag, pid) == []
            nlinks = len(links_of(ag.proc.pid))
            # commit_creds, or the 11 credential syscalls' exits; none when off
            assert nlinks in ((4, 14) if mode == "follow" else (3,))
