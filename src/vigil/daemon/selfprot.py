"""Self-protection's file watch: writes to Vigil's files by other processes -> events.

A fanotify notification group (no permission events: nothing waits on the agent) marks
Vigil's package directories, the Python interpreter running it, and the configuration
and policy files it was started with; every FAN_MODIFY by a process other than the
agent's own becomes a ``process_kprobe`` event of the ``vigil-self-protection`` policy
(function ``fanotify_modify``, the file as ``file_arg``). Works wherever fanotify does
(no BPF LSM or kprobes needed). Not seen: a marked file replaced by a rename over it
(the new inode was never marked; in a marked directory its later writes are seen), and
files outside these paths.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vigil.selfprot import POLICY_NAME

log = logging.getLogger("vigil.selfprot")

FAN_MODIFY = 0x2
FUNCTION = "fanotify_modify"
MESSAGE = "write to a file of the Vigil agent"
_REPEAT = 1.0  # the same process writing the same file again within this is one event


def vigil_paths(extra: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(directories, files) to mark: the vigil package's directories, the interpreter,
    and ``extra`` (policy files and directories, keys, configuration)."""
    import vigil
    dirs: list[str] = []
    files: list[str] = [os.path.realpath(sys.executable)]
    root = Path(vigil.__file__).resolve().parent
    for d, sub, _f in os.walk(root):
        sub[:] = [s for s in sub if s != "__pycache__"]
        dirs.append(d)
    for p in extra:
        if not p:
            continue
        rp = os.path.realpath(p)
        if os.path.isdir(rp):
            dirs.append(rp)
        elif os.path.exists(rp):
            files.append(rp)
    return sorted(set(dirs)), sorted(set(files))


class FileWatch:
    """The fanotify group and the thread that reads it."""

    def __init__(self, extra: Iterable[str], own_pids: Callable[[], Iterable[int]],
                 build: Callable[[int, str], dict[str, Any] | None],
                 publish: Callable[[list[dict[str, Any]]], None]) -> None:
        from vigil.bpf import fanotify as F
        self._own = own_pids
        self._build = build
        self._publish = publish
        self._stop = threading.Event()
        self._last: dict[tuple[int, str], float] = {}
        self.dirs, self.files = vigil_paths(extra)
        self.fd = F.init(F.FAN_CLASS_NOTIF | F.FAN_CLOEXEC | F.FAN_NONBLOCK,
                         os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        self.marked: list[str] = []
        try:
            for d in self.dirs:
                self._mark(d, FAN_MODIFY | F.FAN_EVENT_ON_CHILD)
            for f in self.files:
                self._mark(f, FAN_MODIFY)
        except BaseException:
            os.close(self.fd)
            raise
        self._thread = threading.Thread(target=self._run, name="vigil-selfprot-files",
                                        daemon=True)
        self._thread.start()

    def _mark(self, path: str, mask: int) -> None:
        from vigil.bpf import fanotify as F
        try:
            F.mark(self.fd, F.FAN_MARK_ADD, mask, path)
            self.marked.append(path)
        except OSError as err:
            log.warning("self-protection: cannot watch %s: %s", path, err)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.fd)

    def _run(self) -> None:
        from vigil.bpf import fanotify as F
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as err:
                log.error("self-protection: reading fanotify: %s", err)
                return
            own = set(self._own())
            out = []
            for ev in F.parse(buf):
                if ev.fd < 0:
                    continue
                try:
                    path = os.readlink(f"/proc/self/fd/{ev.fd}")
                except OSError:
                    path = ""
                finally:
                    os.close(ev.fd)
                if ev.pid in own or not self._fresh(ev.pid, path):
                    continue
                built = self._build(ev.pid, path)
                if built is not None:
                    out.append(built)
            if out:
                self._publish(out)

    def _fresh(self, pid: int, path: str) -> bool:
        now = time.monotonic()
        if len(self._last) > 4096:
            self._last = {k: t for k, t in self._last.items() if now - t < _REPEAT}
        last = self._last.get((pid, path))
        self._last[(pid, path)] = now
        return last is None or now - last >= _REPEAT


def modify_event(pipeline: Any, pid: int, path: str) -> dict[str, Any]:
    """A Tetragon process_kprobe event for a write to ``path`` by ``pid``."""
    from vigil.events import encode
    cache = pipeline.cache
    p = cache.current(pid)
    parent = None
    if p is None:
        proc: dict[str, Any] = {"pid": pid, "tid": pid}
    else:
        proc = encode.process_view(pipeline.process_json(p), p.tid, p.refcnt)
        par = cache.get(p.parent_exec_id) if p.parent_exec_id else None
        parent = pipeline.process_json(par) if par is not None else None
    body: dict[str, Any] = {"process": proc}
    if parent is not None:
        body["parent"] = parent
    body["function_name"] = FUNCTION
    body["args"] = [{"file_arg": {"path": path, "permission": "w"}, "label": "path"}]
    body["action"] = "KPROBE_ACTION_POST"
    body["policy_name"] = POLICY_NAME
    body["message"] = MESSAGE
    return {"process_kprobe": body, "node_name": pipeline.opts.node_name,
            "time": encode.rfc3339(time.time_ns())}
