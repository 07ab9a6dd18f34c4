"""Bootstrap the process table from ``/proc`` (Tetragon's ``--procfs`` start-up scan).

``scan()`` returns one ``ProcessInfo`` per thread group, flagged ``procFS``, sorted
parents-first so they can be fed to ``ProcessCache.add`` in order. The procfs root is
injectable so tests can build fake trees.

Decisions (where Tetragon's behaviour is not forced on us):

* ``ktime`` = starttime (``stat`` field 22, in clock ticks) x ``10**9 // CLK_TCK`` with
  ``CLK_TCK = os.sysconf("SC_CLK_TCK")``. Tetragon hard-codes 100 ticks/s; that is
  USER_HZ on every mainstream Linux ABI, so both agree in practice, and reading the
  real value keeps exec_ids right on an exotic build.
* Kernel threads (``PF_KTHREAD`` in ``stat`` flags; or, as Tetragon's rule, an empty
  ``cmdline`` plus an unreadable ``exe``): ``binary = "[comm]"`` (e.g.
  ``[kthreadd]``, ``[kworker/0:1]``), as Tetragon names them where they appear (as the
  parent of a usermode helper), no args, and ``kthread`` set: they are cached but never
  announced, as Tetragon emits no exec for them.
* A process whose ``stat``, ``status`` or ``cmdline`` cannot be read (it vanished,
  or we may not look at it) is skipped. Failures on the other files degrade the
  record instead, unless the process directory is gone by then (it exited mid-scan),
  in which case it is skipped too:
  unreadable ``exe`` on a user process -> ``binary`` = argv[0] when it is an
  absolute path (the name it was most likely executed by: pid 1 on hosts that hide
  its ``exe`` even from root), else ``""`` plus ``errorFilename`` (Vigil's addition,
  so consumers can tell);
  unreadable ``cwd`` -> ``cwd = ""`` plus ``rootcwd errorCWD`` (Tetragon's flags);
  missing ``ns/*`` -> inode 0; missing ``loginuid`` -> 4294967295.
* ``parent_exec_id`` comes from ``ppid`` and the parent's starttime; ppid 0 (init,
  kthreadd) names Tetragon's synthetic pid-0 ``<kernel>`` process (ktime 1), which
  ``scan()`` returns first (``kernel_process()``).
* ``cgroup_id`` is left 0: it is not exposed by /proc (BPF events provide it).
"""

from __future__ import annotations

import os
import re
import time

from vigil.process.execid import exec_id
from vigil.process.model import (
    NAMESPACE_NAMES,
    Credentials,
    ExecFlag,
    Namespaces,
    ProcessInfo,
    SharedValues,
)

INVALID_UID = 0xFFFFFFFF
KERNEL_KTIME = 1  # the <kernel> process's ktime (Tetragon's)
_DELETED_SUFFIX = " (deleted)"
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{64}")
_DOCKER_ID_LEN = 31


# ---------------------------------------------------------------------- pure parsers


def _split_stat(text: str) -> tuple[str, list[str]]:
    """Split ``/proc/<pid>/stat`` into (comm, fields from field 3 on).

    comm may contain spaces and parentheses, so it runs from the first ``(`` to the
    *last* ``)``.
    """
    open_idx = text.find("(")
    close_idx = text.rfind(")")
    if open_idx < 0 or close_idx < open_idx:
        raise ValueError("malformed stat: no (comm)")
    # fields up to 22 (starttime) only: the rest would be ~30 strings made and dropped
    return text[open_idx + 1 : close_idx], text[close_idx + 1 :].split(None, 20)


def parse_stat(text: str) -> tuple[int, int]:
    """Return (ppid, starttime in clock ticks) from ``/proc/<pid>/stat`` text."""
    _, rest = _split_stat(text)
    if len(rest) < 20:
        raise ValueError("malformed stat: too few fields")
    # rest[0] is field 3 (state): field N lives at rest[N - 3].
    return int(rest[1]), int(rest[19])


PF_KTHREAD = 0x00200000


def parse_stat_flags(text: str) -> int:
    """Return the task flags (``stat`` field 9: ``PF_*``) from ``/proc/<pid>/stat`` text."""
    _, rest = _split_stat(text)
    return int(rest[6])


def parse_stat_comm(text: str) -> str:
    """Return the comm (task name) from ``/proc/<pid>/stat`` text."""
    return _split_stat(text)[0]


def parse_status(text: str) -> Credentials:
    """Build Credentials from ``/proc/<pid>/status`` (Uid/Gid and CapInh/CapPrm/CapEff).

    Missing Uid/Gid lines give 4294967295 (invalid id, as Tetragon) rather than 0 so a
    malformed file never reads as root; missing capability lines give 0.
    """
    uids = [INVALID_UID] * 4
    gids = [INVALID_UID] * 4
    caps = {"CapInh": 0, "CapPrm": 0, "CapEff": 0}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "Uid":
            uids = _four_ids(value, uids)
        elif key == "Gid":
            gids = _four_ids(value, gids)
        elif key in caps:
            caps[key] = _hex_or_zero(value)
    return Credentials(
        uid=uids[0], euid=uids[1], suid=uids[2], fsuid=uids[3],
        gid=gids[0], egid=gids[1], sgid=gids[2], fsgid=gids[3],
        cap_inheritable=caps["CapInh"],
        cap_permitted=caps["CapPrm"],
        cap_effective=caps["CapEff"],
    )


