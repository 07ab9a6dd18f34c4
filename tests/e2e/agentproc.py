"""Run the real agent (`python -m vigil agent`) as a subprocess and read its export file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.export import reader

Event = dict[str, Any]


class AgentProcess:
    """A running agent writing JSON lines to ``<tmp>/events.log``. Use as a context manager."""

    def __init__(self, tmp: Path, *args: str, export_name: str = "events.log",
                 start_timeout: float = 30.0, wrapper: tuple[str, ...] = (),
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.export = tmp / export_name
        self.stderr: list[str] = []
        # a private socket and info file: tests never touch /var/run/vigil
        self.socket = tmp / "vigil.sock"
        # ``wrapper``: a command the agent runs under (e.g. tools/fresh-host.sh)
        cmd = [*wrapper, sys.executable, "-m", "vigil", "agent", "--export-filename", str(self.export),
               "--no-export-stdout", "--server-address", f"unix://{self.socket}",
               "--server-info-file", str(tmp / "vigil-info.json"),
               # no health server unless a test asks (agents of concurrent tests would
               # contend for the default port); a later flag in args wins
               "--health-server-address", "", *args]
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=full_env, cwd=cwd)
        self._started = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._started.wait(start_timeout):
            self.stop()
            raise RuntimeError("agent did not start:\n" + "".join(self.stderr[-30:]))

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "vigil agent started" in line:
                self._started.set()

    def events(self) -> list[Event]:
        return list(reader.read(self.export)) if self.export.exists() else []

    def wait_for(self, pred: Callable[[Event], bool], count: int = 1,
                 timeout: float = 15.0) -> list[Event]:
        """Events matching ``pred`` once at least ``count`` are in the export file."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if pred(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exec_of(pid: int) -> Callable[[Event], bool]:
    return lambda e: e.get("process_exec", {}).get("process", {}).get("pid") == pid


def exit_of(pid: int) -> Callable[[Event], bool]:
    return lambda e: e.get("process_exit", {}).get("process", {}).get("pid") == pid


def links_of(pid: int) -> set[int]:
    """Ids of the BPF links process ``pid`` holds (from /proc/PID/fdinfo: link_id)."""
    ids = set()
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for f in fdinfo.iterdir() if fdinfo.exists() else ():
        try:
            for line in f.read_text().splitlines():
                if line.startswith("link_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def live_links(ids: set[int]) -> set[int]:
    """Which of these link ids still exist."""
    import json
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True)
    return ids & {lk["id"] for lk in json.loads(out.stdout or "[]")}
