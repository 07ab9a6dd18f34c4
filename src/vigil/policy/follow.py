"""followChildren / followForks: which running processes a hook's follow map starts with.

In the kernel (``bpf/generic.bpf.c``, map ``vg_follow``), a process gets a selector's bit
(``si`` for followChildren; one bit per matchPIDs filter with followForks; :func:`pbin_bit`
for a matchParentBinaries followChildren) when it follows it: at an exec of a binary in the
selector's ``matchBinaries`` (or ``matchParentBinaries``) values (followChildren), at a
fork from a process with one of the ``matchPIDs`` values (followForks), and at every fork from a process that has the bit. Those programs only see
what happens after the policy loads; the processes already running are marked here, from
a /proc snapshot, with the same rule: a process is followed by a selector if it or one of
its ancestors matches it directly.

Pure logic (no ctypes): ``read_procs`` reads /proc, ``seed_bits`` decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vigil.process.procfs import parse_stat


def pbin_bit(si: int) -> int:
    """The bit of selector ``si``'s matchParentBinaries followChildren: the bits the
    others leave free (``vg_pbin_bit`` in ``bpf/generic.bpf.c``; ``enum vg_follow_flag``)."""
    return 5 + si if si < 3 else 28 + si - 3


@dataclass(frozen=True)
class FollowSel:
    """One selector (or one of its matchPIDs filters) that follows descendants."""

    selector: int                    # the bit in vg_follow
    binaries: tuple[str, ...] = ()   # followChildren: matchBinaries values (exact paths)
    pids: tuple[int, ...] = ()       # followForks: matchPIDs values
    ns_pid: bool = False             # matchPIDs isNamespacePID: compare the pid in its own ns


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    binary: str      # /proc/PID/exe ("" for kernel threads or when unreadable)
    nspid: int       # the pid in the process's own pid namespace (NSpid's last value)
    start: int = 0   # start time (clock ticks after boot): tells a reused pid apart


def start_time(pid: int, procfs: str = "/proc") -> int | None:
    """The start time of live process ``pid`` (None: gone)."""
    try:
        with open(os.path.join(procfs, str(pid), "stat"), "rb") as f:
            return parse_stat(f.read().decode("utf-8", "replace"))[1]
    except (OSError, ValueError):
        return None


def read_procs(procfs: str = "/proc") -> list[Proc]:
    """A snapshot of the live processes (those that vanish while reading are skipped)."""
    out = []
    with os.scandir(procfs) as it:
        pids = [int(e.name) for e in it if e.name.isdigit()]
    for pid in pids:
        base = os.path.join(procfs, str(pid))
        try:
            with open(os.path.join(base, "stat"), "rb") as f:
                ppid, start = parse_stat(f.read().decode("utf-8", "replace"))
            with open(os.path.join(base, "status"), "rb") as f:
                status = f.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        try:
            binary = os.readlink(os.path.join(base, "exe")).removesuffix(" (deleted)")
        except OSError:
            binary = ""
        nspid = pid
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                fields = line.split()[1:]
                if fields:
                    nspid = int(fields[-1])
                break
        out.append(Proc(pid, ppid, binary, nspid, start))
    return out


def _direct(p: Proc, sel: FollowSel) -> bool:
    if sel.binaries and p.binary in sel.binaries:
        return True
    return bool(sel.pids) and (p.nspid if sel.ns_pid else p.pid) in sel.pids


def seed_bits(procs: Iterable[Proc], follow: Iterable[FollowSel]) -> dict[int, int]:
    """tgid -> bits of the selectors that follow it (processes with no bit are left out).

    A process has bit ``si`` if it or any ancestor matches selector ``si`` directly. A
    followForks process is marked only below a listed pid, as the kernel does at fork:
    the listed process itself matches through matchPIDs, not through the bit.
    """
    by_pid: Mapping[int, Proc] = {p.pid: p for p in procs}
    sels = list(follow)
    memo: dict[int, int] = {}

    def bits_of(pid: int) -> int:
        # iterative walk up to the first known ancestor (no recursion limit on deep trees)
        chain = []
        cur: int | None = pid
        while cur is not None and cur not in memo and cur in by_pid and cur not in chain:
            chain.append(cur)
            parent = by_pid[cur].ppid
            cur = parent if parent != cur and parent > 0 else None
        inherited = memo.get(cur, 0) if cur is not None else 0
        for p in reversed(chain):
            proc = by_pid[p]
            own = 0
            for s in sels:
                if s.binaries and _direct(proc, s):
                    own |= 1 << s.selector
            parent = by_pid.get(proc.ppid)
            if parent is not None:
                for s in sels:
                    if s.pids and _direct(parent, s):
                        own |= 1 << s.selector
            inherited |= own
            memo[p] = inherited
        return memo.get(pid, 0)

    out = {}
    for pid in by_pid:
        b = bits_of(pid)
        if b:
            out[pid] = b
    return out
