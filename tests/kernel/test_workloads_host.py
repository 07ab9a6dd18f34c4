"""Workload selection with host processes in the real kernel: ``matchWorkloads`` with
``hostSelector: {}`` (and ``spec.hostSelector``), and ``matchWorkloads`` on hooks
enforced by cgroup socket programs and by fanotify.

A pod is a real cgroup (``libpod-<id>``, as podman names it) in the hierarchy Vigil
tracks pods by, created under this test's own cgroup; the stand-in Kubernetes API server
(tests/k8s/standin.py) serves a pod with that container id, and the agent's Kubernetes
side (vigil.k8s.agent.K8sRuntime) keeps vg_pf_cgroups in step. A host process is one
this test starts where it runs itself (a cgroup that is no pod's). Each check runs the
same command in the pod and on the host and asserts what happened to it (killed,
refused or not) and the event it produced.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from tests.k8s.client import kubeconfig, pod, wait_for
from tests.k8s.standin import PODS, StandinApiServer

CAT = os.path.realpath("/bin/cat")
PY = os.path.realpath(sys.executable)
NS = "team"
CONNECT = textwrap.dedent("""\
    import json, socket, sys
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
        print(json.dumps({"ok": True}))
    except OSError as e:
        print(json.dumps({"ok": False, "errno": e.errno}))
