"""Prometheus metrics and health for the agent.

Wiring (the daemon does this once the agent has started)::

    running = start_metrics(agent, cfg)   # cfg: MetricsConfig
    ...
    running.close()

Modules: ``config`` (pure settings; the CLI imports only this), ``events`` (bounded
per-event counting on the hub), ``collectors`` (scrape-time reads of every counter),
``health`` (is the pipeline moving), ``registry`` (a fresh CollectorRegistry),
``server`` (HTTP/TLS for /metrics and /healthz). prometheus_client is imported only
when metrics are started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.metrics.config import MetricsConfig, metrics_config

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from vigil.metrics.agentview import ObservedAgent
    from vigil.metrics.events import EventMetrics
    from vigil.metrics.health import Health
    from vigil.metrics.server import MetricsServer


@dataclass
class RunningMetrics:
    registry: CollectorRegistry
    events: EventMetrics
    health: Health
    server: MetricsServer | None
    _hub: Any

    @property
    def url(self) -> str:
        return self.server.url if self.server else ""

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self._hub.unsubscribe(self.events)


def start_metrics(agent: ObservedAgent, cfg: MetricsConfig, serve: bool = True
                  ) -> RunningMetrics:
    """Count the agent's events, build its registry, serve /metrics and /healthz.

    ``agent``: a started agent (``vigil.daemon.agent.Agent``). Raises OSError if the address
    cannot be bound and ssl.SSLError / OSError for unusable TLS files.
    """
    from vigil.metrics.health import agent_health
    from vigil.metrics.registry import build_registry, event_metrics, sources_from_agent
    from vigil.metrics.server import MetricsServer, tls_context

    health = agent_health(agent, cfg.health_stall_s)
    events = event_metrics(cfg)
    registry = build_registry(cfg, sources_from_agent(agent), events, health)
    from vigil.containers.metrics import register as register_containers
    register_containers(registry, cfg.namespace, agent)
    tls = tls_context(cfg.tls_cert_file, cfg.tls_key_file) if cfg.tls else None
    server = MetricsServer(registry, cfg.host, cfg.port, health, tls).start() if serve else None
    agent.hub.subscribe(events)
    return RunningMetrics(registry, events, health, server, agent.hub)


__all__ = ["MetricsConfig", "RunningMetrics", "metrics_config", "start_metrics"]
