"""What the gRPC server, the health server and the control RPCs see of the agent,
assembled here so that ``vigil.server`` and ``vigil.metrics`` never hold the ``Agent``
itself: they are given narrow, typed parts (``AgentControl``, a health check, the event
hub, the policy store)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import TYPE_CHECKING

from vigil.server.control import TETRAGON_PROBE_NAMES, AgentControl, EventLog, ProcessEntry

if TYPE_CHECKING:
    from vigil.daemon.agent import Agent
    from vigil.server.server import GrpcServer


def feature_probes() -> list[tuple[str, bool]]:
    """(Tetragon's name where one maps, ok) of every feature probe; results are cached
    by vigil.bpf.features, so only the first call loads the probe programs."""
    from vigil.bpf import features
    return [(TETRAGON_PROBE_NAMES.get(r.name, r.name), r.ok) for r in features.probe_all()]


def agent_control(agent: Agent) -> AgentControl:
    """The control RPCs' view of ``agent``: probes, configuration, process cache, export
    file writer."""

    def processes() -> list[ProcessEntry]:
        from vigil.events.encode import process_dict
        return [ProcessEntry(p.encoded or process_dict(p), p.refcnt)
                for p in agent.cache.snapshot()]

    def conf() -> dict[str, str]:
        a = agent.cfg
        ex = a.export
        return {
            "node-name": agent.node_name,
            "server-address": ",".join(a.server.addresses),
            "export-filename": ex.filename or "",
            "export-file-max-size-mb": f"{ex.max_size_mb:g}",
            "export-file-max-backups": str(ex.max_backups),
            "export-file-compress": str(bool(ex.compress)).lower(),
            "process-cache-size": str(a.process_cache_size),
            "enable-process-cred": str(a.enable_process_cred).lower(),
            "enable-process-ns": str(a.enable_process_ns).lower(),
            "enable-ancestors": str(a.enable_ancestors).lower(),
            "rb-size": str(a.rb_size),
            "rb-size-total": str(a.rb_size_total),
            "export-rate-limit": str(a.export_rate_limit),
            "tracing-policy-dir": a.tracing_policy_dir,
            "kprobe-mode": a.kprobe_mode,
            "health-server-address": a.health_address,
            "health-server-interval": f"{a.health_interval:g}",
            "keep-sensors-on-exit": str(bool(a.keep_sensors_on_exit)).lower(),
            "enable-export-aggregation": str(bool(
                a.export_filters is not None and a.export_filters.aggregation)).lower(),
        }

    def event_log() -> EventLog | None:
        writers = agent.export_writers
        return writers[0] if writers else None

    def domains() -> list[str]:
        return ["static", "grpc"] + (["k8s"] if agent.k8s is not None else [])

    return AgentControl(name="vigil", probes=feature_probes, conf=conf, processes=processes,
                        event_log=event_log, domains=domains,
                        build={"python_version": f"python{platform.python_version()}"})


def health_check(agent: Agent) -> Callable[[], tuple[bool, str]]:
    """GetHealth's and the health server's answer: the pipeline check of
    ``vigil.metrics.health`` (reader alive and progressing, exporters draining)."""
    from vigil.metrics.health import agent_health
    checker = agent_health(agent)

    def check() -> tuple[bool, str]:
        st = checker.check()
        return st.ok, "running" if st.ok else st.text
    return check


def start_grpc(agent: Agent) -> GrpcServer | None:
    """The gRPC API over the agent's hub, policy engine, health and controls."""
    from vigil.server.server import start_server  # imports grpc
    return start_server(agent.cfg.server, events=agent.hub, node_name=agent.node_name,
                        policies=lambda: agent.policies, health_check=health_check(agent),
                        control=agent_control(agent))


__all__ = ["agent_control", "feature_probes", "health_check", "start_grpc"]
