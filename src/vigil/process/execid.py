"""Tetragon's process identity: ``exec_id = base64("<node_name>:<ktime>:<pid>")``."""

from __future__ import annotations

import base64
from binascii import b2a_base64


def exec_id(node_name: str, ktime: int, pid: int) -> str:
    """Return the exec_id of the process ``pid`` that started at boot-clock ``ktime`` ns."""
    # base64.b64encode without its Python-level wrapper (two per process on the hot path)
    return b2a_base64(f"{node_name}:{ktime}:{pid}".encode(), newline=False).decode("ascii")


def parse_exec_id(value: str) -> tuple[str, int, int]:
    """Split an exec_id into (node_name, ktime, pid); raises ValueError if malformed."""
    raw = base64.b64decode(value, validate=True).decode()
    node, ktime, pid = raw.rsplit(":", 2)
    return node, int(ktime), int(pid)
