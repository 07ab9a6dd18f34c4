"""Fan-out of event batches from the reader thread to bounded subscribers.

The reader thread calls ``publish(batch)``; each subscriber's ``offer(batch)`` must
never block (``vigil.export.sink.QueueSink`` drops and counts when full), so one slow
exporter or gRPC client never stalls the pipeline or the others.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol


class Subscriber(Protocol):
    name: str

    def offer(self, batch: list[dict[str, Any]]) -> int:
        """Queue what fits, return how many events were dropped. Never blocks."""
        ...


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscriber, ...] = ()
        self.published = 0

    def subscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs = (*self._subs, sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return self._subs

    def publish(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        self.published += len(batch)
        for sub in self._subs:  # an immutable snapshot: no lock on the hot path
            sub.offer(batch)

    def wait_drained(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every subscriber that reports its
        backlog (a ``pending()`` method, as QueueSink has) has handled what it was offered;
        True if all did. For a publisher with many events ready at once (the /proc scan
        at start) that would rather hand them over in steps than hold them all."""
        deadline = time.monotonic() + timeout
        for sub in self._subs:
            pending = getattr(sub, "pending", None)
            if pending is None:
                continue
            while pending() > 0:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
        return True
