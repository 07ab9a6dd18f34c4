"""Shared machinery of the network exporters (syslog over TLS, OTLP over HTTPS).

Each network exporter is the handler of a :class:`RemoteSink`, a :class:`QueueSink`:
the reader thread only ever appends to its bounded queue (what does not fit is dropped
and counted as ``queue_full``), and the sink's worker thread does the network I/O. The
handler holds one batch at a time: on a failure it disconnects, waits an exponential
backoff (0.5 s doubling to 30 s, with jitter) and tries the same batch again, up to
``MAX_ATTEMPTS`` times; then the batch is dropped and counted under the reason of the
last failure. While it waits, new events pile up in the queue until it is full. Nothing
is retried once the agent stops: what is left is counted as ``shutdown``.

Transport security policy (:func:`check_target`): events carry command lines, paths and
credentials of every process, so a network exporter must encrypt and authenticate the
collector. A plaintext URL is refused, and so is TLS without certificate verification
to anything but a loopback address, unless the operator forces it with the exporter's
``--export-*-allow-insecure`` flag (logged as a warning at every start).

Every counter here is read at scrape time by ``vigil.metrics.collectors``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vigil.export.jsonl import RateLimitedLog
from vigil.export.sink import QueueSink

log = logging.getLogger("vigil.export.remote")

EventDict = dict[str, Any]
MAX_ATTEMPTS = 5
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0


class ExportFailure(Exception):
    """One failed connect or send. ``reason`` labels the metrics: ``tls_verify`` (the
    collector's certificate was refused), ``tls`` (other TLS errors), ``connect``,
    ``send``, ``timeout``, ``rejected`` (the collector refused the data: not retried),
    ``http_<status>``."""

    def __init__(self, reason: str, detail: str, *, permanent: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.permanent = permanent


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (localhost or 127/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """A parsed collector address."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in ("tls", "https")


def parse_target(url: str, *, flag: str, schemes: dict[str, int]) -> Target:
    """``scheme://host:port[/path]`` -> Target; ``schemes`` maps the accepted schemes to
    their default ports. ValueError names the flag."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"{flag}: {url!r}: scheme must be one of "
                         f"{', '.join(s + '://' for s in schemes)}")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"{flag}: {url!r}: {err}") from err
    if not parts.hostname:
        raise ValueError(f"{flag}: {url!r}: no host")
    return Target(scheme, parts.hostname, port or schemes[scheme], parts.path)


def check_target(target: Target, *, flag: str, skip_verify: bool, allow_insecure: bool,
                 insecure_flag: str) -> None:
    """Refuse an unencrypted or unauthenticated collector unless forced (see module doc)."""
    if not target.tls:
        if not allow_insecure:
            raise ValueError(
                f"{flag}: {target.scheme}:// sends events in plaintext; use "
                f"{'tls' if target.scheme == 'tcp' else 'https'}:// (or force it with "
                f"{insecure_flag})")
        log.warning("%s: events are sent in PLAINTEXT to %s:%d (%s)", flag, target.host,
                    target.port, insecure_flag)
        return
    if skip_verify:
        if not is_loopback(target.host) and not allow_insecure:
            raise ValueError(
                f"{flag}: TLS without certificate verification to {target.host}, which is "
                f"not a loopback address, lets anyone on the path read the events "
                f"(force it with {insecure_flag})")
        log.warning("%s: the collector's certificate is NOT verified (%s:%d)", flag,
                    target.host, target.port)


class Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped, reset on success."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, maximum: float = BACKOFF_MAX_S,
                 rand: Callable[[float, float], float] = random.uniform) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rand = rand
        self.failures = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * (2.0 ** self.failures))
        self.failures += 1
        return delay * self._rand(0.8, 1.0)

    def reset(self) -> None:
        self.failures = 0


class RemoteExporter:
    """Base of a network exporter: the QueueSink handler with retries, backoff and counts.

    Subclasses implement ``_connect()`` (raise ExportFailure), ``_send(events)`` (raise
    ExportFailure) and ``_disconnect()``; ``connected`` says whether a connection is up.
    """

    kind = "remote"

    def __init__(self, name: str, destination: str, *,
                 backoff: Backoff | None = None, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.name = name
        self.destination = destination
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.stopping = threading.Event()
        self.connected = False
        self.sent = 0
        self.connections = 0
        self.dropped: Counter[str] = Counter()    # by reason (queue_full comes from the sink)
        self.failures: Counter[str] = Counter()   # failed connects/sends, by reason
        self.last_error = ""
        self._warn = RateLimitedLog(log)
        self._warn_drop = RateLimitedLog(log)

    # -- the QueueSink handler -------------------------------------------------------

    def __call__(self, events: list[EventDict]) -> None:
        attempts = 0
        while True:
            try:
                if not self.connected:
                    self._connect()
                    self.connected = True
                    self.connections += 1
                    if self.backoff.failures:
                        log.info("%s: connected to %s again", self.name, self.destination)
                    self.backoff.reset()
                self._send(events)
                self.sent += len(events)
                return
            except ExportFailure as f:
                self._fail(f)
                attempts += 1
                if f.permanent or attempts >= self.max_attempts:
                    self._drop(events, f.reason)
                    return
                if self.stopping.is_set() or self.stopping.wait(self.backoff.next()):
                    self._drop(events, "shutdown")
                    return

    def _fail(self, f: ExportFailure) -> None:
        was = self.connected
        self.connected = False
        try:
            self._disconnect()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail too
            pass
        self.failures[f.reason] += 1
        self.last_error = str(f)
        self._warn(logging.WARNING, "%s: %s %s: %s", self.name,
                   "lost" if was else "cannot reach", self.destination, f)

    def _drop(self, events: list[EventDict], reason: str) -> None:
        self.dropped[reason] += len(events)
        self._warn_drop(logging.WARNING, "%s: %d events to %s dropped (%s)", self.name,
                   len(events), self.destination, reason)

    def interrupt(self) -> None:
        """Called at stop while the collector is unreachable: stop any wait inside the
        transport (the base exporter's own waits end with ``stopping``)."""

    def close(self) -> None:
        """Close the connection (after the sink drained)."""
        self.stopping.set()
        if self.connected:
            self.connected = False
            try:
                self._disconnect()
            except Exception:  # noqa: BLE001 - the connection is being dropped anyway
                pass

    # -- subclass hooks --------------------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _send(self, events: list[EventDict]) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError


class RemoteSink(QueueSink):
    """A QueueSink whose handler is a RemoteExporter: closing stops its retries first,
    so a stop never waits on a collector that is down (the rest is counted dropped)."""

    def __init__(self, exporter: RemoteExporter, max_events: int) -> None:
        super().__init__(exporter.name, exporter, max_events=max_events)
        self.exporter = exporter

    def offer(self, batch: list[EventDict]) -> int:
        dropped = super().offer(batch)
        if dropped:
            self.exporter._warn_drop(logging.WARNING, "%s: %d events to %s dropped "
                                     "(queue_full: %d queued)", self.name, dropped,
                                     self.exporter.destination, self.max_events)
        return dropped

    def close(self, timeout: float | None = 10.0) -> bool:
        self.exporter.stopping.set()
        if not self.exporter.connected and self.pending():
            self.exporter.interrupt()  # a collector that is down is not waited for
        done = super().close(timeout)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
        if left:
            self.exporter.dropped["shutdown"] += left
        self.exporter.close()
        return done

    def view(self) -> dict[str, Any]:
        """Counters for metrics and stats: drops by reason include the queue's."""
        e = self.exporter
        dropped = dict(e.dropped)
        if self.dropped:
            dropped["queue_full"] = self.dropped
        return {"exporter": e.name, "kind": e.kind, "destination": e.destination,
                "connected": e.connected, "connections": e.connections, "sent": e.sent,
                "dropped": dropped, "failures": dict(e.failures),
                "last_error": e.last_error}


__all__ = ["Backoff", "ExportFailure", "RemoteExporter", "RemoteSink", "Target",
           "check_target", "is_loopback", "parse_target"]
