"""Wire container metadata into a running agent: RuntimeHook notices in, pod blocks out."""
from __future__ import annotations

import logging
from typing import Any

from vigil.containers.model import PodSource
from vigil.containers.tracker import ContainerTracker

log = logging.getLogger(__name__)


def attach(agent: Any, pods: PodSource | None = None) -> ContainerTracker:
    """Give ``agent`` (vigil.daemon.agent.Agent, its gRPC server started) a container
    tracker: the RuntimeHook RPC records containers, the pipeline asks it for the pod
    block of each process in a container, and the CRI (if configured) is read for the
    containers already running.

    Other parts reach the tracker as ``agent.containers``: a pod metadata source set
    later (``agent.containers.pods = source``) is used from the next process on, and
    ``agent.containers.listeners`` are told of each container a runtime hook announces.
    """
    cfg = getattr(agent.cfg, "containers", None)
    cri = None
    if cfg is not None and cfg.cri_endpoint:
        from vigil.containers.cri import CriClient
        cri = CriClient(cfg.cri_endpoint)
        try:
            v = cri.version()
            log.info("CRI %s: %s %s", cfg.cri_endpoint, v.runtime_name, v.runtime_version)
        except Exception as err:  # noqa: BLE001 - the runtime may come later
            log.warning("CRI %s not answering (%s): pod labels and image ids come when it "
                        "does", cfg.cri_endpoint, err)
        agent._closers.append(cri.close)
    tracker = ContainerTracker(procfs=agent.cfg.procfs, cri=cri, pods=pods)
    n = tracker.load_from_cri()
    if n:
        log.info("%d running containers from the CRI", n)
    agent.pipeline.pod_of = tracker.pod_block
    server = getattr(agent, "server", None)
    if server is not None:
        server.servicer.on_create_container = tracker.on_create_container
    return tracker
