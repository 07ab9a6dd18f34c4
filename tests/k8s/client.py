"""Test helpers: a kubeconfig for the stand-in API server, informers waited on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml


def kubeconfig(path: Path, url: str, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "vigil", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "vigil"}}],
    }))
    return path


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


def pod(name: str, *, ns: str = "default", node: str = "node-a", labels: dict | None = None,
        containers: list[tuple[str, str, str]] = (), uid: str = "", **meta: Any) -> dict:
    """A pod object; containers: (name, image, containerID)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}",
                         "labels": dict(labels or {}), **meta},
            "spec": {"nodeName": node,
                     "containers": [{"name": c, "image": i} for c, i, _ in containers]},
            "status": {"containerStatuses": [{"name": c, "image": i, "containerID": cid}
                                             for c, i, cid in containers]}}
