"""What Vigil knows about one process instance (one exec, one clone or one /proc entry).

Pure data: no ctypes, no kernel access. The decoder (``vigil.events.decode``) builds
these from ring-buffer records, ``vigil.process.procfs`` builds them from ``/proc``,
the cache (``vigil.process.cache``) links them, and the encoder
(``vigil.events.encode``) turns them into Tetragon's JSON shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class ExecFlag(enum.IntFlag):
    """Tetragon's process ``flags`` bits, in the order Tetragon prints them."""

    EXECVE = 0x1
    PROCFS = 0x4
    ERROR_ENVS = 0x8
    TRUNC_ARGS = 0x10
    MISS = 0x40
    ERROR_FILENAME = 0x100
    ERROR_ARGS = 0x200
    NOCWD = 0x800
    ROOTCWD = 0x1000
    ERROR_CWD = 0x2000
    CLONE = 0x4000
    ERROR_CGROUP_NAME = 0x10000
    ERROR_CGROUP_ID = 0x200000
    ERROR_CGROUP_SUBSYS_CGRP = 0x40000
    ERROR_CGROUP_SUBSYS = 0x80000
    ERROR_CGROUPS = 0x100000
    ERROR_PATH_RESOLUTION_CWD = 0x400000
    DATA_FILENAME = 0x800000
    DATA_ARGS = 0x1000000
    IN_INIT_TREE = 0x2000000


# Tetragon's names for the bits above, in its fixed print order.
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (ExecFlag.EXECVE, "execve"),
    (ExecFlag.PROCFS, "procFS"),
    (ExecFlag.ERROR_ENVS, "errorEnvs"),
    (ExecFlag.TRUNC_ARGS, "truncArgs"),
    (ExecFlag.MISS, "miss"),
    (ExecFlag.ERROR_FILENAME, "errorFilename"),
    (ExecFlag.ERROR_ARGS, "errorArgs"),
    (ExecFlag.NOCWD, "nocwd"),
    (ExecFlag.ROOTCWD, "rootcwd"),
    (ExecFlag.ERROR_CWD, "errorCWD"),
    (ExecFlag.CLONE, "clone"),
    (ExecFlag.ERROR_CGROUP_NAME, "errorCgroupName"),
    (ExecFlag.ERROR_CGROUP_ID, "errorCgroupID"),
    (ExecFlag.ERROR_CGROUP_SUBSYS_CGRP, "errorCgroupSubsysCgrp"),
    (ExecFlag.ERROR_CGROUP_SUBSYS, "errorCgroupSubsys"),
    (ExecFlag.ERROR_CGROUPS, "errorCgroups"),
    (ExecFlag.ERROR_PATH_RESOLUTION_CWD, "errorPathResolutionCwd"),
    (ExecFlag.DATA_FILENAME, "dataFilename"),
    (ExecFlag.DATA_ARGS, "dataArgs"),
    (ExecFlag.IN_INIT_TREE, "inInitTree"),
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """All of a task's ids and capability sets at exec time (kernel_cap_t as 64-bit masks)."""

    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    suid: int = 0
    sgid: int = 0
    fsuid: int = 0
    fsgid: int = 0
    securebits: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0
    cap_inheritable: int = 0
    user_ns_level: int = 0
    user_ns_uid: int = 0
    user_ns_gid: int = 0
    user_ns_inum: int = 0


NAMESPACE_NAMES: tuple[str, ...] = (
    "uts", "ipc", "mnt", "pid", "pid_for_children", "net",
    "time", "time_for_children", "cgroup", "user",
)


@dataclass(frozen=True, slots=True)
class Namespaces:
    """Namespace inode numbers, in Tetragon's field order (0 = unknown)."""

    uts: int = 0
    ipc: int = 0
    mnt: int = 0
    pid: int = 0
    pid_for_children: int = 0
    net: int = 0
    time: int = 0
    time_for_children: int = 0
    cgroup: int = 0
    user: int = 0


