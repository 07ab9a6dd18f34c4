"""The host's namespaces learned from the kernel (hostns.bpf.c), and `host_ns` in a real
policy with them.

The kernel's answer is checked against kthreadd (pid 2): created by init_task, it keeps
the initial namespaces, and its /proc entry is readable where pid 1's is not. Processes
in fresh namespaces (`unshare`) must differ for exactly the types unshared, and must
still learn the host's, not their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.agentproc import links_of
from tests.kernel.test_policies import CAT, Env, _body
from vigil.daemon.agent import INIT_PID_NS_INUM, learn_host_namespaces
from vigil.process import procfs
from vigil.process.model import Namespaces

NAMES = tuple(Namespaces.__dataclass_fields__)


def ns_of(pid: int | str) -> Namespaces | None:
    """A process's namespaces from /proc (None if any link is unreadable)."""
    try:
        return Namespaces(*(procfs.parse_ns_link(os.readlink(f"/proc/{pid}/ns/{n}"))
                            for n in NAMES))
    except OSError:
        return None


def kthreadd() -> Namespaces:
    ns = ns_of(2)
    if ns is None:
        pytest.skip("/proc/2/ns (kthreadd) is not readable here")
    return ns


# A child that reports what it sees: its own namespaces, the kernel's answer and the
# agent's choice (with its source), as JSON.
_REPORT = """
import dataclasses, json, os
from vigil.bpf.hostns import read_kernel_host_namespaces
from vigil.daemon.agent import learn_host_namespaces
from vigil.process import procfs
from vigil.process.model import Namespaces
own = Namespaces(*(procfs.parse_ns_link(os.readlink(f"/proc/self/ns/{n}"))
                   for n in Namespaces.__dataclass_fields__))
k = read_kernel_host_namespaces()
a = learn_host_namespaces()
print(json.dumps({"own": dataclasses.asdict(own), "pid1": dataclasses.asdict(k.pid1),
                  "init": dataclasses.asdict(k.init), "agent": dataclasses.asdict(a.ns),
                  "source": a.source}))
"""


def _report(*unshare: str) -> dict[str, object]:
    cmd = ["unshare", *unshare, sys.executable, "-c", _REPORT] if unshare else \
        [sys.executable, "-c", _REPORT]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_kernel_answer_is_the_initial_namespaces() -> None:
    from vigil.bpf.hostns import read_kernel_host_namespaces
    before = links_of(os.getpid())
    k = read_kernel_host_namespaces()
    assert links_of(os.getpid()) == before  # loaded, read once, detached and closed
    expect = kthreadd()
    assert k.init == expect
    # pid 1 is pid 1 of the initial pid namespace: /proc/1/ns where readable; on the
    # test hosts it has not left the initial namespaces, as kthreadd has not
    assert k.pid1 == (ns_of(1) or expect)
    assert k.pid1.pid == INIT_PID_NS_INUM
    assert all(getattr(k.pid1, n) for n in NAMES if not n.startswith("time")) and k.hops >= 2


def test_agent_learns_them_without_proc_1() -> None:
    got = learn_host_namespaces()
    assert got.ns == kthreadd()
    if ns_of(1) is None:
        assert got.source == "the kernel (BPF task iterator): pid 1's"
    else:
        assert got.source == "/proc/1/ns"


@pytest.mark.parametrize("flags,differ", [
    (("--net", "--uts"), {"net", "uts"}),
    # its own pid namespace and /proc: /proc/1 there is its own pid 1, not the host's
    (("--net", "--uts", "--pid", "--fork", "--mount", "--mount-proc"),
     {"net", "uts", "pid", "pid_for_children", "mnt"}),
])
def test_fresh_namespaces_still_learn_the_hosts(flags: tuple[str, ...], differ: set[str]) -> None:
    host = kthreadd()
    # the test itself may already run in some namespaces of its own (make test runs in a
    # private mount namespace): those differ in the child too
    runner = ns_of("self")
    assert runner is not None
    differ = differ | {n for n in NAMES if getattr(runner, n) != getattr(host, n)}
    r = _report(*flags)
    own = Namespaces(**r["own"])  # type: ignore[arg-type]
    assert {n for n in NAMES if getattr(own, n) != getattr(host, n)} == differ
    for key in ("pid1", "init", "agent"):
        assert Namespaces(**r[key]) == host, key  # type: ignore[arg-type]
    # its /proc/1 is the host's (and used when readable) unless it has its own pid namespace
    proc1 = ns_of(1) is not None and "--pid" not in flags
    assert r["source"] == ("/proc/1/ns" if proc1 else "the kernel (BPF task iterator): pid 1's")


def test_unprivileged_knows_nothing_and_loads_nothing() -> None:
    """No BPF privileges: unknown, with the reason; not the process's own namespaces."""
    code = ("import os, sys; os.geteuid = lambda: 65534\n"
            "from vigil.daemon.agent import learn_host_namespaces\n"
            "r = learn_host_namespaces('/nonexistent')\n"
            "print(r.ns, '|', r.source, '|', 'ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ("None | cannot read /nonexistent/1/ns, and only root may ask the kernel "
                   "(BPF) | False")


# ---- host_ns in a real tracepoint policy ----------------------------------------------

def tracepoint_policy(name: str, target: Path, op: str = "In") -> str:
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
        operator: Equal
        values: ["{target}"]
      matchNamespaces:
      - namespace: Net
        operator: {op}
        values: [host_ns]
"""


@pytest.mark.parametrize("op,fires", [
    ("In", ["plain", "uts"]),
    ("NotIn", ["net"]),
])
def test_tracepoint_host_ns_net(env: Env, tmp_path: Path, op: str, fires: list[str]) -> None:
    target = tmp_path / "hostns-target"
    target.write_text("x")
    runs = {"plain": [CAT, str(target)],
            "net": ["unshare", "--net", CAT, str(target)],
            "uts": ["unshare", "--uts", CAT, str(target)]}
    pids: dict[int, str] = {}

    def trigger() -> None:
        for name, cmd in runs.items():
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            p.wait()
            assert p.returncode == 0
            pids[p.pid] = name
    before = links_of(os.getpid())
    with env.policy(tracepoint_policy(f"vk-hostns-{op.lower()}", target, op)) as info:
        assert "tracepoint syscalls/sys_enter_openat" in info.info
        evs = env.run(trigger)
    assert links_of(os.getpid()) == before
    evs = [e for e in evs if _body(e)["args"][0].get("string_arg") == str(target)]
    assert all(next(iter(e)) == "process_tracepoint" for e in evs)
    assert sorted(pids[_body(e)["process"]["pid"]] for e in evs) == sorted(fires)


def test_host_ns_unknown_refuses_the_policy_with_the_reason(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.daemon import agent
    from vigil.errors import PolicyError
    monkeypatch.setitem(agent._host_ns_cache, "/proc",
                        agent.HostNamespaces(None, "why: the test says so"))
    with pytest.raises(PolicyError) as err:
        env.manager.add(tracepoint_policy("vk-hostns-unknown", tmp_path / "t"), source="t.yaml")
    assert [str(d) for d in err.value.diagnostics] == [
        "t.yaml:21:17: error: spec.tracepoints[0].selectors[0].matchNamespaces[0].values: "
        "the host's namespaces are unknown: why: the test says so"]
    assert env.manager.list() == []
