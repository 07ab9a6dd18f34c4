"""Ring-buffer records -> Python values. Pure: no ctypes, no kernel access.

Layouts come from ``vigil.abi._generated`` (generated from bpf/include/vigil/abi.h).
Each ``decode_*`` raises ``DecodeError`` on a malformed record; the pipeline counts
those and carries on.
"""

from __future__ import annotations

import platform
import posixpath
import re
import struct
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import NamedTuple, TypeVar

from vigil.abi import _generated as abi
from vigil.process.execid import exec_id
from vigil.process.model import Credentials, ExecFlag, Namespaces, ProcessInfo
from vigil.syscalls import SYSCALL_NAMES


class DecodeError(ValueError):
    """A record is shorter or stranger than its layout says."""


_EXEC = abi.VG_EXEC_MSG
_EXEC_SIZE = _EXEC.size
_EX = abi.VG_EXEC_MSG_INDEX
_CREDS = [_EX[f"creds.{n}"] for n in (
    "uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid", "securebits",
    "cap_permitted", "cap_effective", "cap_inheritable",
    "user_ns_level", "user_ns_uid", "user_ns_gid", "user_ns_inum")]
_NS = [_EX[f"ns.{n}"] for n in (
    "uts", "ipc", "mnt", "pid", "pid_for_children", "net", "time", "time_for_children",
    "cgroup", "user")]
_CLONE = abi.VG_CLONE_MSG
_CL = abi.VG_CLONE_MSG_INDEX
_EXIT = abi.VG_EXIT_MSG
_XT = abi.VG_EXIT_MSG_INDEX
_HDR = abi.VG_MSG_HDR
_clone_fields = itemgetter(*[_CL[n] for n in ("pid", "tid", "ppid", "start_ktime", "hdr.ktime")])
_exit_fields = itemgetter(*[_XT[n] for n in ("pid", "tid", "exit_code", "hdr.ktime")])

