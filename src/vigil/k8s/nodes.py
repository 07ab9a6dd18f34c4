"""This node's labels, for ``spec.nodeSelector``: the Node object named by the agent's
node name, listed and watched (``fieldSelector=metadata.name=<node>``).

The labels go to the policy manager (``set_node_labels``) on the first list and then
only when they change: status and heartbeat updates of the Node, which are frequent,
change nothing. A node the API does not have (or a deleted one) has no labels; until the
first list answers, policies with a node selector wait, listed as skipped.

Bounds: at most ``MAX_LABELS`` labels of at most ``MAX_LABEL_BYTES`` each (key and
value), as for pods; the others are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from vigil.k8s.pods import MAX_LABEL_BYTES, MAX_LABELS

log = logging.getLogger("vigil.k8s.nodes")


class NodeWatcher:
    """Keeps the manager's node labels equal to the Node object's (informer callbacks)."""

    def __init__(self, manager: Any, node_name: str) -> None:
        self.manager = manager
        self.node_name = node_name
        self.errors: Counter[str] = Counter()
        self.labels: dict[str, str] | None = None   # None: not listed yet
        self._lock = threading.Lock()

    def on_sync(self, items: list[dict[str, Any]]) -> None:
        mine = [o for o in items if _name(o) == self.node_name]
        if not mine:
            self.errors["node_not_found"] += 1
            log.warning("node %s: no such Node object in the API: no node labels "
                        "(policies with a spec.nodeSelector needing one are skipped)",
                        self.node_name)
        self._set(self._labels(mine[0]) if mine else {})

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if _name(obj) != self.node_name:
            return
        self._set({} if kind == "DELETED" else self._labels(obj))

    def _set(self, labels: dict[str, str]) -> None:
        with self._lock:
            if labels == self.labels:
                return
            self.labels = labels
            log.info("node %s labels: %s", self.node_name,
                     ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none")
            self.manager.set_node_labels(labels, f"node {self.node_name}")

    def _labels(self, obj: dict[str, Any]) -> dict[str, str]:
        meta = obj.get("metadata")
        raw = meta.get("labels") if isinstance(meta, dict) else None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.errors["malformed_labels"] += 1
            return {}
        labels: dict[str, str] = {}
        for k, v in raw.items():
            if not isinstance(k, str) or not isinstance(v, str):
                self.errors["malformed_labels"] += 1
                continue
            if len(k) + len(v) > MAX_LABEL_BYTES or len(labels) >= MAX_LABELS:
                self.errors["oversized_labels"] += 1
                continue
            labels[k] = v
        return labels


def _name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""
