"""The decider: a process of its own that owns the fanotify groups and answers every
permission event. Run by ``vigil.enforce.service`` as ``python -m vigil.enforce.decider``.

Why a process: a task waiting on a permission event waits on whoever reads the group.
In the agent it would wait on the agent's GIL, i.e. on the event pipeline, the exporters
and the gRPC server. Here the only Python threads are the decision loop and its watchdog.

Safety (a stalled or dead decider must never hang the host):
- every event read is registered with its deadline; the watchdog thread answers any
  event still pending at its deadline with the configured verdict (allow by default;
  deny with --fail-closed), counts it and logs it;
- if the decision loop itself stops turning (stuck in a syscall, a bug), the watchdog
  reads the queued events too and answers them the same way;
- when the agent goes away (control socket closed, or reparented) the decider exits;
  when the decider exits, even by SIGKILL, the kernel closes its groups and every waiter
  is released with "allow" (a dead decider fails open whatever the setting).

One group per policy: removing a policy closes its group (its marks, its cached ignore
marks and its pending events go with it).
"""

from __future__ import annotations

import argparse
import collections
import errno as _errno
import logging
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from vigil.bpf import fanotify as F
from vigil.bpf.object import MapFd
from vigil.enforce import elf, marks, rules, wire
from vigil.policy.plan import FanotifyHook

log = logging.getLogger("vigil.decider")

HOOK_MASKS = {"file_open": F.FAN_OPEN_PERM, "bprm_check_security": F.FAN_OPEN_EXEC_PERM}
MOUNTINFO = "/proc/self/mountinfo"
READ_SIZE = 64 * 1024
LATENCY_SAMPLES = 100_000
MAX_IGNORE_MARKS = 1 << 20   # without evictable marks the kernel keeps them all
_BOOT = time.CLOCK_BOOTTIME


class PodFilter:
    """The kernel's pod-scoping map (vg_pf_cgroups, an fd the agent passed) and where the
    hierarchy that identifies pods is mounted: a task's cgroup there, stat'ed, gives
    the id the map is keyed by (the id bpf_get_current_cgroup_id returns on cgroup v2)."""

    KEY = struct.Struct("<QII")

    def __init__(self, fd: int, root: str, controller: str) -> None:
        self.fd = fd
        self.root = root
        self.controller = controller

    def cgroup_id(self, pid: int) -> int | None:
        try:
            raw = F.read_small(f"/proc/{pid}/cgroup")
            path = rules.parse_cgroup(raw.decode(errors="surrogateescape"), self.controller)
            if path is None:
                return None
            return os.stat(os.path.join(self.root, path.lstrip("/"))).st_ino
        except OSError:
            return None

    def listed(self, cgroup_id: int, filter_id: int) -> bool:
        try:
            MapFd(self.fd, "vg_pf_cgroups").lookup(self.KEY.pack(cgroup_id, filter_id, 0), 1)
        except KeyError:
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)


class ProcSubject:
    """What /proc says about the task behind an event, read lazily, at most once."""

    __slots__ = ("pid", "_bin", "_ns", "_caps", "_cg", "_pf", "_cgid")

    def __init__(self, pid: int, pf: PodFilter | None = None) -> None:
        self.pid = pid
        self._bin: str | None = None
        self._ns: dict[str, int | None] = {}
        self._caps: dict[str, int] | None = None
        self._cg: str | None | bool = False
        self._pf = pf
        self._cgid: int | None | bool = False

    def listed(self, filter_id: int) -> bool:
        """Is the task's cgroup listed under ``filter_id`` in the kernel's pod filter? A
        task whose cgroup cannot be read (gone) is in none."""
        if self._pf is None:
            return False
        if self._cgid is False:
            self._cgid = self._pf.cgroup_id(self.pid)
        if self._cgid is None:
            return False
        return self._pf.listed(self._cgid, filter_id)

    def binary(self) -> str:
        if self._bin is None:
            try:
                self._bin = os.readlink(f"/proc/{self.pid}/exe")
            except OSError:
                self._bin = ""
        return self._bin

    def namespace(self, name: str) -> int | None:
        if name not in self._ns:
            try:
                link = os.readlink(f"/proc/{self.pid}/ns/{name}")
                self._ns[name] = int(link[link.index("[") + 1:-1])
            except (OSError, ValueError):
                self._ns[name] = None
        return self._ns[name]

    def caps(self, fld: str) -> int | None:
        if self._caps is None:
            try:
                raw = F.read_small(f"/proc/{self.pid}/status", 8192)
                self._caps = rules.parse_caps(raw.decode(errors="replace"))
            except OSError:
                self._caps = {}
        return self._caps.get(fld)

    def cgroup(self) -> str | None:
        if self._cg is False:
            try:
                raw = F.read_small(f"/proc/{self.pid}/cgroup")
                self._cg = rules.parse_cgroup(raw.decode(errors="surrogateescape"))
            except OSError:
                self._cg = None
        return self._cg  # type: ignore[return-value]  # False only before the read above


