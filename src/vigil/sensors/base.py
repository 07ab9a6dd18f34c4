"""The base sensor: process exec, fork and exit, always loaded (Tetragon's ``__base__``).

It owns the event ring buffer and the per-cgroup rate map that every other sensor's
object shares (by fd), and its per-CPU counters (``vg_stats``) say how many records
each program sent or dropped. With ``--cgroup-rate`` it also runs the THROTTLE_STOP
sweep (``vg_rate_sweep``, via BPF_PROG_TEST_RUN) on a small thread.

Credential tracking (on unless ``track_creds`` is off) loads ``creds.bpf.o`` next to it:
a hook on ``commit_creds`` (fentry, else kprobe) where the kernel allows one, else the
exit tracepoints of the credential syscalls (setuid ... capset, prctl securebits); either
reports a process's credentials at each change (``VG_MSG_CREDS``). It is a separate
object sharing the ring by fd, so a kernel that refuses it (no syscall tracepoints, no
tracefs) loses only that: a warning, and ``creds_tracking`` says why.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from vigil.abi._generated import VG_CONFIG, VG_STATS, DropReason, GenLimits, Limits, MsgOp, ProcFlag
from vigil.abi.pack import pack
from vigil.bpf.object import BpfObject, Map, possible_cpus
from vigil.bpf.ringbuf import RingBuffer
from vigil.errors import BpfError
from vigil.export.jsonl import RateLimitedLog
from vigil.stream.throttle import CgroupRate

log = logging.getLogger("vigil.sensors.base")

OBJECTS_DIR = Path(__file__).resolve().parents[1] / "bpf" / "objects"
PROGRAMS = ("vg_proc_exec", "vg_proc_fork", "vg_proc_exit")
SWEEP_PROGRAM = "vg_rate_sweep"  # loaded, never attached
# Maps every Vigil object declares (common.bpf.h) but only the base sensor creates;
# other objects reuse them by fd (see shared_maps()).
BIN_MAX = int(GenLimits.BIN_MAX)
# struct vg_namespaces' fields, in order (the order of vigil.process.model.Namespaces)
NS_FIELDS = ("uts", "ipc", "mnt", "pid", "pid_for_children", "net", "time",
             "time_for_children", "cgroup", "user")
# vg_stats is shared too, so a policy hook's ring-full and throttled drops are counted
# where the metrics read them.
SHARED_MAPS = ("vg_events", "vg_stats", "vg_cgroup_rate", "vg_procs")
# creds.bpf.o: one program per credential syscall's exit tracepoint
CRED_PROGRAMS = ("vg_cred_setuid", "vg_cred_setgid", "vg_cred_setreuid", "vg_cred_setregid",
                 "vg_cred_setresuid", "vg_cred_setresgid", "vg_cred_setfsuid",
                 "vg_cred_setfsgid", "vg_cred_setgroups", "vg_cred_capset", "vg_cred_prctl")
# ... or one program on commit_creds, where the kernel allows fentry or kprobes
CRED_COMMIT_PROGRAMS = {"fentry": "vg_cred_commit_fentry", "kprobe": "vg_cred_commit_kprobe"}
CRED_SHARED_MAPS = ("vg_events", "vg_stats", "vg_cgroup_rate")
RATE_MAP = "vg_cgroup_rate"


@dataclass(frozen=True)
class BaseSensorConfig:
    ring_bytes: int = 0             # --rb-size-total; 0: ring_bytes_per_cpu per CPU
    ring_bytes_per_cpu: int = 0     # --rb-size; 0: AUTO_RING_PER_CPU
    max_args: int = 16128           # argv bytes captured per exec (<= VG_ARGS_MAX)
    wakeup_bytes: int = 256 << 10   # wake the reader once this much is pending
    objects_dir: Path = OBJECTS_DIR
    cgroup_rate: CgroupRate | None = None  # --cgroup-rate; None: no throttling
    track_creds: bool = True        # load creds.bpf.o (credential changes after exec)
    # how: "auto" (commit_creds by fentry or kprobe where allowed, else the syscall exit
    # tracepoints) or "syscalls" (the tracepoints only)
    creds_hook: str = "auto"
    # the cgroup a task's cgroup name is read from: 0 the v2 one, else 1 + the id of a v1
    # controller; None: this host's choice (vigil.containers.cgroups)
    cgroup_subsys: int | None = None


@dataclass(frozen=True)
class KernelCounters:
    """Sums over CPUs of one object's ``vg_stats``: records sent and dropped per opcode."""

    sent: dict[int, int]
    drops: dict[tuple[int, str], int]  # (opcode, reason name) -> count

    def total_dropped(self) -> int:
        return sum(self.drops.values())


# The ring's share per CPU when no size is given: 16 times Tetragon's 64 KiB, because
# Vigil's reader has no large user-space queue behind the ring (Tetragon's holds 65,535
# records), so a burst must fit in the ring itself while the reader catches up.
AUTO_RING_PER_CPU = 1 << 20
# Never smaller than this when sized automatically: eight wake-up thresholds
# (``wakeup_bytes``), so the reader is woken long before the ring fills.
AUTO_RING_MIN = 2 << 20


