"""Located problems found in a tracing policy, and how they are shown.

A policy author fixes a YAML file, so every problem points at a place in it
(``file:line:col``, 1-based, like compilers do) and at the field path inside the
policy (``spec.kprobes[0].selectors[1].matchArgs[0].operator``), which still
means something when the policy arrived over gRPC and has no file.

``code`` is a stable dotted identifier that tools and tests can match on without
parsing messages:

=====================  ==========================================================
``policy.yaml``        not YAML, several documents, duplicate key, not a mapping
``policy.unknown_field``  a key the TracingPolicy schema does not have
``policy.required``    a required field is missing
``policy.type``        wrong YAML type (string where an integer is expected, ...)
``policy.invalid_value``  right type, value not allowed (enum, format, reference)
``policy.range``       number out of range
``policy.limit``       too many items / too long (selectors, actions, values, ...), or
                       the document over a bound (size, nodes, nesting, aliasing)
``policy.option``      unknown ``spec.options`` entry (warning)
``policy.truncated``   value shortened (message > 256 characters; warning)
``policy.ignored``     a field that has no effect where it is used (warning)
=====================  ==========================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem: where it is (file, line, col, field path) and what it is."""

    file: str
    line: int
    col: int
    path: str
    code: str
    message: str
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        """True for errors (the policy is rejected), false for warnings."""
        return self.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON output and the API."""
        return asdict(self)

    def with_file(self, file: str) -> Diagnostic:
        """The same diagnostic shown under another file name (e.g. the basename)."""
        return Diagnostic(file, self.line, self.col, self.path, self.code, self.message,
                          self.severity)

    def __str__(self) -> str:
        return format(self)


def format(d: Diagnostic) -> str:
    """``file:line:col: severity: path: message`` — the form editors can jump to."""
    where = f"{d.path}: " if d.path else ""
    return f"{d.file}:{d.line}:{d.col}: {d.severity}: {where}{d.message}"


def format_all(diags: Iterable[Diagnostic]) -> str:
    """One formatted diagnostic per line."""
    return "\n".join(format(d) for d in diags)


def to_json(diags: Iterable[Diagnostic], *, indent: int | None = None) -> str:
    """A JSON array of diagnostic objects (``vigil tracingpolicy check -o json``)."""
    return json.dumps([d.to_dict() for d in diags], indent=indent)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str, str, str]:
    """Source order, so the list reads top to bottom like the file."""
    return (d.file, d.line, d.col, d.path, d.code, d.message)


__all__ = ["Diagnostic", "Severity", "format", "format_all", "sort_key", "to_json"]
