"""``vigil agent`` options for metrics, health and flood resistance (Tetragon's names
where one exists). Apply ``observability_options`` to the agent command and turn the
parsed values into config with ``observability_config(opts)``. Imports neither
prometheus_client nor libbpf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from vigil.metrics.config import PROCESS_LABELS, MetricsConfig, metrics_config
from vigil.stream.throttle import CgroupRate, parse_cgroup_rate, parse_duration

F = TypeVar("F", bound=Callable[..., Any])

OPTIONS = [
    click.option("--metrics-server", default="", metavar="[HOST]:PORT",
                 help="Serve Prometheus /metrics and /healthz here. A port alone binds "
                      "127.0.0.1. Default: off."),
    click.option("--metrics-tls-cert-file", default="", metavar="PATH",
                 help="Serve metrics over TLS with this certificate (PEM)."),
    click.option("--metrics-tls-key-file", default="", metavar="PATH",
                 help="Private key for --metrics-tls-cert-file (PEM)."),
    click.option("--metrics-namespace", default="vigil", show_default=True,
                 help="Metric name prefix; 'tetragon' for Tetragon's dashboards and alerts."),
    click.option("--metrics-label-filter", default=",".join(PROCESS_LABELS),
                 show_default=True, help="Process labels on per-event metrics."),
    click.option("--metrics-label-max-values", default=100, show_default=True, type=int,
                 help="Distinct values kept per process label; later ones become 'other'."),
    click.option("--metrics-label-allow", multiple=True, metavar="LABEL=VALUE",
                 help="Only these values of LABEL get their own series (repeatable); the "
                      "rest are 'other'."),
    click.option("--health-stall-timeout", default="10s", show_default=True,
                 help="/healthz fails when the pipeline has not moved for this long."),
    click.option("--cgroup-rate", default="", metavar="EVENTS,INTERVAL",
                 help="Throttle a cgroup sending more than EVENTS per INTERVAL (e.g. "
                      "1000,1s): its events stop, with process_throttle START/STOP events."),
    click.option("--cgroup-rate-quiet", default="5s", show_default=True,
                 help="THROTTLE_STOP once a throttled cgroup stayed under its rate this long."),
    click.option("--export-rate-limit", default=-1, show_default=True, type=int,
                 help="Events per minute into the export file (-1 unlimited, 0 none); "
                      "drops are reported by rate_limit_info events."),
]


def observability_options(f: F) -> F:
    """Decorate a click command with every option above."""
    for option in reversed(OPTIONS):
        f = option(f)
    return f


@dataclass(frozen=True)
class ObservabilityConfig:
    metrics: MetricsConfig | None
    cgroup_rate: CgroupRate | None
    export_rate_limit: int


def observability_config(opts: Mapping[str, Any]) -> ObservabilityConfig:
    """The parsed options -> config; ValueError (-> click.BadParameter) when invalid."""
    metrics = metrics_config(
        str(opts["metrics_server"]),
        tls_cert_file=str(opts["metrics_tls_cert_file"]),
        tls_key_file=str(opts["metrics_tls_key_file"]),
        namespace=str(opts["metrics_namespace"]),
        label_filter=str(opts["metrics_label_filter"]),
        label_max_values=int(opts["metrics_label_max_values"]),
        label_allow=tuple(opts["metrics_label_allow"]),
        health_stall_s=parse_duration(str(opts["health_stall_timeout"])),
    )
    rate = parse_cgroup_rate(str(opts["cgroup_rate"]),
                             parse_duration(str(opts["cgroup_rate_quiet"])))
    limit = int(opts["export_rate_limit"])
    if limit < -1:
        raise ValueError("--export-rate-limit must be -1 (unlimited), 0 or positive")
    return ObservabilityConfig(metrics, rate, limit)
