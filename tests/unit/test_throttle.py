"""--cgroup-rate, user-space half: parsing, THROTTLE records, pipeline behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.abi._generated import (
    VG_CLONE_MSG, VG_EXIT_MSG, VG_THROTTLE_MSG, HdrFlag, MsgOp, ThrottleType,
)
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.process.cache import ProcessCache
from vigil.process.model import ProcessInfo
from vigil.stream.throttle import (
    CgroupNames, CgroupRate, ThrottleTracker, cgroup2_mount, decode_throttle, parse_cgroup_rate,
    parse_duration,
)


def throttle_rec(kind: int, cgid: int, name: str = "", dropped: int = 0,
                 ktime: int = 5_000_000_000) -> bytes:
    raw = name.encode()
    return VG_THROTTLE_MSG.pack(MsgOp.THROTTLE, 0, 0, VG_THROTTLE_MSG.size, ktime, cgid, kind,
                                len(raw), 0, dropped, raw.ljust(256, b"\0"))


def exit_rec(pid: int, flags: int = 0) -> bytes:
    return VG_EXIT_MSG.pack(MsgOp.EXIT, flags, 0, VG_EXIT_MSG.size, 9_000_000_000, pid, pid,
                            0, 0)


def clone_rec(pid: int, ppid: int, start: int) -> bytes:
    return VG_CLONE_MSG.pack(MsgOp.CLONE, 0, 0, VG_CLONE_MSG.size, start, pid, pid, ppid, 0,
                             start)


def pipeline(resolve: dict[int, str] | None = None) -> Pipeline:
    names = resolve or {}
    return Pipeline(ProcessCache(), EventOptions(node_name="node"), lambda: 1_700_000_000 * 10**9,
                    ThrottleTracker(resolve=lambda i: names.get(i, "")))


# --------------------------------------------------------------------------- parsing

def test_parse_duration() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("2h") == 7200.0
    for bad in ("", "1", "s", "1x", "1s x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_parse_cgroup_rate() -> None:
    assert parse_cgroup_rate("") is None
    r = parse_cgroup_rate("1000,1s")
    assert r == CgroupRate(1000, 1.0, 5.0)
    assert (r.interval_ns, r.quiet_ns) == (10**9, 5 * 10**9)
    assert parse_cgroup_rate("100,1m", quiet_s=2).quiet_s == 2
    for bad in ("1000", "x,1s", "0,1s", "10,0s", "1,2,3"):
        with pytest.raises(ValueError):
            parse_cgroup_rate(bad)


def test_sweep_interval_follows_quiet_period() -> None:
    assert CgroupRate(1, 1, 5).sweep_interval_s == 1.0
    assert CgroupRate(1, 1, 0.2).sweep_interval_s == 0.1


# --------------------------------------------------------------------------- records

def test_decode_throttle() -> None:
    r = decode_throttle(throttle_rec(ThrottleType.START, 77, "flood.scope"))
    assert (r.cgroup_id, r.type, r.name, r.dropped) == (77, ThrottleType.START, "flood.scope", 0)
    with pytest.raises(ValueError):
        decode_throttle(throttle_rec(1, 1)[:40])


def test_start_stop_events() -> None:
    p = pipeline()
    evs = p.handle([throttle_rec(ThrottleType.START, 77, "flood.scope"),
                    throttle_rec(ThrottleType.STOP, 77, dropped=123)])
    assert evs[0]["process_throttle"] == {"type": "THROTTLE_START", "cgroup": "flood.scope"}
    assert evs[1]["process_throttle"] == {"type": "THROTTLE_STOP", "cgroup": "flood.scope"}
    assert evs[0]["node_name"] == "node" and evs[0]["time"].startswith("2023-11-14T22:13:25")
    t = p.throttle
    assert (t.starts, t.stops, t.dropped, t.throttled_now) == (1, 1, 123, 0)
    assert t.cgroups[77].dropped == 123


def test_duplicate_start_is_not_exported() -> None:
    p = pipeline()
    evs = p.handle([throttle_rec(ThrottleType.START, 5, "a"),
                    throttle_rec(ThrottleType.START, 5, "a")])
    assert len(evs) == 1 and p.throttle.duplicate_starts == 1
    assert p.throttle.throttled_now == 1


def test_stop_without_start_resolves_the_name() -> None:
    p = pipeline({42: "late.scope"})
    ev = p.handle([throttle_rec(ThrottleType.STOP, 42, dropped=3)])[0]
    assert ev["process_throttle"] == {"type": "THROTTLE_STOP", "cgroup": "late.scope"}


def test_bad_throttle_record_is_counted() -> None:
    p = pipeline()
    assert p.handle([throttle_rec(1, 1)[:30]]) == []
    assert p.decode_errors[MsgOp.THROTTLE] == 1


def test_tracker_keeps_bounded_stats() -> None:
    t = ThrottleTracker(resolve=lambda _i: "", max_cgroups=3)
    for i in range(10):
        t.on_record(decode_throttle(throttle_rec(ThrottleType.START, i, f"c{i}")))
    assert list(t.cgroups) == [7, 8, 9] and t.starts == 10
    assert t.throttled_now == 3  # forgotten cgroups are no longer counted
    t.on_record(decode_throttle(throttle_rec(ThrottleType.STOP, 9)))
    assert t.throttled_now == 2


# --------------------------------------------------------------------------- exits

def seed(p: Pipeline, pid: int, cgid: int) -> None:
    p.cache.add(ProcessInfo(exec_id=f"id{pid}", pid=pid, tid=pid, ktime=1, start_time_ns=1,
                            binary="/bin/sh", cgroup_id=cgid))


def test_throttled_exit_updates_the_cache_but_exports_nothing() -> None:
    p = pipeline()
    seed(p, 100, 9)
    p.handle([throttle_rec(ThrottleType.START, 9, "x"), clone_rec(101, 100, 2_000_000_000)])
    assert p.handle([exit_rec(101, HdrFlag.THROTTLED)]) == []
    assert p.cache.current(101).exited  # type: ignore[union-attr]
    assert p.throttle.exits_suppressed == 1 and p.throttle.cgroups[9].exits_suppressed == 1
    evs = p.handle([exit_rec(100)])  # unflagged: exported as usual
    assert "process_exit" in evs[0]


def test_pipeline_add_handler() -> None:
    p = pipeline()
    p.add_handler(MsgOp.GENERIC_TRACEPOINT, lambda rec: {"test": {"n": len(rec)}})
    assert p.handle([bytes([MsgOp.GENERIC_TRACEPOINT]) + b"xyz"]) == [{"test": {"n": 4}}]


# --------------------------------------------------------------------------- names

def test_cgroup_names_by_inode(tmp_path: Path) -> None:
    (tmp_path / "a" / "b.scope").mkdir(parents=True)
    ino = os.stat(tmp_path / "a" / "b.scope").st_ino
    names = CgroupNames(str(tmp_path))
    assert names(ino) == "b.scope"
    assert names(os.stat(tmp_path).st_ino) == "/"
    assert names(1 << 60) == ""
    assert CgroupNames(str(tmp_path), max_dirs=1)(ino) == ""  # the walk is bounded


def test_cgroup2_mount(tmp_path: Path) -> None:
    m = tmp_path / "mounts"
    m.write_text("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
                 "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert cgroup2_mount(str(m)) == "/sys/fs/cgroup/unified"
    m.write_text("")
    assert cgroup2_mount(str(m)) is None
