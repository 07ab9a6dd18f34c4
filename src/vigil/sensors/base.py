"""The base sensor: process exec, fork and exit, always loaded (Tetragon's ``__base__``).

It owns the event ring buffer that every other sensor's object shares (by fd), and
its per-CPU counters (``vg_stats``) say how many records each program sent or dropped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vigil.abi._generated import VG_CONFIG, VG_STATS, DropReason, Limits, MsgOp
from vigil.bpf import _libbpf
from vigil.bpf.object import BpfObject, Map
from vigil.bpf.ringbuf import RingBuffer

log = logging.getLogger("vigil.sensors.base")

OBJECTS_DIR = Path(__file__).resolve().parents[1] / "bpf" / "objects"
PROGRAMS = ("vg_proc_exec", "vg_proc_fork", "vg_proc_exit")


@dataclass(frozen=True)
class BaseSensorConfig:
    ring_bytes: int = 64 << 20     # --rb-size-total; power of two, >= page size
    max_args: int = 16128           # argv bytes captured per exec (<= VG_ARGS_MAX)
    wakeup_bytes: int = 256 << 10   # wake the reader once this much is pending
    objects_dir: Path = OBJECTS_DIR


@dataclass(frozen=True)
class KernelCounters:
    """Sums over CPUs of one object's ``vg_stats``: records sent and dropped per opcode."""

    sent: dict[int, int]
    drops: dict[tuple[int, str], int]  # (opcode, reason name) -> count

    def total_dropped(self) -> int:
        return sum(self.drops.values())


def ring_size(requested: int) -> int:
    """Round up to a power of two of at least one page, as the kernel requires."""
    size = os.sysconf("SC_PAGE_SIZE")
    while size < requested:
        size <<= 1
    return size


def read_counters(stats: Map) -> KernelCounters:
    """Read and sum a per-CPU ``vg_stats`` map."""
    ncpu = int(_libbpf.lib().libbpf_num_possible_cpus())
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

    def load(self) -> None:
        """Open, configure, load and attach; on any failure everything is undone."""
        obj = BpfObject(self.cfg.objects_dir / "process.bpf.o", name="vigil_base")
        try:
            max_args = min(self.cfg.max_args, int(Limits.ARGS_MAX))
            obj.set_rodata(VG_CONFIG.pack(max_args, self.cfg.wakeup_bytes))
            self.ring_bytes = ring_size(self.cfg.ring_bytes)
            obj.map("vg_events").set_max_entries(self.ring_bytes)
            obj.load()
            for prog in PROGRAMS:
                obj.program(prog).attach()
            self.ring = RingBuffer(obj.map("vg_events").fd, self.ring_bytes)
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        log.info("base sensor loaded: %s attached, ring buffer %d MiB",
                 ", ".join(PROGRAMS), self.ring_bytes >> 20)

    @property
    def ring_fd(self) -> int:
        assert self._obj is not None
        return self._obj.map("vg_events").fd

    def counters(self) -> KernelCounters:
        assert self._obj is not None
        return read_counters(self._obj.map("vg_stats"))

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
