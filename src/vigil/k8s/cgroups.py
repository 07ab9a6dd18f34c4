"""Container ids -> cgroup ids, by walking the cgroup hierarchy that identifies pods.

Runtimes name a container's cgroup after its id: ``<id>`` (containerd cgroupfs),
``cri-containerd-<id>.scope`` (systemd driver), ``libpod-<id>`` (podman),
``docker-<id>.scope``, ``crio-<id>``. The walk finds every directory whose name holds a
64-hex id and gives it, and its descendants (a container may nest cgroups), that id. The
cgroup id is the directory's inode number (the kernfs id the kernel's cgroup id is).

Bounded: at most ``max_dirs`` directories and ``max_depth`` levels per walk.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("vigil.k8s.cgroups")

_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def hierarchy_root(controller: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """Mount point of the v1 hierarchy of ``controller``, or of cgroup v2 for ""."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return "/sys/fs/cgroup"
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if controller and tail[0] == "cgroup" and controller in tail[2].split(","):
            return fields[4]
        if not controller and tail[0] == "cgroup2":
            return fields[4]
    return "/sys/fs/cgroup"


def container_id(status_id: str) -> str:
    """``containerd://abc..`` (a pod status containerID) -> ``abc..``."""
    return status_id.partition("://")[2] if "://" in status_id else status_id


class CgroupIndex:
    """One walk's answer: container id -> cgroup ids (the container's and below)."""

    def __init__(self, root: str, max_dirs: int = 65536, max_depth: int = 12) -> None:
        self.root = root
        self.max_dirs = max_dirs
        self.max_depth = max_depth
        self.truncated = False
        self.by_id: dict[str, set[int]] = {}

    def walk(self) -> CgroupIndex:
        seen = 0
        stack: list[tuple[str, int, str]] = [(self.root, 0, "")]
        by_id: dict[str, set[int]] = {}
        while stack:
            path, depth, owner = stack.pop()
            try:
                it = os.scandir(path)
            except OSError:
                continue
            with it:
                for ent in it:
                    try:
                        if not ent.is_dir(follow_symlinks=False):
                            continue
                        ino = ent.inode()
                    except OSError:
                        continue
                    seen += 1
                    if seen > self.max_dirs:
                        self.truncated = True
                        break
                    m = _ID.search(ent.name)
                    cid = m.group(0) if m else owner
                    if cid:
                        by_id.setdefault(cid, set()).add(ino)
                    if depth + 1 < self.max_depth:
                        stack.append((ent.path, depth + 1, cid))
            if self.truncated:
                log.warning("cgroup walk of %s stopped after %d directories", self.root,
                            self.max_dirs)
                break
        self.by_id = by_id
        return self

    def cgroups(self, cid: str) -> set[int]:
        return self.by_id.get(cid, set())
