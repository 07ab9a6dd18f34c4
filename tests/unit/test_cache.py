"""Unit tests for vigil.process.cache.ProcessCache."""

from __future__ import annotations

import threading

import pytest

from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import Credentials, ProcessInfo

GRACE = 1000


class FakeClock:
    """Manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def mk(pid: int, ktime: int, parent: ProcessInfo | None = None) -> ProcessInfo:
    return ProcessInfo(
        exec_id=exec_id("node", ktime, pid),
        pid=pid,
        tid=pid,
        ktime=ktime,
        start_time_ns=ktime,
        binary=f"/bin/p{pid}",
        parent_exec_id=parent.exec_id if parent else "",
        ppid=parent.pid if parent else 0,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> ProcessCache:
    return ProcessCache(capacity=100, grace_ns=GRACE, clock=clock)


def test_add_get_current_and_counters(cache: ProcessCache) -> None:
    p = mk(10, 5)
    cache.add(p)
    assert cache.get(p.exec_id) is p
    assert cache.current(10) is p
    assert cache.get("nope") is None
    assert cache.current(11) is None
    assert (cache.hits, cache.misses) == (2, 2)
    assert len(cache) == 1 and p.exec_id in cache
    assert p.refcnt == 1


def test_duplicate_add_keeps_first(cache: ProcessCache) -> None:
    p = mk(10, 5)
    cache.add(p)
    dup = mk(10, 5)
    dup.binary = "/other"
    cache.add(dup)
    assert len(cache) == 1
    assert cache.get(p.exec_id) is p
    assert p.refcnt == 1


def test_parent_reference_counting(cache: ProcessCache) -> None:
    parent = mk(10, 1)
    cache.add(parent)
    a, b = mk(11, 2, parent), mk(12, 3, parent)
    cache.add(a)
    cache.add(b)
    assert parent.refcnt == 3
    assert a.refcnt == 1


def test_missing_parent_takes_no_reference_and_late_parent_is_not_decremented(
    cache: ProcessCache, clock: FakeClock
) -> None:
    parent = mk(10, 1)
    child = mk(11, 2, parent)
    cache.add(child)           # parent unknown at this point: no reference taken
    cache.add(parent)
    assert parent.refcnt == 1
    cache.mark_exited(11, 0)
    clock.now = GRACE
    cache.gc()
    assert cache.get(child.exec_id) is None
    assert parent.refcnt == 1  # must not have been decremented
    assert cache.get(parent.exec_id) is parent


def test_mark_exited_and_duplicate_exit(cache: ProcessCache) -> None:
    p = mk(10, 1)
    cache.add(p)
    assert cache.mark_exited(10, 777) is p
    assert p.exited and p.exit_time_ns == 777
    assert p.refcnt == 0
    assert cache.mark_exited(10, 778) is None
    assert p.exit_time_ns == 777
    assert cache.mark_exited(99, 1) is None
    # still resolvable during the grace period, by exec_id and by pid
    assert cache.get(p.exec_id) is p
    assert cache.current(10) is p


def test_grace_period(cache: ProcessCache, clock: FakeClock) -> None:
    p = mk(10, 1)
    cache.add(p)
    clock.now = 500
    cache.mark_exited(10, 0)
    assert cache.gc(500 + GRACE - 1) == 0
    assert cache.get(p.exec_id) is p
    assert cache.gc(500 + GRACE) == 1
    assert cache.get(p.exec_id) is None
    assert cache.current(10) is None
    assert len(cache) == 0
    assert cache.evictions == 1


def test_gc_defaults_to_clock(cache: ProcessCache, clock: FakeClock) -> None:
    cache.add(mk(10, 1))
    cache.mark_exited(10, 0)
    clock.now = GRACE - 1
    assert cache.gc() == 0
    clock.now = GRACE
    assert cache.gc() == 1


def test_exited_parent_kept_while_child_lives(cache: ProcessCache, clock: FakeClock) -> None:
    parent = mk(10, 1)
    child = mk(11, 2, parent)
    cache.add(parent)
    cache.add(child)
    cache.mark_exited(10, 0)
    clock.now = 10 * GRACE
    cache.gc()
    assert cache.get(parent.exec_id) is parent
    cache.mark_exited(11, 0)
    clock.now = 11 * GRACE
    assert cache.gc() == 1                    # child goes, parent's grace restarts now
    assert cache.get(child.exec_id) is None
    assert cache.get(parent.exec_id) is parent
    assert parent.refcnt == 0
    clock.now = 12 * GRACE
    assert cache.gc() == 1
    assert len(cache) == 0


def test_reexec_replaces_current_and_releases_previous(cache: ProcessCache, clock: FakeClock) -> None:
    shell = mk(5, 1)
    first = mk(10, 2, shell)     # clone of the shell
    second = mk(10, 3, shell)    # the same pid exec'd
    for p in (shell, first, second):
        cache.add(p)
    assert cache.current(10) is second
    assert first.refcnt == 0 and not first.exited
    assert cache.get(first.exec_id) is first
    # a later exit applies to the current instance only
    assert cache.mark_exited(10, 9) is second
    assert not first.exited
    clock.now = GRACE
    assert cache.gc() == 2
    assert cache.get(first.exec_id) is None and cache.get(second.exec_id) is None
    assert shell.refcnt == 1


def test_reexec_chain_parent_is_previous_instance(cache: ProcessCache, clock: FakeClock) -> None:
    first = mk(10, 2)
    second = mk(10, 3, first)
    cache.add(first)
    cache.add(second)
    assert first.refcnt == 1      # only the child reference; self reference released
    clock.now = 5 * GRACE
    cache.gc()
    assert cache.get(first.exec_id) is first


def test_stale_add_does_not_become_current(cache: ProcessCache, clock: FakeClock) -> None:
    newer = mk(10, 50)
    older = mk(10, 40)
    cache.add(newer)
    cache.add(older)
    assert cache.current(10) is newer
    assert newer.refcnt == 1 and older.refcnt == 0
    clock.now = GRACE
    assert cache.gc() == 1
    assert cache.get(older.exec_id) is None
    assert cache.current(10) is newer


def test_late_child_revives_exited_parent(cache: ProcessCache, clock: FakeClock) -> None:
    parent = mk(10, 1)
    cache.add(parent)
    cache.mark_exited(10, 0)
    clock.now = GRACE // 2
    cache.add(mk(11, 2, parent))
    clock.now = 10 * GRACE
    assert cache.gc() == 0
    assert cache.get(parent.exec_id) is parent


def _chain(cache: ProcessCache, pids: list[int]) -> list[ProcessInfo]:
    out: list[ProcessInfo] = []
    parent = None
    for i, pid in enumerate(pids):
        p = mk(pid, i + 1, parent)
        cache.add(p)
        out.append(p)
        parent = p
    return out


def test_ancestors_start_at_grandparent_and_stop_at_init(cache: ProcessCache) -> None:
    kernel, init, a, b, c, d = _chain(cache, [0, 1, 50, 60, 70, 80])
    assert [p.pid for p in cache.ancestors(d)] == [60, 50, 1]
    assert cache.ancestors(c) == [a, init]
    assert cache.ancestors(b) == [init]
    assert cache.ancestors(a) == []       # parent is init: nothing above it
    assert cache.ancestors(init) == []
    assert kernel not in cache.ancestors(d)


def test_ancestors_stop_at_kthreadd(cache: ProcessCache) -> None:
    _, kthreadd, worker, helper = _chain(cache, [0, 2, 300, 301])
    assert cache.ancestors(helper) == [kthreadd]


def test_ancestors_limit_missing_link_and_cycle(cache: ProcessCache) -> None:
    procs = _chain(cache, [1] + list(range(100, 120)))
    leaf = procs[-1]
    assert len(cache.ancestors(leaf)) == 19
    assert [p.pid for p in cache.ancestors(leaf, limit=3)] == [117, 116, 115]
    assert cache.ancestors(leaf, limit=0) == []
    # missing link: an orphan whose parent is not cached
    orphan = mk(500, 99, mk(499, 98))
    cache.add(orphan)
    assert cache.ancestors(orphan) == []
    # cycle: x -> y -> x (corrupt data must not hang)
    x, y = mk(600, 200), mk(601, 201)
    x.parent_exec_id, y.parent_exec_id = y.exec_id, x.exec_id
    cache.add(x)
    cache.add(y)
    z = mk(602, 202, y)
    cache.add(z)
    assert cache.ancestors(z) == [x]


def test_capacity_evicts_evictable_first(clock: FakeClock) -> None:
    cache = ProcessCache(capacity=3, grace_ns=GRACE, clock=clock)
    a, b, c, d = mk(1, 1), mk(2, 2), mk(3, 3), mk(4, 4)
    for p in (a, b, c):
        cache.add(p)
    cache.mark_exited(2, 0)      # b still within its grace period, but evictable
    cache.add(d)
    assert len(cache) == 3
    assert cache.get(b.exec_id) is None
    assert cache.get(a.exec_id) is a
    assert (cache.evictions, cache.early_evictions) == (1, 0)


def test_capacity_early_evicts_oldest_live_and_releases_parent(clock: FakeClock) -> None:
    cache = ProcessCache(capacity=3, grace_ns=GRACE, clock=clock)
    parent = mk(1, 1)
    child = mk(2, 2, parent)
    cache.add(parent)
    cache.add(child)
    cache.add(mk(3, 3))
    cache.add(mk(4, 4))          # nothing evictable: parent (oldest added) goes
    assert cache.early_evictions == 1
    assert cache.get(parent.exec_id) is None
    assert cache.current(1) is None
    assert len(cache) == 3
    # child removal later must not fail on its vanished parent
    cache.mark_exited(2, 0)
    clock.now = GRACE
    assert cache.gc() == 1


def test_capacity_eviction_of_child_releases_exited_parent(clock: FakeClock) -> None:
    cache = ProcessCache(capacity=2, grace_ns=GRACE, clock=clock)
    parent = mk(10, 1)
    child = mk(11, 2, parent)
    cache.add(parent)
    cache.add(child)
    cache.mark_exited(10, 0)
    assert parent.refcnt == 1           # held by the child
    cache.mark_exited(11, 0)
    cache.add(mk(12, 3))                # over capacity: the evictable child goes
    assert cache.get(child.exec_id) is None
    assert cache.get(parent.exec_id) is parent
    assert parent.refcnt == 0
    assert (cache.evictions, cache.early_evictions) == (1, 0)
    clock.now = GRACE
    assert cache.gc() == 1
    assert cache.get(parent.exec_id) is None


def test_churn_stays_bounded() -> None:
    clock = FakeClock()
    cache = ProcessCache(capacity=1000, grace_ns=GRACE, clock=clock)
    shell = mk(1, 1)
    cache.add(shell)
    for i in range(200_000):
        clock.now = i
        pid = 2 + (i % 30000)              # pids wrap and get reused
        cache.add(mk(pid, i + 10, shell))
        cache.mark_exited(pid, i)
        if i % 5000 == 0:
            cache.gc()
        assert len(cache) <= 1000
    for internal in (cache._current, cache._evictable):
        assert len(internal) <= 1000
    clock.now += GRACE
    cache.gc()
    assert len(cache) == 1 and cache.get(shell.exec_id) is shell
    assert all(not p.exited for p in cache.snapshot())
    assert shell.refcnt == 1
    assert cache.early_evictions == 0
    assert cache.evictions == 200_000


def test_churn_without_exits_uses_early_eviction() -> None:
    cache = ProcessCache(capacity=1000, grace_ns=GRACE, clock=FakeClock())
    for i in range(20_000):
        cache.add(mk(10 + i, i + 1))
    assert len(cache) == 1000
    assert cache.early_evictions == 19_000
    assert len(cache._current) == 1000


def test_concurrent_readers_do_not_crash() -> None:
    cache = ProcessCache(capacity=500, grace_ns=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in cache.snapshot():
                    cache.get(p.exec_id)
                    cache.ancestors(p)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        prev = None
        for i in range(5_000):
            p = mk(10 + i % 2000, i + 1, prev)
            cache.add(p)
            if i % 3:
                cache.mark_exited(p.pid, i)
            if i % 100 == 0:
                cache.gc()
            prev = p
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len(cache) <= 500


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ProcessCache(capacity=0)
    with pytest.raises(ValueError):
        ProcessCache(grace_ns=-1)


def test_clone_record_replaced_by_its_exec_goes_at_once(cache: ProcessCache) -> None:
    """A fork child's clone-only record is dropped when its exec arrives (no grace
    period): nothing names it afterwards."""
    parent = mk(10, 1)
    cache.add(parent)
    clone = mk(11, 2, parent)
    clone.forked = True
    cache.add(clone)
    execd = mk(11, 3, parent)
    cache.add(execd)
    assert clone.exec_id not in cache
    assert cache.current(11) is execd
    assert parent.refcnt == 2  # its own reference and the exec'd child's


def test_clone_record_with_children_waits_for_them(cache: ProcessCache, clock: FakeClock) -> None:
    """A clone-only record that forked children before its exec stays while they hold it."""
    parent = mk(10, 1)
    cache.add(parent)
    clone = mk(11, 2, parent)
    clone.forked = True
    cache.add(clone)
    grandchild = mk(12, 3, clone)
    cache.add(grandchild)
    cache.add(mk(11, 4, parent))
    assert clone.exec_id in cache
    assert cache.ancestors(grandchild) == [parent]


def test_generation_changes_with_the_table_only(cache: ProcessCache, clock: FakeClock) -> None:
    """What the writer reads may be reused while ``generation`` is unchanged: every change
    (add, exit, credentials, eviction) moves it, lookups and ignored calls do not."""
    seen = [cache.generation]

    def moved() -> bool:
        seen.append(cache.generation)
        return seen[-1] != seen[-2]

    parent = mk(1, 10)
    cache.add(parent)
    assert moved()
    child = mk(2, 20, parent)
    cache.add(child)
    assert moved()
    cache.add(mk(2, 20, parent))  # the same exec_id again: ignored
    cache.get(child.exec_id)
    cache.current(2)
    cache.writer_current(2)
    cache.writer_get(parent.exec_id)
    cache.current_and_parent(2)
    assert not moved()
    cache.mark_exited(2, 5)
    assert moved()
    cache.mark_exited(2, 6)  # a second exit: ignored
    assert not moved()
    cache.update_creds(parent, Credentials(uid=1), None)
    assert moved()
    assert cache.gc() == 0
    assert not moved()
    clock.now += GRACE + 1
    assert cache.gc() == 1
    assert moved()
