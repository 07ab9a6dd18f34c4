"""Scrape-time metrics of the container tracker (``<ns>_containers_*``)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class ContainerCollector(Collector):
    """Containers known, runtime hook notices received, errors by kind (``hook``: a
    malformed notice; ``cri``: a CRI call that failed; ``pod_source``: the pod metadata
    source failed; ``listener``: a container listener failed) and containers forgotten
    to stay within the bound."""

    def __init__(self, namespace: str, tracker: Any) -> None:
        self.ns = namespace
        self.t = tracker

    def collect(self) -> Iterator[Metric]:
        t = self.t
        yield GaugeMetricFamily(f"{self.ns}_containers", "Containers the agent knows.",
                                value=len(t))
        yield CounterMetricFamily(f"{self.ns}_containers_runtime_hooks",
                                  "RuntimeHook CreateContainer notices received.",
                                  value=t.hooks)
        yield CounterMetricFamily(f"{self.ns}_containers_evicted",
                                  "Containers forgotten to stay within the bound.",
                                  value=t.evicted)
        errors = CounterMetricFamily(f"{self.ns}_containers_errors",
                                     "Container metadata errors, by kind.", labels=["kind"])
        for kind in ("hook", "cri", "pod_source", "listener"):
            errors.add_metric([kind], t.errors.get(kind, 0))
        yield errors


def register(registry: Any, namespace: str, agent: Any) -> None:
    """Add the agent's container metrics to ``registry`` (if it tracks containers)."""
    tracker = getattr(agent, "containers", None)
    if tracker is not None:
        registry.register(ContainerCollector(namespace, tracker))
