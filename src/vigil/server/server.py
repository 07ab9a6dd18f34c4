"""The agent's gRPC server: FineGuidanceSensors + grpc.health.v1 on each listener.

Threading: grpcio's synchronous server; each GetEvents stream holds one worker thread
for its lifetime (so the pool is ``max_subscribers`` plus room for unary calls), and
gRPC refuses calls beyond that with RESOURCE_EXHAUSTED instead of queueing them.

``stop()`` closes every stream first (their queues wake and the handlers return), then
stops grpcio with a short grace, then removes the sockets and the info file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vigil import __version__
from vigil.errors import ConfigError
from vigil.policy.store_api import PolicyStore
from vigil.server import listen
from vigil.server.config import ServerConfig
from vigil.server.persist import PersistentPolicyStore
from vigil.server.servicer import (
    SERVICE,
    EventSource,
    FineGuidanceSensorsServicer,
    ServicerDeps,
    generic_handler,
)

log = logging.getLogger(__name__)

_UNARY_WORKERS = 8
HEALTH_SERVICES = ("", "liveness", SERVICE)


class GrpcServer:
    """``start()`` binds every address (raising ConfigError with the reason), ``stop()``."""

    def __init__(self, cfg: ServerConfig, *, events: EventSource, node_name: str,
                 policies: Callable[[], PolicyStore | None],
                 health_check: Callable[[], tuple[bool, str]],
                 version: str = __version__) -> None:
        self.cfg = cfg
        self._policies = policies
        self._persist: PersistentPolicyStore | None = None
        self.servicer = FineGuidanceSensorsServicer(ServicerDeps(
            events=events, node_name=node_name, version=version, policies=self.policies,
            health=health_check, queue_events=cfg.queue_events,
            max_subscribers=cfg.max_subscribers))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.addresses: list[str] = []
        self._listeners: list[Any] = []
        self._server: grpc.Server | None = None

    # -- policies (optionally persisted) ---------------------------------------------

    def policies(self) -> PolicyStore | None:
        """The agent's store, wrapped for persistence when --persist-grpc-policies."""
        inner = self._policies()
        if inner is None or not self.cfg.persist_policies:
            return inner
        if self._persist is None or self._persist.inner is not inner:
            self._persist = PersistentPolicyStore(inner, self.cfg.persist_dir)
        return self._persist

    def restore_policies(self) -> None:
        """Re-add persisted gRPC policies (before clients can connect)."""
        store = self.policies()
        if isinstance(store, PersistentPolicyStore):
            store.restore()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        workers = self.cfg.max_subscribers + _UNARY_WORKERS
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vigil-grpc"),
            maximum_concurrent_rpcs=workers,
            options=[("grpc.max_receive_message_length", self.cfg.max_recv_bytes),
                     ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((generic_handler(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self._server = server
        try:
            self.restore_policies()
            for addr in self.cfg.addresses:
                listener = listen.make_listener(addr, self.cfg)
                self._listeners.append(listener)
                self.addresses.append(listener.bind(server))
            server.start()
        except BaseException:
            self.stop(grace=0)
            raise
        for svc in HEALTH_SERVICES:
            self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        listen.write_info_file(self.cfg.info_file, self.addresses, {
            "pid": os.getpid(), "version": __version__, "tls": self.cfg.tls,
            "mtls": bool(self.cfg.tls_client_ca_files)})
        log.info("gRPC API listening on %s", ", ".join(self.addresses))

    def stop(self, grace: float = 2.0) -> None:
        """Close streams, stop grpcio, remove sockets and the info file (idempotent)."""
        self.health.enter_graceful_shutdown()
        self.servicer.subscribers.close_all()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 5)
            self._server = None
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self.addresses:
            listen.remove_info_file(self.cfg.info_file, os.getpid())
            self.addresses = []

    def stats(self) -> dict[str, Any]:
        return {"addresses": list(self.addresses), **self.servicer.stats()}


def start_server(cfg: ServerConfig, agent: Any) -> GrpcServer | None:
    """Serve ``agent`` (a ``vigil.daemon.agent.Agent``) per ``cfg``; None if disabled."""
    if not cfg.enabled:
        return None
    server = GrpcServer(cfg, events=agent.hub, node_name=agent.node_name,
                        policies=lambda: getattr(agent, "policies", None),
                        health_check=_agent_health(agent))
    server.start()
    return server


def _agent_health(agent: Any) -> Callable[[], tuple[bool, str]]:
    """GetHealth's answer: the metrics module's pipeline check when available."""
    try:
        from vigil.metrics.health import agent_health
        checker = agent_health(agent)
    except ImportError:  # pragma: no cover - metrics is part of the package
        checker = None

    def check() -> tuple[bool, str]:
        if checker is None:
            reader = getattr(agent, "_reader", None)
            ok = reader is not None and reader.is_alive()
            return ok, "running" if ok else "reader thread is not running"
        st = checker.check()
        return st.ok, "running" if st.ok else st.text
    return check


__all__ = ["ConfigError", "GrpcServer", "ServerConfig", "start_server"]
