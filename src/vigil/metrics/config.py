"""Metrics configuration: pure data and parsing (no prometheus_client import), so the
CLI can build it without loading the metrics stack."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

PROCESS_LABELS = ("namespace", "workload", "pod", "binary")  # Tetragon's default filter
DEFAULT_PORT = 2112
_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class MetricsConfig:
    """``--metrics-*``: where to serve, how to name, how to bound labels."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert_file: str = ""
    tls_key_file: str = ""
    namespace: str = "vigil"                        # or "tetragon" for existing dashboards
    process_labels: tuple[str, ...] = PROCESS_LABELS  # --metrics-label-filter
    label_max_values: int = 100    # distinct values per process label; the rest -> "other"
    label_allow: Mapping[str, frozenset[str]] = field(default_factory=dict)  # allow-lists
    max_series: int = 5000         # events_total / policy_events_total series, each
    health_stall_s: float = 10.0   # /healthz fails after this long without progress

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"bad metrics namespace {self.namespace!r}")
        unknown = set(self.process_labels) - set(PROCESS_LABELS)
        if unknown:
            raise ValueError(f"unknown metrics labels {sorted(unknown)}; "
                             f"known: {', '.join(PROCESS_LABELS)}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("--metrics-tls-cert-file and --metrics-tls-key-file go together")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bad metrics port {self.port}")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


def parse_listen(addr: str) -> tuple[str, int]:
    """"2112" or ":2112" -> ("127.0.0.1", 2112); "0.0.0.0:2112"; "[::1]:2112".

    A port alone binds loopback only (unlike Tetragon's ":2112", which is every
    interface): metrics leak the agent's state, so exposing them is an explicit choice.
    """
    addr = addr.strip()
    if addr.isdigit():
        return "127.0.0.1", int(addr)
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad listen address {addr!r} (want [HOST]:PORT)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def parse_label_filter(text: str) -> tuple[str, ...]:
    """Tetragon's --metrics-label-filter "namespace,workload,pod,binary"."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_label_allow(items: tuple[str, ...] | list[str]) -> dict[str, frozenset[str]]:
    """("binary=/usr/bin/curl", "binary=/bin/sh", "pod=web") -> {label: values}."""
    out: dict[str, set[str]] = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or label not in PROCESS_LABELS:
            raise ValueError(f"bad --metrics-label-allow {item!r} (want LABEL=VALUE, LABEL in "
                             f"{', '.join(PROCESS_LABELS)})")
        out.setdefault(label, set()).add(value)
    return {k: frozenset(v) for k, v in out.items()}


def metrics_config(server: str, *, tls_cert_file: str = "", tls_key_file: str = "",
                   namespace: str = "vigil", label_filter: str = ",".join(PROCESS_LABELS),
                   label_max_values: int = 100, label_allow: tuple[str, ...] = (),
                   health_stall_s: float = 10.0) -> MetricsConfig | None:
    """The config for ``--metrics-server`` and friends; None when the server is off."""
    if not server:
        return None
    host, port = parse_listen(server)
    return MetricsConfig(host=host, port=port, tls_cert_file=tls_cert_file,
                         tls_key_file=tls_key_file, namespace=namespace,
                         process_labels=parse_label_filter(label_filter),
                         label_max_values=label_max_values,
                         label_allow=parse_label_allow(label_allow),
                         health_stall_s=health_stall_s)
