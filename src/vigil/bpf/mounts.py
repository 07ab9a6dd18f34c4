"""The pseudo-filesystems the agent needs, mounted where they are missing.

A freshly booted host (or a container given the host's /sys) may have none of them:

* **tracefs** (``/sys/kernel/tracing``, or debugfs, whose ``tracing/`` directory is an
  automount of tracefs): tracepoint format files, which say where each field of a
  ``syscalls/sys_enter_*`` record lies, and the event ids libbpf attaches by.
* **bpffs** (``/sys/fs/bpf``): pinned objects; libbpf and bpftool expect it.
* **cgroup2**: cgroup programs (connect/bind enforcement) attach to a cgroup v2
  directory. Hosts with only cgroup v1 get one mounted at ``/run/vigil/cgroup2``.
* **securityfs** (``/sys/kernel/security``): the list of active LSMs.

Tetragon mounts the same ones at start. What this module mounted is left mounted on
exit, as Tetragon does: other tools (bpftool, a restarted agent) rely on them, and a
mount is shared by the whole mount namespace, so unmounting it could break another
user. Every step is logged; a mount the kernel refuses is reported with the mount point
and the errno, so a later "tracepoint not found" can name the real cause.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import functools
import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("vigil.mounts")

TRACEFS = "/sys/kernel/tracing"
DEBUGFS = "/sys/kernel/debug"
BPFFS = "/sys/fs/bpf"
SECURITYFS = "/sys/kernel/security"
CGROUP2_FALLBACK = "/run/vigil/cgroup2"

#: every mount this module knows, in the order ``ensure`` handles them
KINDS = ("tracefs", "bpffs", "cgroup2", "securityfs")


@dataclass
class MountReport:
    """What ``ensure`` found: mounted now, already there, or refused (with why)."""

    mounted: dict[str, str] = field(default_factory=dict)   # kind -> mount point
    present: dict[str, str] = field(default_factory=dict)   # kind -> mount point
    failed: dict[str, str] = field(default_factory=dict)    # kind -> reason

    def where(self, kind: str) -> str | None:
        return self.mounted.get(kind) or self.present.get(kind)


def mounts(table: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount this process sees, in table order."""
    out = []
    with open(table, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def tracefs_path() -> str | None:
    """Where tracefs is mounted (``/sys/kernel/tracing`` or debugfs' ``tracing``)."""
    for target, fstype in mounts():
        if fstype == "tracefs" and target in (TRACEFS, f"{DEBUGFS}/tracing"):
            return target
    return None


def cgroup2_path() -> str | None:
    """The first cgroup v2 mount, if any."""
    return next((t for t, fs in mounts() if fs == "cgroup2"), None)


def _mounted(fstype: str, target: str) -> bool:
    return (target, fstype) in mounts()


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    libc.mount.restype = ctypes.c_int
    return libc


def _errtext(err: int) -> str:
    return f"{_errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def mount(fstype: str, target: str) -> str | None:
    """``mount -t fstype none target``. None when it worked, else why it did not."""
    if not os.path.isdir(target):
        return f"mount point {target} does not exist"
    ret = _libc().mount(fstype.encode(), target.encode(), fstype.encode(), 0, None)
    if ret != 0:
        return _errtext(ctypes.get_errno())
    return None


def _tracefs(report: MountReport) -> None:
    where = tracefs_path()
    if where:
        report.present["tracefs"] = where
        return
    why = mount("tracefs", TRACEFS)
    if why is None:
        report.mounted["tracefs"] = TRACEFS
        return
    # kernels (or containers) without /sys/kernel/tracing: debugfs automounts tracing/
    why_debugfs = None if _mounted("debugfs", DEBUGFS) else mount("debugfs", DEBUGFS)
    where = tracefs_path() or (f"{DEBUGFS}/tracing"
                               if os.path.isdir(f"{DEBUGFS}/tracing/events") else None)
    if why_debugfs is None and where:
        report.mounted["tracefs"] = where
        return
    report.failed["tracefs"] = (f"cannot mount tracefs on {TRACEFS}: {why}"
                                + (f"; debugfs on {DEBUGFS}: {why_debugfs}"
                                   if why_debugfs else ""))


def _simple(report: MountReport, kind: str, fstype: str, target: str) -> None:
    if _mounted(fstype, target):
        report.present[kind] = target
        return
    why = mount(fstype, target)
    if why is None:
        report.mounted[kind] = target
    else:
        report.failed[kind] = f"cannot mount {fstype} on {target}: {why}"


def _cgroup2(report: MountReport) -> None:
    where = cgroup2_path()
    if where:
        report.present["cgroup2"] = where
        return
    try:
        os.makedirs(CGROUP2_FALLBACK, mode=0o755, exist_ok=True)
    except OSError as err:
        report.failed["cgroup2"] = f"cannot create {CGROUP2_FALLBACK}: {err.strerror}"
        return
    _simple(report, "cgroup2", "cgroup2", CGROUP2_FALLBACK)


def ensure(kinds: tuple[str, ...] = KINDS) -> MountReport:
    """Mount each of ``kinds`` that is missing; log what was done and what failed."""
    report = MountReport()
    for kind in kinds:
        if kind == "tracefs":
            _tracefs(report)
        elif kind == "bpffs":
            _simple(report, "bpffs", "bpf", BPFFS)
        elif kind == "cgroup2":
            _cgroup2(report)
        elif kind == "securityfs":
            _simple(report, "securityfs", "securityfs", SECURITYFS)
        else:
            raise ValueError(f"unknown mount {kind!r}; known: {', '.join(KINDS)}")
    for kind, where in report.mounted.items():
        log.info("mounted %s on %s (it was missing)", kind, where)
    for kind, why in report.failed.items():
        log.warning("%s is missing and could not be mounted: %s", kind, why)
    return report


def ensure_tracefs() -> str:
    """The tracefs root, mounting it if needed; ``OSError`` naming the mount if the
    kernel refuses (tracepoints cannot be read or attached without it)."""
    report = ensure(("tracefs",))
    where = report.where("tracefs")
    if where is None:
        raise OSError(_errno.ENOENT, report.failed.get("tracefs", "tracefs is not mounted"))
    return where


__all__ = ["KINDS", "MountReport", "cgroup2_path", "ensure", "ensure_tracefs", "mount",
           "mounts", "tracefs_path"]
