"""Per-cgroup event throttling (``--cgroup-rate N,INTERVAL``), the user-space half.

The kernel half is in ``bpf/include/vigil/common.bpf.h``: every record any Vigil object
sends is counted against its cgroup's budget of N records per INTERVAL (all CPUs
together). The record that crosses it sends THROTTLE_START; from then on the cgroup's
records are suppressed in the kernel and counted (``vg_stats`` drops, reason
THROTTLED, and per cgroup in the STOP record), except:

* clones: never counted nor suppressed (the process cache needs every fork; they are
  never exported anyway);
* exits: counted and always sent, flagged ``VG_HDR_THROTTLED`` while throttled, so the
  cache marks the process exited but no ``process_exit`` is exported.

THROTTLE_STOP is decided in the kernel too, by ``vg_rate_sweep``, which the base
sensor runs about once a second: a cgroup with no record over its limit for the quiet
period (default 5 s, as Tetragon) is released. Both records reach this module through
the ring buffer, in order with everything else, as ``process_throttle`` events.

This module is pure (no ctypes), except :class:`CgroupNames`, which reads the cgroup2
mount to name a cgroup whose START was never seen.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from vigil.abi import _generated as abi
from vigil.abi._generated import HdrFlag, ThrottleType
from vigil.events import encode

log = logging.getLogger("vigil.stream.throttle")

Event = dict[str, Any]

DEFAULT_QUIET_S = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class CgroupRate:
    """At most ``events`` records per ``interval_s`` per cgroup; STOP after ``quiet_s``."""

    events: int
    interval_s: float
    quiet_s: float = DEFAULT_QUIET_S

    def __post_init__(self) -> None:
        if self.events <= 0 or self.interval_s <= 0 or self.quiet_s <= 0:
            raise ValueError(f"cgroup rate needs positive values, got {self}")

    @property
    def interval_ns(self) -> int:
        return int(self.interval_s * 1e9)

    @property
    def quiet_ns(self) -> int:
        return int(self.quiet_s * 1e9)

    @property
    def sweep_interval_s(self) -> float:
        """How often the base sensor runs the STOP sweep."""
        return max(0.1, min(1.0, self.quiet_s / 4))


def parse_duration(text: str) -> float:
    """Go-style duration ("1s", "500ms", "1m30s", "2h") -> seconds."""
    text = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"bad duration {text!r} (use e.g. 1s, 500ms, 1m)")
    return total


def parse_cgroup_rate(text: str, quiet_s: float = DEFAULT_QUIET_S) -> CgroupRate | None:
    """Tetragon's ``--cgroup-rate`` value: "" -> None (off); "1000,1s" -> CgroupRate."""
    if not text.strip():
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--cgroup-rate wants EVENTS,INTERVAL (e.g. 1000,1s), got {text!r}")
    try:
        events = int(parts[0])
    except ValueError:
        raise ValueError(f"--cgroup-rate: bad event count {parts[0]!r}") from None
    return CgroupRate(events, parse_duration(parts[1]), quiet_s)


# --------------------------------------------------------------------------- records

class ThrottleRecord(NamedTuple):
    cgroup_id: int
    type: int       # ThrottleType
    name: str       # START only
    dropped: int    # STOP: records suppressed during the episode
    ktime: int


_TM = abi.VG_THROTTLE_MSG
_TI = abi.VG_THROTTLE_MSG_INDEX


def decode_throttle(rec: bytes) -> ThrottleRecord:
    """A VG_MSG_THROTTLE record; ValueError if short (the pipeline counts it)."""
    if len(rec) < _TM.size:
        raise ValueError(f"throttle record of {len(rec)} bytes, want {_TM.size}")
    v = _TM.unpack_from(rec)
    off, _size, _count = abi.LAYOUTS["vg_throttle_msg"][1][_TI["name"]][1:]
    n = min(v[_TI["name_len"]], abi.Limits.CGROUP_NAME_MAX)
    name = rec[off:off + n].decode(errors="replace")
    return ThrottleRecord(v[_TI["cgroup_id"]], v[_TI["type"]], name, v[_TI["dropped"]],
                          v[_TI["hdr.ktime"]])


# a plain int: IntFlag arithmetic builds an enum member (is_throttled runs per exit)
_THROTTLED = int(HdrFlag.THROTTLED)


def is_throttled(rec: bytes) -> bool:
    """Whether a record's header says it was sent while its cgroup was throttled."""
    return len(rec) > 1 and bool(rec[1] & _THROTTLED)


def throttle_event(kind: int, cgroup: str, node_name: str, time_ns: int) -> Event:
    """``{"process_throttle": {"type": "THROTTLE_START", "cgroup": name}, ...}``."""
    body: dict[str, Any] = {"type": f"THROTTLE_{ThrottleType(kind).name}"}
    if cgroup:
        body["cgroup"] = cgroup
    event: Event = {"process_throttle": body}
    if node_name:
        event["node_name"] = node_name
    event["time"] = encode.rfc3339(time_ns)
    return event


