"""The agent's gRPC server: FineGuidanceSensors + grpc.health.v1 on each listener.

Layers: ``listen`` makes the listening sockets (unix 0660 with the rename dance, TCP
with TLS) and the info file; ``protocol`` speaks gRPC over HTTP/2 (``h2``) on an asyncio
event loop; ``servicer`` and ``health`` are the RPCs.

Threading: one thread ("vigil-grpc") runs the event loop: every connection, all
HTTP/2 framing, and the GetEvents streams' filtering and encoding (it is CPU work under
the GIL either way; on the loop it costs no thread hand-offs). Unary RPCs run in a small
thread pool, since a policy load may block for seconds. The reader thread only appends
batches to the streams' bounded queues (``subscriber``) and wakes the loop.

``stop()`` marks health NOT_SERVING, sends GOAWAY, ends every stream with OK (the
subscriber queues close), waits up to ``grace`` for running calls, then closes the
connections, the sockets and the info file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from grpc_health.v1 import health_pb2

from vigil import __version__
from vigil.errors import ConfigError
from vigil.policy.store_api import PolicyStore
from vigil.server import listen
from vigil.server.config import ServerConfig
from vigil.server.control import AgentControl
from vigil.server.health import HealthService
from vigil.server.persist import PersistentPolicyStore
from vigil.server.protocol import GrpcConnection, ProtocolConfig, StatusCode
from vigil.server.servicer import (
    SERVICE,
    EventSource,
    FineGuidanceSensorsServicer,
    ServicerDeps,
    methods,
)

log = logging.getLogger(__name__)

_UNARY_WORKERS = 8
HEALTH_SERVICES = ("", "liveness", SERVICE)


class GrpcServer:
    """``start()`` binds every address (raising ConfigError with the reason), ``stop()``."""

    def __init__(self, cfg: ServerConfig, *, events: EventSource, node_name: str,
                 policies: Callable[[], PolicyStore | None],
                 health_check: Callable[[], tuple[bool, str]],
                 version: str = __version__, control: AgentControl | None = None) -> None:
        self.cfg = cfg
        self._policies = policies
        self._persist: PersistentPolicyStore | None = None
        self.servicer = FineGuidanceSensorsServicer(ServicerDeps(
            events=events, node_name=node_name, version=version, policies=self.policies,
            health=health_check, queue_events=cfg.queue_events,
            max_subscribers=cfg.max_subscribers, control=control or AgentControl()))
        self.health = HealthService()
        self.addresses: list[str] = []
        self._listeners: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[GrpcConnection] = set()
        self._proto: ProtocolConfig | None = None

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
        self._executor = futures.ThreadPoolExecutor(_UNARY_WORKERS,
                                                    thread_name_prefix="vigil-grpc-call")
        cfg = self.cfg
        proto = self._proto = ProtocolConfig(
            methods={**methods(self.servicer), **self.health.methods()},
            executor=self._executor, max_recv_bytes=cfg.max_recv_bytes,
            keepalive_time=cfg.keepalive_time, keepalive_timeout=cfg.keepalive_timeout,
            handshake_timeout=cfg.handshake_timeout, max_connections=cfg.max_connections)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="vigil-grpc", daemon=True)
        self._thread.start()
        try:
            self.restore_policies()
            for addr in self.cfg.addresses:
                listener = listen.make_listener(addr, self.cfg)
                self._listeners.append(listener)
                sock, advertised = listener.open()
                asyncio.run_coroutine_threadsafe(
                    self._serve(sock, listener.tls_context, proto), loop).result()
                self.addresses.append(advertised)
        except BaseException:
            self.stop(grace=0)
            raise
        for svc in HEALTH_SERVICES:
            self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        listen.write_info_file(self.cfg.info_file, self.addresses, {
            "pid": os.getpid(), "version": __version__, "tls": self.cfg.tls,
            "mtls": bool(self.cfg.tls_client_ca_files)})
        log.info("gRPC API listening on %s", ", ".join(self.addresses))

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _serve(self, sock: Any, tls: Any, proto: ProtocolConfig) -> None:
        def factory() -> GrpcConnection:
            return GrpcConnection(proto, self._connections)
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(factory, sock=sock)
        else:
            server = await loop.create_server(factory, sock=sock, ssl=tls,
                                              ssl_handshake_timeout=10 if tls else None)
        self._servers.append(server)

    async def _shutdown(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.goaway()
        # streams end now (their queues closed); unary calls get up to `grace`
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.calls for c in self._connections) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.end_all(StatusCode.UNAVAILABLE, "the agent is stopping")
        self._servers.clear()

    def stop(self, grace: float = 2.0) -> None:
        """Close streams, stop serving, remove sockets and the info file (idempotent)."""
        self.health.enter_graceful_shutdown()
        self.servicer.subscribers.close_all()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 5)
            except Exception as err:  # noqa: BLE001 - never let a stuck connection block the agent's exit
                log.warning("gRPC server shutdown: %r", err)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()
        self._loop = self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self.addresses:
            listen.remove_info_file(self.cfg.info_file, os.getpid())
            self.addresses = []

    def stats(self) -> dict[str, Any]:
        proto = self._proto
        conns = {"open": len(self._connections), "limit": self.cfg.max_connections,
                 "request_bytes_buffered": proto.buffered if proto else 0,
                 **(proto.stats.as_dict() if proto else {})}
        return {"addresses": list(self.addresses), "connections": conns,
                **self.servicer.stats()}


def start_server(cfg: ServerConfig, *, events: EventSource, node_name: str,
                 policies: Callable[[], PolicyStore | None],
                 health_check: Callable[[], tuple[bool, str]],
                 control: AgentControl) -> GrpcServer | None:
    """Serve the agent's parts per ``cfg`` (the daemon assembles them:
    ``vigil.daemon.views.start_grpc``); None if disabled."""
    if not cfg.enabled:
        return None
    server = GrpcServer(cfg, events=events, node_name=node_name, policies=policies,
                        health_check=health_check, control=control)
    server.start()
    return server


__all__ = ["ConfigError", "GrpcServer", "ServerConfig", "start_server"]