def _four_ids(value: str, default: list[int]) -> list[int]:
    """Parse "real effective saved fs" ids; keep ``default`` if malformed."""
    try:
        ids = [int(v) for v in value.split()]
    except ValueError:
        return default
    return ids[:4] if len(ids) >= 4 else default


def _hex_or_zero(value: str) -> int:
    try:
        return int(value.strip(), 16)
    except ValueError:
        return 0


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """Return argv[1:] from raw ``cmdline`` bytes (NUL-separated, invalid UTF-8 -> U+FFFD)."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not raw:
        return ()
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0")[1:])


def parse_ns_link(target: str) -> int:
    """Return the inode of a namespace link target like ``net:[4026531840]`` (0 if malformed)."""
    start = target.find("[")
    end = target.find("]", start + 1)
    if start < 0 or end < 0:
        return 0
    try:
        return int(target[start + 1 : end])
    except ValueError:
        return 0


def parse_loginuid(text: str) -> int:
    """Return the audit login uid (4294967295 when unset or unreadable)."""
    try:
        return int(text.strip())
    except ValueError:
        return INVALID_UID


def parse_cgroup(text: str) -> tuple[str, str]:
    """Return (cgroup name, docker id) from ``/proc/<pid>/cgroup`` text.

    The name is the last component of the cgroup-v2 (``0::``) path; when that path is
    the root (hybrid hosts keep v2 unused) the first v1 line with a non-root path is
    used. The docker id is the first 31 characters of the last 64-hex container id
    in that path, else in any line, else "".
    """
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    v2 = [line[3:] for line in text.splitlines() if line.startswith("0::")]
    chosen = next((p for p in v2 + paths if _last_component(p)), v2[0] if v2 else "")
    return _last_component(chosen), _docker_id([chosen, *paths])


def _last_component(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def _docker_id(paths: list[str]) -> str:
    for path in paths:
        found = _CONTAINER_ID_RE.findall(path)
        if found:
            return str(found[-1][:_DOCKER_ID_LEN])
    return ""


# ---------------------------------------------------------------------- clocks


def clk_tck() -> int:
    """Clock ticks per second used by /proc starttime (USER_HZ; 100 if unknown)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100
    return ticks if ticks > 0 else 100


