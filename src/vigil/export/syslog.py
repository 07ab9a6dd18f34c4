"""Events to a syslog collector over TLS (RFC 5425), one RFC 5424 message per event.

Each message is ``<PRI>1 TIMESTAMP HOSTNAME vigil PROCID MSGID - JSON``: the priority is
``--export-syslog-facility`` x 8 + informational (6); TIMESTAMP is the event's ``time``
cut to microseconds (RFC 5424 allows six fraction digits); HOSTNAME the event's
``node_name``; MSGID the event type (``process_exec`` ...); no structured data; MSG the
event as the one-line JSON the export file holds. Messages are framed by octet counting
(``LEN SP MSG``, RFC 5425 section 4.3) on one TLS connection, a batch per write.

TLS: at least TLS 1.2, the collector's certificate verified against
``--export-syslog-ca-file`` (else the system's CAs) and its name (the URL's host, or
``--export-syslog-server-name``); with ``--export-syslog-cert-file``/``--key-file`` the
agent presents a client certificate (mutual TLS, RFC 5425 section 5.3's certificate
path validation on the collector side).

Delivery is at most once per attempt: syslog over TCP has no acknowledgement, so a batch
written just before the collector died may be lost without error (the next write
fails and reconnects). Before each write the exporter checks whether the collector
closed the connection, so a collector that restarted cleanly costs no events.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from vigil.events import encode
from vigil.export.remote import ExportFailure, RemoteExporter, Target

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY_INFO = 6
_NOT_TYPE = frozenset(("node_name", "time", "cluster_name", "node_labels", "aggregation_info"))


@dataclass(frozen=True)
class SyslogConfig:
    target: Target                      # tls://host:port (tcp:// only when forced)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""               # name to verify (and SNI); default: the host
    skip_verify: bool = False
    facility: int = FACILITIES["local0"]
    app_name: str = "vigil"
    connect_timeout: float = 5.0
    send_timeout: float = 10.0


def _header_field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or the nil value."""
    out = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return out or "-"


def syslog_timestamp(t: object) -> str:
    """The event's RFC 3339 ``time`` with at most six fraction digits (RFC 5424 6.2.3)."""
    if not isinstance(t, str) or "T" not in t:
        now = time.time()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now % 1 * 1e6):06d}Z"
    if "." in t:
        head, frac = t.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        zone = frac[len(digits):] or "Z"
        return f"{head}.{digits[:6]}{zone}" if digits else f"{head}{zone}"
    return t


def event_type(ev: dict[str, Any]) -> str:
    for key in ev:
        if key not in _NOT_TYPE:
            return key
    return "-"


def format_message(ev: dict[str, Any], *, facility: int, app_name: str, procid: str,
                   body: bytes | None = None) -> bytes:
    """One RFC 5424 message (no framing)."""
    pri = facility * 8 + SEVERITY_INFO
    header = (f"<{pri}>1 {syslog_timestamp(ev.get('time'))} "
              f"{_header_field(str(ev.get('node_name') or ''), 255)} "
              f"{_header_field(app_name, 48)} {procid} "
              f"{_header_field(event_type(ev), 32)} - ")
    return header.encode("ascii") + (body if body is not None else encode.dumps(ev))


def frame(msg: bytes) -> bytes:
    """RFC 5425 octet-counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(msg)).encode("ascii") + b" " + msg


def tls_client_context(ca_file: str = "", cert_file: str = "", key_file: str = "",
                       skip_verify: bool = False) -> ssl.SSLContext:
    """A client context: TLS >= 1.2, the peer's certificate and name verified (unless
    ``skip_verify``), optional client certificate. Raises OSError/ssl.SSLError for files
    that cannot be used."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    if skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SyslogExporter(RemoteExporter):
    """QueueSink handler: RFC 5424 messages over one RFC 5425 TLS connection."""

    kind = "syslog"

    def __init__(self, cfg: SyslogConfig, name: str = "syslog") -> None:
        t = cfg.target
        super().__init__(name, f"{t.scheme}://{t.host}:{t.port}")
        self.cfg = cfg
        self._ctx = tls_client_context(cfg.ca_file, cfg.cert_file, cfg.key_file,
                                       cfg.skip_verify) if t.tls else None
        self._sock: socket.socket | None = None
        self._procid = str(os.getpid())

    def _connect(self) -> None:
        t, cfg = self.cfg.target, self.cfg
        try:
            raw = socket.create_connection((t.host, t.port), timeout=cfg.connect_timeout)
        except TimeoutError as err:
            raise ExportFailure("timeout", f"connect: {err}") from err
        except OSError as err:
            raise ExportFailure("connect", err.strerror or str(err)) from err
        if self._ctx is None:
            self._sock = raw
            return
        try:
            self._sock = self._ctx.wrap_socket(raw, server_hostname=cfg.server_name or t.host)
        except ssl.SSLCertVerificationError as err:
            raw.close()
            raise ExportFailure("tls_verify", err.verify_message or str(err)) from err
        except ssl.SSLError as err:
            raw.close()
            raise ExportFailure("tls", err.reason or str(err)) from err
        except TimeoutError as err:
            raw.close()
            raise ExportFailure("timeout", f"TLS handshake: {err}") from err
        except OSError as err:
            raw.close()
            raise ExportFailure("connect", f"TLS handshake: {err}") from err

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether the collector closed (or reset) the connection; syslog collectors send
        nothing, so anything readable is the end of the stream."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        sock.setblocking(False)
        try:
            return sock.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False  # TLS records that were not data (session tickets)
        except (ssl.SSLError, OSError):
            return True
        finally:
            sock.setblocking(True)

    def _send(self, events: list[dict[str, Any]]) -> None:
        sock = self._sock
        if sock is None or self._peer_closed(sock):
            # the collector closed the connection since the last batch (a restart):
            # reconnect now, this batch was not written anywhere yet
            self._disconnect()
            self._connect()
            self.connections += 1
            sock = self._sock
            assert sock is not None
        cfg = self.cfg
        try:
            bodies = encode.dumps_all(events)
        except TypeError:
            bodies = [encode.dumps(ev) for ev in events]
        payload = b"".join(
            frame(format_message(ev, facility=cfg.facility, app_name=cfg.app_name,
                                 procid=self._procid, body=b))
            for ev, b in zip(events, bodies))
        try:
            sock.settimeout(cfg.send_timeout)
            sock.sendall(payload)
        except TimeoutError as err:
            raise ExportFailure("timeout", f"send: {err}") from err
        except OSError as err:
            raise ExportFailure("send", str(err)) from err

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


__all__ = ["FACILITIES", "SyslogConfig", "SyslogExporter", "event_type", "format_message",
           "frame", "syslog_timestamp", "tls_client_context"]