@dataclass(slots=True)
class ProcessInfo:
    """One process instance.

    Identity is ``exec_id`` = base64("<node>:<ktime>:<pid>"), see
    ``vigil.process.execid``. ``ktime`` is in boot-clock nanoseconds (the BPF side uses
    ``bpf_ktime_get_boot_ns``; the /proc scan uses starttime ticks x 10^7, as Tetragon).
    Fields other than the refcount/exit bookkeeping never change after creation, except
    the credentials (``uid``, ``creds``, ``groups``): a credential change after exec
    replaces them, through ``ProcessCache.update_creds``, and drops ``encoded``.
    """

    exec_id: str
    pid: int
    tid: int
    ktime: int
    start_time_ns: int          # wall clock (UNIX epoch ns) of ktime
    binary: str
    args: tuple[str, ...] = ()  # argv[1:], decoded (invalid UTF-8 -> U+FFFD)
    # Tetragon's ``arguments`` string when it is not join_arguments(args): set (with
    # args emptied) by --redaction-filters, see vigil.events.redact
    arguments: str | None = None
    cwd: str = ""
    flags: int = 0              # ExecFlag bits
    uid: int = 0                # effective uid, Tetragon's "uid"
    auid: int = 0xFFFFFFFF
    parent_exec_id: str = ""
    ppid: int = 0
    docker: str = ""
    cgroup_id: int = 0
    cgroup_name: str = ""
    creds: Credentials = field(default_factory=Credentials)
    # supplementary groups, once a setgroups was seen (None: not known; exec records
    # and the /proc scan do not carry them)
    groups: tuple[int, ...] | None = None
    ns: Namespaces = field(default_factory=Namespaces)
    ns_pid: int = 0             # pid in its own pid namespace (a container's); 0: unknown
    in_init_tree: bool = False
    # a fork child that has not exec'd (yet): Tetragon's clone-only process, exported
    # (by its exit, or as a parent) with flags "execve" and refcnt 1
    forked: bool = False
    # a kernel thread found by the /proc scan: cached (a parent of usermode helpers),
    # never exported as an exec of its own
    kthread: bool = False
    # the Tetragon JSON dict of this process, built once on first use by the pipeline
    encoded: dict[str, object] | None = field(default=None, repr=False, compare=False)
    # bookkeeping owned by the process cache
    refcnt: int = 0
    exited: bool = False
    exit_time_ns: int = 0
    holding: bool = False      # holds its own reference (current and not exited)
    parent_ref: bool = False   # holds a reference on its parent (parent_exec_id)


# Distinct values a SharedValues table holds before it starts over.
SHARED_VALUES_LIMIT = 8192


class SharedValues:
    """One copy of each equal value among process records.

    Most processes on a node share their credentials, namespaces, working directory,
    cgroup and binary with many others (and /proc-scanned or forked ones even their
    arguments); storing each value once makes a cached process cost a few hundred bytes
    instead of ~1.8 KB. The table is bounded: when it holds ``limit`` values it starts
    over (values already shared stay shared; only new ones get a fresh copy).
    """

    __slots__ = ("limit", "_table")

    def __init__(self, limit: int = SHARED_VALUES_LIMIT) -> None:
        self.limit = limit
        self._table: dict[object, object] = {}

    def __call__(self, value: _T) -> _T:
        table = self._table
        got = table.get(value)
        if got is not None:
            return got  # type: ignore[return-value]  # equal to value, so of its type
        if len(table) >= self.limit:
            table.clear()
        table[value] = value
        return value

    def share_texts(self, p: ProcessInfo) -> None:
        """Replace ``p``'s binary, working directory, arguments and exec flags with the
        table's equal copies."""
        # self(value), with the lookup of a value already held done here (an exec's
        # binary, working directory and flags usually are)
        get: Callable[[object], Any] = self._table.get
        binary, cwd, args, flags = p.binary, p.cwd, p.args, p.flags
        p.binary = get(binary) or self(binary)
        p.cwd = get(cwd) or self(cwd)
        p.args = get(args) or self(args)
        got = get(flags)
        p.flags = got if got is not None else self(flags)

    def share_fields(self, p: ProcessInfo) -> None:
        """Replace every shareable field of ``p`` with the table's equal copy."""
        self.share_texts(p)
        p.creds = self(p.creds)
        p.ns = self(p.ns)
        p.cgroup_name = self(p.cgroup_name)
        p.docker = self(p.docker)
