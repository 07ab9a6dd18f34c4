"""A client of a container runtime's CRI API (containerd, CRI-O): the pod labels and image
reference of a container, and the containers already running at start-up."""
from __future__ import annotations

import os
from typing import Any

from vigil.containers.model import ContainerMeta

# Where CRI runtimes listen by default (probed in this order by --enable-cri).
DEFAULT_ENDPOINTS = ("unix:///run/containerd/containerd.sock", "unix:///run/crio/crio.sock")
TIMEOUT_S = 2.0


def find_endpoint() -> str:
    """The first default CRI socket that exists, "" if none."""
    for ep in DEFAULT_ENDPOINTS:
        if os.path.exists(ep.removeprefix("unix://")):
            return ep
    return ""


class CriClient:
    """``runtime.v1.RuntimeService`` over a Unix socket; every call has a deadline."""

    def __init__(self, endpoint: str, timeout: float = TIMEOUT_S) -> None:
        import grpc

        from vigil.api.cri import api_pb2, api_pb2_grpc
        if not endpoint.startswith("unix://"):
            endpoint = "unix://" + endpoint
        self.endpoint = endpoint
        self.timeout = timeout
        self.pb = api_pb2
        self._channel = grpc.insecure_channel(endpoint)
        self.rt = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.runtime_name = ""

    def close(self) -> None:
        self._channel.close()

    def version(self) -> Any:
        v = self.rt.Version(self.pb.VersionRequest(version="v1"), timeout=self.timeout)
        self.runtime_name = v.runtime_name
        return v

    def container_image_ref(self, container_id: str) -> str:
        r = self.rt.ContainerStatus(self.pb.ContainerStatusRequest(container_id=container_id),
                                    timeout=self.timeout)
        return str(r.status.image_ref)

    def sandbox_labels(self, sandbox_id: str) -> dict[str, str]:
        r = self.rt.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                                     timeout=self.timeout)
        return dict(r.status.labels)

    def containers(self) -> list[ContainerMeta]:
        """Running containers with their pods (the sandboxes' labels as pod labels)."""
        from vigil.containers.tracker import pod_labels
        sandboxes = {s.id: s for s in self.rt.ListPodSandbox(
            self.pb.ListPodSandboxRequest(), timeout=self.timeout).items}
        runtime = "cri-o" if "cri-o" in self.runtime_name.lower() else "containerd"
        out = []
        for c in self.rt.ListContainers(self.pb.ListContainersRequest(),
                                        timeout=self.timeout).containers:
            if c.state != self.pb.CONTAINER_RUNNING:
                continue
            s = sandboxes.get(c.pod_sandbox_id)
            out.append(ContainerMeta(
                id=c.id, name=c.metadata.name, runtime=runtime,
                image_name=c.image.image, image_id=c.image_ref,
                pod_namespace=s.metadata.namespace if s else "",
                pod_name=s.metadata.name if s else "",
                pod_uid=s.metadata.uid if s else "",
                sandbox_id=c.pod_sandbox_id,
                pod_labels=pod_labels(dict(s.labels)) if s else {}))
        return out
