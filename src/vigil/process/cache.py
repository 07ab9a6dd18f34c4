"""The agent's bounded process table: exec_id -> ProcessInfo, pid -> current instance.

Threading model
---------------
There is exactly one writer, the pipeline thread, which calls ``add``, ``mark_exited``,
``update_creds`` and ``gc``. Other threads (gRPC, metrics, debug dumps) may only read
through ``get``/``current``/``ancestors``/``snapshot``; every public method takes
``ProcessCache.lock`` (a plain, non-reentrant ``threading.Lock``; an uncontended
acquire costs tens of nanoseconds), except the writer's own lookups
(``writer_current``, ``writer_get``, ``current_and_parent``): the one thread that
changes the table needs no lock to read it. ``generation`` changes with every change
to the table, so the writer may reuse what a lookup found while it is the same. Returned ``ProcessInfo`` objects are shared:
treat them as read-only, and expect their bookkeeping fields (``refcnt``,
``exited``, ``exit_time_ns``) to change under you.

Reference counting
------------------
``ProcessInfo.refcnt`` counts what keeps an instance alive:

* 1 while it is the *current*, not-yet-exited instance of its pid (its "self"
  reference), dropped on exit or when a newer instance of the same pid (a later
  exec, or a clone followed by exec) replaces it;
* 1 per child instance in the cache whose ``parent_exec_id`` names it, taken when
  the child is added (only if the parent is already cached) and dropped when the
  child is removed.

An instance whose refcnt reaches 0 is *evictable*. It stays resolvable by exec_id
(and by pid while still current) for ``grace_ns`` so that late events resolve, then
``gc`` removes it; removing it drops its own reference on its parent, which may make
the parent evictable in turn (with a fresh grace period).

Grace periods are judged on the cache's ``clock`` (default ``time.monotonic_ns``):
an instance is stamped with ``clock()`` when it becomes evictable, and ``gc(now_ns)``
removes those stamped at or before ``now_ns - grace_ns``. Pass ``now_ns`` from the
same clock (or omit it). Stamps are non-decreasing in insertion order, so ``gc`` only
looks at the entries it removes plus one.

Capacity
--------
When an ``add`` takes the table past ``capacity``, evictable instances are removed
oldest-first regardless of their grace period (counted in ``evictions``); if none
exists, the least recently *added* instances are removed even though they are live
(counted in ``early_evictions``), so memory stays bounded whatever the event stream.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

from vigil.process.model import Credentials, ProcessInfo, SharedValues

DEFAULT_CAPACITY = 65536
DEFAULT_GRACE_NS = 30 * 10**9
DEFAULT_ANCESTOR_LIMIT = 64

# Ancestor walks stop once they reach a process with pid <= 2 (init or kthreadd),
# which is included; the synthetic pid-0 "<kernel>" process is never an ancestor.
OLDEST_ANCESTOR_PID = 2


class ProcessCache:
    """Bounded, reference-counted process table; O(1) per add/lookup/exit/eviction."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        grace_ns: int = DEFAULT_GRACE_NS,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if grace_ns < 0:
            raise ValueError("grace_ns must be >= 0")
        self.capacity = capacity
        self.grace_ns = grace_ns
        self.lock = threading.Lock()
        self._clock = clock
        # exec_id -> instance, in insertion order (oldest first) for forced eviction.
        self._procs: OrderedDict[str, ProcessInfo] = OrderedDict()
        # pid (tgid) -> exec_id of its latest instance.
        self._current: dict[int, str] = {}
        # A process's own references are flags of its record: ``holding`` (its self
        # reference, while current and not exited) and ``parent_ref`` (the one it holds
        # on ``parent_exec_id``): no per-process index beyond _procs and _current.
        # exec_id -> clock() stamp when its refcnt reached 0, oldest first.
        self._evictable: OrderedDict[str, int] = OrderedDict()
        self._shared = SharedValues()
        # changes with every change to the table (an add, an exit, new credentials, an
        # eviction): who keeps what a lookup found may reuse it while it is the same
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.early_evictions = 0

    # ------------------------------------------------------------------ writer API

    def add(self, p: ProcessInfo, texts_shared: bool = False) -> None:
        """Insert ``p``, make it the current instance of ``p.pid`` and link its parent.

        The previous current instance of the same pid is released (it stays
        resolvable by exec_id until evicted; a fork child's clone-only record replaced
        by its exec, with no children of its own, is removed at once). If that previous instance is *newer*
        (larger ktime, i.e. ``p`` arrived late, e.g. a /proc scan racing live events),
        ``p`` is stored but does not become current and starts out released. A second
        ``add`` of an exec_id already cached is ignored: the first record wins.
        ``texts_shared``: ``p``'s texts are already the table's (a fork child's, copied
        from its cached parent), not looked up again.
        """
        with self.lock:
            if p.exec_id in self._procs:
                return
            self.generation += 1
            p.refcnt = 0
            p.holding = p.parent_ref = False
            # credentials, namespaces and cgroup arrive shared from whoever made p (the
            # exec decoder's tables, the /proc scan's SharedValues, a clone's parent)
            if not texts_shared:
                self._shared.share_texts(p)
            self._procs[p.exec_id] = p
            self._link_parent(p)
            self._claim_pid(p)
            if p.refcnt == 0:
                self._stamp(p.exec_id)
            self._enforce_capacity()

    def mark_exited(self, pid: int, exit_time_ns: int) -> ProcessInfo | None:
        """Mark the current instance of ``pid`` exited and return it.

        Returns None when the pid is unknown or its current instance already exited,
        so a duplicate exit event is ignored.
        """
        with self.lock:
            eid = self._current.get(pid)
            p = self._procs.get(eid) if eid is not None else None
            if p is None or p.exited:
                return None
            self.generation += 1
            p.exited = True
            p.exit_time_ns = exit_time_ns
            self._release_self(p)
            return p

    def update_creds(self, p: ProcessInfo, creds: Credentials,
                     groups: tuple[int, ...] | None) -> None:
        """Give ``p`` the credentials it has now (after setuid, capset...): ``creds``,
        ``uid`` (the effective uid) and, when not None, ``groups``. Its encoded dict is
        dropped (never changed: events already published keep the old one), so the next
        event that needs the process builds it again with the new credentials."""
        with self.lock:
            self.generation += 1
            p.creds = self._shared(creds)
            p.uid = creds.euid
            if groups is not None:
                p.groups = groups
            p.encoded = None

    def gc(self, now_ns: int | None = None) -> int:
        """Remove evictable instances whose grace period ended; return how many."""
        with self.lock:
            now = self._clock() if now_ns is None else now_ns
            deadline = now - self.grace_ns
            removed = 0
            while self._evictable:
                eid, stamp = next(iter(self._evictable.items()))
                if stamp > deadline:
                    break
                self._remove(eid)
                removed += 1
            self.evictions += removed
            if removed:
                self.generation += 1
            return removed

    # ------------------------------------------------------------------ reader API

    def get(self, exec_id: str) -> ProcessInfo | None:
        """Return the instance with this exec_id (exited ones too, until evicted)."""
        with self.lock:
            p = self._procs.get(exec_id)
            self._count(p)
            return p

    def current(self, pid: int) -> ProcessInfo | None:
        """Return the latest instance of ``pid`` (possibly exited, until evicted)."""
        with self.lock:
            eid = self._current.get(pid)
            p = self._procs.get(eid) if eid is not None else None
            self._count(p)
            return p

    def writer_current(self, pid: int) -> ProcessInfo | None:
        """``current(pid)`` for the writer thread only, without the lock (it is the one
        thread that changes the table; the pipeline's lookups on every record)."""
        eid = self._current.get(pid)
        p = self._procs.get(eid) if eid is not None else None
        if p is None:
            self.misses += 1
        else:
            self.hits += 1
        return p

    def writer_get(self, exec_id: str) -> ProcessInfo | None:
        """``get(exec_id)`` for the writer thread only, without the lock."""
        p = self._procs.get(exec_id)
        if p is None:
            self.misses += 1
        else:
            self.hits += 1
        return p

    def current_and_parent(self, pid: int) -> tuple[ProcessInfo | None, ProcessInfo | None]:
        """``current(pid)`` and, if it is cached, its parent (``get(parent_exec_id)``).

        For the writer thread only: it is the one thread that changes the table, so it
        reads without the lock (the policy-event hot path). Its hit/miss counts may race
        with a reader thread's (they are statistics).
        """
        eid = self._current.get(pid)
        p = self._procs.get(eid) if eid is not None else None
        if p is None:
            self.misses += 1
            return None, None
        if not p.parent_exec_id:
            self.hits += 1
            return p, None
        parent = self._procs.get(p.parent_exec_id)
        if parent is None:
            self.hits += 1
            self.misses += 1
        else:
            self.hits += 2
        return p, parent

    def ancestors(self, p: ProcessInfo, limit: int = DEFAULT_ANCESTOR_LIMIT) -> list[ProcessInfo]:
        """Return ``p``'s ancestors from the grandparent upwards (Tetragon's ``ancestors``).

        The immediate parent is excluded (events carry it as ``parent``). The walk
        follows ``parent_exec_id`` through the cache and stops at the first missing
        link, after including a process with pid <= 2 (init/kthreadd, never the pid-0
        ``<kernel>``), on a cycle, or after ``limit`` entries.
        """
        with self.lock:
            chain: list[ProcessInfo] = []
            seen = {p.exec_id}
            cur = p
            while cur.pid > OLDEST_ANCESTOR_PID and len(chain) <= limit:
                nxt = self._procs.get(cur.parent_exec_id) if cur.parent_exec_id else None
                if nxt is None or nxt.exec_id in seen:
                    break
                seen.add(nxt.exec_id)
                chain.append(nxt)
                cur = nxt
            return chain[1 : limit + 1]

    def snapshot(self) -> list[ProcessInfo]:
        """Return all cached instances, oldest added first (a consistent copy)."""
        with self.lock:
            return list(self._procs.values())

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, exec_id: object) -> bool:
        return exec_id in self._procs

    # ------------------------------------------------------------------ internals
    # All helpers below run with self.lock held.

    def _count(self, p: ProcessInfo | None) -> None:
        if p is None:
            self.misses += 1
        else:
            self.hits += 1

    def _link_parent(self, p: ProcessInfo) -> None:
        """Take a reference on ``p``'s parent if the parent is cached."""
        parent = self._procs.get(p.parent_exec_id) if p.parent_exec_id else None
        if parent is None or parent is p:
            return
        p.parent_ref = True
        self._incref(parent)

    def _claim_pid(self, p: ProcessInfo) -> None:
        """Make ``p`` current for its pid unless a newer instance already is."""
        prev_id = self._current.get(p.pid)
        prev = self._procs.get(prev_id) if prev_id is not None else None
        if prev is not None and prev.ktime > p.ktime:
            return
        self._current[p.pid] = p.exec_id
        if not p.exited:
            p.holding = True
            self._incref(p)
        if prev is not None:
            self._release_self(prev)
            if prev.forked and prev.refcnt == 0 and not p.forked:
                # a fork child's clone-only record, replaced by its exec: nothing can
                # name it any more (its own events came before the exec, its children
                # would hold a reference), so it goes now rather than after the grace
                # period, the one record per process that a busy node would otherwise
                # hold twice
                self._remove(prev.exec_id)
                self.evictions += 1

    def _release_self(self, p: ProcessInfo) -> None:
        """Drop ``p``'s self reference (on exit or replacement), at most once."""
        if p.holding:
            p.holding = False
            self._decref(p)

    def _incref(self, p: ProcessInfo) -> None:
        p.refcnt += 1
        self._evictable.pop(p.exec_id, None)

    def _decref(self, p: ProcessInfo) -> None:
        p.refcnt -= 1
        if p.refcnt <= 0:
            p.refcnt = 0
            self._stamp(p.exec_id)

    def _stamp(self, exec_id: str) -> None:
        """Queue ``exec_id`` as evictable from now (moving it to the young end)."""
        self._evictable.pop(exec_id, None)
        self._evictable[exec_id] = self._clock()

    def _remove(self, exec_id: str) -> None:
        """Forget ``exec_id`` entirely and release its reference on its parent."""
        p = self._procs.pop(exec_id)
        self._evictable.pop(exec_id, None)
        p.holding = False
        if self._current.get(p.pid) == exec_id:
            del self._current[p.pid]
        if p.parent_ref:
            p.parent_ref = False
            parent = self._procs.get(p.parent_exec_id)
            if parent is not None:
                self._decref(parent)

    def _enforce_capacity(self) -> None:
        """Evict evictable entries oldest-first, then live ones oldest-added-first."""
        while len(self._procs) > self.capacity:
            if self._evictable:
                self._remove(next(iter(self._evictable)))
                self.evictions += 1
            else:
                self._remove(next(iter(self._procs)))
                self.early_evictions += 1
