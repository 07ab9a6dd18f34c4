"""Render Tetragon JSON events as ``tetra getevents -o compact`` lines.

Input is a parsed event dict (one JSON line from Vigil's or Tetragon's export,
or from the gRPC stream turned into JSON). Output is one line without newline:

    <emoji> <label %-7s> <source> <binary> <details>[ <caps trailer>]

``source`` is ``namespace/pod`` when ``process.pod`` is set, else ``node_name``.
Binaries, arguments, node names, paths, symbols and cgroup names go through
:func:`maybe_quote` (Go ``strconv.Quote`` when they hold a space or a
non-printable character). Empty details keep their separating space, as
tetra's ``fmt.Sprintf`` does (``"🚀 process node /bin/true "``).

Differences from tetra, on purpose:

* ``raw_syscalls/sys_enter`` shows the syscall name only (tetra appends the
  decoded argument list from its syscall signature table); an id missing from
  the x86_64 table is shown as its number, ``abi/<id>`` for other ABIs.
* ``rate_limit_info`` and unknown event types get a line here (tetra skips
  them with an error); a process-bearing event without ``process`` gives
  ``None`` (tetra prints nothing for it either).
* With color on, an empty caps string does not pad the line to 120 columns
  (tetra does, because fatih/color wraps even an empty string in escapes).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from vigil.syscalls import SYSCALL_NAMES

__all__ = ["cut_syscall_prefix", "go_quote", "maybe_quote", "render", "syscall_name"]

# --------------------------------------------------------------------------- quoting

_SIMPLE_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
    "\r": "\\r", "\t": "\\t", "\v": "\\v",
}


def _quote_char(ch: str) -> str:
    code = ord(ch)
    if ch in ('"', "\\"):
        return "\\" + ch
    if ch.isprintable():
        return ch
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a Go string cannot hold a lone surrogate
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(s: str) -> str:
    """Go ``strconv.Quote``: double quotes, Go escapes, lower-case hex."""
    return '"' + "".join(_quote_char(ch) for ch in s) + '"'


def maybe_quote(s: str) -> str:
    """Quote ``s`` when it holds a space or a non-printable character."""
    if s.isprintable() and " " not in s:
        return s
    return go_quote(s)


# --------------------------------------------------------------------------- colors

_RESET = "\x1b[0m"


class _Style:
    """fatih/color's foreground colors; identity when color is off."""

    __slots__ = ("on",)

    def __init__(self, on: bool) -> None:
        self.on = on

    def _wrap(self, code: str, s: str) -> str:
        return f"\x1b[{code}m{s}{_RESET}" if self.on else s

    def red(self, s: str) -> str:
        return self._wrap("31", s)

    def green(self, s: str) -> str:
        return self._wrap("32", s)

    def yellow(self, s: str) -> str:
        return self._wrap("33", s)

    def blue(self, s: str) -> str:
        return self._wrap("34", s)

    def magenta(self, s: str) -> str:
        return self._wrap("35", s)

    def cyan(self, s: str) -> str:
        return self._wrap("36", s)


# --------------------------------------------------------------------------- field access

