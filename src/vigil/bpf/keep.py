"""``--keep-sensors-on-exit``: BPF links that outlive the agent, pinned under bpffs.

A BPF link lives while something holds it: a file descriptor or a pin in bpffs. When the
agent exits its descriptors close and every program detaches, unless the link was pinned.
``keep_links`` pins every attached link of every open BPF object (the base sensor's
exec/fork/exit programs, each policy's hooks, the cgroup socket programs) at
``KEEP_ROOT/<object>/<link>`` on a graceful exit; their maps and programs stay with them,
so observation continues in the kernel (events go to the old ring buffer, which nobody
reads: they are lost once it fills) and enforcement done in BPF (Sigkill, Signal,
Override, socket refusals) keeps acting while no agent runs.

The next agent replaces them: once its own sensors and start-up policies are attached,
``release_kept`` unlinks every pin and the old links detach (for a moment both act: a
kill or refusal twice, never an event twice, since the old programs write to a ring no
agent reads). An agent started without the flag releases them the same way and pins
nothing, so nothing is left behind after it stops.

Limits: a crash (SIGKILL) pins nothing, the links go with the process; iterator links
are never pinned (they only answer reads); fanotify permission events (lsmhooks
file_open/bprm_check enforcement) are not BPF: a fanotify group dies with the process
holding it, so those rules stop with the agent.

Pin names only use ``[A-Za-z0-9_-]`` (bpffs refuses dots).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from vigil.bpf.object import open_objects

log = logging.getLogger(__name__)

KEEP_ROOT = "/sys/fs/bpf/vigil/kept"


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:200] or "_"


def keep_links(root: str = KEEP_ROOT) -> int:
    """Pin every attached, non-iterator link of every open BPF object under ``root`` and
    let go of it; how many were pinned. A link that cannot be pinned is logged and
    left to detach."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    pinned = 0
    for i, obj in enumerate(open_objects()):
        links = [lk for lk in obj.links if not lk.target.startswith("iter")]
        if not links:
            continue
        d = base / f"{i:03d}-{_name(obj.name)}"
        d.mkdir(exist_ok=True)
        for k, link in enumerate(links):
            path = d / f"{k:03d}-{_name(link.program)}"
            try:
                link.keep_pinned(str(path))
                pinned += 1
            except Exception as err:  # noqa: BLE001 - keep the others; this one detaches
                log.warning("keep-sensors-on-exit: cannot pin %s (%s): %s", link.program,
                            link.target, err)
        if not any(d.iterdir()):
            d.rmdir()
    return pinned


def kept_links(root: str = KEEP_ROOT) -> list[Path]:
    """The pins a previous agent left under ``root``."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if not p.is_dir())


def release_kept(root: str = KEEP_ROOT) -> int:
    """Unpin everything under ``root`` (the links detach) and remove ``root``; how many
    pins were removed."""
    base = Path(root)
    if not base.is_dir():
        return 0
    n = 0
    for dirpath, dirnames, filenames in os.walk(base, topdown=False):
        for f in filenames:
            os.unlink(os.path.join(dirpath, f))
            n += 1
        for d in dirnames:
            os.rmdir(os.path.join(dirpath, d))
    os.rmdir(base)
    try:
        base.parent.rmdir()  # /sys/fs/bpf/vigil, when nothing else lives there
    except OSError:
        pass
    return n


__all__ = ["KEEP_ROOT", "keep_links", "kept_links", "release_kept"]
