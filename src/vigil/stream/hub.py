"""Fan-out of event batches from the reader thread to bounded subscribers.

The reader thread calls ``publish(batch)``; each subscriber's ``offer(batch)`` must
never block (``vigil.export.sink.QueueSink`` drops and counts when full), so one slow
exporter or gRPC client never stalls the pipeline or the others.
"""

from __future__ import annotations

import threading
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
