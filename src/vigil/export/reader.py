"""Read JSON-lines export files, once (``read``) or tail-style across rotations (``follow``).

Used by the CLI (``getevents`` from a file) and by tests that check the agent's
output.  Lines that are not a JSON object are skipped and counted in
:class:`ReadStats` rather than aborting the stream: a disk-full episode in the
writer can leave one truncated line behind.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

_CHUNK = 256 * 1024


@dataclass
class ReadStats:
    """Counters updated while reading: good lines, skipped invalid lines, rotations, EOF polls."""

    lines: int = 0
    invalid: int = 0
    rotations: int = 0
    truncations: int = 0
    polls: int = 0


def _parse(line: bytes, stats: ReadStats) -> dict[str, Any] | None:
    """Decode one line to a dict; blank lines are ignored, anything else non-object is invalid."""
    if not line.strip():
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        stats.invalid += 1
        return None
    stats.lines += 1
    return obj


def _parse_all(lines: Iterable[bytes], stats: ReadStats) -> Iterator[dict[str, Any]]:
    for line in lines:
        obj = _parse(line, stats)
        if obj is not None:
            yield obj


def read(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield every JSON object in ``path`` (gzip if it ends in ``.gz``), without following.

    A final line without a trailing newline is still parsed.
    """
    stats = stats if stats is not None else ReadStats()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from _parse_all(f, stats)


class _Tail:
    """One open generation of the followed file plus its not-yet-terminated line fragment."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        st = os.fstat(f.fileno())
        self.ident = (st.st_dev, st.st_ino)
        self.partial = b""
        self.skip_fragment = False  # started mid-line: drop the first (tail) fragment

    def seek_end(self) -> None:
        """Start at the end; if that is mid-line, skip the rest of that line."""
        end = self.f.seek(0, os.SEEK_END)
        if end > 0:
            self.f.seek(end - 1)
            self.skip_fragment = self.f.read(1) != b"\n"

    def restart(self) -> None:
        """Read again from offset 0 (the file was truncated)."""
        self.f.seek(0)
        self.partial = b""
        self.skip_fragment = False

    def read_lines(self) -> list[bytes] | None:
        """Return complete lines read now; None at EOF (nothing new)."""
        data = self.f.read(_CHUNK)
        if not data:
            return None
        parts = (self.partial + data).split(b"\n")
        self.partial = parts.pop()
        if self.skip_fragment and parts:
            self.skip_fragment = False
            del parts[0]
        return parts

    def close(self) -> None:
        self.f.close()


def _open_tail(path: str) -> _Tail | None:
    try:
        return _Tail(open(path, "rb"))
    except FileNotFoundError:
        return None


def _identity(path: str) -> tuple[int, int, int] | None:
    """Return (dev, ino, size) of ``path`` or None if it does not exist right now."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size


def follow(
    path: str | os.PathLike[str],
    *,
    from_start: bool = True,
    poll_interval: float = 0.2,
    stop: threading.Event | None = None,
    stats: ReadStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield JSON objects from ``path`` as they are appended, like ``tail -F``.

    * ``from_start=False`` skips the content present when the file is first
      opened; files that appear later (after rotation) are read from the start.
    * Rotation (the path now names another inode) is handled by draining the
      old file, then switching; truncation (same inode, smaller size) restarts
      at offset 0.  If the file is rotated twice between two polls the middle
      generation is not seen (as with ``tail -F``).
    * A line is only parsed once its ``\\n`` arrived; a fragment left at the end
      of a rotated-away file is parsed as a final line.
    * ``stop`` is checked whenever the reader has caught up (EOF): everything
      written before ``stop`` was set and before that EOF is yielded first.
      Without ``stop`` the generator runs until closed by the consumer.
    * A missing file is waited for.
    """
    path = os.fspath(path)
    stats = stats if stats is not None else ReadStats()
    tail = _open_tail(path)
    if tail is not None and not from_start:
        tail.seek_end()
    try:
        while True:
            if tail is None:
                tail = _open_tail(path)
            lines = tail.read_lines() if tail is not None else None
            if lines is not None:
                yield from _parse_all(lines, stats)
                continue
            if tail is not None:
                tail, changed = yield from _check_rotation(path, tail, stats)
                if changed:
                    continue
            if stop is not None and stop.is_set():
                return
            stats.polls += 1
            if stop is not None:
                stop.wait(poll_interval)
            else:
                time.sleep(poll_interval)
    finally:
        if tail is not None:
            tail.close()


def _check_rotation(
    path: str, tail: _Tail, stats: ReadStats
) -> Generator[dict[str, Any], None, tuple[_Tail | None, bool]]:
    """At EOF: detect truncation or replacement of ``path``.

    Returns the tail to continue with and whether it changed position/file
    (then there may be data to read right away).

    A generator (``yield from``) because draining the old file yields events.
    """
    ident = _identity(path)
    if ident is None:
        return tail, False  # between rename and re-create: keep the old file for now
    if ident[:2] == tail.ident:
        if ident[2] >= tail.f.tell():
            return tail, False
        stats.truncations += 1
        tail.restart()
        return tail, True
    # Replaced: the writer no longer appends to the old inode, so drain it.
    while (lines := tail.read_lines()) is not None:
        yield from _parse_all(lines, stats)
    if tail.partial:
        yield from _parse_all([tail.partial], stats)
    tail.close()
    stats.rotations += 1
    return _open_tail(path), True  # None if it vanished again: the loop retries
