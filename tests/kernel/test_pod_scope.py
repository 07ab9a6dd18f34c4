"""Pod-scoped policies in the real kernel: a TracingPolicyNamespaced from the (stand-in)
Kubernetes API kills in the pod it selects, not in its neighbour nor on the host.

Pods are real cgroups holding real processes: two container cgroups named as podman
names them (``libpod-<id>``) in the hierarchy Vigil tracks pods by, created under this
test's own cgroup and removed after. The stand-in API server (tests/k8s/standin.py)
serves the two pods with those container ids and the policy as a custom resource; the
agent's Kubernetes side (vigil.k8s.agent.K8sRuntime) loads the policy through the real
PolicyManager and writes the victim pod's cgroup into vg_pf_cgroups.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")

from tests.k8s.client import kubeconfig, pod, wait_for
from tests.k8s.standin import PODS, TPN, StandinApiServer

CAT = os.path.realpath("/bin/cat")
NS = "team"


def own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _h, ctrls, path = line.split(":", 2)
        if (controller and controller in ctrls.split(",")) or (not controller and not ctrls):
            return path
    return "/"


@pytest.fixture
def pods_cgroups() -> Iterator[tuple[Path, Path]]:
    from vigil.k8s.cgroups import hierarchy_root
    from vigil.sensors.policyfilter import tracking_hierarchy
    _idx, ctrl = tracking_hierarchy()
    root = Path(hierarchy_root(ctrl))
    parent = root / own_cgroup(ctrl).lstrip("/") / f"vigil-pods-{secrets.token_hex(4)}"
    made = [parent / f"libpod-{secrets.token_hex(32)}", parent / f"libpod-{secrets.token_hex(32)}"]
    parent.mkdir()
    try:
        for d in made:
            d.mkdir()
        yield made[0], made[1]
    finally:
        for d in (*made, parent):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass


def in_cgroup(cg: Path | None, target: Path) -> subprocess.CompletedProcess[bytes]:
    """Run cat on ``target`` in cgroup ``cg`` (None: where the test runs)."""
    enter = f'echo $$ > {cg}/cgroup.procs && ' if cg else ""
    return subprocess.run(["/bin/sh", "-c", f'{enter}exec {CAT} {target}'],
                          capture_output=True, timeout=20, check=False)


POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicyNamespaced
metadata: {{name: kill-cat, namespace: {ns}}}
spec:
  podSelector:
    matchExpressions:
    - {{key: app, operator: In, values: [victim]}}
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 0, type: int}}
    - {{index: 1, type: string}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: Equal, values: ["{target}"]}}
      matchActions:
      - action: Sigkill
"""


def test_namespaced_sigkill_only_in_the_selected_pod(pods_cgroups: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    import yaml

    from vigil.daemon.policies import PolicyManager
    from vigil.k8s.agent import K8sConfig, K8sRuntime, api_client
    from vigil.stream.policy_events import HookRegistry
    from vigil.sensors.base import BaseSensor, BaseSensorConfig

    victim_cg, neighbour_cg = pods_cgroups
    target = tmp_path / "secret"
    target.write_text("the secret\n")
    server = StandinApiServer().start()
    base = BaseSensor(BaseSensorConfig(ring_bytes=1 << 20))
    base.load()
    manager = PolicyManager(base, HookRegistry())
    cfg = K8sConfig(kubeconfig=str(kubeconfig(tmp_path / "kc", server.url, server.token)),
                    node_name="node-a", scope_interval=0.2)
    rt = K8sRuntime(cfg, api_client(cfg), manager)
    try:
        for name, app, cg in (("victim", "victim", victim_cg), ("neighbour", "web", neighbour_cg)):
            cid = cg.name.removeprefix("libpod-")
            server.put(PODS, pod(name, ns=NS, labels={"app": app},
                                 containers=[("main", "busybox:1", f"containerd://{cid}")]))
        server.put(TPN, yaml.safe_load(POLICY.format(ns=NS, target=target)))
        rt.start()
        info = wait_for(lambda: next((p for p in manager.list() if p.name == "kill-cat"), None),
                        what="the namespaced policy loaded from the API")
        assert info.namespace == NS and info.domain == "k8s"
        scope_id = next(iter(rt.scopes._scopes))
        victim_ino = victim_cg.stat().st_ino
        wait_for(lambda: rt.filter.members(scope_id) == {victim_ino},
                 what="the victim pod's cgroup in vg_pf_cgroups")

        print(f"\npods' cgroups tracked in: {rt.filter.controller or 'cgroup v2'} "
              f"(subsystem index {rt.filter.subsys}), {victim_cg.parent}")
        victim = in_cgroup(victim_cg, target)
        neighbour = in_cgroup(neighbour_cg, target)
        host = in_cgroup(None, target)
        print(f"victim pod   : returncode {victim.returncode}, stdout {victim.stdout!r}")
        print(f"neighbour pod: returncode {neighbour.returncode}, stdout {neighbour.stdout!r}")
        print(f"host         : returncode {host.returncode}, stdout {host.stdout!r}")
        assert victim.returncode == -9 and victim.stdout == b""
        assert neighbour.returncode == 0 and neighbour.stdout == b"the secret\n"
        assert host.returncode == 0 and host.stdout == b"the secret\n"
        stats = next(p for p in manager.list() if p.name == "kill-cat").stats
        assert stats.signal == 1

        # the pod goes away: its cgroup leaves the policy
        server.delete(PODS, NS, "victim")
        wait_for(lambda: not rt.filter.members(scope_id), what="the pod's cgroup removed")
        after = in_cgroup(victim_cg, target)
        print(f"victim pod deleted from the API: returncode {after.returncode}")
        assert after.returncode == 0

        # the policy goes away with its custom resource
        server.delete(TPN, NS, "kill-cat")
        wait_for(lambda: not manager.list(), what="the policy unloaded")
    finally:
        rt.stop()
        manager.close()
        base.close()
        server.stop()


WORKLOADS_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {{name: per-selector}}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 0, type: int}}
    - {{index: 1, type: string}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: Equal, values: ["{target}"]}}
      matchWorkloads:
        podSelector: {{matchLabels: {{app: victim}}}}
      matchActions:
      - action: Sigkill
    - matchArgs:
      - {{index: 1, operator: Equal, values: ["{target}"]}}
      matchWorkloads:
        podSelector: {{matchLabels: {{app: web}}}}
        containerSelector: {{matchExpressions: [{{key: name, operator: In, values: [main]}}]}}
      matchActions:
      - {{action: Signal, argSig: 10}}
