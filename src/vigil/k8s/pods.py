"""The pods of this node, from the Kubernetes API (list + watch, ``spec.nodeName``).

``PodWatcher`` is a ``vigil.containers.model.PodSource``: ``pod(namespace, name)``
answers from memory, never blocking on the API. It also knows each pod's containers
(id, name, image) for pod-scoped policies, and calls ``on_change`` after every change.

Workload and kind are derived as Tetragon does: a pod with a generated name and a
controller owner takes the owner's kind and name; a ReplicaSet whose name ends with the
pod's ``pod-template-hash`` label is a Deployment (the suffix trimmed); a Job named
``<name>-<8..10 digits>`` is a CronJob's; a ReplicationController with a
``deploymentconfig`` label is an OpenShift DeploymentConfig; otherwise the workload is
the pod's own name with no kind.

Bounds: a pod keeps at most ``MAX_LABELS`` labels of at most ``MAX_LABEL_BYTES`` each
and ``MAX_CONTAINERS`` containers; the node holds at most ``max_pods`` pods. What is cut
is counted (``errors``) and logged.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigil.containers.model import PodMeta
from vigil.k8s.cgroups import container_id

log = logging.getLogger("vigil.k8s.pods")

MAX_LABELS = 256
MAX_LABEL_BYTES = 1024
MAX_CONTAINERS = 128
_CRONJOB = re.compile(r"(.+)-\d{8,10}$")


@dataclass(frozen=True)
class ContainerRef:
    id: str      # runtime id, scheme stripped ("" until the container has started)
    name: str
    image: str


@dataclass(frozen=True)
class PodInfo:
    meta: PodMeta
    containers: tuple[ContainerRef, ...]


class BadObject(ValueError):
    """A pod object that cannot be used (the reason is the message)."""


def workload_of(meta: dict[str, Any], labels: dict[str, str]) -> tuple[str, str]:
    """(workload, workload_kind) of a pod's metadata, as Tetragon derives them."""
    name = str(meta.get("name") or "")
    if not meta.get("generateName"):
        return name, ""
    ref = next((r for r in meta.get("ownerReferences") or ()
                if isinstance(r, dict) and r.get("controller") is True), None)
    if ref is None:
        return name, ""
    kind, owner = str(ref.get("kind") or ""), str(ref.get("name") or "")
    tmpl = labels.get("pod-template-hash", "")
    if kind == "ReplicaSet" and tmpl and owner.endswith(tmpl):
        return owner.removesuffix("-" + tmpl), "Deployment"
    if kind == "ReplicationController" and labels.get("deploymentconfig"):
        return labels["deploymentconfig"], "DeploymentConfig"
    if kind == "Job":
        m = _CRONJOB.match(owner)
        if m:
            return m.group(1), "CronJob"
    return owner, kind


def parse_pod(obj: dict[str, Any], errors: Counter[str] | None = None) -> PodInfo:
    """A pod object (dict) -> PodInfo; BadObject when it lacks what identifies a pod."""
    errs = errors if errors is not None else Counter()
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise BadObject("pod without metadata")
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(ns, str) or not isinstance(name, str) or not ns or not name:
        raise BadObject("pod without a namespace and name")
    raw = meta.get("labels") or {}
    if not isinstance(raw, dict):
        errs["malformed_labels"] += 1
        raw = {}
    labels: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str):
            errs["malformed_labels"] += 1
            continue
        if len(k) + len(v) > MAX_LABEL_BYTES or len(labels) >= MAX_LABELS:
            errs["oversized_labels"] += 1
            continue
        labels[k] = v
    workload, kind = workload_of(meta, labels)
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    status: dict[str, Any] = obj["status"] if isinstance(obj.get("status"), dict) else {}
    images = {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or ():
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                images[c["name"]] = str(c.get("image") or "")
    containers: list[ContainerRef] = []
    seen = set()
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for c in status.get(key) or ():
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                errs["malformed_containers"] += 1
                continue
            cid = container_id(str(c.get("containerID") or ""))
            if len(containers) >= MAX_CONTAINERS:
                errs["oversized_containers"] += 1
                break
            seen.add(c["name"])
            containers.append(ContainerRef(cid, c["name"],
                                           str(c.get("image") or images.get(c["name"], ""))))
    for cname, image in images.items():  # declared, not started yet: no id
        if cname not in seen and len(containers) < MAX_CONTAINERS:
            containers.append(ContainerRef("", cname, image))
    uid = meta.get("uid")
    return PodInfo(PodMeta(ns, name, uid if isinstance(uid, str) else "", labels, workload,
                           kind), tuple(containers))


class PodWatcher:
    """The node's pods, kept by an informer's callbacks; a PodSource."""

    def __init__(self, max_pods: int = 4096) -> None:
        self.max_pods = max_pods
        self.errors: Counter[str] = Counter()
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[], None]] = []

    # -- PodSource -----------------------------------------------------------------

    def pod(self, namespace: str, name: str) -> PodMeta | None:
        info = self._pods.get((namespace, name))
        return info.meta if info is not None else None

    # -- for scoping ---------------------------------------------------------------

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    # -- informer callbacks --------------------------------------------------------

    def on_sync(self, items: list[dict[str, Any]]) -> None:
        pods: dict[tuple[str, str], PodInfo] = {}
        for obj in items:
            info = self._parse(obj)
            if info is None:
                continue
            if len(pods) >= self.max_pods:
                self.errors["too_many_pods"] += 1
                continue
            pods[(info.meta.namespace, info.meta.name)] = info
        with self._lock:
            self._pods = pods
        self._changed()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        info = self._parse(obj)
        if info is None:
            return
        key = (info.meta.namespace, info.meta.name)
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(key, None)
            elif key in self._pods or len(self._pods) < self.max_pods:
                self._pods[key] = info
            else:
                self.errors["too_many_pods"] += 1
                log.warning("pod %s/%s not tracked: %d pods already", *key, self.max_pods)
                return
        self._changed()

    def _parse(self, obj: dict[str, Any]) -> PodInfo | None:
        try:
            return parse_pod(obj, self.errors)
        except BadObject as err:
            self.errors["malformed"] += 1
            log.warning("pod object ignored: %s", err)
            return None

    def _changed(self) -> None:
        for fn in list(self.listeners):
            fn()
