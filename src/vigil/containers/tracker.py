"""Containers known to the agent, and the ``process.pod`` block of their processes.

The container runtime tells the agent about a container before its first process runs:
an OCI ``createRuntime`` hook (``vigil-oci-hook``) calls the agent's ``RuntimeHook`` RPC
while the runtime waits, so the container is here before the exec that starts it.
The CRI (when an endpoint is given) adds what the hook does not carry — the pod's labels
and the image reference — and lists the containers that already ran when the agent
started. A :class:`~vigil.containers.model.PodSource` (the Kubernetes API), when given,
supplies labels and the owning workload.

Processes are matched to containers by the container id in their cgroup name (the
``docker`` field, 31 characters, as Tetragon cuts it).
"""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from vigil.containers.model import KUBELET_SANDBOX_LABELS, ContainerMeta, PodSource

log = logging.getLogger(__name__)

DOCKER_ID_LEN = 31
MAX_CONTAINERS = 8192          # containers remembered (least recently added go first)
MAX_LABELS = 256               # pod labels kept per pod
MAX_FIELD = 1024               # bytes of one name, label key or value
_HEX64 = re.compile(r"[0-9a-f]{64}")

# OCI annotations the CRI runtimes put on each container's spec
_CRI = {
    "containerd": {"name": "io.kubernetes.cri.container-name",
                   "pod": "io.kubernetes.cri.sandbox-name",
                   "namespace": "io.kubernetes.cri.sandbox-namespace",
                   "uid": "io.kubernetes.cri.sandbox-uid",
                   "image": "io.kubernetes.cri.image-name",
                   "type": "io.kubernetes.cri.container-type",
                   "sandbox_id": "io.kubernetes.cri.sandbox-id"},
    "cri-o": {"name": "io.kubernetes.container.name",
              "pod": "io.kubernetes.pod.name",
              "namespace": "io.kubernetes.pod.namespace",
              "uid": "io.kubernetes.pod.uid",
              "image": "io.kubernetes.cri-o.ImageName",
              "type": "io.kubernetes.cri-o.ContainerType",
              "sandbox_id": "io.kubernetes.cri-o.SandboxID"},
}


# CreateContainer's field of each piece of metadata (the names errors give)
_FIELDS = {"name": "containerName", "pod": "podName", "namespace": "podNamespace",
           "uid": "podUID", "image": "containerImage"}


class HookError(ValueError):
    """A runtime hook notice that cannot describe a container (named field)."""


class CriSource(Protocol):
    """What the tracker asks a CRI runtime (``vigil.containers.cri.CriClient``)."""

    def container_image_ref(self, container_id: str) -> str: ...

    def sandbox_labels(self, sandbox_id: str) -> dict[str, str]: ...

    def containers(self) -> list[ContainerMeta]: ...


def container_id_of(cgroups_path: str) -> str:
    """The last 64-hex id in a cgroups path ("" when none): ``/kubepods/pod1/<id>``,
    ``system.slice:cri-containerd:<id>``, ``/libpod_parent/libpod-<id>``."""
    found = _HEX64.findall(cgroups_path)
    return found[-1] if found else ""


def _bounded(what: str, value: str) -> str:
    if len(value) > MAX_FIELD:
        raise HookError(f"{what}: {len(value)} bytes > {MAX_FIELD}")
    return value