def measure_boot_wall_ns() -> int:
    """Wall-clock time (UNIX epoch ns) of boot-clock zero."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


# ---------------------------------------------------------------------- file access


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _readlink(path: str) -> str:
    return os.readlink(os.fsencode(path)).decode("utf-8", "replace")


class _Reader:
    """Reads one /proc/<pid> directory, remembering whether an optional read failed."""

    def __init__(self, piddir: str) -> None:
        self.piddir = piddir
        self.failed = False

    def required(self, name: str) -> bytes:
        return _read(os.path.join(self.piddir, name))

    def optional(self, name: str) -> bytes | None:
        try:
            return _read(os.path.join(self.piddir, name))
        except OSError:
            self.failed = True
            return None

    def link(self, name: str) -> str | None:
        try:
            return _readlink(os.path.join(self.piddir, name))
        except OSError:
            self.failed = True
            return None

    def vanished(self) -> bool:
        """True if an optional read failed because the process is gone."""
        return self.failed and not os.path.exists(os.path.join(self.piddir, "stat"))


# ---------------------------------------------------------------------- scan


def _binary_and_flags(exe: str | None, cmdline: bytes) -> tuple[str, int]:
    if exe is not None:
        return exe.removesuffix(_DELETED_SUFFIX), 0
    argv0 = cmdline.split(b"\0", 1)[0].decode("utf-8", "replace")
    if argv0.startswith("/"):
        return argv0, 0
    return "", ExecFlag.ERROR_FILENAME


def _cwd_and_flags(cwd: str | None) -> tuple[str, int]:
    if cwd is None:
        return "", ExecFlag.ROOTCWD | ExecFlag.ERROR_CWD
    return cwd, ExecFlag.ROOTCWD if cwd == "/" else 0


def _namespaces(reader: _Reader) -> Namespaces:
    inums: dict[str, int] = {}
    for name in NAMESPACE_NAMES:
        target = reader.link(os.path.join("ns", name))
        inums[name] = parse_ns_link(target) if target is not None else 0
    return Namespaces(**inums)


def _read_process(
    procfs: str, pid: int, node_name: str, tick_ns: int, wall0: int
) -> ProcessInfo | None:
    """Build the ProcessInfo of ``pid`` (parent_exec_id left empty), or None if gone."""
    reader = _Reader(os.path.join(procfs, str(pid)))
    try:
        stat = reader.required("stat").decode("utf-8", "replace")
        status = reader.required("status").decode("utf-8", "replace")
        cmdline = reader.required("cmdline")
        comm, rest = _split_stat(stat)  # once: ppid, flags and starttime from one split
        ppid, kflags, start_ticks = int(rest[1]), int(rest[6]), int(rest[19])
    except (OSError, ValueError, IndexError):
        return None
    exe = reader.link("exe")
    kthread = bool(kflags & PF_KTHREAD) or (not cmdline and exe is None)
    if kthread:
        binary, bflags = f"[{comm}]", 0
    else:
        binary, bflags = _binary_and_flags(exe, cmdline)
    cwd, cflags = _cwd_and_flags(reader.link("cwd"))
    loginuid = reader.optional("loginuid")
    cgroup = reader.optional("cgroup")
    ns = _namespaces(reader)
    if reader.vanished():
        return None
    creds = parse_status(status)
    cgroup_name, docker = parse_cgroup(cgroup.decode("utf-8", "replace")) if cgroup else ("", "")
    ktime = start_ticks * tick_ns
    return ProcessInfo(
        exec_id=exec_id(node_name, ktime, pid),
        pid=pid,
        tid=pid,
        ktime=ktime,
        start_time_ns=wall0 + ktime,
        binary=binary,
        args=parse_cmdline(cmdline),
        cwd=cwd,
        flags=int(ExecFlag.PROCFS | bflags | cflags),
        uid=creds.euid,
        auid=parse_loginuid(loginuid.decode("ascii", "replace")) if loginuid else INVALID_UID,
        ppid=ppid,
        docker=docker,
        cgroup_name=cgroup_name,
        creds=creds,
        ns=ns,
        kthread=kthread,
    )


def _pids(procfs: str) -> list[int]:
    with os.scandir(procfs) as it:
        return [int(e.name) for e in it if e.name.isdigit() and e.is_dir()]


def _parent_ktime(procfs: str, ppid: int, tick_ns: int) -> int | None:
    """Starttime of a parent that the scan did not return (None if unreadable)."""
    try:
        stat = _read(os.path.join(procfs, str(ppid), "stat")).decode("utf-8", "replace")
        return parse_stat(stat)[1] * tick_ns
    except (OSError, ValueError):
        return None


def _link_parents(procs: list[ProcessInfo], procfs: str, node_name: str, tick_ns: int) -> None:
    ktimes = {p.pid: p.ktime for p in procs}
    kernel = exec_id(node_name, KERNEL_KTIME, 0)
    for p in procs:
        if p.ppid == 0:
            p.parent_exec_id = kernel
            continue
        pktime = ktimes.get(p.ppid)
        if pktime is None:
            pktime = _parent_ktime(procfs, p.ppid, tick_ns)
        if pktime is not None:
            p.parent_exec_id = exec_id(node_name, pktime, p.ppid)


def scan(procfs: str = "/proc", node_name: str = "", boot_wall_ns: int | None = None) -> list[ProcessInfo]:
    """Return Tetragon's pid-0 ``<kernel>`` process, then one ProcessInfo per running
    thread group, parents first (by ktime, pid).

    ``boot_wall_ns`` is the wall-clock time of boot-clock zero used for
    ``start_time_ns`` (default: measured now). Processes that vanish or cannot be read
    during the scan are skipped.
    """
    wall0 = measure_boot_wall_ns() if boot_wall_ns is None else boot_wall_ns
    tick_ns = 10**9 // clk_tck()
    procs: list[ProcessInfo] = []
    share = SharedValues()  # equal values stored once, from the start (10k+ processes)
    for pid in _pids(procfs):
        p = _read_process(procfs, pid, node_name, tick_ns, wall0)
        if p is not None:
            share.share_fields(p)
            procs.append(p)
    _link_parents(procs, procfs, node_name, tick_ns)
    procs.sort(key=lambda p: (p.ktime, p.pid))
    return [kernel_process(node_name, wall0), *procs]


def kernel_process(node_name: str = "", boot_wall_ns: int | None = None) -> ProcessInfo:
    """Return Tetragon's synthetic pid-0 ``<kernel>`` process (ktime 1, flag procFS):
    the parent of the processes whose ppid is 0 (init, kthreadd). Its own parent is
    itself, as Tetragon links a ppid of 0 to ``<kernel>``."""
    wall0 = measure_boot_wall_ns() if boot_wall_ns is None else boot_wall_ns
    eid = exec_id(node_name, KERNEL_KTIME, 0)
    return ProcessInfo(
        exec_id=eid,
        pid=0,
        tid=0,
        ktime=KERNEL_KTIME,
        start_time_ns=wall0 + KERNEL_KTIME,
        binary="<kernel>",
        flags=int(ExecFlag.PROCFS),
        auid=INVALID_UID,
        parent_exec_id=eid,
    )
