"""Tetragon's redaction filters (``--redaction-filters``): secrets out of ``arguments``.

The flag holds newline-separated JSON ``RedactionFilter`` objects::

    {"binary_regex": ["(?:^|/)mysql$"], "redact": ["(?:--password|-p)[\\s=]+(\\S+)"]}

* ``binary_regex``: RE2 patterns searched (unanchored) in the executed binary's path; the
  filter applies when any matches, or to every binary when the list is empty;
* ``redact``: RE2 patterns searched in the process's ``arguments`` string (argv[1:] joined
  as Tetragon joins it, so one pattern can span several arguments); every capture group
  of every match is replaced by ``*****`` (a group nested in one already replaced is
  part of it);
* ``match``: deprecated in Tetragon and ignored there; accepted and ignored here.

Filters apply in order, each to the output of the previous one. Redaction happens once,
when the process record is built (an exec, or a process found by the /proc scan): the
cache then holds only the redacted string, so every event that carries the process (as
process, parent or ancestor), every exporter, gRPC stream and log sees the same text.
Vigil does not capture environment variables, so there is nothing else to redact.

Patterns are RE2 (``google-re2``), as Tetragon's Go ``regexp``: no backreferences or
lookaround, linear-time matching. Where ``google-re2`` cannot be imported Python's
``re`` is used instead (with a warning): it accepts a superset of RE2's syntax and can
take exponential time on hostile patterns, which are the operator's own. Unknown keys
are refused, unlike Tetragon which ignores them: a misspelt ``redact`` would silently
leak what it was meant to hide. The protobuf JSON names ``binaryRegex`` are accepted too.

Pure: no ctypes, no kernel access.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vigil.events.encode import join_arguments
from vigil.process.model import ProcessInfo

log = logging.getLogger("vigil.redact")

@functools.cache
def _engine() -> tuple[Any, type[Exception], dict[str, Any]]:
    """The regular-expression engine: RE2, as Tetragon's Go regexp (imported with the
    first filter: an agent without redaction filters does not load it); Python's ``re``
    only where the google-re2 wheel is missing."""
    try:
        import re2
    except ImportError:  # pragma: no cover - google-re2 is a dependency; wheels may be missing
        import re
        return re, re.error, {}
    options = re2.Options()
    options.log_errors = False  # errors are raised (and reported) instead
    return re2, re2.error, {"options": options}


REDACTED = "*****"
_KEYS = {"binary_regex": "binary_regex", "binaryRegex": "binary_regex",
         "redact": "redact", "match": "match"}
# binary path -> compiled redact patterns of the filters that apply to it
_BINARY_CACHE_MAX = 4096


class RedactionError(ValueError):
    """A redaction filter that cannot be used (bad JSON, bad regex, unknown key)."""


@dataclass(frozen=True)
class RedactionFilter:
    binary_regex: tuple[Any, ...]   # compiled patterns; empty: every binary
    redact: tuple[Any, ...]         # compiled patterns

    def applies_to(self, binary: str) -> bool:
        return not self.binary_regex or any(r.search(binary) for r in self.binary_regex)


def _compile(pattern: object, where: str) -> Any:
    if not isinstance(pattern, str):
        raise RedactionError(f"{where}: expected a string, got {json.dumps(pattern)}")
    engine, error, options = _engine()
    try:
        return engine.compile(pattern, **options)
    except error as err:
        why = err.args[0] if err.args else err
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise RedactionError(f"{where}: invalid regular expression {pattern!r}: {why}") from err


def _filter_from_dict(obj: object, n: int) -> RedactionFilter:
    where = f"redaction filter {n}"
    if not isinstance(obj, dict):
        raise RedactionError(f"{where}: expected a JSON object, got {json.dumps(obj)[:60]}")
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        name = _KEYS.get(key)
        if name is None:
            raise RedactionError(f"{where}: unknown field {key!r} (fields: binary_regex, "
                                 "redact, match)")
        if value is None:
            continue
        if not isinstance(value, list):
            raise RedactionError(f"{where}.{key}: expected a list, got {json.dumps(value)}")
        fields[name] = value
    if fields.get("match"):
        log.warning("%s: 'match' is deprecated and ignored (as Tetragon); use "
                    "binary_regex", where)
    binaries = tuple(_compile(p, f"{where}.binary_regex[{i}]")
                     for i, p in enumerate(fields.get("binary_regex", ())))
    redact = tuple(_compile(p, f"{where}.redact[{i}]")
                   for i, p in enumerate(fields.get("redact", ())))
    return RedactionFilter(binaries, redact)


def parse_filters(text: str) -> tuple[RedactionFilter, ...]:
    """Parse the flag's value: JSON objects separated by whitespace (one per line as
    Tetragon writes them). Raises RedactionError naming the filter and field."""
    dec = json.JSONDecoder()
    out: list[RedactionFilter] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise RedactionError(f"redaction filter {len(out)}: invalid JSON: {err}") from err
        out.append(_filter_from_dict(obj, len(out)))
    return tuple(out)


def redact_string(pattern: Any, s: str) -> str:
    """Replace every capture group of every match of ``pattern`` in ``s`` by ``*****``.

    As Tetragon: matches do not overlap, groups are replaced in order, a group starting
    inside one already replaced is skipped (it was nested), a group that did not take
    part is left alone, an empty group still becomes ``*****``, and an empty match right
    after the previous match is ignored (Go's ReplaceAll rule). Groups are located in the
    whole string; Tetragon matches the matched text again on its own, which can differ
    only for groups that depend on what lies outside the match (``\b``, ``^`` at its
    edges)."""
    if pattern.groups == 0:
        return s
    parts: list[str] = []
    copied = 0          # s[:copied] is in parts already
    prev_end = -1
    for m in pattern.finditer(s):
        start, end = m.span()
        if start == end and start == prev_end:
            continue
        prev_end = end
        last = start
        for g in range(1, pattern.groups + 1):
            gs, ge = m.span(g)
            if gs < 0 or gs < last:
                continue
            parts.append(s[copied:gs])
            parts.append(REDACTED)
            copied = last = ge
        # the rest of the match is copied with what follows
    if not parts:
        return s
    parts.append(s[copied:])
    return "".join(parts)


class Redactor:
    """Compiled filters, applied to process records as they are built.

    Cheap when nothing applies: which filters apply to a binary is decided once per
    binary path (cached, bounded), so most execs cost one dict lookup."""

    def __init__(self, filters: Sequence[RedactionFilter]) -> None:
        self.filters = tuple(filters)
        self._by_binary: dict[str, tuple[Any, ...]] = {}
        self.redacted = 0   # process records whose arguments changed

    def __bool__(self) -> bool:
        return bool(self.filters)

    def patterns_for(self, binary: str) -> tuple[Any, ...]:
        """The redact patterns that apply to ``binary``, in filter order."""
        got = self._by_binary.get(binary)
        if got is None:
            got = tuple(r for f in self.filters if f.applies_to(binary) for r in f.redact)
            if len(self._by_binary) >= _BINARY_CACHE_MAX:
                self._by_binary.clear()
            self._by_binary[binary] = got
        return got

    def redact(self, binary: str, arguments: str) -> str:
        """Tetragon's ``RedactionFilterList.Redact`` on an ``arguments`` string."""
        for pattern in self.patterns_for(binary):
            arguments = redact_string(pattern, arguments)
        return arguments

    def apply(self, p: ProcessInfo) -> None:
        """Redact ``p`` in place before it is cached or encoded: when a pattern changes
        its arguments, ``p.arguments`` holds the redacted string and the raw ``p.args``
        are dropped, so nothing downstream can see them."""
        patterns = self.patterns_for(p.binary)
        if not patterns or not p.args:
            return
        joined = join_arguments(p.args)
        out = joined
        for pattern in patterns:
            out = redact_string(pattern, out)
        if out != joined:
            p.arguments = out
            p.args = ()
            self.redacted += 1


def redactor_from_flag(text: str) -> Redactor | None:
    """The ``--redaction-filters`` value -> a Redactor (None when empty)."""
    filters = parse_filters(text or "")
    if not filters:
        return None
    if _engine()[0].__name__ != "re2":
        log.warning("google-re2 is not installed: redaction filters use Python's re "
                    "(a superset of RE2's syntax; no linear-time guarantee)")
    return Redactor(filters)


__all__ = ["REDACTED", "RedactionError", "RedactionFilter", "Redactor",
           "parse_filters", "redact_string", "redactor_from_flag"]