def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _i(value: Any) -> int:
    """Integer from a JSON number or a protojson 64-bit string; 0 if neither."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _arg(args: list[Any], index: int) -> dict[str, Any] | None:
    """``args[index]`` if it exists (tetra's ``len(args) > i && args[i] != nil``)."""
    if len(args) > index and isinstance(arg := args[index], dict):
        return arg
    return None


def _args(body: dict[str, Any]) -> list[Any]:
    args = body.get("args")
    return args if isinstance(args, list) else []


# --------------------------------------------------------------------------- line pieces

_CAPS_PAD = 120
_SYS_ADMIN_INDEX = 21


def _label(st: _Style, emoji: str, name: str, paint: str = "blue") -> str:
    return str(getattr(st, paint)(f"{emoji} {name:<7}"))


def _caps(process: dict[str, Any]) -> str:
    """tetra's caps string: it tests list *indexes*, so CAP_SYS_ADMIN shows
    when the effective list has at least 22 entries."""
    cap = process.get("cap")
    if not isinstance(cap, dict):
        return ""
    effective = cap.get("effective")
    if isinstance(effective, list) and len(effective) > _SYS_ADMIN_INDEX:
        return "🛑 CAP_SYS_ADMIN"
    return ""


def _process_info(st: _Style, node: str, process: dict[str, Any]) -> str:
    pod = process.get("pod")
    if isinstance(pod, dict):
        source = f"{_s(pod.get('namespace'))}/{_s(pod.get('name'))}"
    else:
        source = maybe_quote(node)
    binary = maybe_quote(_s(process.get("binary")))
    return f"{st.green(source)} {st.magenta(binary)}"


def _with_caps(st: _Style, line: str, process: dict[str, Any]) -> str:
    caps = _caps(process)
    if not caps:
        return line
    padding = max(0, _CAPS_PAD - len(line.encode()))  # Go len(): bytes
    return f"{line} {st.magenta(caps):>{padding}}"    # Go %*s: runes


def _line(st: _Style, label: str, node: str, process: dict[str, Any], details: list[str]) -> str:
    line = " ".join([label, _process_info(st, node, process), *details])
    return _with_caps(st, line, process)


# --------------------------------------------------------------------------- kprobes

_SYSCALL_PREFIXES = ("__x64_", "__arm64_", "__ia32_")

_NS_NAMES = {
    0: "any", 0x2000000: "cgroup", 0x8000000: "ipc", 0x40000000: "net",
    0x20000: "mnt", 0x20000000: "pid", 0x80: "time", 0x10000000: "user",
    0x4000000: "uts",
}

_Details = tuple[str, list[str]]


def cut_syscall_prefix(name: str) -> str:
    """Strip an arch syscall prefix (``__x64_sys_write`` -> ``sys_write``)."""
    for prefix in _SYSCALL_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _file_path(st: _Style, arg: dict[str, Any] | None, key: str = "file_arg") -> str:
    if arg is None or not isinstance(arg.get(key), dict):
        return ""
    return st.cyan(maybe_quote(_s(arg[key].get("path"))))


def _string_arg(st: _Style, arg: dict[str, Any] | None) -> str:
    return "" if arg is None else st.cyan(maybe_quote(_s(arg.get("string_arg"))))


def _sock(st: _Style, arg: dict[str, Any] | None) -> str:
    if arg is None:
        return ""
    sa = _d(arg.get("sock_arg"))
    return st.cyan(
        f"tcp {_s(sa.get('saddr'))}:{_i(sa.get('sport'))} -> "
        f"{_s(sa.get('daddr'))}:{_i(sa.get('dport'))}"
    )


def _rw(emoji: str, name: str) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        size = _arg(args, 2)
        nbytes = "" if size is None else st.cyan(f"{_i(size.get('size_arg'))} bytes")
        return _label(st, emoji, name), [_file_path(st, _arg(args, 0)), nbytes]
    return handler


def _file_at(emoji: str, name: str, index: int) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        return _label(st, emoji, name), [_file_path(st, _arg(args, index))]
    return handler


def _string_at(emoji: str, name: str) -> Callable[[_Style, list[Any]], _Details]:
    """The path is args[1] when a policy captures (dfd, path), as tetra assumes; a
    policy that captures only the path has it first: use the first string argument."""
    def handler(st: _Style, args: list[Any]) -> _Details:
        arg = _arg(args, 1)
        if arg is None or "string_arg" not in arg:
            arg = next((a for a in args if isinstance(a, dict) and "string_arg" in a), arg)
        return _label(st, emoji, name), [_string_arg(st, arg)]
    return handler


def _src_dst(emoji: str, name: str) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        return _label(st, emoji, name), [_string_arg(st, _arg(args, 0)), _string_arg(st, _arg(args, 1))]
    return handler


def _bare(emoji: str, name: str) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        return _label(st, emoji, name), []
    return handler


def _sock_handler(emoji: str, name: str) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        return _label(st, emoji, name), [_sock(st, _arg(args, 0))]
    return handler


def _setuid(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 0)
    uid = "" if arg is None else st.cyan(str(_i(arg.get("int_arg"))))
    return _label(st, "🔑", "setuid"), [uid]


def _setns(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 1)
    name = "" if arg is None else _NS_NAMES.get(_i(arg.get("int_arg")), "")
    return _label(st, "🔧", "setns"), [name]


def _sendmsg(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 1)
    nbytes = 0 if arg is None else _i(arg.get("int_arg"))
    return _label(st, "📤", "sendmsg"), [_sock(st, _arg(args, 0)), "bytes", str(nbytes)]


def _bpf_check(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 0)
    attr = ""
    if arg is not None:
        ba = _d(arg.get("bpf_attr_arg"))
        attr = st.cyan(
            f"{_s(ba.get('ProgType'))} {_s(ba.get('ProgName'))} "
            f"instruction count {_i(ba.get('InsnCnt'))}"
        )
    return _label(st, "🐝", "bpf_load"), [attr]


def _perf_event(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 0)
    attr = ""
    if arg is not None:
        pe = _d(arg.get("perf_event_arg"))
        attr = st.cyan(f"{_s(pe.get('Type'))} {_s(pe.get('KprobeFunc'))}")
    return _label(st, "🐝", "perf_event_alloc"), [attr]


def _bpf_map(st: _Style, args: list[Any]) -> _Details:
    arg = _arg(args, 0)
    attr = ""
    if arg is not None:
        m = _d(arg.get("bpf_map_arg"))
        attr = st.cyan(
            f"{_s(m.get('MapType'))} {_s(m.get('MapName'))} key size {_i(m.get('KeySize'))} "
            f"value size {_i(m.get('ValueSize'))} max entries {_i(m.get('MaxEntries'))}"
        )
    return _label(st, "🗺", "bpf_map_create"), [attr]


def _file_permission(st: _Style, args: list[Any]) -> _Details:
    label, attr = _label(st, "❓", "security_file_permission"), ""
    first, second = _arg(args, 0), _arg(args, 1)
    if first is not None and second is not None:
        mask = _i(second.get("int_arg"))
        if mask == 0x02:
            label = _label(st, "📝", "write")
        elif mask == 0x04:
            label = _label(st, "📚", "read")
        attr = st.cyan(maybe_quote(_s(_d(first.get("file_arg")).get("path"))))
    return label, [attr]


def _mmap_file(st: _Style, args: list[Any]) -> _Details:
    label, attr = _label(st, "❓", "security_mmap_file"), ""
    first, second = _arg(args, 0), _arg(args, 1)
    if first is not None and second is not None:
        prot = _i(second.get("uint_arg"))
        tag = "mmap-" + "".join(c for bit, c in ((1, "r"), (2, "w"), (4, "x")) if prot & bit)
        label = _label(st, "📝", tag)
        attr = st.cyan(maybe_quote(_s(_d(first.get("file_arg")).get("path"))))
    return label, [attr]


def _truncate(fallback: str) -> Callable[[_Style, list[Any]], _Details]:
    def handler(st: _Style, args: list[Any]) -> _Details:
        arg = _arg(args, 0)
        if arg is None:
            return _label(st, "❓", fallback), [""]
        target = arg.get("path_arg") if isinstance(arg.get("path_arg"), dict) else arg.get("file_arg")
        return _label(st, "📝", "truncate"), [st.cyan(maybe_quote(_s(_d(target).get("path"))))]
    return handler


_KPROBES: dict[str, Callable[[_Style, list[Any]], _Details]] = {
    "sys_write": _rw("📝", "write"),
    "sys_read": _rw("📚", "read"),
    "fd_install": _file_at("📬", "open", 1),
    "sys_openat": _string_at("📬️", "openat"),
    "sys_open": _string_at("📬️", "open"),
    "sys_close": _file_at("📪", "close", 0),
    "sys_mount": _src_dst("💾", "mount"),
    "sys_setuid": _setuid,
    "sys_clock_settime": _bare("⏰", "clock_settime"),
    "sys_pivot_root": _src_dst("💾", "pivot_root"),
    "proc_exec_connector": _bare("🔧", "proc_exec_connector"),
    "sys_setns": _setns,
    "tcp_connect": _sock_handler("🔌", "connect"),
    "tcp_close": _sock_handler("🧹", "close"),
    "tcp_sendmsg": _sendmsg,
    "bpf_check": _bpf_check,
    "security_perf_event_alloc": _perf_event,
    "security_bpf_map_alloc": _bpf_map,
    "security_bpf_map_create": _bpf_map,
    "security_file_permission": _file_permission,
    "security_mmap_file": _mmap_file,
    "security_path_truncate": _truncate("security_path_truncate"),
    "security_file_truncate": _truncate("security_file_truncate"),
}


def _kprobe(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    function = _s(body.get("function_name"))
    handler = _KPROBES.get(cut_syscall_prefix(function))
    if handler is None:
        label, details = _label(st, "❓", "syscall"), [maybe_quote(function)]
    else:
        label, details = handler(st, _args(body))
    return _line(st, label, node, process, details)


# --------------------------------------------------------------------------- syscalls

_X64 = SYSCALL_NAMES
_DEFAULT_ABI = "x64"


def syscall_name(nr: int, abi: str = _DEFAULT_ABI) -> str:
    """Name of syscall ``nr`` (x86_64 table); unknown ids render as the number,
    and a non-default ABI is shown as an ``abi/`` prefix."""
    if abi in ("", _DEFAULT_ABI):
        return _X64.get(nr, str(nr))
    return f"{abi}/{nr}"


def _raw_syscall(args: list[Any]) -> str:
    first = _arg(args, 0)
    if first is None:
        return "unknown"
    if "long_arg" in first:
        return syscall_name(_i(first.get("long_arg")))
    sid = first.get("syscall_id")
    if isinstance(sid, dict):
        return syscall_name(_i(sid.get("id")), _s(sid.get("abi")))
    return "unknown"


def _tracepoint(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    subsys, event = _s(body.get("subsys")), _s(body.get("event"))
    if (subsys, event) == ("raw_syscalls", "sys_enter"):
        label = st.blue(f"☎  {'syscall':<7}")
        return _line(st, label, node, process, [_raw_syscall(_args(body))])
    label = _label(st, "⁉️", "tracepoint")
    return _line(st, label, node, process, [maybe_quote(subsys), maybe_quote(event)])


# --------------------------------------------------------------------------- other events

def _exec(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    args = st.cyan(maybe_quote(_s(process.get("arguments"))))
    return _line(st, _label(st, "🚀", "process"), node, process, [args])


def _exit(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    args = st.cyan(maybe_quote(_s(process.get("arguments"))))
    signal = _s(body.get("signal"))
    status = st.red(signal if signal else str(_i(body.get("status"))))
    return _line(st, _label(st, "💥", "exit"), node, process, [args, status])


def _loader(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    buildid = _buildid_hex(body.get("buildid"))
    path = st.yellow(maybe_quote(_s(body.get("path"))))
    return _line(st, _label(st, "🧬", "loader"), node, process, [(buildid + " " if buildid else "") + path])


def _buildid_hex(value: Any) -> str:
    try:
        return base64.b64decode(_s(value), validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


def _uprobe(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    details = [maybe_quote(_s(body.get("path"))), maybe_quote(_s(body.get("symbol")))]
    return _line(st, _label(st, "🕵️", "uprobe"), node, process, details)


def _usdt(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    details = [maybe_quote(_s(body.get(k))) for k in ("path", "provider", "name")]
    return _line(st, _label(st, "🕵️", "usdt"), node, process, details)


def _lsm(st: _Style, body: dict[str, Any], node: str, process: dict[str, Any]) -> str:
    details = [maybe_quote(_s(body.get("function_name")))]
    return _line(st, _label(st, "🔒", "LSM"), node, process, details)


_WITH_PROCESS: dict[str, Callable[[_Style, dict[str, Any], str, dict[str, Any]], str]] = {
    "process_exec": _exec,
    "process_exit": _exit,
    "process_kprobe": _kprobe,
    "process_tracepoint": _tracepoint,
    "process_loader": _loader,
    "process_uprobe": _uprobe,
    "process_usdt": _usdt,
    "process_lsm": _lsm,
}


def _throttle(st: _Style, body: dict[str, Any], node: str) -> str:
    kind = _s(body.get("type"))
    typ = {"THROTTLE_START": st.red("START"), "THROTTLE_STOP": st.green("STOP ")}.get(kind, "")
    return f"{_label(st, '🧬', 'throttle', 'red')} {typ} {maybe_quote(_s(body.get('cgroup')))}"


def _rate_limit(st: _Style, body: dict[str, Any], node: str) -> str:
    dropped = _i(body.get("number_of_dropped_process_events"))
    label = _label(st, "🚦", "ratelimit", "red")
    return f"{label} {st.green(maybe_quote(node))} {st.red(str(dropped))} events dropped"


def _test(st: _Style, body: dict[str, Any], node: str) -> str:
    return "TEST EVENT"


_WITHOUT_PROCESS: dict[str, Callable[[_Style, dict[str, Any], str], str]] = {
    "process_throttle": _throttle,
    "rate_limit_info": _rate_limit,
    "test": _test,
}

# GetEventsResponse fields that are not the event oneof.
_ENVELOPE_KEYS = frozenset({"node_name", "time", "aggregation_info", "cluster_name", "node_labels"})


def _generic(st: _Style, key: str, body: Any, node: str) -> str:
    label = _label(st, "❓", key)
    process = body.get("process") if isinstance(body, dict) else None
    if isinstance(process, dict):
        return _line(st, label, node, process, [])
    return f"{label} {st.green(maybe_quote(node))}"


# --------------------------------------------------------------------------- timestamps

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)
_EPOCH = "1970-01-01T00:00:00.000000000Z"


def _timestamp(value: Any) -> str:
    """Event time as ``2006-01-02T15:04:05.000000000Z`` (UTC, 9 digits)."""
    m = _RFC3339.match(value) if isinstance(value, str) else None
    if m is None:
        return _EPOCH
    base, frac, zone = m.group(1), (m.group(2) or "").ljust(9, "0"), m.group(3)
    if zone != "Z":
        try:
            when = datetime.fromisoformat(base + zone).astimezone(timezone.utc)
        except ValueError:
            return _EPOCH
        base = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac}Z"


# --------------------------------------------------------------------------- entry point

def _event_key(event: dict[str, Any]) -> str | None:
    for key in event:
        if key not in _ENVELOPE_KEYS:
            return key
    return None


def _render_body(st: _Style, event: dict[str, Any], key: str) -> str | None:
    body = event[key]
    node = _s(event.get("node_name"))
    if key in _WITH_PROCESS:
        process = _d(body).get("process")
        if not isinstance(process, dict):
            return None
        return _WITH_PROCESS[key](st, _d(body), node, process)
    if key in _WITHOUT_PROCESS:
        return _WITHOUT_PROCESS[key](st, _d(body), node)
    return _generic(st, key, body, node)


def render(event: dict[str, Any], *, color: bool = False, timestamps: bool = False) -> str | None:
    """One compact line for ``event``, or ``None`` when there is nothing to show
    (not a dict, no event field, or a process event without ``process``).

    Never raises on malformed input: a field of the wrong type renders as if it
    were absent, and anything worse falls back to a generic line.
    """
    if not isinstance(event, dict):
        return None
    key = _event_key(event)
    if key is None:
        return None
    st = _Style(color)
    try:
        line = _render_body(st, event, key)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError):
        line = _generic(st, key, None, _s(event.get("node_name")))
    if line is None:
        return None
    if timestamps:
        line = f"{_timestamp(event.get('time'))} {line}"
    return line
