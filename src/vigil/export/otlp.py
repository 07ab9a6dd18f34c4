"""Events as OpenTelemetry log records over OTLP/HTTP (protobuf), with TLS.

Built on the OpenTelemetry SDK's ``OTLPLogExporter`` (opentelemetry-exporter-otlp-proto-
http): one log record per event, its body the event as the export file's JSON line,
``event_name`` and the attribute ``vigil.event.type`` the event type, the timestamp the
event's ``time``; the resource carries ``service.name=vigil`` and ``host.name`` (the
node name). The SDK's own batch processor is not used: the agent's bounded
:class:`~vigil.export.remote.RemoteSink` queue is the buffer, so drops are counted in
one place, and each batch the sink hands over is one export request.

TLS: the endpoint must be ``https://`` (``http://`` only when forced); the collector's
certificate is verified against ``--export-otlp-ca-file`` (else the system's CAs) and
its host name; ``--export-otlp-cert-file``/``--key-file`` add a client certificate
(mutual TLS). The HTTP session ignores proxy and CA-bundle environment variables, so
the flags alone decide whom the events go to. An HTTP status the collector will not
accept on a retry (4xx other than 408/429) drops the batch at once (``rejected``).

The SDK is imported only when this exporter is configured.
"""

from __future__ import annotations

import calendar
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from vigil.events import encode
from vigil.export.remote import ExportFailure, RemoteExporter, Target
from vigil.export.syslog import event_type

RETRYABLE_STATUS = frozenset((408, 429, 502, 503, 504))
log = logging.getLogger("vigil.export.otlp")


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str                       # full URL of the logs endpoint (…/v1/logs)
    target: Target
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    compression: str = "gzip"           # none | gzip | deflate
    resource: dict[str, str] = field(default_factory=dict)


def event_time_ns(t: object) -> int | None:
    """RFC 3339 ``…Z`` time of an event -> UNIX ns (None if absent or not UTC)."""
    if not isinstance(t, str) or not t.endswith("Z") or len(t) < 20:
        return None
    try:
        secs = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = t[19:-1]
    nanos = int((frac[1:] + "000000000")[:9]) if frac.startswith(".") and \
        frac[1:].isdigit() else 0
    return secs * 1_000_000_000 + nanos


def logs_endpoint(url: str) -> str:
    """The URL as given when it has a path, else with the standard ``/v1/logs``."""
    from urllib.parse import urlsplit
    path = urlsplit(url).path
    return url if path not in ("", "/") else url.rstrip("/") + "/v1/logs"