""")


def own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _h, ctrls, path = line.split(":", 2)
        if (controller and controller in ctrls.split(",")) or (not controller and not ctrls):
            return path
    return "/"


class Env:
    """A pod (its cgroup, served by the stand-in API), the agent's policy manager with
    the Kubernetes side, the event pipeline, and the events seen so far."""

    def __init__(self, tmp: Path, view: Any = None) -> None:
        import yaml  # noqa: F401 - the stand-in serves YAML-shaped documents

        from vigil.daemon.policies import PolicyManager
        from vigil.enforce.service import EnforceConfig, Enforcement
        from vigil.k8s.agent import K8sConfig, K8sRuntime, api_client
        from vigil.k8s.cgroups import hierarchy_root
        from vigil.process.cache import ProcessCache
        from vigil.sensors.base import BaseSensor, BaseSensorConfig
        from vigil.sensors.policyfilter import tracking_hierarchy
        from vigil.stream.pipeline import EventOptions, Pipeline, measure_boot_wall_ns
        from vigil.stream.policy_events import HookRegistry, PolicyEvents

        _idx, ctrl = tracking_hierarchy()
        root = Path(hierarchy_root(ctrl))
        self.parent = root / own_cgroup(ctrl).lstrip("/") / f"vigil-wl-{secrets.token_hex(4)}"
        self.pod_cg = self.parent / f"libpod-{secrets.token_hex(32)}"
        self.parent.mkdir()
        self.pod_cg.mkdir()
        self.tmp = tmp
        self.events: list[dict[str, Any]] = []
        self.server = StandinApiServer().start()
        self.base = BaseSensor(BaseSensorConfig(ring_bytes=4 << 20))
        self.base.load()
        bw = measure_boot_wall_ns()
        self.pipe = Pipeline(ProcessCache(), EventOptions(node_name="test"), lambda: bw)
        registry = HookRegistry()
        PolicyEvents(self.pipe, registry)
        self.enf = Enforcement(EnforceConfig(settle=0.05), publish=self.events.extend)
        kw = {"view": view} if view is not None else {}
        self.mgr = PolicyManager(self.base, registry, enforcement=self.enf, **kw)
        cfg = K8sConfig(kubeconfig=str(kubeconfig(tmp / "kc", self.server.url,
                                                  self.server.token)),
                        node_name="node-a", scope_interval=0.2)
        self.rt = K8sRuntime(cfg, api_client(cfg), self.mgr)
        cid = self.pod_cg.name.removeprefix("libpod-")
        self.server.put(PODS, pod("victim", ns=NS, labels={"app": "victim"},
                                  containers=[("main", "busybox:1", f"containerd://{cid}")]))
        self.rt.start()

    def add(self, text: str) -> None:
        self.mgr.add(text, source="test")
        ino = self.pod_cg.stat().st_ino
        # every filter id that selects the pod lists its cgroup before the test goes on
        wait_for(lambda: all(ino in self.rt.filter.members(i)
                             for i, s in self.rt.scopes._scopes.items()
                             if s.matches_pod(NS, {"app": "victim"})),
                 what="the pod's cgroup in vg_pf_cgroups")

    def run(self, argv: list[str], in_pod: bool) -> subprocess.CompletedProcess[bytes]:
        """``argv`` in the pod's cgroup, or where this test runs (a host process)."""
        enter = f"echo $$ > {self.pod_cg}/cgroup.procs && " if in_pod else ""
        cmd = " ".join(f"'{a}'" for a in argv)
        p = subprocess.Popen(["/bin/sh", "-c", f"{enter}exec {cmd}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=30)
        res = subprocess.CompletedProcess(argv, p.returncode, out, err)
        res.pid = p.pid  # type: ignore[attr-defined]  # the command's pid (exec)
        return res

    def drain(self) -> None:
        time.sleep(0.2)
        self.events += self.pipe.handle(self.base.ring.drain())

    def of(self, kind: str, pids: list[int], timeout: float = 5.0) -> list[dict[str, Any]]:
        """Events of ``kind`` of the processes ``pids``."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            got = [e[kind] for e in self.events
                   if kind in e and e[kind]["process"]["pid"] in pids]
            if got or time.monotonic() > deadline:
                return got

    def close(self) -> None:
        try:
            self.rt.stop()
            self.mgr.close()
            self.enf.close()
        finally:
            self.base.close()
            self.server.stop()
            for d in (self.pod_cg, self.parent):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass


def _links() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True)
    return {lk["id"] for lk in json.loads(out.stdout or "[]")}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    os.chmod(tmp_path, 0o755)
    before = _links()
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()
    assert _links() <= before, "links left behind"


@pytest.fixture
def forced_env(tmp_path: Path) -> Iterator[Env]:
    """lsmhooks compiled as on a kernel without BPF LSM (fanotify, cgroup programs)."""
    from vigil.policy.compiler import KernelView
    os.chmod(tmp_path, 0o755)
    before = _links()
    e = Env(tmp_path, view=lambda: KernelView())
    try:
        yield e
    finally:
        e.close()
    assert _links() <= before, "links left behind"


def openat_policy(name: str, target: Path, workloads: str, spec: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {{name: {name}}}
        spec:
        __SPEC__
          tracepoints:
          - subsystem: syscalls
            event: sys_enter_openat
            args: [{{index: 6, type: string}}]
            selectors:
            - matchArgs: [{{index: 6, operator: Equal, values: ["{target}"]}}]
              {workloads}
              matchActions: [{{action: Sigkill}}]
        """).replace("__SPEC__\n", spec)


# ---- generic hooks (a tracepoint) ----------------------------------------------------

@pytest.mark.parametrize("workloads, pod_killed, host_killed", [
    ("matchWorkloads: {hostSelector: {}}", False, True),
    ("matchWorkloads: {podSelector: {matchLabels: {app: victim}}}", True, False),
    ("matchWorkloads: {podSelector: {matchLabels: {app: victim}}, hostSelector: {}}",
     True, True),
    ("matchWorkloads: {podSelector: {matchLabels: {app: nobody}}, hostSelector: {}}",
     False, True),
])
def test_match_workloads_host_selector_on_a_tracepoint(env: Env, tmp_path: Path, workloads: str,
                                                       pod_killed: bool,
                                                       host_killed: bool) -> None:
    target = tmp_path / "secret"
    target.write_text("the secret\n")
    env.add(openat_policy("wl-host", target, workloads))
    in_pod = env.run([CAT, str(target)], in_pod=True)
    on_host = env.run([CAT, str(target)], in_pod=False)
    print(f"\n{workloads}\n  pod : returncode {in_pod.returncode}, stdout {in_pod.stdout!r}"
          f"\n  host: returncode {on_host.returncode}, stdout {on_host.stdout!r}")
    for res, killed in ((in_pod, pod_killed), (on_host, host_killed)):
        if killed:
            assert res.returncode == -9 and res.stdout == b""
        else:
            assert res.returncode == 0 and res.stdout == b"the secret\n"
    evs = env.of("process_tracepoint", [in_pod.pid, on_host.pid])  # type: ignore[attr-defined]
    assert len(evs) == pod_killed + host_killed
    assert all(e["action"] == "KPROBE_ACTION_SIGKILL" and e["policy_name"] == "wl-host"
               and e["args"] == [{"string_arg": str(target)}] for e in evs)
    want = [r.pid for r, k in ((in_pod, pod_killed), (on_host, host_killed)) if k]
    assert sorted(e["process"]["pid"] for e in evs) == sorted(want)
    env.mgr.delete("wl-host")
    assert not env.rt.scopes._scopes  # every filter id released, every pod set too


def test_spec_host_selector_scopes_the_policy_to_host_processes(env: Env,
                                                                tmp_path: Path) -> None:
    """``spec.hostSelector: {}`` alone: the policy runs for host processes only."""
    target = tmp_path / "secret"
    target.write_text("the secret\n")
    env.add(openat_policy("spec-host", target, "", spec="  hostSelector: {}\n"))
    in_pod = env.run([CAT, str(target)], in_pod=True)
    on_host = env.run([CAT, str(target)], in_pod=False)
    print(f"\nspec.hostSelector {{}}: pod returncode {in_pod.returncode}, host returncode "
          f"{on_host.returncode}")
    assert in_pod.returncode == 0 and in_pod.stdout == b"the secret\n"
    assert on_host.returncode == -9
    (ev,) = env.of("process_tracepoint", [in_pod.pid, on_host.pid])  # type: ignore[attr-defined]
    assert ev["process"]["pid"] == on_host.pid  # type: ignore[attr-defined]
    env.mgr.delete("spec-host")


# ---- cgroup socket programs ------------------------------------------------------------

def connect_policy(port: int, workloads: str, spec: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {{name: wl-sock}}
        spec:
        __SPEC__
          lsmhooks:
          - hook: socket_connect
            args: [{{index: 0, type: socket}}, {{index: 1, type: sockaddr}}]
            selectors:
            - matchArgs: [{{index: 1, operator: SPort, values: ["{port}"]}}]
              {workloads}
              matchActions: [{{action: Override, argError: -1}}]
        """).replace("__SPEC__\n", spec)


@pytest.mark.parametrize("workloads, spec, pod_refused, host_refused", [
    ("matchWorkloads: {podSelector: {matchLabels: {app: victim}}}", "", True, False),
    ("matchWorkloads: {hostSelector: {}}", "", False, True),
    ("", "  hostSelector: {}\n", False, True),
])
def test_match_workloads_on_cgroup_socket_programs(forced_env: Env, tmp_path: Path,
                                                   workloads: str, spec: str, pod_refused: bool,
                                                   host_refused: bool) -> None:
    env = forced_env
    script = tmp_path / "connect.py"
    script.write_text(CONNECT)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        env.add(connect_policy(port, workloads, spec))
        assert env.mgr._enforced  # enforced by cgroup programs
        res, pids = {}, {}
        for where in ("pod", "host"):
            out = env.run([PY, str(script), str(port)], in_pod=where == "pod")
            res[where] = json.loads(out.stdout.decode().strip().splitlines()[-1])
            pids[where] = out.pid  # type: ignore[attr-defined]
        print(f"\n{workloads or spec.strip()}\n  pod : {res['pod']}\n  host: {res['host']}")
        for where, refused in (("pod", pod_refused), ("host", host_refused)):
            want = {"ok": False, "errno": errno.EPERM} if refused else {"ok": True}
            assert res[where] == want, where
        evs = env.of("process_kprobe", list(pids.values()))
        (ev,) = evs
        assert ev["process"]["pid"] == pids["pod" if pod_refused else "host"]
        assert ev["function_name"] == "security_socket_connect"
        assert ev["action"] == "KPROBE_ACTION_OVERRIDE" and ev["policy_name"] == "wl-sock"
        env.mgr.delete("wl-sock")
        assert not env.rt.scopes._scopes
    finally:
        srv.close()


# ---- fanotify --------------------------------------------------------------------------

def open_policy(target: Path, workloads: str, spec: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {{name: wl-fan}}
        spec:
        __SPEC__
          lsmhooks:
          - hook: file_open
            args: [{{index: 0, type: file}}]
            selectors:
            - matchArgs: [{{index: 0, operator: Equal, values: ["{target}"]}}]
              {workloads}
              matchActions: [{{action: Override, argError: -1}}]
        """).replace("__SPEC__\n", spec)


@pytest.mark.parametrize("workloads, spec, pod_refused, host_refused", [
    ("matchWorkloads: {podSelector: {matchLabels: {app: victim}}}", "", True, False),
    ("matchWorkloads: {hostSelector: {}}", "", False, True),
    ("matchWorkloads: {podSelector: {matchLabels: {app: nobody}}}", "", False, False),
    ("", "  podSelector: {matchLabels: {app: victim}}\n", True, False),
])
def test_match_workloads_on_fanotify(forced_env: Env, tmp_path: Path, workloads: str,
                                     spec: str, pod_refused: bool, host_refused: bool) -> None:
    env = forced_env
    target = tmp_path / "secret"
    target.write_text("the secret\n")
    env.add(open_policy(target, workloads, spec))
    assert env.mgr._enforced  # enforced by the decider
    in_pod = env.run([CAT, str(target)], in_pod=True)
    on_host = env.run([CAT, str(target)], in_pod=False)
    print(f"\n{workloads or spec.strip()}\n  pod : returncode {in_pod.returncode}, "
          f"stderr {in_pod.stderr!r}\n  host: returncode {on_host.returncode}, "
          f"stdout {on_host.stdout!r}")
    for res, refused in ((in_pod, pod_refused), (on_host, host_refused)):
        if refused:
            assert res.returncode == 1 and b"Operation not permitted" in res.stderr
        else:
            assert res.returncode == 0 and res.stdout == b"the secret\n"
    evs = env.of("process_lsm", [in_pod.pid, on_host.pid],  # type: ignore[attr-defined]
                 timeout=3.0 if pod_refused or host_refused else 0.5)
    want = [r.pid for r, k in ((in_pod, pod_refused), (on_host, host_refused)) if k]  # type: ignore[attr-defined]
    assert sorted(e["process"]["pid"] for e in evs) == sorted(want)
    assert all(e["action"] == "KPROBE_ACTION_OVERRIDE" for e in evs)
    env.mgr.delete("wl-fan")
    assert not env.rt.scopes._scopes
