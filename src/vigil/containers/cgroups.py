"""Which cgroup hierarchy names a task's container.

On a cgroup-v2 host a container is a directory of the unified hierarchy. On v1 and hybrid
hosts (v1 controllers, an empty v2 hierarchy) the v2 cgroup of every task is the root, and
the container is named in each v1 controller's hierarchy: the exec sensor then reads the
cgroup of one controller — ``memory``, else ``pids`` — as Tetragon does.
"""
from __future__ import annotations

import functools
from pathlib import Path

# v1 controllers whose hierarchy follows containers, in order of preference
TRACKED_CONTROLLERS = ("memory", "pids")


def parse_proc_cgroups(text: str) -> dict[str, tuple[int, int, bool]]:
    """``/proc/cgroups`` -> {controller: (cgroup_subsys_id, hierarchy, enabled)}.

    Rows are in the kernel's subsystem id order; hierarchy 0 means the controller is
    not mounted as v1 (unused, or on the unified hierarchy)."""
    out = {}
    ssid = 0
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 4:
            continue
        out[parts[0]] = (ssid, int(parts[1]), parts[3] == "1")
        ssid += 1
    return out


def tracked_subsys(proc_cgroups: str) -> int:
    """1 + the subsystem id of the v1 controller that names containers; 0 when the v2
    hierarchy does (no tracked controller is mounted as v1)."""
    table = parse_proc_cgroups(proc_cgroups)
    for name in TRACKED_CONTROLLERS:
        ssid, hierarchy, enabled = table.get(name, (0, 0, False))
        if hierarchy and enabled:
            return ssid + 1
    return 0


@functools.cache
def host_tracked_subsys(path: str = "/proc/cgroups") -> int:
    """``tracked_subsys`` of this host (0 if /proc/cgroups cannot be read)."""
    try:
        return tracked_subsys(Path(path).read_text())
    except OSError:
        return 0
