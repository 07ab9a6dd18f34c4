"""Unit tests for vigil.export: rotating JSONL writer, queue sink, exporters, reader."""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from vigil.export import jsonl
from vigil.export.jsonl import BackupNaming, RateLimitedLog, RotatingFileWriter, mask_perm
from vigil.export.reader import ReadStats, follow, read
from vigil.export.sink import JsonlExporter, QueueSink, StdoutExporter

KIB_MB = 1 / 1024  # max_size_mb value giving a 1 KiB limit
TIMEOUT = 20.0  # generous upper bound only to avoid hangs


class FakeClock:
    """Deterministic clock: starts at a fixed epoch and advances ``step`` s per call."""

    def __init__(self, start: float = 1795405867.123, step: float = 1.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        t = self.now
        self.now += self.step
        return t


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: str | Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def line(i: int, pad: int = 0) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * pad})


def backups(p: Path) -> list[str]:
    naming = BackupNaming.for_path(str(p))
    return [name for _, name in naming.list_backups()]


def all_indices(path: Path) -> list[int]:
    """Indices of every event in the active file and its backups, in write order."""
    files = [path.parent / n for n in backups(path)] + [path]
    return [ev["i"] for f in files if f.exists() for ev in read(f)]


# --- permissions -------------------------------------------------------------


def test_created_0600_with_umask_0_and_private_parent_dirs(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "a" / "b" / "vigil.log"
    w = RotatingFileWriter(path)
    try:
        w.write_lines([b"{}"])
    finally:
        w.close()
    assert mode(path) == 0o600
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "b") == 0o700


def test_existing_wide_file_is_tightened_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "vigil.log"
    path.write_bytes(b'{"old":1}\n')
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="vigil.export.jsonl"):
        w = RotatingFileWriter(path)
    w.write_lines([b'{"new":2}'])
    w.close()
    assert mode(path) == 0o600
    assert any("tightening" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == b'{"old":1}\n{"new":2}\n'  # appended, not truncated


def test_perm_mask_like_tetragon(tmp_path: Path, umask0: None) -> None:
    assert mask_perm(0o777) == 0o664
    assert mask_perm(0o600) == 0o600
    path = tmp_path / "x.log"
    RotatingFileWriter(path, perm=0o777).close()
    assert mode(path) == 0o664


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    os.chmod(target, 0o644)
    link = tmp_path / "vigil.log"
    link.symlink_to(target)
    with pytest.raises(OSError):
        RotatingFileWriter(link)
    assert mode(target) == 0o644  # not chmod-ed through the link


# --- rotation ----------------------------------------------------------------


def test_backup_timestamp_format() -> None:
    naming = BackupNaming.for_path("/var/log/vigil/vigil.log")
    # 2026-11-23T03:51:07.123Z
    assert naming.backup_path(1795405867.123) == "/var/log/vigil/vigil-2026-11-23T03-51-07.123.log"
    assert BackupNaming.for_path("/x/events").backup_path(0.5) == "/x/events-1970-01-01T00-00-00.500"


def test_rotation_names_and_limits(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "vigil.log"
    clock = FakeClock()
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, max_backups=0, clock=clock)
    lines = [line(i, pad=90) for i in range(40)]  # ~100 B each -> ~10 per file
    w.write_lines(lines)
    w.close()
    names = backups(path)
    assert w.rotations == len(names) >= 3
    assert names[0] == "vigil-2026-11-23T03-51-07.123.log"
    assert names[1] == "vigil-2026-11-23T03-51-08.123.log"
    for n in names:
        assert (tmp_path / n).stat().st_size <= 1024
        assert mode(tmp_path / n) == 0o600
    assert path.stat().st_size <= 1024
    assert all_indices(path) == list(range(40))
    assert w.lines_written == 40
    assert w.bytes_written == sum(len(x) + 1 for x in lines)


def test_same_millisecond_rotations_do_not_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, max_backups=0, clock=lambda: 1000.0)
    w.write_lines([line(i, pad=600) for i in range(4)])
    w.close()
    assert backups(path) == [
        "vigil-1970-01-01T00-16-40.000.log",
        "vigil-1970-01-01T00-16-40.001.log",
        "vigil-1970-01-01T00-16-40.002.log",
    ]
    assert all_indices(path) == [0, 1, 2, 3]