def ring_size(total: int, per_cpu: int = 0, cpus: int = 1) -> int:
    """The ring buffer's size in bytes: ``total`` if given, else ``per_cpu`` (default
    AUTO_RING_PER_CPU, at least AUTO_RING_MIN in all) times ``cpus``; rounded up to a
    power of two of at least one page, as the kernel requires.

    The ring's pages are resident for the agent's whole life (they count in its RSS and
    its cgroup's memory), so its size follows the machine, not a fixed large default."""
    requested = total
    if not requested:
        requested = (per_cpu or AUTO_RING_PER_CPU) * max(1, cpus)
        if not per_cpu:
            requested = max(requested, AUTO_RING_MIN)
    size = os.sysconf("SC_PAGE_SIZE")
    while size < requested:
        size <<= 1
    return size


def config_bytes(cfg: BaseSensorConfig) -> bytes:
    """``vg_cfg`` (.rodata) for every Vigil object: each must get the same bytes."""
    rate = cfg.cgroup_rate
    subsys = cfg.cgroup_subsys
    if subsys is None:
        from vigil.containers.cgroups import host_tracked_subsys
        subsys = host_tracked_subsys()
    return VG_CONFIG.pack(min(cfg.max_args, int(Limits.ARGS_MAX)), cfg.wakeup_bytes,
                          rate.events if rate else 0, subsys,
                          rate.interval_ns if rate else 0, rate.quiet_ns if rate else 0)


def map_entries(m: Map, limit: int = 1 << 20) -> int:
    """Entries in a hash map, by walking its keys (one syscall per key; scrape time only)."""
    n = 0
    for _ in m.keys():
        n += 1
        if n >= limit:
            break
    return n


def read_counters(stats: Map) -> KernelCounters:
    """Read and sum a per-CPU ``vg_stats`` map."""
    ncpu = possible_cpus()
    step = (VG_STATS.size + 7) & ~7
    raw = stats.lookup(b"\0\0\0\0", value_size=step * ncpu)
    sent: dict[int, int] = {}
    drops: dict[tuple[int, str], int] = {}
    nreason = int(DropReason.REASON_MAX)
    for cpu in range(ncpu):
        vals = VG_STATS.unpack_from(raw, cpu * step)
        nop = int(MsgOp.OP_MAX)
        for op in range(nop):
            if vals[op]:
                sent[op] = sent.get(op, 0) + vals[op]
            for reason in DropReason:
                if reason is DropReason.REASON_MAX:
                    continue
                n = vals[nop + op * nreason + reason]
                if n:
                    key = (op, reason.name)
                    drops[key] = drops.get(key, 0) + n
    return KernelCounters(sent, drops)


