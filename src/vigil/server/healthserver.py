"""``--health-server-address``: a plain gRPC listener serving only ``grpc.health.v1.Health``.

As Tetragon's health server: the service name is ``liveness``; every
``--health-server-interval`` seconds the agent's health check (the one GetHealth answers:
is the pipeline moving?) sets it SERVING or NOT_SERVING, so a Kubernetes ``grpc`` liveness
probe (or ``grpc_health_probe -service liveness``) restarts a stuck agent. The empty
service name ("the server") is SERVING while the listener runs.

No TLS and no authentication, as Tetragon's: it answers nothing but a serving status.
Vigil's default address is ``localhost:6789`` (Tetragon's is ``:6789``, every interface):
give ``:6789`` to let a probe from outside the host reach it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from concurrent import futures

from grpc_health.v1 import health_pb2

from vigil.errors import ConfigError
from vigil.server.health import HealthService
from vigil.server.listen import parse_address
from vigil.server.protocol import GrpcConnection, ProtocolConfig

log = logging.getLogger(__name__)

DEFAULT_HEALTH_ADDRESS = "localhost:6789"
LIVENESS = "liveness"


class HealthServer:
    """``start()`` binds (ConfigError if it cannot) and starts the check loop; ``stop()``."""

    def __init__(self, address: str, interval: float,
                 check: Callable[[], tuple[bool, str]]) -> None:
        if interval <= 0:
            raise ConfigError("health-server-interval", "must be positive (seconds)")
        self.address = address
        self.interval = interval
        self._check = check
        self.health = HealthService()
        self.bound = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._checker: threading.Thread | None = None
        self._stop = threading.Event()
        self._executor: futures.ThreadPoolExecutor | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[GrpcConnection] = set()
        self.last: tuple[bool, str] | None = None

    def _socket(self) -> socket.socket:
        addr = parse_address(self.address)
        if addr.kind != "tcp":
            raise ConfigError("health-server-address", f"{self.address!r}: host:port expected")
        try:
            infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ConfigError("health-server-address", f"{self.address!r}: {err}") from err
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as err:
            sock.close()
            raise ConfigError("health-server-address",
                              f"cannot listen on {self.address}: {err.strerror}") from err
        sock.listen(16)
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        self.bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return sock

    def start(self) -> None:
        sock = self._socket()
        self._executor = futures.ThreadPoolExecutor(1, thread_name_prefix="vigil-health-call")
        proto = ProtocolConfig(methods=self.health.methods(), executor=self._executor,
                               max_connections=32)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="vigil-health",
                                        daemon=True)
        self._thread.start()

        async def serve() -> None:
            self._server = await loop.create_server(
                lambda: GrpcConnection(proto, self._connections), sock=sock)
        asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.update()
        self._checker = threading.Thread(target=self._run, name="vigil-health-check",
                                         daemon=True)
        self._checker.start()
        log.info("health server (grpc.health.v1, service %r) listening on %s, checked "
                 "every %gs", LIVENESS, self.bound, self.interval)

    def update(self) -> None:
        """Run the health check once and publish it as the ``liveness`` status."""
        try:
            ok, why = self._check()
        except Exception as err:  # noqa: BLE001 - a failing check is a failed check
            ok, why = False, f"health check failed: {err!r}"
        if self.last is not None and self.last[0] != ok:
            (log.info if ok else log.warning)("liveness: %s", "SERVING" if ok else why)
        self.last = (ok, why)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING if ok
                        else health_pb2.HealthCheckResponse.NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()

    def stop(self) -> None:
        self._stop.set()
        self.health.enter_graceful_shutdown()
        if self._checker is not None:
            self._checker.join(5)
        loop = self._loop
        if loop is not None:
            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for conn in list(self._connections):
                    conn.goaway()
                    if conn.transport is not None:
                        conn.transport.close()
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
            except Exception as err:  # noqa: BLE001 - never block the agent's exit
                log.warning("health server shutdown: %r", err)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
                if not self._thread.is_alive():
                    loop.close()
        self._loop = self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


__all__ = ["DEFAULT_HEALTH_ADDRESS", "LIVENESS", "HealthServer"]
