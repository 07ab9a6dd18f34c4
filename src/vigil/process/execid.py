"""Tetragon's process identity: ``exec_id = base64("<node_name>:<ktime>:<pid>")``."""

from __future__ import annotations

import base64


def exec_id(node_name: str, ktime: int, pid: int) -> str:
    """Return the exec_id of the process ``pid`` that started at boot-clock ``ktime`` ns."""
    return base64.b64encode(f"{node_name}:{ktime}:{pid}".encode()).decode("ascii")


def parse_exec_id(value: str) -> tuple[str, int, int]:
    """Split an exec_id into (node_name, ktime, pid); raises ValueError if malformed."""
    raw = base64.b64decode(value, validate=True).decode()
    node, ktime, pid = raw.rsplit(":", 2)
    return node, int(ktime), int(pid)
