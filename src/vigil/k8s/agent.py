"""The agent's Kubernetes wiring (``--enable-k8s-api``).

``start(agent)`` connects with the official client (``--k8s-kubeconfig-path``, else the
in-cluster service account), then starts: the pod informer of this node (a PodSource,
``agent.pod_source``), pod scoping of policies (the policy manager's ``scopes``), the
watch of this node's Node object (its labels, for ``spec.nodeSelector``), and the
TracingPolicy / TracingPolicyNamespaced informers. Nothing here waits for the API
server: an unreachable or refusing server is retried in the informers' threads,
counted and logged, while the agent runs on with what it knows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vigil.k8s.informer import Informer
from vigil.k8s.nodes import NodeWatcher
from vigil.k8s.pods import PodWatcher
from vigil.k8s.policies import PolicyWatcher

log = logging.getLogger("vigil.k8s")

GROUP, VERSION = "cilium.io", "v1alpha1"
# the policy resources watched (Tetragon's CRDs): plural -> kind
POLICY_RESOURCES = {"tracingpolicies": "TracingPolicy",
                    "tracingpoliciesnamespaced": "TracingPolicyNamespaced"}


@dataclass(frozen=True)
class K8sConfig:
    kubeconfig: str = ""            # --k8s-kubeconfig-path ("" : in-cluster)
    node_name: str = ""             # pods of this node (spec.nodeName)
    watch_timeout: int = 300        # seconds a watch request lasts before it is renewed
    scope_interval: float = 1.0     # seconds between pod-scoping passes


def api_client(cfg: K8sConfig) -> Any:
    from kubernetes import client, config
    conf = client.Configuration()
    if cfg.kubeconfig:
        config.load_kube_config(config_file=cfg.kubeconfig, client_configuration=conf)
    else:
        config.load_incluster_config(client_configuration=conf)
    conf.retries = 0  # the informers retry, with backoff
    return client.ApiClient(conf)


class K8sRuntime:
    """What ``start`` started; ``stop`` ends it (before the policy manager closes)."""

    def __init__(self, cfg: K8sConfig, api: Any, manager: Any, proc: str = "/proc") -> None:
        from kubernetes import client

        from vigil.k8s.cgroups import hierarchy_root
        from vigil.k8s.scopes import ScopeManager
        from vigil.sensors.policyfilter import PolicyFilter
        self.cfg = cfg
        self.api = api
        self.pods = PodWatcher()
        self.node = NodeWatcher(manager, cfg.node_name)
        self.filter = PolicyFilter(proc)
        root = hierarchy_root(self.filter.controller)
        self.scopes = ScopeManager(self.filter, self.pods, root, cfg.scope_interval)
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        self.policy_watchers = {plural: PolicyWatcher(manager, kind)
                                for plural, kind in POLICY_RESOURCES.items()}
        self.informers = [Informer("pods", core.list_pod_for_all_namespaces,
                                   self.pods.on_sync, self.pods.on_event,
                                   kwargs={"field_selector": f"spec.nodeName={cfg.node_name}"},
                                   watch_timeout=cfg.watch_timeout),
                          Informer("nodes", core.list_node, self.node.on_sync,
                                   self.node.on_event,
                                   kwargs={"field_selector": f"metadata.name={cfg.node_name}"},
                                   watch_timeout=cfg.watch_timeout)]
        for plural, pw in self.policy_watchers.items():
            self.informers.append(Informer(
                plural, custom.list_cluster_custom_object, pw.on_sync, pw.on_event,
                kwargs={"group": GROUP, "version": VERSION, "plural": plural},
                watch_timeout=cfg.watch_timeout))
        self.manager = manager
        log.info("kubernetes: pods of node %s; pod scoping by %s cgroups under %s",
                 cfg.node_name, self.filter.controller or "v2", root)

    def start(self) -> None:
        self.manager.scopes = self.scopes
        if self.node.labels is None:  # node selectors wait for the Node object
            self.manager.set_node_labels(None, f"node {self.cfg.node_name}")
        self.scopes.start()
        for inf in self.informers:  # pods, then the node: policies find both
            inf.start()

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop()
        self.scopes.stop()
        for pw in self.policy_watchers.values():
            pw.close()
        self.filter.close()
        self.api.close()

    def errors(self) -> dict[tuple[str, str], int]:
        """(component, reason) -> count, for vigil_k8s_errors_total."""
        out: dict[tuple[str, str], int] = {}
        for inf in self.informers:
            for reason, n in inf.errors.items():
                out[(inf.name, reason)] = n
        for reason, n in self.pods.errors.items():
            out[("pods", reason)] = out.get(("pods", reason), 0) + n
        for reason, n in self.node.errors.items():
            out[("nodes", reason)] = out.get(("nodes", reason), 0) + n
        for plural, pw in self.policy_watchers.items():
            for reason, n in pw.errors.items():
                out[(plural, reason)] = out.get((plural, reason), 0) + n
        out[("policyfilter", "map_full")] = self.filter.map_full
        out[("policyfilter", "update_failed")] = self.filter.update_errors
        return out


def start(agent: Any) -> K8sRuntime | None:
    """Start the Kubernetes side of ``agent`` when its config asks for it."""
    cfg = getattr(agent.cfg, "k8s", None)
    if cfg is None:
        return None
    if not cfg.node_name:
        cfg = K8sConfig(cfg.kubeconfig, agent.node_name, cfg.watch_timeout, cfg.scope_interval)
    rt = K8sRuntime(cfg, api_client(cfg), agent.policies, getattr(agent.cfg, "procfs", "/proc"))
    rt.start()
    agent.pod_source = rt.pods
    metrics = getattr(agent, "metrics", None)
    if metrics is not None:
        metrics.registry.register(K8sCollector(rt))
    return rt


class K8sCollector:
    """``vigil_k8s_errors_total{component,reason}``, ``vigil_k8s_pods``,
    ``vigil_k8s_watch_events_total{resource}``, read at scrape time."""

    def __init__(self, rt: K8sRuntime) -> None:
        self.rt = rt

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        errs = CounterMetricFamily("vigil_k8s_errors", "Kubernetes API errors and bad "
                                   "objects, by component and reason (each logged)",
                                   labels=["component", "reason"])
        for (comp, reason), n in sorted(self.rt.errors().items()):
            errs.add_metric([comp, reason], n)
        yield errs
        evs = CounterMetricFamily("vigil_k8s_watch_events", "Watch events applied",
                                  labels=["resource"])
        for inf in self.rt.informers:
            evs.add_metric([inf.name], inf.events)
        yield evs
        yield GaugeMetricFamily("vigil_k8s_pods", "Pods of this node known from the API",
                                value=len(self.rt.pods.pods()))
