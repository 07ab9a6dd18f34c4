"""Agent health: is the pipeline moving?

Stuck means work is waiting and nothing takes it:

* the reader: the ring buffer holds unread bytes and the reader has made no progress
  (heartbeat, or records handled) for ``stall_after`` seconds; or its thread is dead;
* an exporter: its queue holds events and it has delivered nothing (and failed
  nothing) for ``stall_after`` seconds.

Progress is sampled at each ``check()``: a value is "stale since" the first check that
saw it, so checks may be rare (a scrape every 15 s) without false alarms. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.metrics.agentview import ProbedAgent


@dataclass(frozen=True)
class SinkProbe:
    name: str
    pending: int
    progress: int  # delivered + errors: moves whenever the exporter finishes a batch


@dataclass(frozen=True)
class HealthProbe:
    """What a check looks at; built by ``probe_agent`` (or a fake in tests)."""

    reader_alive: bool
    reader_progress: int  # heartbeat counter or records handled
    ring_pending: int     # bytes
    sinks: tuple[SinkProbe, ...] = ()


@dataclass(frozen=True)
class HealthStatus:
    ok: bool
    problems: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "ok" if self.ok else "; ".join(self.problems)

    def tetragon(self) -> dict[str, str]:
        """GetHealth's one HealthStatus entry (event, status, details) as enum names."""
        return {"event": "HEALTH_STATUS_TYPE_STATUS",
                "status": "HEALTH_STATUS_RUNNING" if self.ok else "HEALTH_STATUS_ERROR",
                "details": self.text}


class _Stale:
    """Tracks since when a counter has not moved."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.since = 0.0

    def age(self, value: int, now: float) -> float:
        if value != self.value:
            self.value, self.since = value, now
        return now - self.since


class Health:
    """``check()`` -> HealthStatus; ``probe`` is called once per check."""

    def __init__(self, probe: Callable[[], HealthProbe], stall_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self.stall_after = stall_after
        self._clock = clock
        self._lock = threading.Lock()
        self._reader = _Stale()
        self._sinks: dict[str, _Stale] = {}

    def check(self) -> HealthStatus:
        try:
            p = self._probe()
        except Exception as err:  # noqa: BLE001 - a probe failure is itself unhealthy, never a crash
            return HealthStatus(False, (f"health probe failed: {err!r}",))
        with self._lock:
            return self._judge(p, self._clock())

    def _judge(self, p: HealthProbe, now: float) -> HealthStatus:
        problems = []
        age = self._reader.age(p.reader_progress, now)
        if not p.reader_alive:
            problems.append("reader thread is not running")
        elif p.ring_pending > 0 and age >= self.stall_after:
            problems.append(f"reader stuck: {p.ring_pending} bytes unread in the ring "
                            f"buffer, no progress for {age:.0f}s")
        for s in p.sinks:
            sage = self._sinks.setdefault(s.name, _Stale()).age(s.progress, now)
            if s.pending > 0 and sage >= self.stall_after:
                problems.append(f"exporter {s.name} stuck: {s.pending} events queued, "
                                f"none delivered for {sage:.0f}s")
        details = {"ring_pending_bytes": p.ring_pending, "reader_idle_s": round(age, 3),
                   "sinks": {s.name: s.pending for s in p.sinks}}
        return HealthStatus(not problems, tuple(problems), details)


def probe_agent(agent: ProbedAgent) -> HealthProbe:
    """Read a running agent's state (from any thread)."""
    alive = agent.reader_alive()
    beat = agent.reader_heartbeat
    progress = int(beat * 1000) if beat is not None else sum(agent.pipeline.records.values())
    sensor = agent.sensor
    ring = sensor.ring if sensor is not None else None
    pending = ring.pending_bytes() if ring is not None else 0
    sinks = tuple(SinkProbe(s.name, s.pending(), s.delivered + s.errors)
                  for s in list(agent.sinks))
    return HealthProbe(alive, progress, pending, sinks)


def agent_health(agent: ProbedAgent, stall_after: float = 10.0) -> Health:
    return Health(lambda: probe_agent(agent), stall_after)