def meta_from_hook(c: Any) -> ContainerMeta:
    """A container from a ``tetragon.CreateContainer`` message (or anything with its
    attributes). Raises HookError naming the field when it cannot be used."""
    ann = dict(c.annotations)
    if len(ann) > 4 * MAX_LABELS:
        raise HookError(f"annotations: {len(ann)} entries > {4 * MAX_LABELS}")
    cid = _bounded("containerID", c.containerID)
    if not _HEX64.fullmatch(cid):
        from_path = container_id_of(_bounded("cgroupsPath", c.cgroupsPath))
        if not from_path:
            raise HookError(f"containerID: {cid[:80]!r} is not a 64-hex id and cgroupsPath "
                            f"{c.cgroupsPath[:120]!r} holds none")
        cid = from_path
    runtime, keys = "", {}
    for name, k in _CRI.items():
        if any(a in ann for a in k.values()):
            runtime, keys = name, k
            break
    else:
        if ann.get("io.container.manager") == "libpod":
            runtime = "podman"

    def pick(explicit: str, key: str) -> str:
        """The notice's own field, else the runtime's annotation (errors name either)."""
        if explicit:
            return _bounded(_FIELDS.get(key, key), explicit)
        return _bounded(f"annotation {keys.get(key, key)}", ann.get(keys.get(key, ""), ""))

    return ContainerMeta(
        id=cid,
        name=pick(c.containerName, "name"),
        runtime=runtime,
        image_name=pick(c.containerImage, "image"),
        pod_namespace=pick(c.podNamespace, "namespace"),
        pod_name=pick(c.podName, "pod"),
        pod_uid=pick(c.podUID, "uid"),
        sandbox_id=pick("", "sandbox_id"),
        sandbox=pick("", "type") in ("sandbox", "podsandbox"),
        cgroups_path=_bounded("cgroupsPath", c.cgroupsPath),
    )


def pod_labels(sandbox_labels: dict[str, str]) -> dict[str, str]:
    """The pod's own labels out of its CRI sandbox labels (the kubelet adds its own)."""
    if len(sandbox_labels) > MAX_LABELS:
        raise HookError(f"pod labels: {len(sandbox_labels)} entries > {MAX_LABELS}")
    out = {}
    for k, v in sandbox_labels.items():
        if k in KUBELET_SANDBOX_LABELS:
            continue
        out[_bounded("label key", k)] = _bounded(f"label {k[:60]}", v)
    return out


def _rfc3339_seconds(wall_ns: int) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_ns // 1_000_000_000))


