"""``--export-rate-limit``: at most N events per minute into the JSON export.

As Tetragon: -1 is unlimited, 0 disables the export, N > 0 lets N events per minute
through (a token bucket holding at most one minute's worth, refilled continuously).
Events over the limit are dropped and counted; once a minute, if any were dropped, a
``rate_limit_info`` event with the count is written to the export (it bypasses the
limit). Filtering happens on the reader thread, before the exporter's queue, so a
flood costs a counter increment per event, never queue memory.

``process_throttle`` events are never rate limited (a Vigil choice): there are at most
two per cgroup per quiet period, and an operator must see which cgroup is throttled
precisely when a flood also trips the export limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from vigil.events import encode
from vigil.stream.hub import Subscriber

Event = dict[str, Any]
UNLIMITED = -1
EXEMPT = "process_throttle"


class ExportRateLimiter:
    """Token bucket of ``per_minute`` events/minute. Thread-safe; never blocks."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0 (use no limiter for unlimited)")
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(per_minute)
        self._last = clock()
        self.allowed = 0
        self.dropped = 0           # since start
        self._unreported = 0       # since the last rate_limit_info

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.per_minute),
                           self._tokens + (now - self._last) * self.per_minute / 60.0)
        self._last = now

    def admit(self, n: int) -> int:
        """How many of ``n`` events may pass now (the rest count as dropped)."""
        with self._lock:
            self._refill(self._clock())
            ok = min(n, int(self._tokens))
            self._tokens -= ok
            self.allowed += ok
            self.dropped += n - ok
            self._unreported += n - ok
        return ok

    def forgive(self, n: int) -> None:
        """``n`` of the events last refused were let through after all (exempt kinds)."""
        with self._lock:
            self.dropped -= n
            self._unreported -= n

    def take_unreported(self) -> int:
        """Dropped since the last call (what the next rate_limit_info reports)."""
        with self._lock:
            n, self._unreported = self._unreported, 0
        return n


def rate_limit_info_event(dropped: int, node_name: str, time_ns: int) -> Event:
    """``{"rate_limit_info": {"number_of_dropped_process_events": "42"}, ...}`` (uint64 as
    a JSON string, as protojson writes it)."""
    event: Event = {"rate_limit_info": {"number_of_dropped_process_events": str(dropped)}}
    if node_name:
        event["node_name"] = node_name
    event["time"] = encode.rfc3339(time_ns)
    return event


class RateLimitedSubscriber:
    """Wraps an exporter's subscriber (a ``QueueSink``): only admitted events reach it."""

    def __init__(self, inner: Subscriber, limiter: ExportRateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.name = inner.name

    def offer(self, batch: list[Event]) -> int:
        ok = self.limiter.admit(len(batch))
        if ok == len(batch):
            return self.inner.offer(batch)
        exempt = [ev for ev in batch[ok:] if EXEMPT in ev]
        if exempt:
            self.limiter.forgive(len(exempt))
        passed = batch[:ok] + exempt
        dropped = self.inner.offer(passed) if passed else 0
        return dropped + len(batch) - len(passed)


class RateLimitReporter:
    """Once per ``interval`` seconds, offers a rate_limit_info event if anything was dropped.

    ``close()`` stops the thread and reports what is left, so a shutdown loses no count.
    """

    def __init__(self, limiter: ExportRateLimiter, offer: Callable[[list[Event]], int],
                 node_name: str, interval: float = 60.0) -> None:
        self.limiter = limiter
        self._offer = offer
        self._node = node_name
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-ratelimit-info",
                                        daemon=True)
        self.reports = 0

    def start(self) -> RateLimitReporter:
        self._thread.start()
        return self

    def report(self) -> bool:
        """Offer one rate_limit_info now if events were dropped; whether one was offered."""
        n = self.limiter.take_unreported()
        if not n:
            return False
        self._offer([rate_limit_info_event(n, self._node, time.time_ns())])
        self.reports += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.report()


def rate_limit_export(sink: Subscriber, per_minute: int, node_name: str,
                      interval: float = 60.0) -> tuple[Subscriber, Callable[[], None]]:
    """Wire ``--export-rate-limit`` around one exporter sink.

    Returns (what to subscribe to the hub instead of ``sink``, closer). Unlimited (-1)
    returns ``sink`` itself; 0 drops everything and never reports (export disabled).
    Run the closer before closing ``sink``.
    """
    if per_minute < 0:
        return sink, lambda: None
    limiter = ExportRateLimiter(per_minute)
    wrapped = RateLimitedSubscriber(sink, limiter)
    if per_minute == 0:
        return wrapped, lambda: None
    reporter = RateLimitReporter(limiter, sink.offer, node_name, interval).start()
    return wrapped, reporter.close
