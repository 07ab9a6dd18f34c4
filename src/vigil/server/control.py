"""The agent's run-time controls behind GetInfo, GetDebug/SetDebug, ListSensors and
EventLogService, as narrow pieces the servicer can be given (or faked in tests).

Pure helpers live here too: Tetragon's log levels <-> Python's, Tetragon's probe names
for Vigil's feature probes, and Go-style durations (EventLogService's
``rotation_interval``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# Loggers whose level GetDebug reads and SetDebug sets: the agent's own ("vigil.*").
VIGIL_LOGGER = "vigil"
TRACE = 5  # Python has no TRACE; below DEBUG, as in Tetragon's logrus
# Tetragon's LogLevel values (sensors.proto) -> Python levels. PANIC and FATAL only
# mean "errors that stop the agent" to Vigil: both are CRITICAL.
LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.ERROR, 3: logging.WARNING,
          4: logging.INFO, 5: logging.DEBUG, 6: TRACE}
# A GetDebug of the process cache returns at most this many entries (oldest first).
PROCESS_DUMP_CAP = 10000

# Vigil's feature-probe names (vigil.bpf.features) -> the name Tetragon reports for the
# same kernel feature (GetInfo.probes, `tetra probe`); others keep Vigil's name.
TETRAGON_PROBE_NAMES = {
    "override_return": "override_return",
    "kprobe_multi": "kprobe_multi",
    "fmod_ret_security": "fmodret",
    "fmod_ret_syscall": "fmodret_syscall",
    "send_signal": "signal",
    "lsm": "lsm",
    "fentry": "fentry",
    "uprobe_regs": "uprobe_regs_change",
}


def level_to_tetragon(level: int) -> int:
    """A Python level as Tetragon's LogLevel value (the nearest at or above it)."""
    if level <= TRACE:
        return 6
    if level <= logging.DEBUG:
        return 5
    if level <= logging.INFO:
        return 4
    if level <= logging.WARNING:
        return 3
    if level <= logging.ERROR:
        return 2
    return 0


def get_log_level() -> int:
    """The effective level of the ``vigil`` loggers, as Tetragon's LogLevel."""
    return level_to_tetragon(logging.getLogger(VIGIL_LOGGER).getEffectiveLevel())


def set_log_level(tetragon_level: int) -> int:
    """Set the ``vigil`` loggers' level from a Tetragon LogLevel; returns it as read back.
    ValueError for a value that is not a LogLevel."""
    if tetragon_level not in LEVELS:
        raise ValueError(f"unknown log level {tetragon_level}")
    if logging.getLevelName(TRACE) == f"Level {TRACE}":
        logging.addLevelName(TRACE, "TRACE")
    logging.getLogger(VIGIL_LOGGER).setLevel(LEVELS[tetragon_level])
    return get_log_level()


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration string ("90s", "1h30m", "0"); ValueError otherwise."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    neg = s.startswith("-")
    body = s.lstrip("+-")
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(body):
        raise ValueError(f"invalid duration {text!r} (e.g. \"30m\", \"1h\", \"0s\")")
    return -total if neg else total


def format_go_duration(seconds: float) -> str:
    """Go's Duration.String() for whole seconds and above ("1h0m0s", "90s" -> "1m30s")."""
    if seconds == 0:
        return "0s"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


class EventLog(Protocol):
    """The export file writer's rotation parameters (``vigil.export.jsonl``)."""

    max_bytes: int
    max_backups: int
    rotation_interval: float

    def set_params(self, *, max_size_mb: float | None = None,
                   rotation_interval: float | None = None,
                   max_backups: int | None = None) -> None: ...


@dataclass
class ProcessEntry:
    """One process-cache entry for DUMP_PROCESS_CACHE: its Process message as a dict
    (the events' form) and its reference count."""

    process: dict[str, Any]
    refcnt: int


@dataclass
class AgentControl:
    """What the control RPCs read from the running agent. Every piece is optional: a
    missing one answers empty (GetInfo), or UNAVAILABLE (process cache, event log)."""

    name: str = "vigil"
    probes: Callable[[], list[tuple[str, bool]]] = list
    conf: Callable[[], dict[str, str]] = dict
    processes: Callable[[], list[ProcessEntry]] | None = None
    event_log: Callable[[], EventLog | None] = lambda: None
    build: dict[str, str] = field(default_factory=dict)
    # where policies come from: files at start-up, this API, and the cluster's resources
    # when the agent watches them
    domains: Callable[[], list[str]] = lambda: ["static", "grpc"]


__all__ = ["AgentControl", "EventLog", "LEVELS", "PROCESS_DUMP_CAP", "ProcessEntry",
           "TETRAGON_PROBE_NAMES", "format_go_duration", "get_log_level",
           "parse_go_duration", "set_log_level"]