class ContainerTracker:
    """The containers this node runs, and the pod block of a process.

    Thread-safe: runtime hooks arrive on gRPC threads, lookups come from the event
    reader. Bounded to ``capacity`` containers (the least recently added or asked for is
    dropped, counted in ``evicted``).
    Errors (a malformed notice, a CRI call that failed) are logged and counted in
    ``errors``; a container is still recorded with what is known.
    """

    def __init__(self, *, procfs: str = "/proc", cri: CriSource | None = None,
                 pods: PodSource | None = None, capacity: int = MAX_CONTAINERS) -> None:
        self.procfs = procfs
        self.cri = cri
        self.pods = pods
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_docker: OrderedDict[str, ContainerMeta] = OrderedDict()
        self._sandbox_labels: dict[str, dict[str, str]] = {}
        self.hooks = 0
        self.errors: dict[str, int] = {}
        self.evicted = 0
        # called with each container recorded from a runtime hook, before the hook is
        # answered (e.g. scoped policies adding its cgroup); an exception is counted
        # under "listener" and does not refuse the container
        self.listeners: list[Callable[[ContainerMeta], None]] = []

    # -- learning containers ---------------------------------------------------------

    def _error(self, kind: str, msg: str, *args: Any) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        log.warning(msg, *args)

    def add(self, meta: ContainerMeta) -> None:
        with self._lock:
            key = meta.id[:DOCKER_ID_LEN]
            old = self._by_docker.pop(key, None)
            if old is not None and not meta.start_time_ns:
                meta.start_time_ns = old.start_time_ns
            self._by_docker[key] = meta
            while len(self._by_docker) > self.capacity:
                self._by_docker.popitem(last=False)
                self.evicted += 1

    def on_create_container(self, c: Any) -> ContainerMeta:
        """A runtime's CreateContainer notice (the RuntimeHook RPC): record the container
        before the runtime starts it. Raises HookError for a notice naming no container."""
        self.hooks += 1
        try:
            meta = meta_from_hook(c)
        except HookError as err:
            self._error("hook", "runtime hook: malformed CreateContainer: %s", err)
            raise
        if self.cri is not None and meta.runtime in ("containerd", "cri-o") \
                and not meta.sandbox:
            self._enrich(meta)
        self.add(meta)
        for listener in self.listeners:
            try:
                listener(meta)
            except Exception as err:  # noqa: BLE001 - one listener never refuses a container
                self._error("listener", "container listener %r: %s", listener, err)
        log.info("container %s: %s (pod %s/%s, image %s)", meta.id[:12], meta.name,
                 meta.pod_namespace, meta.pod_name, meta.image_name)
        return meta

    def _enrich(self, meta: ContainerMeta) -> None:
        assert self.cri is not None
        try:
            meta.image_id = _bounded("image ref", self.cri.container_image_ref(meta.id))
        except Exception as err:  # noqa: BLE001 - any CRI failure: keep what the hook gave
            self._error("cri", "CRI ContainerStatus %s: %s", meta.id[:12], err)
        if meta.sandbox_id:
            labels = self._sandbox_labels.get(meta.sandbox_id)
            if labels is None:
                try:
                    labels = pod_labels(self.cri.sandbox_labels(meta.sandbox_id))
                except Exception as err:  # noqa: BLE001
                    self._error("cri", "CRI PodSandboxStatus %s: %s", meta.sandbox_id[:12],
                                err)
                    labels = {}
                else:
                    with self._lock:
                        if len(self._sandbox_labels) >= self.capacity:
                            self._sandbox_labels.clear()
                        self._sandbox_labels[meta.sandbox_id] = labels
            meta.pod_labels = labels

    def load_from_cri(self) -> int:
        """Record the containers the CRI runtime already runs (agent start-up)."""
        if self.cri is None:
            return 0
        try:
            found = self.cri.containers()
        except Exception as err:  # noqa: BLE001
            self._error("cri", "CRI list of running containers: %s", err)
            return 0
        for meta in found:
            self.add(meta)
        return len(found)

    def get(self, docker: str) -> ContainerMeta | None:
        """The container of a ``docker`` id; a container asked for is kept longest."""
        if not docker:
            return None
        key = docker[:DOCKER_ID_LEN]
        with self._lock:
            meta = self._by_docker.get(key)
            if meta is not None:
                self._by_docker.move_to_end(key)
            return meta

    def __len__(self) -> int:
        return len(self._by_docker)

    # -- the pod block ---------------------------------------------------------------

    def pod_block(self, p: Any) -> dict[str, Any] | None:
        """Tetragon's ``process.pod`` for process ``p`` (a ProcessInfo), None when it runs
        in no known pod container. The first process seen in a container gives the
        container's ``start_time``."""
        meta = self.get(p.docker)
        if meta is None or meta.sandbox or not meta.pod_name:
            return None
        if not meta.start_time_ns:
            meta.start_time_ns = p.start_time_ns
        labels, workload, kind = meta.pod_labels, "", ""
        if self.pods is not None:
            try:
                pod = self.pods.pod(meta.pod_namespace, meta.pod_name)
            except Exception as err:  # noqa: BLE001 - a failing source never stalls events
                self._error("pod_source", "pod source %s/%s: %s", meta.pod_namespace,
                            meta.pod_name, err)
                pod = None
            if pod is not None:
                labels, workload, kind = pod.labels, pod.workload, pod.workload_kind
        container: dict[str, Any] = {"id": f"{meta.runtime or 'containerd'}://{meta.id}"}
        if meta.name:
            container["name"] = meta.name
        image = {k: v for k, v in (("id", meta.image_id), ("name", meta.image_name)) if v}
        if image:
            container["image"] = image
        container["start_time"] = _rfc3339_seconds(meta.start_time_ns)
        nspid = getattr(p, "ns_pid", 0) or self._ns_pid(p.pid)
        if nspid:
            container["pid"] = nspid
        out: dict[str, Any] = {"namespace": meta.pod_namespace, "name": meta.pod_name,
                               "container": container}
        if labels:
            out["pod_labels"] = dict(labels)
        if workload:
            out["workload"] = workload
        if kind:
            out["workload_kind"] = kind
        return out

    def _ns_pid(self, pid: int) -> int:
        """The process's pid in its own (the container's) pid namespace; 0 if gone."""
        try:
            text = Path(self.procfs, str(pid), "status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("NSpid:"):
                parts = line.split()
                return int(parts[-1]) if len(parts) > 2 else 0
        return 0