"""


def test_match_workloads_per_selector(pods_cgroups: tuple[Path, Path], tmp_path: Path) -> None:
    """A cluster-wide policy whose selectors each select their own pods: the first kills
    in the victim pod, the second sends SIGUSR1 in the web pod, the host matches neither."""
    from vigil.daemon.policies import PolicyManager
    from vigil.k8s.agent import K8sConfig, K8sRuntime, api_client
    from vigil.stream.policy_events import HookRegistry
    from vigil.sensors.base import BaseSensor, BaseSensorConfig

    victim_cg, web_cg = pods_cgroups
    target = tmp_path / "secret"
    target.write_text("the secret\n")
    server = StandinApiServer().start()
    base = BaseSensor(BaseSensorConfig(ring_bytes=1 << 20))
    base.load()
    manager = PolicyManager(base, HookRegistry())
    text = WORKLOADS_POLICY.format(target=target)
    with pytest.raises(Exception, match="matchWorkloads needs the Kubernetes API"):
        manager.add(text, source="test")  # no pods known: refused, not host-wide
    cfg = K8sConfig(kubeconfig=str(kubeconfig(tmp_path / "kc", server.url, server.token)),
                    node_name="node-a", scope_interval=0.2)
    rt = K8sRuntime(cfg, api_client(cfg), manager)
    try:
        for name, app, cg in (("victim", "victim", victim_cg), ("web", "web", web_cg)):
            cid = cg.name.removeprefix("libpod-")
            server.put(PODS, pod(name, ns=NS, labels={"app": app},
                                 containers=[("main", "busybox:1", f"containerd://{cid}")]))
        rt.start()
        manager.add(text, source="test")
        ids = sorted(rt.scopes._scopes)
        assert len(ids) == 2  # one filter id per selector, none for the policy
        wait_for(lambda: [rt.filter.members(i) for i in ids] ==
                 [{victim_cg.stat().st_ino}, {web_cg.stat().st_ino}],
                 what="each selector's pod cgroup in vg_pf_cgroups")
        victim = in_cgroup(victim_cg, target)
        web = in_cgroup(web_cg, target)
        host = in_cgroup(None, target)
        print(f"\nvictim pod (selector 0, Sigkill): returncode {victim.returncode}")
        print(f"web pod (selector 1, SIGUSR1)  : returncode {web.returncode}")
        print(f"host (neither)                 : returncode {host.returncode}, "
              f"stdout {host.stdout!r}")
        assert victim.returncode == -9
        assert web.returncode == -10
        assert host.returncode == 0 and host.stdout == b"the secret\n"
        manager.delete("per-selector")
        assert not rt.scopes._scopes  # the selectors' filter ids released
    finally:
        rt.stop()
        manager.close()
        base.close()
        server.stop()
