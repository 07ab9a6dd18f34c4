"""The standard ``grpc.health.v1.Health`` service (Check and Watch) on our transport.

Messages are grpcio-health-checking's ``health_pb2``; the serving statuses are set by
the server (``set``, any thread) and read by Check, pushed to Watch streams.
"""

from __future__ import annotations

import asyncio
import threading

from grpc_health.v1 import health_pb2

from vigil.server.protocol import Context, Method, RpcError, StatusCode, frame

SERVICE = "grpc.health.v1.Health"
Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {}
        self._watchers: set[_Watch] = set()
        self._shutdown = False

    def set(self, service: str, status: int) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._status[service] = status
            watchers = list(self._watchers)
        for w in watchers:
            w.changed()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on (as grpcio's HealthServicer does)."""
        for svc in list(self._status):
            self.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
        with self._lock:
            self._shutdown = True

    def get(self, service: str) -> int | None:
        with self._lock:
            return self._status.get(service)

    def Check(self, request: health_pb2.HealthCheckRequest,
              context: Context) -> bytes:
        status = self.get(request.service)
        if status is None:
            raise RpcError(StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()

    def Watch(self, request: health_pb2.HealthCheckRequest,
              context: Context) -> _Watch:
        w = _Watch(self, request.service)
        with self._lock:
            self._watchers.add(w)
        return w

    def _forget(self, w: _Watch) -> None:
        with self._lock:
            self._watchers.discard(w)

    def methods(self) -> dict[str, Method]:
        req = health_pb2.HealthCheckRequest.FromString
        return {f"/{SERVICE}/Check": Method(req, self.Check),
                f"/{SERVICE}/Watch": Method(req, self.Watch, streaming=True)}


class _Watch:
    """A Watch stream: the current status, then each change."""

    def __init__(self, health: HealthService, service: str) -> None:
        self.health = health
        self.service = service
        self.sent: int | None = -1
        self.loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def changed(self) -> None:
        self.loop.call_soon_threadsafe(self._event.set)

    async def next(self) -> bytes | None:
        while True:
            status = self.health.get(self.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != self.sent:
                self.sent = status
                return frame(health_pb2.HealthCheckResponse(status=status)
                             .SerializeToString())
            self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        self.health._forget(self)
