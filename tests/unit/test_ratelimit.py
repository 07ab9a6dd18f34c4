"""--export-rate-limit: token bucket, hub wrapper, rate_limit_info reports."""

from __future__ import annotations

import time
from typing import Any

import pytest

from vigil.export.ratelimit import (
    ExportRateLimiter, RateLimitedSubscriber, RateLimitReporter, rate_limit_export,
    rate_limit_info_event,
)
from vigil.export.sink import QueueSink


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A subscriber that keeps what it is offered and refuses beyond ``room``."""

    name = "rec"

    def __init__(self, room: int = 1 << 30) -> None:
        self.got: list[dict[str, Any]] = []
        self.room = room

    def offer(self, batch: list[dict[str, Any]]) -> int:
        take = batch[:max(0, self.room - len(self.got))]
        self.got.extend(take)
        return len(batch) - len(take)


def events(n: int) -> list[dict[str, Any]]:
    return [{"process_exec": {"process": {"pid": i}}} for i in range(n)]


def test_bucket_starts_full_then_refills_per_minute() -> None:
    clock = Clock()
    lim = ExportRateLimiter(60, clock)
    assert lim.admit(100) == 60
    assert lim.admit(1) == 0
    clock.t += 10  # 10 s -> 10 tokens
    assert lim.admit(100) == 10
    clock.t += 3600  # never more than a minute's worth
    assert lim.admit(1000) == 60
    assert (lim.allowed, lim.dropped) == (130, 1201 - 130)


def test_zero_admits_nothing() -> None:
    lim = ExportRateLimiter(0, Clock())
    assert lim.admit(5) == 0 and lim.dropped == 5


def test_negative_limit_is_not_a_limiter() -> None:
    with pytest.raises(ValueError):
        ExportRateLimiter(-1)


def test_unreported_is_taken_once() -> None:
    clock = Clock()
    lim = ExportRateLimiter(1, clock)
    lim.admit(4)
    assert lim.take_unreported() == 3
    assert lim.take_unreported() == 0
    assert lim.dropped == 3


def test_subscriber_passes_a_prefix_and_counts_the_rest() -> None:
    rec = Recorder()
    sub = RateLimitedSubscriber(rec, ExportRateLimiter(5, Clock()))
    assert sub.name == "rec"
    assert sub.offer(events(8)) == 3
    assert [e["process_exec"]["process"]["pid"] for e in rec.got] == [0, 1, 2, 3, 4]
    assert sub.offer(events(2)) == 2
    assert len(rec.got) == 5


def test_throttle_events_are_never_rate_limited() -> None:
    rec = Recorder()
    lim = ExportRateLimiter(1, Clock())
    sub = RateLimitedSubscriber(rec, lim)
    start = {"process_throttle": {"type": "THROTTLE_START", "cgroup": "x"}}
    assert sub.offer([*events(3), start]) == 2
    assert rec.got == [events(1)[0], start]
    assert lim.dropped == 2 and lim.take_unreported() == 2


def test_subscriber_adds_inner_drops() -> None:
    rec = Recorder(room=2)
    sub = RateLimitedSubscriber(rec, ExportRateLimiter(5, Clock()))
    assert sub.offer(events(8)) == 3 + 3  # 3 over the limit, 3 refused by a full queue


def test_rate_limit_info_shape() -> None:
    ev = rate_limit_info_event(42, "node-a", 1_700_000_000_123_456_789)
    assert ev == {"rate_limit_info": {"number_of_dropped_process_events": "42"},
                  "node_name": "node-a", "time": "2023-11-14T22:13:20.123456789Z"}
    assert list(rate_limit_info_event(1, "", 0)) == ["rate_limit_info", "time"]


def test_reporter_reports_only_when_something_was_dropped() -> None:
    rec = Recorder()
    lim = ExportRateLimiter(2, Clock())
    rep = RateLimitReporter(lim, rec.offer, "n", interval=3600)
    assert not rep.report()
    lim.admit(7)
    assert rep.report()
    assert rec.got[-1]["rate_limit_info"] == {"number_of_dropped_process_events": "5"}
    assert not rep.report()


def test_reporter_thread_reports_each_interval_and_on_close() -> None:
    rec = Recorder()
    lim = ExportRateLimiter(1, Clock())
    rep = RateLimitReporter(lim, rec.offer, "n", interval=0.05).start()
    lim.admit(3)
    for _ in range(100):
        if rec.got:
            break
        time.sleep(0.02)
    assert rec.got and rec.got[0]["rate_limit_info"]["number_of_dropped_process_events"] == "2"
    lim.admit(4)
    rep.close()  # the final report is not lost at shutdown
    assert rec.got[-1]["rate_limit_info"]["number_of_dropped_process_events"] == "4"


def test_rate_limit_export_wiring() -> None:
    got: list[list[dict[str, Any]]] = []
    sink = QueueSink("jsonl", got.append, max_events=100)
    same, close = rate_limit_export(sink, -1, "n")
    assert same is sink
    close()
    off, close = rate_limit_export(sink, 0, "n")
    assert off.offer(events(3)) == 3 and sink.pending() == 0
    close()
    limited, close = rate_limit_export(sink, 2, "n", interval=3600)
    assert limited.offer(events(5)) == 3
    close()  # reports the 3 dropped into the sink itself, bypassing the limit
    sink.close()
    flat = [e for batch in got for e in batch]
    assert len(flat) == 3
    assert flat[-1]["rate_limit_info"]["number_of_dropped_process_events"] == "3"