class BaseSensor:
    """Loads process.bpf.o, attaches exec/fork/exit, and exposes the ring buffer."""

    name = "__base__"

    def __init__(self, cfg: BaseSensorConfig) -> None:
        self.cfg = cfg
        self._obj: BpfObject | None = None
        self.ring: RingBuffer | None = None
        self._sweeper: threading.Thread | None = None
        self._sweep_stop = threading.Event()
        self.sweeps = 0
        self.sweep_errors = 0
        self._creds_obj: BpfObject | None = None
        # "on", "off" (not asked for) or why it could not be loaded or attached
        self.creds_tracking = "off"

    @property
    def rodata(self) -> bytes:
        """The load-time config other sensors' objects must use too (``set_rodata``)."""
        return config_bytes(self.cfg)

    def load(self) -> None:
        """Open, configure, load and attach; on any failure everything is undone."""
        obj = BpfObject(self.cfg.objects_dir / "process.bpf.o", name="vigil_base")
        try:
            obj.set_rodata(self.rodata)
            self.ring_bytes = ring_size(self.cfg.ring_bytes, self.cfg.ring_bytes_per_cpu,
                                        os.cpu_count() or 1)
            obj.map("vg_events").set_max_entries(self.ring_bytes)
            rate_entries = int(Limits.CGROUP_RATE_ENTRIES) if self.cfg.cgroup_rate else 1
            obj.map(RATE_MAP).set_max_entries(rate_entries)
            obj.load()
            for prog in PROGRAMS:
                obj.program(prog).attach()
            self.ring = RingBuffer(obj.map("vg_events").fd, self.ring_bytes)
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        if self.cfg.track_creds:
            self._load_creds()
        if self.cfg.cgroup_rate is not None:
            self._start_sweeper(self.cfg.cgroup_rate.sweep_interval_s)
        log.info("base sensor loaded: %s attached, ring buffer %d KiB, credential "
                 "tracking %s", ", ".join(PROGRAMS), self.ring_bytes >> 10, self.creds_tracking)

    def _load_creds(self) -> None:
        """Load and attach creds.bpf.o: its commit_creds hook where the kernel allows
        fentry or a kprobe (every change, whatever the path), else the syscall exit
        tracepoints; when nothing loads, warn and go on without."""
        errors: list[str] = []
        for how, programs in self._creds_ways():
            try:
                self._creds_obj = self._load_creds_object(programs)
            except BpfError as err:
                errors.append(f"{how}: {err}")
                log.debug("credential tracking by %s refused: %s", how, err)
                continue
            self.creds_tracking = f"on ({how})"
            return
        self.creds_tracking = "unavailable: " + "; ".join(errors)
        log.warning("credential changes after exec are not followed (%s): events report "
                    "the credentials each process had at exec", "; ".join(errors))

    def _creds_ways(self) -> list[tuple[str, tuple[str, ...]]]:
        """(how, programs) to try in order: commit_creds by fentry, then kprobe, when the
        kernel allows them (``vigil.bpf.features``, cached probes) and the config asks."""
        ways: list[tuple[str, tuple[str, ...]]] = []
        if self.cfg.creds_hook == "auto":
            from vigil.bpf import features
            for kind in ("fentry", "kprobe"):
                if features.probe(kind).ok:
                    ways.append((f"{kind} commit_creds", (CRED_COMMIT_PROGRAMS[kind],)))
        ways.append(("syscall exit tracepoints", CRED_PROGRAMS))
        return ways

    def _load_creds_object(self, programs: tuple[str, ...]) -> BpfObject:
        assert self._obj is not None
        obj = BpfObject(self.cfg.objects_dir / "creds.bpf.o", name="vigil_creds")
        try:
            obj.set_rodata(self.rodata)
            for name in CRED_SHARED_MAPS:
                obj.map(name).reuse_fd(self._obj.map(name).fd)
            for prog in obj.programs():
                prog.autoload = prog.name in programs
            obj.load()
            for prog in programs:
                obj.program(prog).attach()
        except BaseException:
            obj.close()
            raise
        return obj

    @property
    def ring_fd(self) -> int:
        assert self._obj is not None
        return self._obj.map("vg_events").fd

    def shared_maps(self) -> dict[str, int]:
        """name -> fd of the maps other objects must share (call ``reuse_fd`` before load)."""
        assert self._obj is not None
        return {name: self._obj.map(name).fd for name in SHARED_MAPS}

    def seed_procs(self, procs: Iterable[tuple[int, str, tuple[int, int, int] | None,
                                               tuple[int, ...] | None]]) -> int:
        """Record (tgid, binary, capabilities, namespaces) of processes found by the
        /proc scan in vg_procs, for matchBinaries, matchCapabilityChanges and
        matchNamespaceChanges (the capabilities as (effective, inheritable, permitted),
        the namespace inums in struct vg_namespaces order; either None when unknown: no
        change filter of that kind matches such a process); a pid the kernel already
        recorded (it exec'd since) is kept."""
        assert self._obj is not None
        m, n = self._obj.map("vg_procs"), 0
        for tgid, binary, caps, ns in procs:
            raw = binary.encode(errors="surrogateescape")[:BIN_MAX - 1]
            fields: dict[str, Any] = {"bin_len": len(raw), "bin": raw}
            flags = 0
            if caps is not None:
                flags |= int(ProcFlag.CAPS)
                fields["caps"] = list(caps)
            if ns is not None:
                flags |= int(ProcFlag.NS)
                fields.update({f"ns.{name}": v for name, v in zip(NS_FIELDS, ns)})
            fields["flags"] = flags
            value = pack("vg_proc", fields)
            try:
                m.update(tgid.to_bytes(4, "little"), value, flags=1)  # BPF_NOEXIST
                n += 1
            except BpfError as err:
                if err.errno != 17:  # EEXIST: the kernel's entry is newer
                    raise
        return n

    def counters(self) -> KernelCounters:
        assert self._obj is not None
        return read_counters(self._obj.map("vg_stats"))

    def map_usage(self) -> dict[str, tuple[int, int]]:
        """map name -> (entries, capacity) for the hash maps this sensor owns."""
        if self._obj is None:
            return {}
        m = self._obj.map(RATE_MAP)
        return {RATE_MAP: (map_entries(m), m.max_entries)}

    # -- THROTTLE_STOP sweep ---------------------------------------------------------

    def sweep_throttle(self) -> int:
        """Run the STOP sweep once; how many cgroups it released."""
        assert self._obj is not None
        return self._obj.program(SWEEP_PROGRAM).test_run()

    def _start_sweeper(self, interval: float) -> None:
        self._sweep_stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, args=(interval,),
                                         name="vigil-throttle-sweep", daemon=True)
        self._sweeper.start()

    def _sweep_loop(self, interval: float) -> None:
        errlog = RateLimitedLog(log, interval=60.0)
        while not self._sweep_stop.wait(interval):
            try:
                self.sweep_throttle()
                self.sweeps += 1
            except BpfError as err:
                self.sweep_errors += 1
                errlog(logging.ERROR, "throttle sweep failed: %s", err)

    def _stop_sweeper(self) -> None:
        self._sweep_stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None

    def close(self) -> None:
        self._stop_sweeper()
        if self._creds_obj is not None:
            self._creds_obj.close()
            self._creds_obj = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
