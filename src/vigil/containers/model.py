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
