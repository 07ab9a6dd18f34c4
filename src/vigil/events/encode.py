"""Build Tetragon-shaped JSON events (``GetEventsResponse`` as protojson renders it).

Pure: no ctypes, no kernel access. Every builder returns a plain ``dict`` whose
insertion order is the proto field-number order, because ``orjson`` keeps dict
order and Tetragon's exporter (Go ``protojson`` with ``UseProtoNames``) writes
fields in field-number order.

What is omitted, and why (proto3 JSON mapping, ``EmitUnpopulated`` false):

* plain scalars equal to their zero value are left out: empty strings
  (``exec_id``, ``cwd``, ``binary``, ``arguments``, ``flags``, ``docker``,
  ``parent_exec_id``, ``node_name``, exit ``signal``), zero numbers (exit
  ``status``, ``Namespace.inum``), ``false`` bools (``Namespace.is_host``) and
  empty repeated fields (capability lists, ``securebits``, ``ancestors``);
* wrapper-typed fields (``pid``, ``uid``, ``auid``, ``tid``, ``in_init_tree``,
  the ``process_credentials`` ids, ``user_ns.level/uid/gid``) are messages that
  Tetragon always sets, so they are always written, even as ``0``/``false``;
* set sub-messages are written even when all their fields are zero (``{}``),
  e.g. ``cap`` of a process without capabilities, or a namespace inum of 0;
* ``refcnt`` (a process-cache debug counter) is written where Tetragon writes it: 1 in
  the dict of a fork child that has not exec'd (Tetragon's clone entries carry it), and
  the cache's current count in the process of a policy event (``process_view``);
* ``pod``, ``binary_properties``, ``user`` and ``environment_variables`` are not
  produced by this module (no k8s API, and the others are opt-in in Tetragon).

Process dicts are ``SharedDict``s: one per process, shared by every event that names the
process, read-only, and serialized to JSON once (``dumps`` reuses those bytes).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import orjson

from vigil.capabilities import CAP_NAMES
from vigil.process.model import (
    FLAG_NAMES,
    NAMESPACE_NAMES,
    Credentials,
    Namespaces,
    ProcessInfo,
)

__all__ = [
    "CAP_NAMES",
    "SIGNAL_NAMES",
    "cap_list",
    "capabilities_dict",
    "credentials_dict",
    "dumps",
    "dumps_all",
    "exec_event",
    "exit_event",
    "exit_signal_status",
    "flags_string",
    "join_arguments",
    "namespaces_dict",
    "process_dict",
    "process_view",
    "rfc3339",
    "securebits_list",
    "SharedDict",
]

# SecureBitsType enum: (bit value, name), in the order Tetragon lists them.
SECUREBIT_NAMES: tuple[tuple[int, str], ...] = (
    (1, "SecBitNoRoot"),
    (2, "SecBitNoRootLocked"),
    (4, "SecBitNoSetUidFixup"),
    (8, "SecBitNoSetUidFixupLocked"),
    (16, "SecBitKeepCaps"),
    (32, "SecBitKeepCapsLocked"),
    (64, "SecBitNoCapAmbientRaise"),
    (128, "SecBitNoCapAmbientRaiseLocked"),
)

# Linux (x86_64/arm64 generic numbering) signal names as Go's unix.SignalName
# returns them; numbers without a name (0, real-time signals) map to "".
SIGNAL_NAMES: dict[int, str] = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP",
    6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1",
    11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
    16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP",
    21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
    26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR",
    31: "SIGSYS",
}

_NS_PER_S = 1_000_000_000
_FLAG_BITS: tuple[tuple[int, str], ...] = tuple((int(bit), name) for bit, name in FLAG_NAMES)
_TIME_NAMESPACES = frozenset({"time", "time_for_children"})


# --------------------------------------------------------------------------- scalars

def _second(secs: int) -> tuple[int, str, str]:
    """(the second's first nanosecond, "YYYY-MM-DDTHH:MM:SS", the same with the
    fraction's ".") of the UNIX-epoch second ``secs``."""
    t = time.gmtime(secs)
    prefix = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
              f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
    return secs * _NS_PER_S, prefix, prefix + "."


# The last second formatted: events come in bursts within one second, and telling
# whether a time falls in it is cheaper than dividing. Replaced as a whole, so readers
# in other threads see a consistent triple.
_last_second = _second(0)


def rfc3339(ns: int) -> str:
    """Format UNIX-epoch nanoseconds as protojson formats a Timestamp.

    UTC with a ``Z`` suffix; the fraction has 0, 3, 6 or 9 digits, the shortest
    of those that is exact.
    """
    global _last_second
    last = _last_second
    nanos = ns - last[0]
    if not 0 <= nanos < _NS_PER_S:
        secs, nanos = divmod(ns, _NS_PER_S)
        last = _last_second = _second(secs)
    if nanos % 1_000:  # nine digits, the common case
        if nanos >= 100_000_000:  # no zero padding needed: str() is twice as fast
            return f"{last[2]}{nanos}Z"
        return "%s%09dZ" % (last[2], nanos)  # noqa: UP031 - faster than an f-string here
    return f"{last[1]}{_fraction(nanos)}Z"


def _fraction(nanos: int) -> str:
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def join_arguments(args: Sequence[str]) -> str:
    """Render argv[1:] as Tetragon's ``arguments`` string.

    Tetragon's rule, applied argument by argument to an accumulator that
    starts empty:

    * an argument containing a space (U+0020 only) is appended as
      ``' "' + arg + '"'`` -- always with the leading space, so a first
      argument with a space gives a leading space; inner quotes and
      backslashes are not escaped;
    * otherwise, if the accumulator is still empty it becomes the argument
      (so leading empty arguments vanish), else ``' ' + arg`` is appended
      (so a later empty argument leaves a doubled or trailing space).

    Tetragon splits the raw BPF buffer after trimming trailing NULs; when the
    buffer carries no cwd (flags ``nocwd``/``errorCWD``/``rootcwd``) trailing
    empty arguments are therefore lost. That trimming is the decoder's job:
    this function renders exactly the sequence it is given.
    """
    out = ""
    for arg in args:
        if " " in arg:
            out += ' "' + arg + '"'
        elif out:
            out += " " + arg
        else:
            out = arg
    return out


@functools.lru_cache(maxsize=512)
def flags_string(flags: int) -> str:
    """Space-separated flag names in Tetragon's fixed order (unknown bits dropped)."""
    return " ".join(name for bit, name in _FLAG_BITS if flags & bit)


@functools.lru_cache(maxsize=1024)
def _cap_names(mask: int) -> tuple[str | int, ...]:
    names: list[str | int] = []
    bit = 0
    while mask and bit < 64:
        if mask & 1:
            # protojson writes an enum value without a name as its number
            names.append(CAP_NAMES[bit] if bit < len(CAP_NAMES) else bit)
        mask >>= 1
        bit += 1
    return tuple(names)


def cap_list(mask: int) -> list[str | int]:
    """CapabilitiesType names of the set bits of a 64-bit mask, ascending."""
    return list(_cap_names(mask))


def securebits_list(bits: int) -> list[str]:
    """SecureBitsType names of the known set bits (unknown bits are dropped)."""
    return [name for value, name in SECUREBIT_NAMES if bits & value]


def exit_signal_status(code: int) -> tuple[str, int]:
    """Split a wait-status style exit code into (signal name, exit status).

    The signal is the name of ``code & 0x7F`` ("" when none), the status is
    ``code >> 8``.
    """
    return SIGNAL_NAMES.get(code & 0x7F, ""), (code >> 8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- messages

def capabilities_dict(creds: Credentials) -> dict[str, Any]:
    """``Capabilities`` message: permitted, effective, inheritable (empty lists omitted)."""
    out: dict[str, Any] = {}
    if creds.cap_permitted:
        out["permitted"] = cap_list(creds.cap_permitted)
    if creds.cap_effective:
        out["effective"] = cap_list(creds.cap_effective)
    if creds.cap_inheritable:
        out["inheritable"] = cap_list(creds.cap_inheritable)
    return out


def _namespace(inum: int, is_host: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if inum:
        out["inum"] = inum
    if is_host:
        out["is_host"] = True
    return out


def namespaces_dict(ns: Namespaces, host_ns: Namespaces | None = None) -> dict[str, Any]:
    """``Namespaces`` message, each entry ``{inum, is_host}``.

    ``is_host`` is set when the inum equals the host's (``host_ns``, typically
    the namespaces of pid 1); for the two time namespaces the host inum must
    also be non-zero. When the process's ``time`` inum is 0 (kernel without
    time namespaces) both time entries are omitted, as Tetragon does.
    """
    out: dict[str, Any] = {}
    skip_time = ns.time == 0
    for name in NAMESPACE_NAMES:
        if skip_time and name in _TIME_NAMESPACES:
            continue
        inum = getattr(ns, name)
        is_host = False
        if host_ns is not None:
            host = getattr(host_ns, name)
            is_host = host == inum and (host != 0 or name not in _TIME_NAMESPACES)
        out[name] = _namespace(inum, is_host)
    return out


def credentials_dict(creds: Credentials, *, full: bool = False) -> dict[str, Any]:
    """``ProcessCredentials`` message.

    The ids are wrappers and always present; ``securebits`` is omitted when no
    known bit is set. Tetragon's exec path (``Process.process_credentials``)
    stops there; ``full=True`` adds ``caps`` and ``user_ns`` as Tetragon writes
    them for a kprobe ``process_credentials_arg`` (``user_ns.ns.is_host`` is
    ``level == 0``).
    """
    out: dict[str, Any] = {
        "uid": creds.uid,
        "gid": creds.gid,
        "euid": creds.euid,
        "egid": creds.egid,
        "suid": creds.suid,
        "sgid": creds.sgid,
        "fsuid": creds.fsuid,
        "fsgid": creds.fsgid,
    }
    secbits = securebits_list(creds.securebits)
    if secbits:
        out["securebits"] = secbits
    if full:
        out["caps"] = capabilities_dict(creds)
        out["user_ns"] = {
            "level": creds.user_ns_level,
            "uid": creds.user_ns_uid,
            "gid": creds.user_ns_gid,
            "ns": _namespace(creds.user_ns_inum, creds.user_ns_level == 0),
        }
    return out


def process_dict(
    p: ProcessInfo,
    *,
    cred: bool = False,
    ns: bool = False,
    host_ns: Namespaces | None = None,
    pod: dict[str, Any] | None = None,
) -> SharedDict:
    """``Process`` message for ``p`` (``cred``/``ns`` as Tetragon's
    ``--enable-process-cred``/``--enable-process-ns``; ``pod``: its ``process.pod``
    block, see ``vigil.containers``)."""
    out = SharedDict()
    if p.exec_id:
        out["exec_id"] = p.exec_id
    out["pid"] = p.pid
    out["uid"] = p.uid
    # empty strings are left out
    if p.cwd:
        out["cwd"] = p.cwd
    if p.binary:
        out["binary"] = p.binary
    arguments = p.arguments if p.arguments is not None else join_arguments(p.args)
    if arguments:
        out["arguments"] = arguments
    flags = flags_string(p.flags)
    if flags:
        out["flags"] = flags
    out["start_time"] = rfc3339(p.start_time_ns)
    out["auid"] = p.auid
    if pod:
        out["pod"] = pod
    if p.docker:
        out["docker"] = p.docker
    if p.parent_exec_id:
        out["parent_exec_id"] = p.parent_exec_id
    if p.forked:
        out["refcnt"] = 1
    if cred:
        out["cap"] = capabilities_dict(p.creds)
    if ns:
        out["ns"] = namespaces_dict(p.ns, host_ns)
    out["tid"] = p.tid
    if cred:
        out["process_credentials"] = credentials_dict(p.creds)
    out["in_init_tree"] = p.in_init_tree
    return out


# Process fields after refcnt (field 13), in field order: where refcnt goes in a view.
_AFTER_REFCNT = frozenset({"cap", "ns", "tid", "process_credentials", "binary_properties",
                           "user", "in_init_tree"})


def process_view(proc: dict[str, Any], tid: int, refcnt: int) -> SharedDict:
    """A copy of the process dict ``proc`` with another ``tid`` and ``refcnt`` (0: none),
    in field order: the process of a policy event, as Tetragon reports it (the calling
    thread, and the process's reference count in the cache at that moment)."""
    out = SharedDict()
    placed = refcnt == 0
    for k, v in proc.items():
        if k == "refcnt":
            continue
        if not placed and k in _AFTER_REFCNT:
            out["refcnt"] = refcnt
            placed = True
        out[k] = v
    if not placed:
        out["refcnt"] = refcnt
    out["tid"] = tid
    return out


# --------------------------------------------------------------------------- events

def _envelope(key: str, body: dict[str, Any], node_name: str, time_ns: int) -> dict[str, Any]:
    event: dict[str, Any] = {key: body}
    if node_name:
        event["node_name"] = node_name
    event["time"] = rfc3339(time_ns)
    return event


def exec_event(
    process: dict[str, Any],
    parent: dict[str, Any] | None,
    ancestors: list[dict[str, Any]] | None,
    node_name: str,
    time_ns: int,
) -> dict[str, Any]:
    """``{"process_exec": {process, parent, ancestors}, "node_name", "time"}``.

    Takes already-built process dicts (see :func:`process_dict`) so callers can
    build each one once and share it between events.
    """
    body: dict[str, Any] = {"process": process}
    if parent is not None:
        body["parent"] = parent
    if ancestors:
        body["ancestors"] = ancestors
    # _envelope, written out (one per exec)
    if node_name:
        return {"process_exec": body, "node_name": node_name, "time": rfc3339(time_ns)}
    return {"process_exec": body, "time": rfc3339(time_ns)}


def exit_event(
    process: dict[str, Any],
    parent: dict[str, Any] | None,
    ancestors: list[dict[str, Any]] | None,
    *,
    exit_code: int,
    exit_time_ns: int,
    node_name: str,
    time_ns: int,
) -> dict[str, Any]:
    """``{"process_exit": {process, parent, signal, status, time, ancestors}, ...}``.

    ``exit_code`` is the kernel's wait-status style code (see
    :func:`exit_signal_status`); ``time`` inside the body is the exit time.
    """
    signal, status = exit_signal_status(exit_code)
    body: dict[str, Any] = {"process": process}
    if parent is not None:
        body["parent"] = parent
    if signal:
        body["signal"] = signal
    if status:
        body["status"] = status
    body["time"] = exit_time = rfc3339(exit_time_ns)
    if ancestors:
        body["ancestors"] = ancestors
    # _envelope, written out (one per exit); the pipeline's exits happen when they are
    # reported, so both times are usually one string
    time_str = exit_time if time_ns == exit_time_ns else rfc3339(time_ns)
    if node_name:
        return {"process_exit": body, "node_name": node_name, "time": time_str}
    return {"process_exit": body, "time": time_str}


# The built-in policy name of credential-change events (no loaded policy has it: it is
# not a TracingPolicy, the base sensor reports these).
CRED_CHANGE_POLICY = "process-credentials-changed"
CRED_CHANGE_FUNCTION = "commit_creds"
_ID_NAMES = ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")
_CAP_SETS = (("permitted", "cap_permitted"), ("effective", "cap_effective"),
             ("inheritable", "cap_inheritable"))


def cred_change_summary(old: Credentials | None, new: Credentials,
                        old_groups: tuple[int, ...] | None,
                        new_groups: tuple[int, ...] | None) -> tuple[str, bool]:
    """What changed, for a person (``"uid 0->65534 euid 0->65534 -effective:CAP_KILL"``;
    ``-effective:all`` when the set is now empty), and whether it raised privileges: an id became 0 (root), or a capability was added
    to a set. ``old`` None: unknown (everything counts as new, nothing as raised)."""
    parts: list[str] = []
    raised = False
    if old is None:
        return " ".join(f"{n}={getattr(new, n)}" for n in _ID_NAMES), False
    for name in _ID_NAMES:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            parts.append(f"{name} {a}->{b}")
            raised |= b == 0
    for label, attr in _CAP_SETS:
        a, b = getattr(old, attr), getattr(new, attr)
        added, dropped = b & ~a, a & ~b
        if added:
            parts.append(f"+{label}:" + ",".join(str(c) for c in cap_list(added)))
            raised = True
        if dropped:
            parts.append(f"-{label}:all" if not b else
                         f"-{label}:" + ",".join(str(c) for c in cap_list(dropped)))
    if old.securebits != new.securebits:
        parts.append(f"securebits {old.securebits:#x}->{new.securebits:#x}")
    if old.user_ns_inum != new.user_ns_inum:
        parts.append(f"user_ns {old.user_ns_inum}->{new.user_ns_inum} "
                     f"(level {old.user_ns_level}->{new.user_ns_level})")
    if new_groups is not None and old_groups != new_groups:
        parts.append("groups " + ("?" if old_groups is None else
                                  ",".join(map(str, old_groups)) or "-")
                     + "->" + (",".join(map(str, new_groups)) or "-"))
    return " ".join(parts), raised


def cred_change_event(
    process: dict[str, Any],
    parent: dict[str, Any] | None,
    *,
    call: str,
    old: Credentials | None,
    new: Credentials,
    old_groups: tuple[int, ...] | None,
    groups: tuple[int, ...] | None,
    node_name: str,
    time_ns: int,
) -> dict[str, Any]:
    """A credential change after exec, as the ``process_kprobe`` event Tetragon writes for
    a ``commit_creds`` hook with a ``cred`` argument: ``process`` still has the
    credentials from before the change, ``args[0]`` is the new ``process_credentials_arg``;
    then the syscall (``string_arg`` labelled ``syscall``) and, for setgroups, the new
    supplementary groups (``string_arg`` labelled ``groups``, comma-separated). The policy
    name is ``CRED_CHANGE_POLICY``; ``message`` says what changed; ``tags`` are
    ``credentials`` and, when privileges were raised, ``privileges_raised``."""
    summary, raised = cred_change_summary(old, new, old_groups, groups)
    args: list[dict[str, Any]] = [
        {"process_credentials_arg": credentials_dict(new, full=True)},
        {"string_arg": call, "label": "syscall"},
    ]
    if call == "setgroups" and groups is not None:
        args.append({"string_arg": ",".join(map(str, groups)), "label": "groups"})
    body: dict[str, Any] = {"process": process}
    if parent is not None:
        body["parent"] = parent
    body["function_name"] = CRED_CHANGE_FUNCTION
    body["args"] = args
    body["action"] = "KPROBE_ACTION_POST"
    body["policy_name"] = CRED_CHANGE_POLICY
    body["message"] = f"{call}: {summary}" if summary else call
    body["tags"] = ["credentials", "privileges_raised"] if raised else ["credentials"]
    return _envelope("process_kprobe", body, node_name, time_ns)


class SharedDict(dict):  # type: ignore[type-arg]  # any event dict
    """A message dict shared by many events (a process): never change it after it is
    published. Its JSON is made once, on first need, and ``dumps`` splices those bytes
    into every event that contains it; for every other consumer it is a plain dict."""

    __slots__ = ("_json",)
    _json: orjson.Fragment

    def json_fragment(self) -> orjson.Fragment:
        try:
            return self._json
        except AttributeError:
            # without OPT_PASSTHROUGH_SUBCLASS orjson writes this dict, and any subclass
            # of dict/list/str/int in it, as its base type: what _default gives, with no
            # copy of the dict and no call back per value
            raw = orjson.dumps(self)
            # orjson's bytes keep their ~4 KiB buffer: copy to a right-sized object, as
            # this one lives as long as the process is cached
            self._json = orjson.Fragment(memoryview(raw).tobytes())
            return self._json


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_SUBCLASS


def _default(obj: Any) -> Any:
    """orjson hands us every subclass of dict/list/str/int (``OPT_PASSTHROUGH_SUBCLASS``):
    a ``SharedDict`` as its cached JSON, any other as its base type, which is what orjson
    writes for it without that option."""
    if type(obj) is SharedDict:
        try:
            return obj._json  # the common case, without a second call
        except AttributeError:
            return obj.json_fragment()
    if isinstance(obj, SharedDict):
        return obj.json_fragment()
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, str):
        return str.__str__(obj)  # the string's own characters, whatever __str__ says
    if isinstance(obj, int):
        return int.__int__(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(event: dict[str, Any]) -> bytes:
    """Serialize one event as compact JSON bytes (no trailing newline).

    The same bytes as ``orjson.dumps(event)``; shared process dicts are not serialized
    again. Raises ``orjson.JSONEncodeError`` (a TypeError) for what JSON cannot hold.
    """
    return orjson.dumps(event, _default, _PASSTHROUGH)


def dumps_all(events: Sequence[dict[str, Any]]) -> list[bytes]:
    """``dumps`` of each event; raises on the first one that cannot be encoded."""
    dumps_, default, option = orjson.dumps, _default, _PASSTHROUGH
    return [dumps_(ev, default, option) for ev in events]
