"""Plain data about pods and containers, and the interface of a pod metadata source.

Pure logic: no I/O, importable unprivileged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PodMeta:
    """What the cluster knows about a pod: identity, labels and the workload owning it.

    ``workload`` and ``workload_kind`` are the top owner as Tetragon reports them (e.g.
    ``my-deploy`` / ``Deployment``); empty when unknown.
    """

    namespace: str
    name: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    workload: str = ""
    workload_kind: str = ""


@runtime_checkable
class PodSource(Protocol):
    """Something that answers "what is this pod?" (the Kubernetes API client's pod cache).

    Must not block: it answers from what it already holds, None when the pod is unknown.
    """

    def pod(self, namespace: str, name: str) -> PodMeta | None: ...


# Labels the kubelet adds to every pod sandbox besides the pod's own labels; Tetragon's
# pod_labels are the pod's labels only.
KUBELET_SANDBOX_LABELS = frozenset({"io.kubernetes.pod.name", "io.kubernetes.pod.namespace",
                                    "io.kubernetes.pod.uid"})


@dataclass
class ContainerMeta:
    """One container as the runtime described it (the OCI hook, the CRI).

    ``id`` is the runtime's full id (64 hex for containerd, CRI-O, podman); ``runtime``
    names the scheme of Tetragon's ``container.id`` (``containerd://<id>``). Pod fields are
    empty for a container outside any pod (plain podman). ``start_time_ns`` is the wall
    time of the first exec seen in the container (the runtime's start), 0 until then.
    """

    id: str
    name: str = ""
    runtime: str = ""
    image_name: str = ""
    image_id: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    sandbox_id: str = ""
    sandbox: bool = False          # the pod's sandbox (pause) container
    pod_labels: dict[str, str] = field(default_factory=dict)
    cgroups_path: str = ""
    start_time_ns: int = 0
