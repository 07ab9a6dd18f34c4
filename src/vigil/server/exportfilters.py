"""``--export-allowlist``, ``--export-denylist``, ``--field-filters`` and
``--enable-export-aggregation``: what of the event stream reaches the JSON exporters.

The values are Tetragon's: JSON objects separated by newlines (any whitespace between
objects is accepted), each the protojson form of a ``tetragon.Filter`` (allow/deny) or a
``tetragon.FieldFilter``, exactly as a GetEvents request carries them, e.g.::

    --export-allowlist '{"event_set":["PROCESS_EXEC","PROCESS_EXIT"]}'
    --export-denylist  '{"binary_regex":["^/usr/bin/sleep$"]}
                        {"health_check":true}'
    --field-filters    '{"event_set":["PROCESS_EXEC"],"fields":"process.binary,process.pid","action":"INCLUDE"}'

Each object is parsed into the generated protobuf message first (unknown fields, wrong
types and unknown enum names are errors, as in Tetragon), then compiled by the same
``vigil.server.filters`` code GetEvents uses, so a filter means the same on both paths.

An event is exported when the allow list is empty or it matches one of its filters, and
it matches none of the deny list (deny wins). Field filters then trim what is written.
These apply to the JSON export (file and stdout) only, never to gRPC GetEvents streams,
which carry their own filters. Filtering happens before ``--export-rate-limit``: events
filtered out spend no rate-limit budget (Tetragon's order).

Aggregation: Tetragon's export aggregator passes every event through unchanged (its
window and buffer size are accepted and unused); so does Vigil's, after checking the
values. It is accepted so Tetragon configurations load unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from vigil.api.tetragon import events_pb2
from vigil.stream.hub import Subscriber
from vigil.server.convert import field_filter_to_dict, filter_to_dict
from vigil.server.filters import EventFilter, FieldFilters, FilterError

Event = dict[str, Any]


def _objects(option: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a newline-separated list, each with its 1-based line."""
    dec = json.JSONDecoder()
    out: list[tuple[int, dict[str, Any]]] = []
    pos = 0
    while True:
        m = re.compile(r"\s*").match(text, pos)
        pos = m.end() if m else pos
        if pos >= len(text):
            return out
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise FilterError(f"--{option}: line {line}: invalid JSON: {err.msg}") from err
        if not isinstance(obj, dict):
            raise FilterError(f"--{option}: line {line}: expected a JSON object, "
                              f"got {obj!r}")
        out.append((line, obj))


def parse_filters(option: str, text: str) -> list[dict[str, Any]]:
    """``--export-allowlist``/``--export-denylist`` -> filter specs (FilterError if invalid)."""
    specs = []
    for line, obj in _objects(option, text):
        try:
            msg = json_format.ParseDict(obj, events_pb2.Filter())
        except json_format.ParseError as err:
            raise FilterError(f"--{option}: line {line}: {err}") from err
        spec = filter_to_dict(msg)
        try:
            EventFilter([spec])  # compile now: bad regexes, CEL, selectors fail at start
        except FilterError as err:
            raise FilterError(f"--{option}: line {line}: {err}") from err
        specs.append(spec)
    return specs


def _camel(path: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


def parse_field_filters(text: str, option: str = "field-filters") -> list[dict[str, Any]]:
    """``--field-filters`` -> field filter specs. As Tetragon, snake_case paths in
    ``fields`` are turned into the camelCase FieldMask JSON wants before parsing."""
    specs = []
    for line, obj in _objects(option, text):
        obj = dict(obj)
        fields = obj.get("fields")
        if isinstance(fields, str):
            obj["fields"] = ",".join(_camel(p.strip()) for p in fields.split(","))
        try:
            msg = json_format.ParseDict(obj, events_pb2.FieldFilter())
        except json_format.ParseError as err:
            raise FilterError(f"--{option}: line {line}: {err}") from err
        spec = field_filter_to_dict(msg)
        try:
            FieldFilters([spec])
        except FilterError as err:
            raise FilterError(f"--{option}: line {line}: {err}") from err
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class ExportFilterConfig:
    allow: tuple[dict[str, Any], ...] = ()
    deny: tuple[dict[str, Any], ...] = ()
    fields: tuple[dict[str, Any], ...] = ()
    aggregation: bool = False              # --enable-export-aggregation (pass-through)
    aggregation_window: float = 15.0       # --export-aggregation-window-size, seconds
    aggregation_buffer: int = 10000        # --export-aggregation-buffer-size

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny or self.fields)


class FilteredSubscriber:
    """Wraps an exporter's subscriber: only events passing allow/deny reach it, trimmed
    by the field filters. Runs on the publisher's thread; never blocks."""

    def __init__(self, inner: Subscriber, cfg: ExportFilterConfig) -> None:
        self.inner = inner
        self.name = inner.name
        self.filter = EventFilter(cfg.allow, cfg.deny)
        self.trim = FieldFilters(cfg.fields)
        self.filtered = 0

    def offer(self, batch: list[Event]) -> int:
        kept = [ev for ev in batch if self.filter.matches(ev)]
        self.filtered += len(batch) - len(kept)
        if self.trim:
            kept = [self.trim.apply(ev) for ev in kept]
        return self.inner.offer(kept) if kept else 0


def filter_export(sink: Subscriber, cfg: ExportFilterConfig | None) -> Subscriber:
    """What to put between the hub and ``sink`` (``sink`` itself when nothing filters)."""
    if cfg is None or not cfg.active:
        return sink
    return FilteredSubscriber(sink, cfg)


__all__ = ["ExportFilterConfig", "FilteredSubscriber", "filter_export",
           "parse_field_filters", "parse_filters"]
