"""One GetEvents stream's bounded queue between the reader thread and its gRPC stream.

The reader thread calls :meth:`StreamSubscriber.offer` for every batch (through
``vigil.stream.hub.EventHub``); it must never wait on a client, so offer only appends the batch
(a reference: published batches are never modified) and, when the queue already holds
``max_events``, drops what does not fit and counts it. A client that stops reading (or
reads slower than events arrive) therefore loses events, counted in ``dropped``, while
the pipeline and every other subscriber go on. Filtering and encoding happen on the
stream's side (the server's event loop), so a subscriber with a narrow filter costs the
reader nothing extra. The stream side either blocks in :meth:`take` (a thread) or polls
:meth:`take_nowait` and registers a wake-up with :meth:`on_ready` (an event loop).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class StreamSubscriber:
    """Bounded, non-blocking hand-off of event batches to one GetEvents stream.

    Counters (read from any thread): ``offered`` (events handed to offer), ``dropped``
    (refused because the queue was full), ``delivered`` (written to the stream, kept
    by the server), ``queued`` (waiting now).
    """

    def __init__(self, name: str, max_events: int, peer: str = "") -> None:
        if max_events <= 0:
            raise ValueError("max_events must be positive")
        self.name = name
        self.peer = peer
        self.max_events = max_events
        self.started = time.time()
        self._batches: deque[list[Event]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.queued = 0
        self.offered = 0
        self.dropped = 0
        self.delivered = 0
        self._unreported = 0
        self._waker: Callable[[], None] | None = None

    # -- reader side -----------------------------------------------------------------

    def offer(self, batch: list[Event]) -> int:
        """Queue what fits of ``batch``; return how many events were dropped. Never blocks."""
        n = len(batch)
        with self._cond:
            if self._closed:
                return 0
            self.offered += n
            room = self.max_events - self.queued
            if room >= n:
                self._batches.append(batch)
                self.queued += n
                dropped = 0
            else:
                if room > 0:
                    self._batches.append(batch[:room])
                    self.queued += room
                dropped = n - max(room, 0)
                self.dropped += dropped
                self._unreported += dropped
            self._cond.notify()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()
        return dropped

    # -- stream side -----------------------------------------------------------------

    def take(self, timeout: float) -> tuple[list[list[Event]], int] | None:
        """Wait up to ``timeout`` s for events; return (batches, drops since the last take),
        or None once closed and empty."""
        with self._cond:
            if not self._batches and not self._closed:
                self._cond.wait(timeout)
            if not self._batches and self._closed:
                return None
            batches = list(self._batches)
            self._batches.clear()
            self.queued = 0
            lost, self._unreported = self._unreported, 0
        return batches, lost

    def take_nowait(self, max_events: int) -> tuple[list[list[Event]], int] | None:
        """Whatever is queued now, whole batches up to about ``max_events`` (at least one
        batch), and the drops since the last take; None once closed and drained."""
        with self._cond:
            if self._closed and not self._batches and not self._unreported:
                return None
            out: list[list[Event]] = []
            n = 0
            while self._batches and (not out or n + len(self._batches[0]) <= max_events):
                b = self._batches.popleft()
                out.append(b)
                n += len(b)
            self.queued -= n
            lost, self._unreported = self._unreported, 0
        return out, lost

    def on_ready(self, waker: Callable[[], None]) -> bool:
        """Call ``waker`` (once, from the offering or closing thread) when events arrive
        or the queue closes. False, without registering, if that is already so."""
        with self._cond:
            if self._batches or self._closed or self._unreported:
                return False
            self._waker = waker
            return True

    def close(self, *, discard: bool = False) -> None:
        """Stop accepting events and wake the stream (idempotent; any thread). What is
        queued can still be taken (a stopping server drains its streams), unless
        ``discard``: then it is freed and counted in ``dropped`` (the stream is gone)."""
        with self._cond:
            self._closed = True
            if discard:
                self.dropped += self.queued
                self._batches.clear()
                self.queued = 0
            self._cond.notify_all()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        return self.queued

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "peer": self.peer, "queued": self.queued,
                "capacity": self.max_events, "offered": self.offered,
                "delivered": self.delivered, "dropped": self.dropped}