def test_backups_are_pruned_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    (tmp_path / "unrelated-2020-01-01T00-00-00.000.log").write_bytes(b"")
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, max_backups=2, clock=FakeClock())
    for i in range(6):  # each line fills a file: 5 rotations
        w.write_lines([line(i, pad=700)])
    w.close()
    assert w.rotations == 5
    assert backups(path) == [
        "vigil-2026-11-23T03-51-10.123.log",
        "vigil-2026-11-23T03-51-11.123.log",
    ]
    assert all_indices(path) == [3, 4, 5]
    assert (tmp_path / "unrelated-2020-01-01T00-00-00.000.log").exists()


def test_existing_large_file_rotates_on_first_write(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    path.write_bytes(line(0, pad=1000) + b"\n")
    os.chmod(path, 0o600)
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, clock=FakeClock())
    w.write_lines([line(1)])
    w.close()
    assert w.rotations == 1
    assert all_indices(path) == [0, 1]
    assert [e["i"] for e in read(path)] == [1]


def test_compressed_backups(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(
        path, max_size_mb=KIB_MB, max_backups=3, compress=True, clock=FakeClock()
    )
    for i in range(6):
        w.write_lines([line(i, pad=700)])
    assert w.wait_idle(TIMEOUT)
    names = backups(path)
    w.close()
    assert len(names) == 3
    assert all(n.endswith(".log.gz") for n in names), names
    assert not list(tmp_path.glob("*.tmp"))
    got = []
    for n in names:
        p = tmp_path / n
        assert mode(p) == 0o600
        with gzip.open(p, "rb") as f:  # valid gzip with the exact lines
            data = f.read()
        assert data.endswith(b"\n")
        got += [orjson.loads(x)["i"] for x in data.splitlines()]
    assert got == [2, 3, 4]
    assert [e["i"] for e in read(path)] == [5]
    assert w.compress_errors == 0


def test_leftover_uncompressed_backup_is_compressed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    old = tmp_path / "vigil-2020-01-01T00-00-00.000.log"
    old.write_bytes(line(7) + b"\n")
    w = RotatingFileWriter(path, compress=True)
    assert w.wait_idle(TIMEOUT)
    w.close()
    assert not old.exists()
    assert [e["i"] for e in read(str(old) + ".gz")] == [7]


def test_huge_single_line_goes_to_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, max_backups=0, clock=FakeClock())
    big = line(1, pad=5000)
    w.write_lines([line(0), big, line(2)])
    w.close()
    names = backups(path)
    assert len(names) == 2
    assert (tmp_path / names[0]).read_bytes() == line(0) + b"\n"
    assert (tmp_path / names[1]).read_bytes() == big + b"\n"  # alone, over the limit
    assert path.read_bytes() == line(2) + b"\n"


def test_batch_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real(fd, data)

    w = RotatingFileWriter(tmp_path / "v.log")
    monkeypatch.setattr(jsonl.os, "write", counting)
    w.write_lines([line(i) for i in range(100)])
    monkeypatch.undo()
    w.close()
    assert len(calls) == 1
    assert w.lines_written == 100


def test_reopen_after_external_move(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path)
    w.write_lines([line(0)])
    os.rename(path, tmp_path / "moved.log")
    w.write_lines([line(1)])  # still goes to the moved inode
    w.reopen()
    w.write_lines([line(2)])
    w.close()
    assert [e["i"] for e in read(tmp_path / "moved.log")] == [0, 1]
    assert [e["i"] for e in read(path)] == [2]
    assert mode(path) == 0o600


# --- write errors --------------------------------------------------------------


def test_enospc_is_counted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl.os, "write", full)
    w.write_lines([line(0), line(1)])
    w.write_lines([line(2)])
    monkeypatch.undo()
    assert w.write_errors == 2
    assert w.lines_written == 0
    assert w.lines_dropped == 3
    w.write_lines([line(3)])
    w.close()
    assert [e["i"] for e in read(path)] == [3]


def test_partial_write_then_error_keeps_following_lines_parseable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path)
    real = os.write
    state = {"n": 0}

    def flaky(fd: int, data: bytes) -> int:
        state["n"] += 1
        if state["n"] == 1:
            return real(fd, bytes(data[: len(line(0)) + 1 + 5]))  # line 0 + 5 bytes of line 1
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(jsonl.os, "write", flaky)
    w.write_lines([line(0), line(1)])
    monkeypatch.undo()
    assert w.write_errors == 1
    assert (w.lines_written, w.lines_dropped) == (1, 1)
    w.write_lines([line(2)])
    w.close()
    stats = ReadStats()
    assert [e["i"] for e in read(path, stats)] == [0, 2]
    assert stats.invalid == 1


