"""``vigil agent`` options of the Kubernetes side (Tetragon's flag names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def k8s_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--k8s-kubeconfig-path", default="", metavar="FILE",
                     help="kubeconfig of the API server (default: the in-cluster service "
                          "account).")(f)
    return click.option("--enable-k8s-api", is_flag=True,
                        help="Watch this node's pods (pod metadata, pod-scoped policies) and "
                             "TracingPolicy / TracingPolicyNamespaced resources.")(f)


def k8s_config(opts: dict[str, Any]) -> Any:
    """K8sConfig, or None without --enable-k8s-api."""
    if not opts.get("enable_k8s_api"):
        return None
    from vigil.k8s.agent import K8sConfig
    return K8sConfig(kubeconfig=str(opts.get("k8s_kubeconfig_path") or ""),
                     node_name=str(opts.get("node_name") or ""))