# Only these kernel-side flag bits are Tetragon's; VG_FLAG_TRUNC_PATH stays internal.
_EXPORTED_FLAGS = int(sum(f for f in ExecFlag))
_TRUNC_PATH = int(abi.ExecFlag.TRUNC_PATH)
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def partial_layout(msg: str, fields: Sequence[str]) -> struct.Struct:
    """A little-endian layout of only the named fields of ``abi.LAYOUTS[msg]`` (``"name"``,
    or ``"name[i]"`` for element i of an array), in this order, which must be the
    record's; the bytes between them are skipped. Unpacking fewer fields is cheaper:
    hot paths read only what they need."""
    where = {name: (off, size) for name, off, size, _count in abi.LAYOUTS[msg][1]}
    fmt, at = "<", 0
    for field in fields:
        name, _, index = field.partition("[")
        off, size = where[name]
        if index:
            off += int(index.rstrip("]")) * size
        if off < at:
            raise ValueError(f"{msg}: field {field} out of order")
        fmt += "x" * (off - at) + {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
        at = off + size
    return struct.Struct(fmt)


def op_of(record: bytes) -> int:
    """The record's opcode (``vigil.abi._generated.MsgOp``)."""
    return record[0] if record else 0


def decode_path(raw: bytes) -> str:
    """A path resolved in the kernel (forward, no NUL); empty means the root "/"."""
    return raw.decode(errors="replace") if raw else "/"


def executed_binary(raw: bytes, cwd: str) -> str:
    """The exec's ``binary``: the name execve was given (not resolved: ``/bin/sh`` stays
    ``/bin/sh``), made absolute against ``cwd`` and cleaned when it was relative, as
    Tetragon does. Empty when the kernel could not read it."""
    name = raw.decode(errors="replace")
    if name.startswith("/") or not name:
        return name
    return posixpath.normpath(posixpath.join(cwd or "/", name))


def split_argv(raw: bytes) -> tuple[str, ...]:
    """NUL-separated argv as in /proc/PID/cmdline -> argv (invalid UTF-8 -> U+FFFD)."""
    if not raw:
        return ()
    # decoded at once, then split: NUL is never part of a multi-byte sequence, so each
    # argument gets the same replacement characters as when decoded alone
    parts = raw.decode(errors="replace").split("\0")
    if parts[-1] == "":
        parts.pop()
    return tuple(parts)


def docker_id(cgroup_name: str) -> str:
    """Tetragon's ``docker`` field: the first 31 chars of a container id in the cgroup name."""
    if len(cgroup_name) < 64:
        return ""
    m = _CONTAINER_ID.search(cgroup_name)
    return m.group(0)[:31] if m else ""


class ExecRecord(NamedTuple):
    """A decoded exec: the new process (parent not yet linked) and its parent's tgid."""

    process: ProcessInfo
    ppid: int
    path_truncated: bool


# Execs repeat the same credentials, namespaces and cgroup over and over: each distinct
# value is built once and shared (Credentials and Namespaces are immutable), which saves
# most of an exec's decoding. Each table is emptied when it reaches this many entries.
_SHARED_MAX = 4096
_V = TypeVar("_V")
_creds_of: dict[tuple[int, ...], Credentials] = {}
_ns_of: dict[tuple[int, ...], Namespaces] = {}
_cgroup_of: dict[bytes, tuple[str, str]] = {}   # raw cgroup name -> (name, docker id)
# the credential fields, and the namespace inums in Namespaces order, lie contiguous in
# the record: one slice of the unpacked values is the table key
_CREDS_FIRST, _CREDS_END = min(_CREDS), max(_CREDS) + 1
_NS_FIRST, _NS_END = _NS[0], _NS[-1] + 1
if _NS != list(range(_NS_FIRST, _NS_END)):
    raise ImportError("vg_exec_msg: the namespace inums are not in Namespaces field order")


def _shared_creds(v: tuple[int, ...]) -> Credentials:
    key = v[_CREDS_FIRST:_CREDS_END]
    creds = _creds_of.get(key)
    if creds is None:
        if len(_creds_of) >= _SHARED_MAX:
            _creds_of.clear()
        creds = _creds_of[key] = Credentials(*[v[i] for i in _CREDS])
    return creds


def _shared_ns(v: tuple[int, ...]) -> Namespaces:
    key = v[_NS_FIRST:_NS_END]
    ns = _ns_of.get(key)
    if ns is None:
        if len(_ns_of) >= _SHARED_MAX:
            _ns_of.clear()
        ns = _ns_of[key] = Namespaces(*key)
    return ns


def _cgroup(raw: bytes) -> tuple[str, str]:
    """(cgroup name, Tetragon's docker id) of a record's raw cgroup name."""
    out = _cgroup_of.get(raw)
    if out is None:
        if len(_cgroup_of) >= _SHARED_MAX:
            _cgroup_of.clear()
        name = raw.decode(errors="replace")
        out = _cgroup_of[raw] = (name, docker_id(name))
    return out


_NO_AUID = 0xFFFFFFFF  # no login uid (unset), one object for every process

# What decode_exec reads of every record (the credentials and namespaces it takes from
# their tables by their bytes, unpacked only for a value not seen yet)
_EXEC_FRONT = partial_layout("vg_exec_msg", (
    "hdr.ktime", "pid", "tid", "ppid", "flags", "auid", "cgroup_len", "path_len", "cwd_len",
    "args_len", "cgroup_id", "nspid")).unpack_from
_EXEC_AT = {name: off for name, off, *_ in abi.LAYOUTS["vg_exec_msg"][1]}
_CREDS_AT, _CREDS_END_AT = _EXEC_AT["creds.uid"], _EXEC_AT["ns.uts"]
_NS_AT, _NS_END_AT = _EXEC_AT["ns.uts"], _EXEC_AT["nspid"]
# the raw bytes of a record's credentials / namespaces -> the shared value
_creds_by_bytes: dict[bytes, Credentials] = {}
_ns_by_bytes: dict[bytes, Namespaces] = {}


def _by_bytes(table: dict[bytes, _V], rec: bytes, start: int, end: int,
              make: Callable[[tuple[int, ...]], _V]) -> _V:
    """The shared value of the record's bytes ``start:end`` (credentials, namespaces),
    made from the unpacked record the first time those bytes are seen."""
    raw = rec[start:end]
    value = table.get(raw)
    if value is None:
        if len(table) >= _SHARED_MAX:
            table.clear()
        value = table[raw] = make(_EXEC.unpack_from(rec))
    return value


def decode_exec(rec: bytes, node_name: str, boot_wall_ns: int) -> ExecRecord:
    size = len(rec)
    if size < _EXEC_SIZE:
        raise DecodeError(f"exec record of {size} bytes < {_EXEC_SIZE}")
    (ktime, pid, tid, ppid, kflags, auid, cgroup_len, path_len, cwd_len, args_len,
     cgroup_id, ns_pid) = _EXEC_FRONT(rec)
    cgroup_end = _EXEC_SIZE + cgroup_len
    path_end = cgroup_end + path_len
    cwd_end = path_end + cwd_len
    args_end = cwd_end + args_len
    if args_end > size:
        raise DecodeError(f"exec record tail {args_end - _EXEC_SIZE} bytes > "
                          f"{size - _EXEC_SIZE}")
    argv = split_argv(rec[cwd_end:args_end])
    cgroup_name, docker = _cgroup(rec[_EXEC_SIZE:cgroup_end])
    cwd = decode_path(rec[path_end:cwd_end])
    creds = _by_bytes(_creds_by_bytes, rec, _CREDS_AT, _CREDS_END_AT, _shared_creds)
    ns = _by_bytes(_ns_by_bytes, rec, _NS_AT, _NS_END_AT, _shared_ns)
    proc = ProcessInfo(
        exec_id=exec_id(node_name, ktime, pid),
        pid=pid,
        # equal numbers stored as one object (a cached process keeps them all)
        tid=pid if tid == pid else tid,
        ktime=ktime,
        start_time_ns=boot_wall_ns + ktime,
        binary=executed_binary(rec[cgroup_end:path_end], cwd),
        args=argv[1:],
        cwd=cwd,
        flags=kflags & _EXPORTED_FLAGS,
        uid=creds.euid,
        auid=creds.uid if auid == creds.uid else _NO_AUID if auid == _NO_AUID else auid,
        ppid=ppid,
        docker=docker,
        cgroup_id=cgroup_id,
        cgroup_name=cgroup_name,
        creds=creds,
        ns=ns,
        ns_pid=pid if ns_pid == pid else ns_pid,
    )
    return ExecRecord(proc, ppid, bool(kflags & _TRUNC_PATH))


class CloneRecord(NamedTuple):
    pid: int
    tid: int
    ppid: int
    start_ktime: int
    ktime: int


def decode_clone(rec: bytes) -> CloneRecord:
    if len(rec) < _CLONE.size:
        raise DecodeError(f"clone record of {len(rec)} bytes < {_CLONE.size}")
    v = _CLONE.unpack_from(rec)
    return CloneRecord(*_clone_fields(v))


class ExitRecord(NamedTuple):
    pid: int
    tid: int
    exit_code: int
    ktime: int


def decode_exit(rec: bytes) -> ExitRecord:
    if len(rec) < _EXIT.size:
        raise DecodeError(f"exit record of {len(rec)} bytes < {_EXIT.size}")
    v = _EXIT.unpack_from(rec)
    return ExitRecord(*_exit_fields(v))


_CRED = abi.VG_CREDS_MSG
_CR = abi.VG_CREDS_MSG_INDEX
_CRED_FIELDS = [_CR[n] for n in ("pid", "tid", "call", "hdr.ktime", "ngroups", "syscall_nr")]
_CRED_CREDS = [_CR[f"creds.{n}"] for n in (
    "uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid", "securebits",
    "cap_permitted", "cap_effective", "cap_inheritable",
    "user_ns_level", "user_ns_uid", "user_ns_gid", "user_ns_inum")]
_CRED_GROUPS = _CR["groups"]
_CRED_GROUPS_MAX = int(abi.CredLimits.GROUPS)

# The syscall of a VG_MSG_CREDS record (enum vg_cred_call), by its Linux name.
CRED_CALL_NAMES: dict[int, str] = {int(c): c.name.lower() for c in abi.CredCall}
_COMMIT = int(abi.CredCall.COMMIT)
CRED_CALL_NAMES[_COMMIT] = "commit_creds"
# commit_creds records carry the number of the syscall the task was in (x86_64 numbers
# here; elsewhere the call is reported as commit_creds)
_SYSCALLS = SYSCALL_NAMES if platform.machine() == "x86_64" else {}


class CredsRecord(NamedTuple):
    """A process's credentials after a successful credential syscall."""

    pid: int
    tid: int
    call: str              # the syscall's name ("setresuid", "capset", "unshare"...;
                           # "commit_creds" when the kernel changed them outside a syscall)
    ktime: int
    creds: Credentials
    # supplementary groups: all of them, or the first CRED_GROUPS when ngroups says more
    groups: tuple[int, ...]
    ngroups: int


def decode_creds(rec: bytes) -> CredsRecord:
    if len(rec) < _CRED.size:
        raise DecodeError(f"creds record of {len(rec)} bytes < {_CRED.size}")
    v = _CRED.unpack_from(rec)
    pid, tid, call, ktime, ngroups, nr = (v[i] for i in _CRED_FIELDS)
    name = CRED_CALL_NAMES.get(call)
    if name is None:
        raise DecodeError(f"creds record of unknown call {call}")
    if call == _COMMIT:
        name = _SYSCALLS.get(nr, name)
    n = min(ngroups, _CRED_GROUPS_MAX)
    return CredsRecord(pid, tid, name, ktime, Credentials(*[v[i] for i in _CRED_CREDS]),
                       tuple(v[_CRED_GROUPS:_CRED_GROUPS + n]), ngroups)
