"""spec.nodeSelector in the real kernel: a policy loads only on a node whose labels match,
is listed as skipped elsewhere, and follows the node's labels as they change.

The agent is built by its own start-up steps up to the policy engine (no reader thread:
the test drains the ring buffer itself). The node and the policies are served by the
stand-in API server (tests/k8s/standin.py) to the agent's Kubernetes side
(vigil.k8s.agent.K8sRuntime), which watches the Node named like the agent and loads the
TracingPolicy resources through the real PolicyManager. Each policy posts an event when
a path under its own prefix is opened: events show which policies are in the kernel.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from tests.k8s.client import kubeconfig, node, wait_for
from tests.k8s.standin import NODES, TP, StandinApiServer

ME = {os.getpid()}
Event = dict[str, Any]


def policy(name: str, selector: str, prefix: str) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  nodeSelector: {selector}
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {{index: 0, type: int}}
    - {{index: 1, type: string}}
    selectors:
    - matchArgs:
      - {{index: 1, operator: Prefix, values: ["{prefix}"]}}
"""


class Env:
    def __init__(self) -> None:
        from vigil.daemon.agent import Agent, AgentConfig
        self.agent = Agent(AgentConfig(node_name="node-a", rb_size_total=16 << 20,
                                       self_protection=False))
        self.agent.start(steps=("policy-engine", "procfs-scan"))
        self.base = self.agent.sensor
        self.pipe = self.agent.pipeline
        self.manager = self.agent.policies

    def opened(self, trigger: Callable[[], Any]) -> list[str]:
        """Paths in this process's policy events while ``trigger`` ran."""
        self.pipe.handle(self.base.ring.drain())
        trigger()
        time.sleep(0.3)
        events = self.pipe.handle(self.base.ring.drain())
        return [e["process_kprobe"]["args"][1]["string_arg"] for e in events
                if "process_kprobe" in e and e["process_kprobe"]["process"]["pid"] in ME]

    def states(self) -> dict[str, tuple[str, str]]:
        return {p.name: (p.state.name, p.error) for p in self.manager.list()}


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.agent.stop()


@pytest.fixture
def tdir() -> Iterator[Path]:
    d = Path("/tmp") / f"vk-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def touch(*paths: Path) -> Callable[[], None]:
    def run() -> None:
        for p in paths:
            os.close(os.open(p, os.O_RDONLY | os.O_CREAT, 0o644))
    return run


def test_policies_follow_the_node_labels(env: Env, tdir: Path, tmp_path: Path) -> None:
    import yaml

    from vigil.k8s.agent import K8sConfig, K8sRuntime, api_client
    server = StandinApiServer().start()
    server.put(NODES, node("node-a", {"pool": "gpu", "kubernetes.io/os": "linux"}))
    server.put(NODES, node("node-b", {"canary": "yes"}))
    server.put(TP, yaml.safe_load(policy("vk-gpu", "{matchLabels: {pool: gpu}}",
                                         f"{tdir}/gpu")))
    server.put(TP, yaml.safe_load(policy(
        "vk-canary", "{matchExpressions: [{key: canary, operator: Exists}]}",
        f"{tdir}/canary")))
    cfg = K8sConfig(kubeconfig=str(kubeconfig(tmp_path / "kc", server.url, server.token)),
                    node_name="node-a", scope_interval=0.2)
    rt = K8sRuntime(cfg, api_client(cfg), env.manager)
    try:
        rt.start()
        wait_for(lambda: env.states().get("vk-gpu", ("",))[0] == "ENABLED"
                 and env.states().get("vk-canary", ("",))[0] == "SKIPPED",
                 what="vk-gpu loaded, vk-canary skipped")
        print(f"\nnode-a labels {rt.node.labels}: {env.states()}")
        assert env.states()["vk-canary"][1] == (
            "spec.nodeSelector (canary) does not match this node (node node-a)")
        assert env.opened(touch(tdir / "gpu-1", tdir / "canary-1")) == [f"{tdir}/gpu-1"]

        # the node is relabelled: pool removed, canary added
        server.put(NODES, node("node-a", {"canary": "", "kubernetes.io/os": "linux"}))
        wait_for(lambda: env.states()["vk-canary"][0] == "ENABLED"
                 and env.states()["vk-gpu"][0] == "SKIPPED", what="the policies swapped")
        print(f"node-a labels {rt.node.labels}: {env.states()}")
        assert env.opened(touch(tdir / "gpu-2", tdir / "canary-2")) == [f"{tdir}/canary-2"]

        # a status-only update of the node reloads nothing
        ids = {p.name: p.kernel_memory_bytes for p in env.manager.list()}
        server.put(NODES, node("node-a", {"canary": "", "kubernetes.io/os": "linux"},
                               heartbeat="now"))
        time.sleep(0.5)
        assert env.states()["vk-canary"] == ("ENABLED", "")
        assert {p.name: p.kernel_memory_bytes for p in env.manager.list()} == ids

        # the node object is deleted: no labels, both skipped
        server.delete(NODES, "", "node-a")
        wait_for(lambda: {s for s, _e in env.states().values()} == {"SKIPPED"},
                 what="both skipped")
        assert env.opened(touch(tdir / "gpu-3", tdir / "canary-3")) == []
        server.delete(TP, "", "vk-gpu")
        server.delete(TP, "", "vk-canary")
        wait_for(lambda: not env.states(), what="the policies deleted")
    finally:
        rt.stop()
        server.stop()


def test_without_kubernetes_the_node_has_no_labels(env: Env, tdir: Path) -> None:
    m = env.manager
    m.set_node_labels({}, "no node labels without the Kubernetes API (--enable-k8s-api)")
    needs = m.add(policy("vk-needs", "{matchLabels: {pool: gpu}}", f"{tdir}/needs"),
                  source="test")
    absent = m.add(policy("vk-absent",
                          "{matchExpressions: [{key: pool, operator: DoesNotExist}]}",
                          f"{tdir}/absent"), source="test")
    try:
        print(f"\n{env.states()}")
        assert (needs.state.name, needs.error) == (
            "SKIPPED", "spec.nodeSelector (pool=gpu) does not match this node (no node "
            "labels without the Kubernetes API (--enable-k8s-api))")
        assert absent.state.name == "ENABLED"
        assert env.opened(touch(tdir / "needs-1", tdir / "absent-1")) == [f"{tdir}/absent-1"]

        # a disabled policy stays disabled when the node comes to match; enable loads it
        m.disable("vk-needs")
        m.set_node_labels({"pool": "gpu"}, "node node-a")
        assert env.states()["vk-needs"] == ("DISABLED", "")
        assert env.states()["vk-absent"][0] == "SKIPPED"
        m.enable("vk-absent")  # skipped: enable does not load it on this node
        assert env.states()["vk-absent"][0] == "SKIPPED"
        m.enable("vk-needs")
        assert env.states()["vk-needs"] == ("ENABLED", "")
        assert env.opened(touch(tdir / "needs-2", tdir / "absent-2")) == [f"{tdir}/needs-2"]
    finally:
        m.delete("vk-needs")
        m.delete("vk-absent")
        m.set_node_labels({}, "no node labels without the Kubernetes API (--enable-k8s-api)")