class OtlpExporter(RemoteExporter):
    """QueueSink handler: each batch one OTLP ExportLogsServiceRequest over HTTPS."""

    kind = "otlp"

    def __init__(self, cfg: OtlpConfig, node_name: str, name: str = "otlp") -> None:
        super().__init__(name, cfg.endpoint)
        import requests
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from vigil import __version__
        self.cfg = cfg
        # The SDK logs every failed attempt and retry itself, unthrottled; the exporter
        # reports the same failures rate limited, with their cause, and counts them.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
        self._session = _RecordingSession()
        self._session.trust_env = False  # no proxies or CA bundles from the environment
        self._exporter = OTLPLogExporter(
            endpoint=cfg.endpoint,
            certificate_file=cfg.ca_file or None,
            client_certificate_file=cfg.cert_file or None,
            client_key_file=cfg.key_file or None,
            headers=dict(cfg.headers),
            timeout=cfg.timeout,
            compression={"gzip": Compression.Gzip, "deflate": Compression.Deflate}.get(
                cfg.compression, Compression.NoCompression),
            session=self._session,
        )
        # after the exporter set them from its arguments (and the OTEL_* variables)
        self._session.verify = False if cfg.skip_verify else (cfg.ca_file or True)
        if cfg.cert_file:
            self._session.cert = (cfg.cert_file, cfg.key_file) if cfg.key_file \
                else cfg.cert_file
        self._resource = Resource.create({"service.name": "vigil",
                                          "service.version": __version__,
                                          "host.name": node_name, **cfg.resource})
        self._scope = InstrumentationScope("vigil", __version__)
        self._requests = requests
        self._sdk_down = False

    def _connect(self) -> None:
        """HTTP connects per request (pooled): nothing to do before the first send."""

    def _records(self, events: list[dict[str, Any]]) -> list[Any]:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        try:
            bodies = encode.dumps_all(events)
        except TypeError:
            bodies = [encode.dumps(ev) for ev in events]
        now = time.time_ns()
        out = []
        for ev, body in zip(events, bodies):
            kind = event_type(ev)
            rec = LogRecord(timestamp=event_time_ns(ev.get("time")) or now,
                            observed_timestamp=now,
                            severity_number=SeverityNumber.INFO, severity_text="INFO",
                            body=body.decode("utf-8", "replace"),
                            attributes={"vigil.event.type": kind},
                            event_name=kind)
            out.append(ReadableLogRecord(rec, self._resource, self._scope))
        return out

    def _send(self, events: list[dict[str, Any]]) -> None:
        from opentelemetry.sdk._logs.export import LogRecordExportResult
        self._session.reset()
        result = self._exporter.export(self._records(events))
        if result == LogRecordExportResult.SUCCESS:
            self.connected = True
            return
        err, status = self._session.last_error, self._session.last_status
        r = self._requests.exceptions
        if isinstance(err, r.SSLError):
            text = str(err)
            raise ExportFailure("tls_verify" if "CERTIFICATE_VERIFY_FAILED" in text
                                or "certificate verify failed" in text
                                or "doesn't match" in text or "hostname" in text.lower()
                                else "tls", text)
        if isinstance(err, r.Timeout):
            raise ExportFailure("timeout", str(err))
        if isinstance(err, r.ConnectionError):
            raise ExportFailure("connect", str(err))
        if status is not None and status >= 400:
            raise ExportFailure(f"http_{status}" if status in RETRYABLE_STATUS else
                                "rejected", f"HTTP {status}",
                                permanent=status not in RETRYABLE_STATUS and status < 500)
        raise ExportFailure("send", repr(err) if err else "export failed")

    def _disconnect(self) -> None:
        """Pooled HTTP connections are dropped so the next request connects afresh."""
        for adapter in self._session.adapters.values():
            adapter.close()

    def interrupt(self) -> None:
        """Stop waiting on an unreachable collector now (the SDK retries within its
        timeout): further exports fail at once and are counted as ``shutdown``."""
        self._shut_down()

    def close(self) -> None:
        super().close()
        self._shut_down()

    def _shut_down(self) -> None:
        if not self._sdk_down:  # the SDK warns on a second shutdown()
            self._sdk_down = True
            self._exporter.shutdown()  # type: ignore[no-untyped-call]  # unannotated in the SDK


def _recording_session_class() -> type:
    import requests

    class RecordingSession(requests.Session):
        """A requests session that remembers how the last request ended, so a failed
        export can be counted under its cause (TLS, connect, HTTP status)."""

        last_error: Exception | None = None
        last_status: int | None = None

        def reset(self) -> None:
            self.last_error = None
            self.last_status = None

        def send(self, request: Any, **kwargs: Any) -> Any:
            try:
                resp = super().send(request, **kwargs)
            except Exception as err:
                self.last_error = err
                raise
            self.last_status = resp.status_code
            return resp

    return RecordingSession


def _RecordingSession() -> Any:  # noqa: N802 - a class built on first use
    global _session_cls
    if _session_cls is None:
        _session_cls = _recording_session_class()
    return _session_cls()


_session_cls: type | None = None

__all__ = ["OtlpConfig", "OtlpExporter", "event_time_ns", "logs_endpoint"]
