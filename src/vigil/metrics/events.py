"""Per-event metrics (``events_total``, ``policy_events_total``) with bounded labels.

``EventMetrics`` subscribes to the agent's event hub like an exporter, but only counts:
its ``offer`` runs on the reader thread, costs a few dict lookups per event and never
drops. Label values are bounded so a hostile workload cannot grow the series count:

* an allow-list per label (``--metrics-label-allow binary=/usr/bin/curl``): listed
  values keep their name, every other value is reported as ``other``;
* otherwise the first ``max_values`` distinct values of each label keep their name
  (a value, once admitted, stays, so counters never vanish) and later ones are
  ``other``;
* and at most ``max_series`` label combinations per metric, beyond which new
  combinations are counted under all-``other`` labels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

Event = dict[str, Any]
OTHER = "other"

# The event's oneof key -> Tetragon's EventType name (the `type` label).
EVENT_TYPES = {
    "process_exec": "PROCESS_EXEC",
    "process_exit": "PROCESS_EXIT",
    "process_kprobe": "PROCESS_KPROBE",
    "process_tracepoint": "PROCESS_TRACEPOINT",
    "process_loader": "PROCESS_LOADER",
    "process_uprobe": "PROCESS_UPROBE",
    "process_throttle": "PROCESS_THROTTLE",
    "process_lsm": "PROCESS_LSM",
    "process_usdt": "PROCESS_USDT",
    "rate_limit_info": "RATE_LIMIT_INFO",
}
_NOT_EVENT_KEYS = frozenset({"node_name", "time", "cluster_name", "node_labels",
                             "aggregation_info"})


class LabelLimiter:
    """Maps one label's raw values to bounded values (allow-list, or first N seen)."""

    def __init__(self, max_values: int, allow: frozenset[str] | None = None) -> None:
        self._max = max_values
        self._allow = allow
        self._admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if not value:
            return ""
        if self._allow is not None:
            return value if value in self._allow else OTHER
        if value in self._admitted:
            return value
        if len(self._admitted) < self._max:
            self._admitted.add(value)
            return value
        return OTHER


def event_type(event: Event) -> str:
    """Tetragon's EventType name of an event dict ("unknown" if none)."""
    for key in event:
        if key not in _NOT_EVENT_KEYS:
            return EVENT_TYPES.get(key, "unknown")
    return "unknown"


def _process_values(body: Mapping[str, Any]) -> dict[str, str]:
    proc = body.get("process") or {}
    pod = proc.get("pod") or {}
    return {"namespace": pod.get("namespace", ""), "workload": pod.get("workload", ""),
            "pod": pod.get("name", ""), "binary": proc.get("binary", "")}


def policy_hook(key: str, body: Mapping[str, Any]) -> str:
    """Tetragon's ``hook`` label: kprobe:<fn>, tracepoint:<subsys>/<event>, lsm:<hook>,
    uprobe:<path>/<symbol>, usdt:<provider>/<name>."""
    kind = key.removeprefix("process_")
    if kind in ("kprobe", "lsm"):
        return f"{kind}:{body.get('function_name', '')}"
    if kind == "tracepoint":
        return f"tracepoint:{body.get('subsys', '')}/{body.get('event', '')}"
    if kind == "uprobe":
        return f"uprobe:{body.get('path', '')}/{body.get('symbol', '')}"
    if kind == "usdt":
        return f"usdt:{body.get('provider', '')}/{body.get('name', '')}"
    return kind


class BoundedCounts:
    """label tuple -> count, with at most ``max_series`` tuples (overflow -> all other)."""

    def __init__(self, labels: tuple[str, ...], max_series: int) -> None:
        self.labels = labels
        self._max = max_series
        self._overflow = tuple(OTHER for _ in labels)
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, key: tuple[str, ...]) -> None:
        counts = self.counts
        if key not in counts and len(counts) >= self._max:
            key = self._overflow
        counts[key] = counts.get(key, 0) + 1

    def snapshot(self) -> list[tuple[tuple[str, ...], int]]:
        return list(self.counts.items())


class EventMetrics:
    """A hub subscriber counting every published event by type and bounded labels."""

    name = "metrics"

    def __init__(self, process_labels: Iterable[str], max_values: int = 100,
                 allow: Mapping[str, frozenset[str]] | None = None,
                 max_series: int = 5000) -> None:
        allow = allow or {}
        self.process_labels = tuple(process_labels)
        self._limit = {lb: LabelLimiter(max_values, allow.get(lb)) for lb in self.process_labels}
        self.events = BoundedCounts(("type", *self.process_labels), max_series)
        self.policy_events = BoundedCounts(("policy", "hook", "action"), max_series)
        self._policy_limit = LabelLimiter(max_values)
        self._lock = threading.Lock()  # offer (reader thread) vs snapshot (scrapes)

    def offer(self, batch: list[Event]) -> int:
        with self._lock:
            for ev in batch:
                self._count(ev)
        return 0

    def _count(self, ev: Event) -> None:
        typ = event_type(ev)
        key = next((k for k in ev if k not in _NOT_EVENT_KEYS), "")
        body = ev.get(key) or {}
        if self.process_labels:
            vals = _process_values(body)
            self.events.inc((typ, *(self._limit[lb](vals[lb]) for lb in self.process_labels)))
        else:
            self.events.inc((typ,))
        policy = body.get("policy_name")
        if policy:
            self.policy_events.inc((self._policy_limit(policy), policy_hook(key, body),
                                    str(body.get("action", ""))))

    def snapshot(self) -> tuple[list[tuple[tuple[str, ...], int]],
                                list[tuple[tuple[str, ...], int]]]:
        with self._lock:
            return self.events.snapshot(), self.policy_events.snapshot()
