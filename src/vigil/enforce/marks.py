"""Which fanotify marks a hook needs: only what its rules can name. Pure.

A permission event costs the task a round trip to user space, so the marks are as narrow
as the selectors allow:

- every selector pins the path with ``Equal`` -> an inode mark on each named file, so
  nothing else, not even its neighbours, reaches Vigil (the decider re-marks a file
  replaced by rename: it watches the directory entry with inotify); a named file that
  does not exist yet -> its parent directory (FAN_EVENT_ON_CHILD) so its creation is
  caught;
- every selector pins a ``Prefix`` -> the filesystems holding that directory tree;
- otherwise (negative or postfix operators, no path filter) -> every filesystem.

Filesystem-wide marks are made cheap by the decider's kernel-side cache: a file whose
path no selector can match is given an ignore mark, so the kernel stops asking about it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vigil.policy.plan import FanSelector, coverage

#: filesystems where nothing is executed or opened that a path rule could mean, or that
#: refuse filesystem marks; everything else is marked when a hook needs "every filesystem"
PSEUDO_FS = frozenset({
    "proc", "sysfs", "devpts", "cgroup", "cgroup2", "bpf", "tracefs", "debugfs",
    "securityfs", "mqueue", "pstore", "configfs", "fusectl", "binfmt_misc", "autofs",
    "efivarfs", "rpc_pipefs", "nsfs", "selinuxfs", "hugetlbfs", "nfsd",
})


@dataclass(frozen=True)
class Mount:
    dev: str           # "major:minor" of the filesystem
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class Mark:
    kind: str          # "file" (inode mark) | "dir" (a directory, events on its children) | "fs"
    path: str
    mask: int


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo -> mounts (in table order)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts or len(parts) < 7:
            continue
        sep = parts.index("-")
        if sep + 1 >= len(parts):
            continue
        out.append(Mount(parts[2], _unescape(parts[4]), parts[sep + 1]))
    return out


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount a path is on (the last, i.e. topmost, with the longest mountpoint)."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mountpoint.rstrip("/") or "/"
        if path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/":
            if best is None or len(mp) >= len(best.mountpoint.rstrip("/") or "/"):
                best = m
    return best


def _fs_marks(mounts: Iterable[Mount], mask: int) -> dict[str, Mark]:
    out: dict[str, Mark] = {}
    for m in mounts:
        if m.fstype in PSEUDO_FS or m.dev in out:
            continue
        out[m.dev] = Mark("fs", m.mountpoint, mask)
    return out


def _existing_dir(path: str, isdir: Callable[[str], bool]) -> str:
    path = path.rstrip("/") or "/"
    d = path if isdir(path) else os.path.dirname(path) or "/"
    while d != "/" and not isdir(d):
        d = os.path.dirname(d) or "/"
    return d


def plan_marks(hooks: Sequence[tuple[int, Sequence[FanSelector]]], mounts: Sequence[Mount],
               isdir: Callable[[str], bool] = os.path.isdir,
               isfile: Callable[[str], bool] = os.path.isfile) -> list[Mark]:
    """Marks for (event mask, selectors) pairs; one mark per object, masks merged."""
    files: dict[str, int] = {}
    dirs: dict[str, int] = {}
    fss: dict[str, Mark] = {}
    for mask, selectors in hooks:
        kind, paths = coverage(selectors)
        if kind == "all":
            marks = _fs_marks(mounts, mask)
        elif kind == "exact":
            marks = {}
            for p in paths:
                parent = os.path.dirname(p) or "/"
                if isfile(p):
                    files[p] = files.get(p, 0) | mask
                    continue
                if isdir(parent):
                    dirs[parent] = dirs.get(parent, 0) | mask
                    continue
                marks.update(_tree_marks(_existing_dir(parent, isdir), mounts, mask))
        else:
            marks = {}
            for p in paths:
                marks.update(_tree_marks(_existing_dir(p, isdir), mounts, mask))
        for dev, mk in marks.items():
            old = fss.get(dev)
            fss[dev] = Mark("fs", (old or mk).path, mk.mask | (old.mask if old else 0))
    out = [Mark("file", f, m) for f, m in sorted(files.items())]
    out += [Mark("dir", d, m) for d, m in sorted(dirs.items())]
    return out + sorted(fss.values(), key=lambda m: m.path)


def _tree_marks(top: str, mounts: Sequence[Mount], mask: int) -> dict[str, Mark]:
    """Filesystems that hold ``top`` and everything mounted below it."""
    below = [m for m in mounts
             if m.mountpoint == top or m.mountpoint.startswith(top.rstrip("/") + "/")]
    own = mount_of(top, mounts)
    return _fs_marks(([own] if own else []) + below, mask)
