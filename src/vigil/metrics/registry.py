"""Build the agent's ``CollectorRegistry`` (never prometheus_client's global one) and
the ``MetricsSources`` that read a running agent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from vigil.metrics.collectors import (
    AgentCollector, EventMetricsCollector, KernelView, MetricsSources, SinkView,
)
from vigil.metrics.config import MetricsConfig
from vigil.metrics.events import EventMetrics
from vigil.metrics.health import Health

if TYPE_CHECKING:
    from vigil.metrics.agentview import ObservedAgent, QueueView

log = logging.getLogger("vigil.metrics")
T = TypeVar("T")


def build_registry(cfg: MetricsConfig, sources: MetricsSources, events: EventMetrics,
                   health: Health | None = None, process: bool = True) -> CollectorRegistry:
    """A fresh registry with every agent metric (plus ``process_*`` for this process)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(cfg.namespace, sources, health))
    reg.register(EventMetricsCollector(cfg.namespace, events))
    if process:
        ProcessCollector(registry=reg)
    return reg


def event_metrics(cfg: MetricsConfig) -> EventMetrics:
    return EventMetrics(cfg.process_labels, cfg.label_max_values, cfg.label_allow,
                        cfg.max_series)


def _safe(fn: Callable[[], T], default: T) -> Callable[[], T]:
    """A scrape never fails because the agent is starting or stopping under it."""
    def call() -> T:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - logged, the scrape goes on
            log.debug("metrics source failed: %r", err)
            return default
    return call


def sources_from_agent(agent: ObservedAgent) -> MetricsSources:
    """Sources reading a running agent (looked up at each scrape)."""
    from vigil import __version__
    drops = _SubscriberDrops(agent)
    return MetricsSources(
        kernel=_safe(lambda: _kernel(agent), []),
        ring=_safe(lambda: _ring(agent), (0, 0, 0)),
        pipeline=lambda: agent.pipeline,
        policy_events=lambda: agent.policy_events,
        cache=lambda: agent.cache,
        sinks=_safe(lambda: [_sink(s) for s in list(agent.sinks)], []),
        ratelimit_dropped=_safe(lambda: _ratelimit_dropped(agent), 0),
        subscriber_dropped=_safe(drops, 0),
        maps=_safe(lambda: agent.sensor.map_usage() if agent.sensor else {}, {}),
        sweep_errors=_safe(lambda: agent.sensor.sweep_errors if agent.sensor else 0, 0),
        remote=_safe(lambda: [s.view() for s in list(agent.remote_sinks)], []),
        redacted=_safe(lambda: agent.redactor.redacted if agent.redactor else 0, 0),
        version=__version__,
    )


def _kernel(agent: ObservedAgent) -> list[KernelView]:
    """Counters of the base sensor: every BPF object shares its ``vg_stats`` by fd, so
    they include the policy hooks' records."""
    if agent.sensor is None:
        return []
    k = agent.sensor.counters()
    return [KernelView(dict(k.sent), dict(k.drops))]


def _ring(agent: ObservedAgent) -> tuple[int, int, int]:
    sensor = agent.sensor
    if sensor is None or sensor.ring is None:
        return 0, 0, 0
    return sensor.ring.pending_bytes(), sensor.ring_bytes, sensor.ring.discarded


def _sink(s: QueueView) -> SinkView:
    return SinkView(s.name, s.delivered, s.dropped, s.errors, s.pending(), s.max_events)


def _ratelimit_dropped(agent: ObservedAgent) -> int:
    from vigil.export.ratelimit import RateLimitedSubscriber
    return sum(s.limiter.dropped for s in agent.hub.subscribers
               if isinstance(s, RateLimitedSubscriber))


class _SubscriberDrops:
    """Cumulative drops of the hub's non-exporter subscribers (GetEvents clients).

    Uses the gRPC server's own count (live and departed streams) when it runs;
    otherwise it sums each live subscriber's ``dropped`` and keeps what departed ones had
    at the last scrape, so the counter never goes down.
    """

    def __init__(self, agent: ObservedAgent) -> None:
        self._agent = agent
        self._seen: dict[int, int] = {}
        self._departed = 0

    def __call__(self) -> int:
        server = self._agent.server
        if server is not None:
            return int(server.stats().get("dropped", 0))
        hub = self._agent.hub
        from vigil.export.ratelimit import RateLimitedSubscriber
        exporters = {id(s) for s in self._agent.sinks}
        now: dict[int, int] = {}
        for s in hub.subscribers:
            inner = s.inner if isinstance(s, RateLimitedSubscriber) else s
            dropped = getattr(inner, "dropped", None)
            if id(inner) in exporters or dropped is None:
                continue
            now[id(inner)] = int(dropped)
        self._departed += sum(v for k, v in self._seen.items() if k not in now)
        self._seen = now
        return self._departed + sum(now.values())
