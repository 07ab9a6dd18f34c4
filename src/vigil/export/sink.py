"""Bounded hand-off from the event pipeline thread to exporter threads.

The pipeline must never block on a slow disk or a stalled stdout reader (that
would back-pressure the BPF ring buffer and lose events *before* any policy
sees them), so :meth:`QueueSink.offer` never waits: what does not fit in the
bounded queue is dropped and counted.  A worker thread takes everything queued
at once and hands it to the exporter, so exporters naturally batch under load.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

from vigil.events import encode
from vigil.export.jsonl import RateLimitedLog, RotatingFileWriter

log = logging.getLogger(__name__)

EventDict = dict[str, Any]
Handler = Callable[[list[EventDict]], None]


class QueueSink:
    """Bounded, non-blocking event queue drained by one worker thread into ``handler``.

    Counters: ``dropped`` (events refused by :meth:`offer`), ``delivered``
    (events passed to a handler call that returned), ``errors`` (handler calls
    that raised; their events are not counted as delivered).
    """

    def __init__(self, name: str, handler: Handler, max_events: int = 65536) -> None:
        if max_events <= 0:
            raise ValueError("max_events must be positive")
        self.name = name
        self.max_events = max_events
        self._handler = handler
        self._queue: deque[EventDict] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._errlog = RateLimitedLog(log)
        self.dropped = 0
        self.delivered = 0
        self.errors = 0

    def offer(self, batch: list[EventDict]) -> int:
        """Queue as much of ``batch`` as fits; return how many events were dropped. Never blocks."""
        with self._cond:
            room = 0 if self._closing else self.max_events - len(self._queue)
            if room >= len(batch):
                accepted = len(batch)
                self._queue.extend(batch)
            else:
                accepted = max(room, 0)
                self._queue.extend(batch[:accepted])
                self.dropped += len(batch) - accepted
            if accepted:
                self._cond.notify()
        return len(batch) - accepted

    def pending(self) -> int:
        """Events queued or being handled right now (not yet delivered or failed)."""
        with self._cond:
            return len(self._queue) + self._inflight

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"vigil-sink-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting events, deliver what is queued, join; return True if fully drained.

        If the worker was never started, the remaining events are delivered in
        the calling thread.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            while self._deliver_next(block=False):
                pass
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def deliver_queued(self) -> None:
        """Hand what is queued to the handler in the calling thread (a sink without a
        worker thread: benchmarks and tests)."""
        self._deliver_next(block=False)

    def _run(self) -> None:
        while self._deliver_next(block=True):
            pass

    def _deliver_next(self, *, block: bool) -> bool:
        """Hand everything queued to the handler; return False when closing and empty."""
        with self._cond:
            if block:
                self._cond.wait_for(lambda: self._queue or self._closing)
            if not self._queue:
                return False
            events = list(self._queue)
            self._queue.clear()
            self._inflight = len(events)
        try:
            self._handler(events)
        except Exception as e:  # noqa: BLE001 - an exporter's failure must not end its worker
            self.errors += 1
            self._errlog(logging.ERROR, "sink %s: handler failed: %r", self.name, e, exc_info=True)
        else:
            self.delivered += len(events)
        with self._cond:
            self._inflight = 0
        return True


# Events are encoded and written this many at a time: a few hundred KiB of lines, which
# the allocator reuses from batch to batch instead of mapping and faulting in megabytes.
CHUNK_EVENTS = 256


def chunks(events: list[EventDict]) -> list[list[EventDict]]:
    return [events[i:i + CHUNK_EVENTS] for i in range(0, len(events), CHUNK_EVENTS)]


class _EncodingExporter:
    """Shared JSON encoding: events that cannot be encoded are skipped and counted."""

    def __init__(self) -> None:
        self.encode_errors = 0
        self._enclog = RateLimitedLog(log)

    def encode(self, events: list[EventDict]) -> list[bytes]:
        """Return one JSON line (no newline) per encodable event."""
        try:
            return encode.dumps_all(events)
        except TypeError:  # orjson.JSONEncodeError subclasses TypeError
            pass
        lines = []
        for ev in events:
            try:
                lines.append(encode.dumps(ev))
            except TypeError as e:
                self.encode_errors += 1
                self._enclog(logging.ERROR, "cannot encode event to JSON: %s", e)
        return lines


class JsonlExporter(_EncodingExporter):
    """QueueSink handler writing each event as a JSON line to a :class:`RotatingFileWriter`."""

    def __init__(self, writer: RotatingFileWriter) -> None:
        super().__init__()
        self.writer = writer

    def __call__(self, events: list[EventDict]) -> None:
        for chunk in chunks(events):
            self.writer.write_lines(self.encode(chunk))

    def close(self) -> None:
        """Close the underlying file writer."""
        self.writer.close()


class StdoutExporter(_EncodingExporter):
    """QueueSink handler writing JSON lines to stdout (binary), flushed once per batch.

    Write failures (closed pipe, EIO) are counted in ``write_errors`` and logged
    rate-limited instead of raised.
    """

    def __init__(self, stream: BinaryIO | None = None) -> None:
        super().__init__()
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._errlog = RateLimitedLog(log)
        self.lines_written = 0
        self.write_errors = 0

    def __call__(self, events: list[EventDict]) -> None:
        for chunk in chunks(events):
            lines = self.encode(chunk)
            if not lines:
                continue
            lines.append(b"")
            try:
                self._stream.write(b"\n".join(lines))
            except (OSError, ValueError) as e:  # ValueError: write to closed file
                self.write_errors += 1
                self._errlog(logging.ERROR, "stdout export failed: %s", e)
                return
            self.lines_written += len(lines) - 1
        try:
            self._stream.flush()
        except (OSError, ValueError) as e:
            self.write_errors += 1
            self._errlog(logging.ERROR, "stdout export failed: %s", e)

    def close(self) -> None:
        """Flush stdout; the stream itself is not closed (it is not ours)."""
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass
