"""Records -> process cache -> Tetragon event dicts. Pure: no ctypes, no kernel access.

One thread (the agent's reader) calls ``handle()``; it never raises for a bad record:
it counts it and goes on. Each process's JSON dict is built once (``ProcessInfo.encoded``)
and shared by every event that mentions the process.

Linking rules (as Tetragon's user-visible behaviour):
- exec: after a fork (the pid's current instance is a clone not yet exec'd) the parent
  is the current instance of the real parent's tgid and the flags carry ``clone``; an
  exec without a fork (``env`` exec'ing ``true``) has the program the pid ran before as
  its parent; a pid never seen links to the real parent's current instance.
- clone: a new process instance copying its parent's binary, args and cwd, with
  Tetragon's flags for it (``execve``: its BPF marks clones with the bit that decodes as
  execve) and refcnt 1 in its dict; not exported itself, it is the process of its exit
  event when it exits without exec, and the parent of what it execs or forks.
- exit: of the current instance of the tgid; a second exit of the same instance (two
  threads finishing at once) is dropped and counted. An exit flagged as sent while its
  cgroup was throttled (``--cgroup-rate``) updates the cache but exports nothing. Kernel
  threads (found by the /proc scan, or forked by one and not exec'd) are cached but, as
  in Tetragon, neither announced nor their exits exported.
- throttle: ``process_throttle`` START/STOP for a cgroup (see ``vigil.stream.throttle``).
- creds: a process changed its credentials after exec (any commit_creds where the
  kernel allows a hook there, else setuid ... capset, prctl securebits). The current
  instance of the tgid takes the new ones, so every later event of the process (and of
  children forked after) reports them; a record that changes nothing (another thread of
  the same glibc setxid broadcast, setuid to the same id) is counted and dropped. A change is exported (``EventOptions.cred_change_events``; not
  when sent while its cgroup was throttled, like exits) as a ``process_kprobe`` of the
  built-in policy ``process-credentials-changed``, shaped as Tetragon's event of a
  ``commit_creds`` hook (see ``encode.cred_change_event``); its ``process`` still has
  the credentials from before the change.

Other sensors add their opcodes with ``add_handler``.
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vigil.abi._generated import MsgOp
from vigil.events import decode, encode
from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import ExecFlag, Namespaces, ProcessInfo
from vigil.stream.throttle import ThrottleTracker, decode_throttle, is_throttled, throttle_event

Event = dict[str, Any]
Handler = Callable[[bytes], "Event | None"]

# Plain ints: IntFlag arithmetic builds enum members, at microseconds each.
_CLONE, _EXECVE = int(ExecFlag.CLONE), int(ExecFlag.EXECVE)
# Every field of a ProcessInfo, read at once (a clone copies its parent's).
_PROCESS_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessInfo))
_process_values = operator.attrgetter(*_PROCESS_FIELDS)
# The fields a clone sets (the rest it copies from its parent; kthread too), by position,
# in the order _on_clone gives their values.
_CLONE_SET = tuple(_PROCESS_FIELDS.index(name) for name in (
    "exec_id", "pid", "tid", "ktime", "start_time_ns", "flags", "parent_exec_id", "ppid",
    "forked", "encoded", "refcnt", "exited", "exit_time_ns"))
(_C_EXEC_ID, _C_PID, _C_TID, _C_KTIME, _C_START, _C_FLAGS, _C_PARENT_EXEC_ID, _C_PPID,
 _C_FORKED, _C_ENCODED, _C_REFCNT, _C_EXITED, _C_EXIT_TIME) = _CLONE_SET
# A clone for a pid the /proc scan already saw, started within one clock tick of it,
# is the same process seen twice (the scan raced the live ring).
_SCAN_SLACK_NS = 20_000_000
# How many processes keep their encoded JSON dict between events. A process's dict is
# reused by each of its events and its children's; beyond this many, the least recently
# encoded process gives its dict up (rebuilt if it is needed again), so that thousands
# of idle processes do not each hold ~1.5 KB of JSON the agent may never send again.
ENCODED_PROCESSES = 512


@dataclass(frozen=True)
class EventOptions:
    """What goes into each event (Tetragon's --enable-process-cred/-ns/--enable-ancestors)."""

    node_name: str = ""
    process_cred: bool = False
    process_ns: bool = False
    ancestors: bool = False
    host_ns: Namespaces | None = None
    # --redaction-filters (vigil.events.redact.Redactor); None: arguments as executed
    redactor: Any = None
    # export each credential change after exec as an event (the cache follows them either way)
    cred_change_events: bool = True


class Pipeline:
    """Turns decoded ring-buffer records into events, keeping the process cache current."""

    def __init__(self, cache: ProcessCache, options: EventOptions,
                 boot_wall_ns: Callable[[], int],
                 throttle: ThrottleTracker | None = None) -> None:
        self.cache = cache
        self.opts = options
        self._boot_wall_ns = boot_wall_ns
        # boot_wall_ns() as of the batch being handled: read once per handle() call, not
        # once per record (handlers add it to the records' boot-clock times)
        self.boot_wall = boot_wall_ns()
        self.records: defaultdict[int, int] = defaultdict(int)  # by opcode (faster than Counter)
        self.decode_errors = Counter[int]()  # by opcode
        self.unknown_ops = 0
        self.duplicate_exits = 0
        self.missing_process = 0            # exits of processes we never saw
        self.throttle = throttle if throttle is not None else ThrottleTracker()
        self.cred_changes = 0               # credential changes applied to the cache
        self.cred_unchanged = 0             # credential records that changed nothing
        # called with a process whose cached credentials changed (its encoded dict is
        # new): who keeps copies of process dicts drops them
        self.process_changed: list[Callable[[ProcessInfo], None]] = []
        # processes whose ``encoded`` dict process_json built, oldest first
        self._encoded: deque[ProcessInfo] = deque()
        # the ``process.pod`` block of a process in a container (vigil.containers), asked
        # once per process, when it is first encoded; None: no container metadata
        self.pod_of: Callable[[ProcessInfo], dict[str, Any] | None] | None = None
        # redaction runs on every new process record, before it is cached or encoded
        self._redact: Callable[[ProcessInfo], None] | None = (
            options.redactor.apply if options.redactor else None)
        self._handlers: dict[int, Handler] = {
            MsgOp.EXEC: self._on_exec,
            MsgOp.CLONE: self._on_clone,
            MsgOp.EXIT: self._on_exit,
            MsgOp.THROTTLE: self._on_throttle,
            MsgOp.CREDS: self._on_creds,
        }

    def add_handler(self, op: int, handler: Handler) -> None:
        """Route records of opcode ``op`` to ``handler`` (raise DecodeError/ValueError on a
        bad record; return an event or None). Call before the reader thread starts."""
        self._handlers[op] = handler

    def remove_handler(self, op: int) -> None:
        self._handlers.pop(op, None)

    # -- entry points ----------------------------------------------------------------

    def bootstrap(self, procs: Iterable[ProcessInfo]) -> list[Event]:
        """Add processes found by the /proc scan (parents first); one procFS exec each,
        except for kernel threads (cached, as parents, but not announced, as Tetragon).

        A pid the live ring already reported is skipped: the ring's view is newer.
        """
        events = []
        for p in procs:
            if self.cache.current(p.pid) is not None:
                continue
            if self._redact is not None:
                self._redact(p)
            self.cache.add(p)
            if not p.kthread:
                events.append(self._exec_event(p, p.start_time_ns))
        return events

    def handle(self, records: Iterable[bytes]) -> list[Event]:
        """Process a batch of raw records; return the events to export, in order."""
        out: list[Event] = []
        self.boot_wall = self._boot_wall_ns()
        append, handlers = out.append, self._handlers
        # records come in runs of one opcode (a burst of policy events, of execs): its
        # handler is looked up and its records counted once per run
        op, handler, run = -1, None, 0
        try:
            for rec in records:
                rec_op = rec[0] if rec else 0  # decode.op_of, inlined
                if rec_op != op:
                    if run:
                        self.records[op] += run
                    op, handler, run = rec_op, handlers.get(rec_op), 0
                run += 1
                if handler is None:
                    self.unknown_ops += 1
                    continue
                try:
                    ev = handler(rec)
                except ValueError:  # decode.DecodeError and other malformed-record errors
                    self.decode_errors[op] += 1
                    continue
                if ev is not None:
                    append(ev)
        finally:
            if run:
                self.records[op] += run
        return out

    # -- handlers --------------------------------------------------------------------

    def _on_exec(self, rec: bytes) -> Event:
        r = decode.decode_exec(rec, self.opts.node_name, self.boot_wall)
        p = r.process
        if self._redact is not None:
            self._redact(p)
        cache = self.cache
        prev = cache.writer_current(p.pid)
        if prev is None or prev.exited:
            parent = cache.writer_current(r.ppid)
        elif prev.forked:
            p.flags |= _CLONE
            parent = cache.writer_current(r.ppid)
        else:
            parent = prev  # exec without fork: the pid's previous program
        if parent is not None:
            p.parent_exec_id = parent.exec_id
        cache.add(p)
        return self._exec_event(p, p.start_time_ns)

    def _on_clone(self, rec: bytes) -> None:
        pid, tid, ppid, start_ktime, _ktime = decode.decode_clone(rec)
        cache = self.cache
        prev = cache.writer_current(pid)
        if prev is not None and abs(prev.ktime - start_ktime) < _SCAN_SLACK_NS:
            return None  # the /proc scan already has this very process
        parent = cache.writer_current(ppid)
        if parent is None:
            return None  # forked by a process we never saw: its exec will still link
        values = list(_process_values(parent))
        (values[_C_EXEC_ID], values[_C_PID], values[_C_TID], values[_C_KTIME],
         values[_C_START], values[_C_FLAGS], values[_C_PARENT_EXEC_ID], values[_C_PPID],
         values[_C_FORKED], values[_C_ENCODED], values[_C_REFCNT], values[_C_EXITED],
         values[_C_EXIT_TIME]) = (
            exec_id(self.opts.node_name, start_ktime, pid), pid, tid, start_ktime,
            self.boot_wall + start_ktime, _EXECVE, parent.exec_id, parent.pid, True, None,
            0, False, 0)
        cache.add(ProcessInfo(*values), texts_shared=True)  # its parent's
        return None

    def _on_exit(self, rec: bytes) -> Event | None:
        x = decode.decode_exit(rec)
        exit_wall = self.boot_wall + x.ktime
        cache = self.cache
        p = cache.mark_exited(x.pid, exit_wall)
        if p is None:
            if cache.current(x.pid) is not None:
                self.duplicate_exits += 1
            else:
                self.missing_process += 1
            return None
        if is_throttled(rec):
            self.throttle.on_suppressed_exit(p.cgroup_id)
            return None
        if p.kthread:  # kernel threads are never announced, their exits neither
            return None
        parent = cache.writer_get(p.parent_exec_id) if p.parent_exec_id else None
        return encode.exit_event(
            p.encoded if p.encoded is not None else self.process_json(p),
            None if parent is None else
            parent.encoded if parent.encoded is not None else self.process_json(parent),
            self._ancestors_json(p),
            exit_code=x.exit_code,
            exit_time_ns=exit_wall,
            node_name=self.opts.node_name,
            time_ns=exit_wall,
        )

    def _on_throttle(self, rec: bytes) -> Event | None:
        r = decode_throttle(rec)
        out = self.throttle.on_record(r)
        if out is None:
            return None
        return throttle_event(out[0], out[1], self.opts.node_name,
                              self.boot_wall + r.ktime)

    def _on_creds(self, rec: bytes) -> Event | None:
        r = decode.decode_creds(rec)
        groups = r.groups if r.call == "setgroups" else None
        p, parent = self.cache.current_and_parent(r.pid)
        if p is not None and p.creds == r.creds and (groups is None or groups == p.groups):
            self.cred_unchanged += 1
            return None
        self.cred_changes += 1
        ev = None
        if (self.opts.cred_change_events and (p is None or not p.kthread)
                and not is_throttled(rec)):
            if p is None:
                proc: dict[str, Any] = {"pid": r.pid, "tid": r.tid}
            else:
                proc = encode.process_view(self.process_json(p), r.tid, p.refcnt)
            ev = encode.cred_change_event(
                proc, self.process_json(parent) if parent is not None else None,
                call=r.call, old=p.creds if p is not None else None, new=r.creds,
                old_groups=p.groups if p is not None else None, groups=groups,
                node_name=self.opts.node_name, time_ns=self.boot_wall + r.ktime)
        if p is not None:
            self.cache.update_creds(p, r.creds, groups)
            for notify in self.process_changed:
                notify(p)
        return ev

    # -- encoding --------------------------------------------------------------------

    def process_json(self, p: ProcessInfo) -> dict[str, Any]:
        """The process's Tetragon dict, built once and reused while it is among the
        ENCODED_PROCESSES most recently encoded."""
        enc = p.encoded
        if enc is None:
            pod = self.pod_of(p) if self.pod_of is not None and p.docker else None
            enc = p.encoded = encode.process_dict(p, cred=self.opts.process_cred,
                                                  ns=self.opts.process_ns,
                                                  host_ns=self.opts.host_ns, pod=pod)
            held = self._encoded
            held.append(p)
            if len(held) > ENCODED_PROCESSES:
                held.popleft().encoded = None
        return enc

    def _ancestors_json(self, p: ProcessInfo) -> list[dict[str, Any]] | None:
        if not self.opts.ancestors:
            return None
        return [self.process_json(a) for a in self.cache.ancestors(p)]

    def _exec_event(self, p: ProcessInfo, time_ns: int) -> Event:
        parent = self.cache.writer_get(p.parent_exec_id) if p.parent_exec_id else None
        return encode.exec_event(
            p.encoded if p.encoded is not None else self.process_json(p),
            None if parent is None else
            parent.encoded if parent.encoded is not None else self.process_json(parent),
            self._ancestors_json(p) if self.opts.ancestors else None,
            self.opts.node_name,
            time_ns,
        )


# The reader allocates a few short-lived dicts per event and makes no reference cycles.
# With CPython's default thresholds (700, 10, 10) a young collection runs every few
# hundred events and promotes the events of the batch in flight, so that full
# collections keep walking the whole process cache: 15-30% of the reader's CPU at
# 200k events/s. Rare young collections cost far less; cyclic garbage (from other code)
# waits a little longer.
GC_THRESHOLDS = (100_000, 20, 10)


def tune_gc() -> None:
    """Set up the garbage collector for the event pipeline: what start-up built (modules,
    the /proc scan) is frozen out of collections, and young collections are rare. The
    agent calls this once at start; benchmarks too, to measure what the agent does."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def measure_boot_wall_ns() -> int:
    """Wall-clock time of boot-clock zero, so ktime + this = UNIX epoch ns."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