def test_rate_limited_log_suppresses(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.rl"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="t.rl"):
        assert rl(logging.ERROR, "boom %d", 1)
        assert not rl(logging.ERROR, "boom %d", 2)
        assert not rl(logging.ERROR, "boom %d", 3)
        now[0] = 11.0
        assert rl(logging.ERROR, "boom %d", 4)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["boom 1", "boom 4 (2 similar messages suppressed)"]


# --- QueueSink ----------------------------------------------------------------


def test_queue_sink_drops_beyond_capacity_and_keeps_order() -> None:
    got: list[dict] = []
    sink = QueueSink("t", got.extend, max_events=5)
    assert sink.offer([{"i": 0}, {"i": 1}, {"i": 2}]) == 0
    assert sink.offer([{"i": 3}, {"i": 4}, {"i": 5}, {"i": 6}]) == 2
    assert sink.offer([{"i": 7}]) == 1
    assert sink.dropped == 3
    assert sink.pending() == 5
    sink.start()
    assert sink.close(TIMEOUT)
    assert got == [{"i": i} for i in range(5)]
    assert sink.delivered == 5
    assert sink.pending() == 0
    assert sink.offer([{"i": 9}]) == 1  # closed: refused and counted
    assert sink.dropped == 4


def test_queue_sink_batches_and_close_drains() -> None:
    gate = threading.Event()
    calls: list[list[int]] = []

    def handler(events: list[dict]) -> None:
        gate.wait(TIMEOUT)
        calls.append([e["i"] for e in events])

    sink = QueueSink("t", handler, max_events=1000)
    sink.start()
    sink.offer([{"i": 0}])
    # worker is blocked in the handler with event 0; the rest queue up
    for i in range(1, 100):
        assert sink.offer([{"i": i}]) == 0
    gate.set()
    assert sink.close(TIMEOUT)
    assert [i for c in calls for i in c] == list(range(100))
    assert len(calls) < 100  # events queued while busy were handed over together
    assert sink.delivered == 100
    assert sink.dropped == 0


def test_queue_sink_counts_handler_errors_and_continues() -> None:
    got: list[int] = []

    def handler(events: list[dict]) -> None:
        if events[0]["i"] == 0:
            raise RuntimeError("boom")
        got.extend(e["i"] for e in events)

    sink = QueueSink("t", handler)
    sink.offer([{"i": 0}])
    sink.start()
    wait_until(lambda: sink.errors == 1, "handler error")
    sink.offer([{"i": 1}, {"i": 2}])
    assert sink.close(TIMEOUT)
    assert sink.errors == 1
    assert got == [1, 2]
    assert sink.delivered == 2


def test_queue_sink_close_without_start_delivers_inline() -> None:
    got: list[dict] = []
    sink = QueueSink("t", got.extend)
    sink.offer([{"a": 1}])
    assert sink.close()
    assert got == [{"a": 1}]


# --- exporters ------------------------------------------------------------------


def test_jsonl_exporter_through_sink(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "out" / "vigil.log"
    exporter = JsonlExporter(RotatingFileWriter(path))
    sink = QueueSink("jsonl", exporter)
    sink.start()
    events = [{"process_exec": {"process": {"pid": i}}, "time": "t"} for i in range(50)]
    sink.offer(events[:25])
    sink.offer(events[25:] + [{"bad": {1, 2}}])  # a set is not JSON-encodable
    assert sink.close(TIMEOUT)
    exporter.close()
    assert list(read(path)) == events
    assert exporter.encode_errors == 1
    assert mode(path) == 0o600


def test_stdout_exporter_writes_lines_and_flushes() -> None:
    class Stream(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            Stream.flushes += 1

    s = Stream()
    exp = StdoutExporter(s)
    exp([{"a": 1}, {"b": "x"}])
    exp([{"c": None}])
    assert s.getvalue() == b'{"a":1}\n{"b":"x"}\n{"c":null}\n'
    assert Stream.flushes == 2
    assert exp.lines_written == 3
    exp.close()


def test_stdout_exporter_counts_broken_pipe() -> None:
    class Broken(io.RawIOBase):
        def write(self, b: object) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    exp = StdoutExporter(Broken())  # type: ignore[arg-type]
    exp([{"a": 1}])
    assert exp.write_errors == 1
    assert exp.lines_written == 0


# --- reader ---------------------------------------------------------------------


def test_read_gz_and_invalid_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.log.gz"
    with gzip.open(p, "wb") as f:
        f.write(b'{"i":0}\nnot json\n[1,2]\n\n{"i":1}')  # last line has no newline
    stats = ReadStats()
    assert [e["i"] for e in read(p, stats)] == [0, 1]
    assert (stats.lines, stats.invalid) == (2, 2)


def _collect(it: Iterator[dict], out: queue.Queue) -> None:
    for ev in it:
        out.put(ev)


def _start_follower(path: Path, stop: threading.Event, stats: ReadStats, **kw: object) -> tuple[
    threading.Thread, queue.Queue
]:
    out: queue.Queue = queue.Queue()
    it = follow(path, poll_interval=0.01, stop=stop, stats=stats, **kw)  # type: ignore[arg-type]
    t = threading.Thread(target=_collect, args=(it, out), daemon=True)
    t.start()
    return t, out


def wait_until(pred: Callable[[], bool], what: str) -> None:
    """Poll ``pred`` until true; fail (instead of hanging) after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _wait_polls(stats: ReadStats, more: int) -> None:
    """Wait until the follower hit EOF ``more`` more times (it has consumed what exists)."""
    target = stats.polls + more
    wait_until(lambda: stats.polls >= target, "follower poll")


def test_follow_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "v.log"
    path.write_bytes(b'{"i":0}\n{"i":')
    stop, stats = threading.Event(), ReadStats()
    t, out = _start_follower(path, stop, stats)
    assert out.get(timeout=TIMEOUT) == {"i": 0}
    _wait_polls(stats, 2)
    assert out.empty()  # the fragment is held back
    with open(path, "ab") as f:
        f.write(b'1}\n{"i":2}\n')
    assert out.get(timeout=TIMEOUT) == {"i": 1}
    assert out.get(timeout=TIMEOUT) == {"i": 2}
    stop.set()
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert stats.invalid == 0


def test_follow_from_end_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "v.log"
    path.write_bytes(b'{"i":0}\n' * 10)
    stop, stats = threading.Event(), ReadStats()
    t, out = _start_follower(path, stop, stats, from_start=False)
    _wait_polls(stats, 1)
    with open(path, "ab") as f:
        f.write(b'{"i":1}\n')
    assert out.get(timeout=TIMEOUT) == {"i": 1}
    _wait_polls(stats, 1)
    with open(path, "wb") as f:  # copytruncate-style
        f.write(b'{"i":2}\n')
    assert out.get(timeout=TIMEOUT) == {"i": 2}
    stop.set()
    t.join(TIMEOUT)
    assert stats.truncations == 1
    assert out.empty()


def test_follow_across_rotations_with_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "vigil.log"
    w = RotatingFileWriter(path, max_size_mb=KIB_MB, max_backups=2, clock=FakeClock())
    stop, stats = threading.Event(), ReadStats()
    total = 60
    progress = threading.Condition()
    seen: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        # Lock-step with the reader so at most one rotation happens between its polls
        # (a follower, like tail -F, cannot see a generation rotated away unseen).
        try:
            for i in range(0, total, 3):
                w.write_lines([line(j, pad=150) for j in range(i, i + 3)])
                with progress:
                    assert progress.wait_for(lambda n=i + 3: len(seen) >= n, TIMEOUT)
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)
        finally:
            stop.set()

    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    for ev in follow(path, poll_interval=0.005, stop=stop, stats=stats):
        with progress:
            seen.append(ev["i"])
            progress.notify_all()
    wt.join(TIMEOUT)
    w.close()
    assert not errors
    assert seen == list(range(total))
    assert w.rotations >= 8
    assert stats.rotations == w.rotations
    assert stats.invalid == 0


def test_follow_waits_for_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    stop, stats = threading.Event(), ReadStats()
    t, out = _start_follower(path, stop, stats, from_start=False)
    _wait_polls(stats, 1)
    w = RotatingFileWriter(path)
    w.write_lines([line(5)])
    w.close()
    assert out.get(timeout=TIMEOUT)["i"] == 5  # a file appearing later is read from its start
    stop.set()
    t.join(TIMEOUT)


def test_follow_from_end_mid_line_skips_fragment(tmp_path: Path) -> None:
    path = tmp_path / "v.log"
    path.write_bytes(b'{"i":0}\n{"i":')
    stop, stats = threading.Event(), ReadStats()
    t, out = _start_follower(path, stop, stats, from_start=False)
    _wait_polls(stats, 1)
    with open(path, "ab") as f:
        f.write(b'1}\n{"i":2}\n')
    assert out.get(timeout=TIMEOUT) == {"i": 2}
    stop.set()
    t.join(TIMEOUT)
    assert stats.invalid == 0
    assert out.empty()
