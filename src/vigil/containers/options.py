"""The agent's container options (``--enable-cri``, ``--cri-endpoint``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ContainersConfig:
    """``cri_endpoint``: the CRI socket asked for pod labels and image references ("":
    none; the OCI hook's notices alone then give container, pod and image names)."""

    cri_endpoint: str = ""


def container_options(fn: F) -> F:
    fn = click.option("--cri-endpoint", default="", metavar="ADDR",
                      help="CRI socket of the container runtime (unix:///run/containerd/"
                           "containerd.sock): pod labels and image ids of containers. "
                           "Implies --enable-cri.")(fn)
    fn = click.option("--enable-cri", is_flag=True,
                      help="Ask the container runtime's CRI socket (the first of "
                           "containerd's and CRI-O's default sockets that exists) for pod "
                           "labels and image ids of containers.")(fn)
    return fn


def containers_config(opts: dict[str, Any]) -> ContainersConfig:
    endpoint = str(opts.get("cri_endpoint") or "")
    if not endpoint and opts.get("enable_cri"):
        from vigil.containers.cri import find_endpoint
        endpoint = find_endpoint()
        if not endpoint:
            raise click.BadParameter("no CRI socket found; give --cri-endpoint",
                                     param_hint="--enable-cri")
    return ContainersConfig(cri_endpoint=endpoint)
