"""The kernel side of pod-scoped policies: map ``vg_pf_cgroups`` of (cgroup id, policy id).

Every hook of a scoped policy is loaded with ``.rodata.pf`` naming the policy's filter id
and the cgroup hierarchy that identifies pods (bpf/include/vigil/policyfilter.bpf.h); it
then runs only for tasks whose cgroup is in the map under that id. One map serves every
scoped policy: the first scoped hook creates it, this class keeps a duplicate of its fd
and every later hook reuses it. Unscoped hooks get a one-entry map they never read.

Thread-safe: ``set`` / ``release`` may be called from the Kubernetes threads while the
policy manager loads hooks.
"""

from __future__ import annotations

import builtins
import logging
import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

from vigil.abi._generated import VG_PF_CFG, GenLimits, PfLimits
from vigil.bpf.object import BpfObject, MapFd, create_hash_map
from vigil.errors import BpfError

log = logging.getLogger("vigil.policyfilter")

MAP = "vg_pf_cgroups"
_KEY = struct.Struct("<QII")
_CFG = struct.Struct(f"<Ii{int(GenLimits.GEN_SELECTORS)}III")
assert _CFG.size == VG_PF_CFG.size
_E2BIG = 7
# v1 controllers tried, in order, for the hierarchy whose cgroups identify containers
_TRACKING = ("memory", "pids", "cpuset")


def tracking_hierarchy(proc: str = "/proc") -> tuple[int, str]:
    """(subsystem index, controller name) of the cgroup hierarchy that identifies pods:
    a v1 controller's when one of memory, pids, cpuset is mounted as v1 (hybrid and
    legacy hosts: their v2 hierarchy may hold no process), else (-1, "") for cgroup v2.

    /proc/cgroups lists controllers in subsystem-index order; hierarchy 0 means the
    controller is not on a v1 hierarchy."""
    try:
        lines = Path(proc, "cgroups").read_text().splitlines()
    except OSError:
        return -1, ""
    rows = [ln.split() for ln in lines if ln and not ln.startswith("#")]
    for want in _TRACKING:
        for idx, row in enumerate(rows):
            if len(row) >= 4 and row[0] == want and row[1] != "0" and row[3] == "1":
                return idx, want
    return -1, ""


class PolicyFilter:
    """(cgroup id, policy id) membership in the kernel, diffed against what is there."""

    def __init__(self, proc: str = "/proc") -> None:
        self.subsys, self.controller = tracking_hierarchy(proc)
        self._fd = -1
        self._lock = threading.Lock()
        self._members: dict[int, set[int]] = {}   # policy id -> cgroup ids in the map
        self.map_full = 0      # entries refused (map full): the pod is left unscoped
        self.update_errors = 0
        self.host_id = 0       # filter id listing every pod's cgroups (0: none kept)
        self._host: set[int] = set()  # filter ids that also take host processes

    # -- loading hooks -------------------------------------------------------------

    def configure(self, obj: BpfObject, policy_id: int,
                  sel_ids: Iterable[tuple[int, int]] = ()) -> None:
        """Before ``obj.load()``: scope the hook to ``policy_id`` (0: unscoped) and its
        selectors with matchWorkloads to theirs (``sel_ids``: (selector index, id))."""
        m = obj.map(MAP)
        sel_ids = tuple(sel_ids)
        obj.map(".rodata.pf").set_initial_value(self.config(policy_id, sel_ids))
        scoped = bool(policy_id or any(sid for _si, sid in sel_ids))
        with self._lock:
            if self._fd >= 0:
                m.reuse_fd(self._fd)
            elif not scoped:
                m.set_max_entries(1)
            else:
                m.set_max_entries(int(PfLimits.ENTRIES))

    def config(self, policy_id: int, sel_ids: Iterable[tuple[int, int]] = ()) -> bytes:
        """``struct vg_pf_cfg`` for a hook scoped to ``policy_id`` (0: unscoped) with
        selectors scoped to theirs (``sel_ids``: (selector index, id)); the host bits
        of those ids marked by ``mark_host``."""
        nsel = int(GenLimits.GEN_SELECTORS)
        sels = [0] * nsel
        mask = 0
        with self._lock:
            for si, sid in sel_ids:
                sels[si] = sid
                if sid in self._host:
                    mask |= 1 << si
            if policy_id in self._host:
                mask |= 1 << nsel
            return _CFG.pack(policy_id, self.subsys, *sels, self.host_id if mask else 0, mask)

    def mark_host(self, policy_id: int) -> None:
        """Filter id ``policy_id`` also takes host processes (tasks in no cgroup listed
        under ``host_id``)."""
        with self._lock:
            self._host.add(policy_id)

    def is_host(self, policy_id: int) -> bool:
        with self._lock:
            return policy_id in self._host

    def ensure_map(self) -> int:
        """The shared map's fd, created here when no hook has made it yet (a policy
        whose only scoped hooks are cgroup programs or fanotify)."""
        with self._lock:
            if self._fd < 0:
                self._fd = create_hash_map(MAP, _KEY.size, 1, int(PfLimits.ENTRIES))
                for pid, cgids in self._members.items():
                    self._members[pid] = self._write(pid, set(), cgids)
            return self._fd

    def loaded(self, obj: BpfObject, policy_id: int, scoped: bool = False) -> None:
        """After ``obj.load()``: keep the shared map (the first scoped hook made it).
        ``scoped``: scoped by its selectors' matchWorkloads only."""
        if not policy_id and not scoped:
            return
        with self._lock:
            if self._fd < 0:
                self._fd = os.dup(obj.map(MAP).fd)
                for pid, cgids in self._members.items():  # set before any hook loaded
                    self._write(pid, set(), cgids)

    # -- membership ----------------------------------------------------------------

    def set(self, policy_id: int, cgroup_ids: Iterable[int]) -> None:
        """Make ``policy_id``'s cgroups exactly ``cgroup_ids``."""
        new = set(cgroup_ids)
        with self._lock:
            old = self._members.get(policy_id, set())
            if new == old:
                return
            self._members[policy_id] = self._write(policy_id, old, new) if self._fd >= 0 \
                else new

    def members(self, policy_id: int) -> frozenset[int]:
        with self._lock:
            return frozenset(self._members.get(policy_id, ()))

    def release(self, policy_id: int) -> None:
        """Forget a policy instance (its hooks are unloaded): remove its entries."""
        with self._lock:
            old = self._members.pop(policy_id, set())
            self._host.discard(policy_id)
            if self._fd >= 0:
                self._write(policy_id, old, set())

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._members.clear()

    def _write(self, policy_id: int, old: builtins.set[int],
               new: builtins.set[int]) -> builtins.set[int]:
        """Apply the difference; returns what the map now holds for the policy."""
        m = MapFd(self._fd, MAP)
        held = set(old)
        for cgid in sorted(old - new):
            try:
                m.delete(_KEY.pack(cgid, policy_id, 0))
            except BpfError as err:
                self.update_errors += 1
                log.warning("policy filter %d: cannot remove cgroup %d: %s", policy_id,
                            cgid, err)
                continue
            held.discard(cgid)
        for cgid in sorted(new - old):
            try:
                m.update(_KEY.pack(cgid, policy_id, 0), b"\x01")
            except BpfError as err:
                if err.errno == _E2BIG:
                    self.map_full += 1
                else:
                    self.update_errors += 1
                log.warning("policy filter %d: cannot add cgroup %d: %s (its processes "
                            "stay outside the policy)", policy_id, cgid, err)
                continue
            held.add(cgid)
        return held