# --------------------------------------------------------------------------- state

@dataclass
class CgroupThrottleStats:
    """What one cgroup's throttling cost it, since the agent started."""

    name: str = ""
    starts: int = 0
    stops: int = 0
    dropped: int = 0          # records suppressed in the kernel (sum of STOP counts)
    exits_suppressed: int = 0  # flagged exits whose process_exit was not exported
    throttled: bool = False


class ThrottleTracker:
    """Turns THROTTLE records into events and keeps bounded per-cgroup statistics.

    Called by the pipeline thread only; other threads (metrics) read only the int
    attributes, so no lock. Per-cgroup stats are kept for the ``max_cgroups`` most
    recently throttled cgroups.
    """

    def __init__(self, resolve: Callable[[int], str] | None = None,
                 max_cgroups: int = 1024) -> None:
        self._resolve = resolve
        self._max = max_cgroups
        self.cgroups: OrderedDict[int, CgroupThrottleStats] = OrderedDict()
        self.starts = 0
        self.stops = 0
        self.dropped = 0
        self.exits_suppressed = 0
        self.duplicate_starts = 0
        self.throttled_now = 0  # cgroups between START and STOP

    def _stats(self, cgroup_id: int) -> CgroupThrottleStats:
        st = self.cgroups.get(cgroup_id)
        if st is None:
            st = self.cgroups[cgroup_id] = CgroupThrottleStats()
            while len(self.cgroups) > self._max:
                _, old = self.cgroups.popitem(last=False)
                self.throttled_now -= old.throttled
        self.cgroups.move_to_end(cgroup_id)
        return st

    def _name(self, st: CgroupThrottleStats, cgroup_id: int) -> str:
        if not st.name:
            if self._resolve is None:
                self._resolve = CgroupNames()  # first use only: reads the cgroup2 mount
            st.name = self._resolve(cgroup_id)
        return st.name

    def on_record(self, r: ThrottleRecord) -> tuple[int, str] | None:
        """Update state; return (type, cgroup name) to export, or None for a duplicate."""
        st = self._stats(r.cgroup_id)
        if r.type == ThrottleType.START:
            if st.throttled:
                self.duplicate_starts += 1
                return None
            st.throttled, st.name = True, r.name or st.name
            self.throttled_now += 1
            st.starts += 1
            self.starts += 1
            log.warning("cgroup %s (id %d) over its event rate: throttled",
                        self._name(st, r.cgroup_id), r.cgroup_id)
        else:
            self.throttled_now -= st.throttled
            st.throttled = False
            st.stops += 1
            st.dropped += r.dropped
            self.stops += 1
            self.dropped += r.dropped
            log.warning("cgroup %s (id %d) back under its event rate: %d records were "
                        "suppressed", self._name(st, r.cgroup_id), r.cgroup_id, r.dropped)
        return r.type, self._name(st, r.cgroup_id)

    def on_suppressed_exit(self, cgroup_id: int) -> None:
        self.exits_suppressed += 1
        if cgroup_id in self.cgroups:
            self.cgroups[cgroup_id].exits_suppressed += 1


# --------------------------------------------------------------------------- names

def cgroup2_mount(mounts: str = "/proc/self/mounts") -> str | None:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup or, on hybrid hosts,
    /sys/fs/cgroup/unified; None if it is not mounted."""
    try:
        with open(mounts) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


class CgroupNames:
    """cgroup id -> directory name, by walking the cgroup2 mount (bounded walk and cache).

    On cgroup2 a cgroup's id is its directory's inode number. Only needed when a STOP
    arrives without its START (e.g. the START could not be decoded).
    """

    def __init__(self, root: str | None = None, max_dirs: int = 20000,
                 max_cached: int = 1024) -> None:
        self.root = root if root is not None else cgroup2_mount()
        self._max_dirs = max_dirs
        self._max_cached = max_cached
        self._cache: OrderedDict[int, str] = OrderedDict()

    def __call__(self, cgroup_id: int) -> str:
        if cgroup_id in self._cache:
            self._cache.move_to_end(cgroup_id)
            return self._cache[cgroup_id]
        name = self._walk(cgroup_id)
        self._cache[cgroup_id] = name
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return name

    def _walk(self, cgroup_id: int) -> str:
        if not self.root:
            return ""
        stack, seen = [self.root], 0
        while stack and seen < self._max_dirs:
            path = stack.pop()
            seen += 1
            try:
                if os.stat(path).st_ino == cgroup_id:
                    return "/" if path == self.root else os.path.basename(path)
                with os.scandir(path) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return ""