@dataclass
class Group:
    name: str
    fd: int
    hooks: dict[int, list[FanotifyHook]]   # event bit -> hooks
    scope: tuple[str, ...]
    monitor: bool
    marks: list[marks.Mark]
    needs_fs: bool
    workloads: rules.Workloads | None = None   # pod scoping, matchWorkloads
    pf: PodFilter | None = None
    stats: collections.Counter[str] = field(default_factory=collections.Counter)


class Decider:
    def __init__(self, ctl: socket.socket, reports: socket.socket, deadline: float,
                 fail_closed: bool, debug_delay: float = 0.0) -> None:
        self.debug_delay = debug_delay  # tests only: make every decision this slow
        self.ctl = ctl
        self.reports = reports
        self.deadline = deadline
        self.fail_verdict = F.FAN_DENY if fail_closed else F.FAN_ALLOW
        self.fail_closed = fail_closed
        self.groups: dict[int, Group] = {}
        self.by_name: dict[str, Group] = {}
        self.pending: dict[tuple[int, int], float] = {}
        self.lock = threading.Lock()
        self.beat = time.monotonic()
        self.running = True
        self.ppid = os.getppid()
        self.pid = os.getpid()
        self.stats: collections.Counter[str] = collections.Counter()
        self.latency_us: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.loaders: dict[tuple[int, int, int], str] = {}   # (dev, ino, mtime) -> elf kind
        self.evictable = True
        self.ignore_marks = 0
        self._last_log = 0.0
        self.poller = select.poll()
        self.poller.register(ctl.fileno(), select.POLLIN)
        self._mountinfo = open(MOUNTINFO)  # noqa: SIM115 - polled for the process lifetime
        self.poller.register(self._mountinfo.fileno(), select.POLLPRI)
        # named files are inode-marked; their directory entries are watched so that a file
        # replaced by rename (passwd rewriting /etc/shadow) is marked again at once
        self.inotify = F.inotify_init()
        self.poller.register(self.inotify, select.POLLIN)
        self.watch_dirs: dict[int, str] = {}
        self.named: dict[tuple[str, str], list[tuple[int, int]]] = {}  # (dir, name) -> (group fd, mask)

    # -- control ---------------------------------------------------------------------

    def on_ctl(self) -> None:
        try:
            raw, fds, _flags, _addr = socket.recv_fds(self.ctl, wire.MAX_MESSAGE, 4)
        except OSError:
            raw, fds = b"", []
        if not raw:
            for fd in fds:
                os.close(fd)
            self.running = False
            return
        req = orjson.loads(raw)
        req["_fds"] = fds
        try:
            reply = self.handle(req)
        except Exception as err:  # a bad request is answered, never fatal
            log.exception("request %s failed", req.get("op"))
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        for fd in req["_fds"]:  # the ones a request kept were taken out
            os.close(fd)
        self.ctl.send(orjson.dumps(reply))

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "add":
            return self.add(req)
        if op == "remove":
            self.remove(req["name"])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": self.snapshot(bool(req.get("reset")))}
        if op == "ping":
            return {"ok": True, "beat_age": time.monotonic() - self.beat,
                    "pending": len(self.pending)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def add(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req["name"]
        if name in self.by_name:
            self.remove(name)
        hooks: dict[int, list[FanotifyHook]] = {}
        for h in (wire.hook_from_wire(d) for d in req["hooks"]):
            hooks.setdefault(HOOK_MASKS[h.hook], []).append(h)
        fd = F.init(F.FAN_CLASS_PRE_CONTENT | F.FAN_CLOEXEC | F.FAN_NONBLOCK
                    | F.FAN_UNLIMITED_QUEUE | F.FAN_UNLIMITED_MARKS)
        try:
            errnos = {s.deny_errno for hs in hooks.values() for h in hs for s in h.selectors}
            if errnos - {0, _errno.EPERM} and not F.has_deny_errno(fd):
                raise OSError(_errno.EINVAL, "this kernel refuses a custom errno on fanotify "
                              "permission events (needs Linux >= 6.14): use argError -1")
            pairs = [(bit, [s for h in hs for s in h.selectors] if all(h.selectors for h in hs)
                      else []) for bit, hs in hooks.items()]
            planned = marks.plan_marks(pairs, self._mounts())
            notes = self._apply_marks(fd, planned, required=True)
        except BaseException:
            os.close(fd)
            raise
        g = Group(name, fd, hooks, tuple(req.get("scope") or ()), bool(req.get("monitor")),
                  planned, any(m.kind == "fs" for m in planned))
        wl = req.get("workloads")
        if wl:
            if not req.get("_fds"):
                os.close(fd)
                raise ValueError("workloads without the pod filter map's descriptor")
            g.workloads = rules.workloads_from_wire(wl)
            g.pf = PodFilter(req["_fds"].pop(0), wl["root"], wl["controller"])
        self.groups[fd] = g
        self.by_name[name] = g
        self.poller.register(fd, select.POLLIN)
        log.info("policy %s: %d marks (%s)", name, len(planned),
                 ", ".join(f"{m.kind} {m.path}" for m in planned[:8]))
        return {"ok": True, "marks": [f"{m.kind} {m.path} 0x{m.mask:x}" for m in planned],
                "notes": notes}

    def remove(self, name: str) -> None:
        g = self.by_name.pop(name, None)
        if g is None:
            return
        self.groups.pop(g.fd, None)
        self.poller.unregister(g.fd)
        for entry, users in list(self.named.items()):
            self.named[entry] = [u for u in users if u[0] != g.fd]
        with self.lock:
            for key in [k for k in self.pending if k[0] == g.fd]:
                del self.pending[key]
        os.close(g.fd)  # the kernel allows whatever was still pending or queued
        if g.pf is not None:
            g.pf.close()

    def _mounts(self) -> list[marks.Mount]:
        """The mount table, read through the polled file (reading it re-arms the poll)."""
        self._mountinfo.seek(0)
        return marks.parse_mountinfo(self._mountinfo.read())

    def _apply_marks(self, fd: int, planned: list[marks.Mark], required: bool) -> list[str]:
        notes = []
        for m in planned:
            if m.kind == "file":
                parent, name = os.path.split(m.path)
                wd = F.inotify_watch(self.inotify, parent or "/", F.IN_CREATE | F.IN_MOVED_TO)
                self.watch_dirs[wd] = parent or "/"
                self.named.setdefault((parent or "/", name), []).append((fd, m.mask))
                F.mark(fd, F.FAN_MARK_ADD, m.mask, m.path)
                continue
            if m.kind == "dir":
                F.mark(fd, F.FAN_MARK_ADD | F.FAN_MARK_ONLYDIR, m.mask | F.FAN_EVENT_ON_CHILD,
                       m.path)
                continue
            try:
                F.mark(fd, F.FAN_MARK_ADD | F.FAN_MARK_FILESYSTEM, m.mask, m.path)
            except OSError as err:
                if required and err.errno not in (_errno.EINVAL, _errno.ENODEV,
                                                  _errno.EXDEV, _errno.EOPNOTSUPP):
                    raise
                notes.append(f"not marked: {m.path} ({os.strerror(err.errno or 0)})")
        return notes

    def on_entries_changed(self) -> None:
        """A watched directory got a new entry: mark it if a rule names it."""
        try:
            buf = os.read(self.inotify, READ_SIZE)
        except BlockingIOError:
            return
        for wd, _mask, name in F.inotify_parse(buf):
            d = self.watch_dirs.get(wd)
            for gfd, mask in self.named.get((d, name), ()) if d else ():
                g = self.groups.get(gfd)
                if g is None:
                    continue
                try:
                    F.mark(gfd, F.FAN_MARK_ADD, mask, os.path.join(d, name))  # type: ignore[arg-type]  # d is set
                    g.stats["remarked"] += 1
                except OSError as err:
                    self._log(logging.ERROR, "policy %s: cannot mark %s again: %s", g.name,
                              os.path.join(d, name), err)  # type: ignore[arg-type]  # d is set

    def on_mounts_changed(self) -> None:
        mounts = self._mounts()
        for g in self.groups.values():
            if not g.needs_fs:
                continue
            pairs = [(bit, [s for h in hs for s in h.selectors] if all(h.selectors for h in hs)
                      else []) for bit, hs in g.hooks.items()]
            new = [m for m in marks.plan_marks(pairs, mounts) if m not in g.marks]
            if new:
                self._apply_marks(g.fd, new, required=False)
                g.marks += new
                log.info("policy %s: %d new mounts marked", g.name, len(new))

    # -- decisions -------------------------------------------------------------------

    def drain(self, g: Group) -> None:
        try:
            buf = os.read(g.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno == _errno.EBADF:
                return
            raise
        t0 = time.monotonic()
        events = list(F.parse(buf))
        with self.lock:
            for ev in events:
                if ev.fd >= 0:
                    self.pending[(g.fd, ev.fd)] = t0
        out: list[dict[str, Any]] = []
        for ev in events:
            self.beat = time.monotonic()
            if ev.fd < 0:
                g.stats["overflow"] += 1
                continue
            if self.debug_delay:
                time.sleep(self.debug_delay)
            mine: list[dict[str, Any]] = []
            with self.lock:
                late = (g.fd, ev.fd) not in self.pending
            if late:  # the watchdog answered it while we were stuck
                g.stats["late"] += 1
            else:
                try:
                    response = self.decide(g, ev, mine)
                except Exception:  # noqa: BLE001 - a failed decision answers fail_verdict
                    g.stats["errors"] += 1
                    response = self.fail_verdict
                    self._log(logging.ERROR, "decision failed for pid %d", ev.pid, exc=True)
                if self.answer(g, ev.fd, response):
                    out += mine
                self.latency_us.append((time.monotonic() - t0) * 1e6)
            os.close(ev.fd)
        if out:
            self.report(out)

    def answer(self, g: Group, efd: int, response: int) -> bool:
        with self.lock:
            if self.pending.pop((g.fd, efd), None) is None:
                return False  # the watchdog answered it
            F.respond(g.fd, efd, response)
            return True

    def decide(self, g: Group, ev: F.Event, out: list[dict[str, Any]]) -> int:
        bit = ev.mask & (F.FAN_OPEN_PERM | F.FAN_OPEN_EXEC_PERM)
        hooks = g.hooks.get(bit, ())
        g.stats["events"] += 1
        if ev.pid == self.pid:
            return F.FAN_ALLOW  # our own opens (lazy imports): never judged, never waited on
        path = os.readlink(f"/proc/self/fd/{ev.fd}")
        subj = ProcSubject(ev.pid, g.pf)
        response, signal_no, cacheable = F.FAN_ALLOW, 0, True
        for hook in hooks:
            if not rules.path_decides_nothing(hook, path):
                cacheable = False
            d = rules.decide(hook, path, subj, scope=g.scope, monitor=g.monitor,
                             workloads=g.workloads)
            if d is None:
                continue
            if self.unreachable_mount(ev, subj):
                g.stats["backing"] += 1
                return F.FAN_ALLOW
            if bit == F.FAN_OPEN_EXEC_PERM and self.interpreter_load(ev):
                g.stats["interpreter"] += 1
                return F.FAN_ALLOW
            if d.deny_errno and response == F.FAN_ALLOW:
                response = F.deny_errno(d.deny_errno)
            signal_no = signal_no or d.signal
            if d.post:
                out.append(self._report(g, hook, d, ev, path, subj))
        if response != F.FAN_ALLOW:
            g.stats["denied"] += 1
        elif cacheable and hooks:
            self.cache_allow(g, ev, bit, path)
        if signal_no:
            try:
                os.kill(ev.pid, signal_no)
                g.stats["signalled"] += 1
            except OSError:
                pass
        return response

    def _report(self, g: Group, hook: FanotifyHook, d: rules.Decision, ev: F.Event, path: str,
                subj: ProcSubject) -> dict[str, Any]:
        g.stats["monitored" if d.monitor and (d.action != 1) else "posted"] += 1
        try:
            mode = rules.mode_string(os.fstat(ev.fd).st_mode)
        except OSError:
            mode = ""
        return {"h": hook.hook_id, "pid": ev.pid, "path": path, "perm": mode, "a": d.action,
                "m": d.monitor, "sel": d.selector, "err": d.deny_errno,
                "k": time.clock_gettime_ns(_BOOT), "bin": subj.binary()}

    def cache_allow(self, g: Group, ev: F.Event, bit: int, path: str) -> None:
        """Ask the kernel to stop reporting this file to this group for ``bit``: safe only
        when the path is the file's one name (one link, and the path leads back to it)."""
        if self.ignore_marks >= MAX_IGNORE_MARKS and not self.evictable:
            return
        try:
            st = os.fstat(ev.fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return
            st2 = os.stat(path)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                return
            flags = F.FAN_MARK_ADD | F.FAN_MARK_IGNORED_MASK
            if self.evictable:
                try:
                    F.mark(g.fd, flags | F.FAN_MARK_EVICTABLE, bit, None, dirfd=ev.fd)
                except OSError as err:
                    if err.errno != _errno.EINVAL:
                        raise
                    self.evictable = False
                    F.mark(g.fd, flags, bit, None, dirfd=ev.fd)
            else:
                F.mark(g.fd, flags, bit, None, dirfd=ev.fd)
            self.ignore_marks += 1
            g.stats["cached"] += 1
        except OSError:
            g.stats["cache_errors"] += 1

    def unreachable_mount(self, ev: F.Event, subj: ProcSubject) -> bool:
        """Is the event's file on a mount the task cannot reach by any path?

        That is a stacking filesystem's backing file: an open on overlayfs (or FUSE
        passthrough) opens the real file on the layer's private mount, and since Linux 6.8
        the kernel reports that open too, with a path relative to the layer (``/bin/true``
        for ``/usr/bin/true`` when ``/usr`` is an overlay). The task's own open of the
        file it named has an event of its own, judged by its real path; the backing one
        is not judged by a path the task never used. A task whose mounts cannot be read
        (gone) is judged normally."""
        try:
            mnt = rules.parse_fdinfo_mnt_id(F.read_small(f"/proc/self/fdinfo/{ev.fd}").decode())
            if mnt is None:
                return False
            with open(f"/proc/{subj.pid}/mountinfo", "rb") as f:
                ids = rules.mountinfo_ids(f.read().decode(errors="surrogateescape"))
        except OSError:
            return False
        return bool(ids) and mnt not in ids

    def interpreter_load(self, ev: F.Event) -> bool:
        """Is this exec-open the dynamic loader of another program being executed?"""
        try:
            st = os.fstat(ev.fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            kind = self.loaders.get(key)
            if kind is None:
                kind = elf.elf_kind(os.pread(ev.fd, 4096, 0))
                if len(self.loaders) > 4096:
                    self.loaders.clear()
                self.loaders[key] = kind
            if kind != "loader":
                return False
            target = self._exec_target(ev.pid)
            return target is not None and target != (st.st_dev, st.st_ino)
        except OSError:
            return False

    def _exec_target(self, pid: int) -> tuple[int, int] | None:
        """(dev, ino) of the file the task's execve/execveat names."""
        parsed = elf.parse_syscall(F.read_small(f"/proc/{pid}/syscall").decode())
        if parsed is None:
            return None
        call = elf.exec_call(*parsed)
        if call is None:
            return None
        dirfd, ptr, flags = call
        name = F.read_user_string(pid, ptr)
        if name == "" and flags & elf.AT_EMPTY_PATH:
            st = os.stat(f"/proc/{pid}/fd/{dirfd}")
        elif name.startswith("/"):
            st = os.stat(f"/proc/{pid}/root{name}")
        elif dirfd == elf.AT_FDCWD:
            st = os.stat(f"/proc/{pid}/cwd/{name}")
        else:
            st = os.stat(f"/proc/{pid}/fd/{dirfd}/{name}")
        return st.st_dev, st.st_ino

    # -- reports, stats --------------------------------------------------------------

    def report(self, items: list[dict[str, Any]]) -> None:
        for i in range(0, len(items), 128):
            chunk = items[i:i + 128]
            try:
                self.reports.send(orjson.dumps(chunk), socket.MSG_DONTWAIT)
            except OSError:  # full (the agent is slow) or gone: drop, count, never wait
                self.stats["reports_dropped"] += len(chunk)

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        lat = sorted(self.latency_us)
        pct = {}
        if lat:
            for p in (50, 90, 99, 99.9):
                pct[f"p{p}"] = round(lat[min(len(lat) - 1, int(len(lat) * p / 100))], 1)
            pct["max"] = round(lat[-1], 1)
            pct["n"] = len(lat)
        out = {"global": dict(self.stats), "latency_us": pct, "ignore_marks": self.ignore_marks,
               "evictable": self.evictable,
               "groups": {g.name: dict(g.stats) for g in self.groups.values()}}
        if reset:
            self.latency_us.clear()
            self.stats.clear()
            for g in self.groups.values():
                g.stats.clear()
        return out

    def _log(self, level: int, msg: str, *args: Any, exc: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            self._last_log = now
            log.log(level, msg, *args, exc_info=exc)

    # -- loops -----------------------------------------------------------------------

    def run(self) -> None:
        self._poll_ms = max(1, min(200, int(self.deadline * 250)))
        wd = threading.Thread(target=self.watchdog, name="vigil-decider-watchdog", daemon=True)
        wd.start()
        self.ctl.send(orjson.dumps({"op": "ready", "pid": os.getpid()}))
        try:
            while self.running:
                self.beat = time.monotonic()
                for fd, evmask in self.poller.poll(self._poll_ms):
                    if fd == self.ctl.fileno():
                        if evmask & (select.POLLHUP | select.POLLERR) and not evmask & select.POLLIN:
                            self.running = False
                        else:
                            self.on_ctl()
                    elif fd == self._mountinfo.fileno():
                        self.on_mounts_changed()
                    elif fd == self.inotify:
                        self.on_entries_changed()
                    elif fd in self.groups:
                        self.drain(self.groups[fd])
        finally:
            self.running = False
            for name in list(self.by_name):
                self.remove(name)

    def watchdog(self) -> None:
        tick = max(0.005, min(self.deadline / 4, 0.05))
        while self.running:
            time.sleep(tick)
            now = time.monotonic()
            with self.lock:
                overdue = [k for k, t in self.pending.items() if now - t >= self.deadline]
                for gfd, efd in overdue:
                    del self.pending[(gfd, efd)]
                    try:
                        F.respond(gfd, efd, self.fail_verdict)
                    except OSError:
                        pass
            if overdue:
                self._watchdog_answered(len(overdue), "decision overdue")
            if now - self.beat > self.deadline:
                self._answer_queue()
            if os.getppid() != self.ppid:
                os._exit(0)  # the agent is gone: closing the groups releases everyone

    def _answer_queue(self) -> None:
        """The decision loop is stuck: answer what is queued, as the loop would on timeout."""
        n = 0
        for g in list(self.groups.values()):
            while True:
                try:
                    buf = os.read(g.fd, READ_SIZE)
                except OSError:
                    break
                for ev in F.parse(buf):
                    if ev.fd < 0:
                        continue
                    verdict = F.FAN_ALLOW if ev.pid == self.pid else self.fail_verdict
                    try:
                        F.respond(g.fd, ev.fd, verdict)
                    except OSError:
                        pass
                    os.close(ev.fd)
                    n += 1
        if n:
            self._watchdog_answered(n, "decision loop stalled")

    def _watchdog_answered(self, n: int, why: str) -> None:
        self.stats["watchdog_" + ("deny" if self.fail_closed else "allow")] += n
        verdict = "denied" if self.fail_closed else "allowed"
        self._log(logging.WARNING, "watchdog: %s: %d events %s without a decision "
                  "(deadline %.3fs)", why, n, verdict, self.deadline)
        self.report([{"w": why, "n": n, "verdict": verdict}])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vigil-decider")
    ap.add_argument("--ctl-fd", type=int, required=True)
    ap.add_argument("--reports-fd", type=int, required=True)
    ap.add_argument("--deadline", type=float, default=0.5)
    ap.add_argument("--fail-closed", action="store_true")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--debug-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="SCHED_FIFO priority of the decider (0: normal scheduling)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.setswitchinterval(0.0005)  # the watchdog gets the GIL quickly
    if a.rt_priority:
        try:  # before any thread starts: the watchdog inherits it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(a.rt_priority))
        except OSError as err:
            log.warning("SCHED_FIFO %d refused (%s): normal scheduling", a.rt_priority, err)
    ctl = socket.socket(fileno=a.ctl_fd)
    reports = socket.socket(fileno=a.reports_fd)
    Decider(ctl, reports, a.deadline, a.fail_closed, a.debug_delay).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
