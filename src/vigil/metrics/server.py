"""The metrics HTTP(S) server: ``/metrics`` (Prometheus text or OpenMetrics) and
``/healthz`` (200 "ok", or 503 with what is stuck).

Defensive by design, since it may face a network: loopback by default, optional TLS
(handshake in the connection's own thread, so a slow client cannot stall accept()),
a per-connection timeout, and at most ``max_connections`` served at once (more are
closed at once). Only GET (and HEAD) of the two paths; everything else is 404/405.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from vigil.metrics.health import Health

log = logging.getLogger("vigil.metrics.server")


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server context: TLS 1.2+, the library's default (modern) ciphers."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds per connection read (slowloris)
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(self.server.registry), ctype)
        elif path == "/healthz":
            st = self.server.health.check() if self.server.health else None
            ok = st is None or st.ok
            self._reply(200 if ok else 503, ((st.text if st else "ok") + "\n").encode(),
                        "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], registry: CollectorRegistry,
                 health: Health | None, tls: ssl.SSLContext | None,
                 max_connections: int) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.health = health
        self.tls = tls
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                request.settimeout(_Handler.timeout)
                request.do_handshake()
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError) as err:
            log.debug("metrics connection from %s failed: %s", client_address, err)
            self.shutdown_request(request)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves a registry (and health) on ``host:port`` from one background thread."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 2112,
                 health: Health | None = None, tls: ssl.SSLContext | None = None,
                 max_connections: int = 16) -> None:
        self._server = _Server((host, port), registry, health, tls, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="vigil-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self._server.tls else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
