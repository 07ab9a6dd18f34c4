"""``vigil agent`` options an operator sets once per deployment, with Tetragon's names:
export filters and aggregation, the configuration directory, the health server, logging
and keeping sensors across restarts. Apply ``operator_options`` to the agent command;
``operator_config(opts)`` turns the parsed values into config (ValueError if invalid).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HEALTH_ADDRESS = "localhost:6789"  # Tetragon's is ":6789"; see --health-server-address

OPTIONS = [
    click.option("--config-dir", default="", metavar="DIR",
                 help="Read options from DIR, one file per option (file name = option "
                      "key, content = value), as a mounted ConfigMap. Above the drop-in "
                      "directories and vigil.yaml, below VIGIL_AGENT_* and flags."),
    click.option("--export-allowlist", default="", metavar="JSON",
                 help="Newline-separated JSON Filters (as GetEvents'): only events matching "
                      "one are exported. JSON export only, not gRPC."),
    click.option("--export-denylist", default="", metavar="JSON",
                 help="Newline-separated JSON Filters: events matching one are not exported "
                      "(deny wins over allow). JSON export only."),
    click.option("--field-filters", default="", metavar="JSON",
                 help="Newline-separated JSON FieldFilters trimming exported events."),
    click.option("--enable-export-aggregation", is_flag=True,
                 help="Pass exported events through the aggregator (as Tetragon's, it "
                      "changes nothing today)."),
    click.option("--export-aggregation-window-size", default="15s", show_default=True,
                 help="Aggregation window (duration)."),
    click.option("--export-aggregation-buffer-size", default=10000, show_default=True,
                 type=click.IntRange(min=1), help="Aggregator channel buffer size."),
    click.option("--health-server-address", default=DEFAULT_HEALTH_ADDRESS, show_default=True,
                 metavar="[HOST]:PORT",
                 help="Serve grpc.health.v1.Health (service 'liveness', plain gRPC) here; "
                      "'' disables it. Loopback by default (Tetragon: ':6789', every "
                      "interface)."),
    click.option("--health-server-interval", default=10, show_default=True,
                 type=click.IntRange(min=1), help="Seconds between liveness checks."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "warn", "error"],
                                                  case_sensitive=False),
                 default=None, help="Agent log level. Default: info (or vigil --log-level)."),
    click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                 show_default=True, help="json: one JSON object per log line on stderr."),
    click.option("--keep-sensors-on-exit", is_flag=True,
                 help="On exit, pin the agent's BPF links under /sys/fs/bpf/vigil so "
                      "observation and BPF enforcement keep running until the next agent "
                      "replaces them. fanotify-based enforcement still ends with the agent."),
]


def operator_options(f: F) -> F:
    """Decorate a click command with every option above."""
    for option in reversed(OPTIONS):
        f = option(f)
    return f


@dataclass(frozen=True)
class OperatorConfig:
    export_filters: Any               # vigil.server.exportfilters.ExportFilterConfig
    health_address: str
    health_interval: float
    health_explicit: bool      # address set by the operator: failing to bind stops start-up
    keep_sensors_on_exit: bool


def operator_config(opts: Mapping[str, Any]) -> OperatorConfig:
    """Parsed options -> config; ValueError (-> click.BadParameter) when invalid. Also
    sets up logging (--log-level, --log-format) so later start-up messages follow it."""
    from vigil.server.exportfilters import ExportFilterConfig, parse_field_filters, parse_filters
    from vigil.stream.throttle import parse_duration
    setup_logging(opts.get("log_level"), str(opts.get("log_format") or "text"))
    ctx = click.get_current_context(silent=True)
    for path in getattr(ctx.command if ctx else None, "config_files", None) or ():
        logging.getLogger("vigil.config").info("configuration read from %s", path)
    window = parse_duration(str(opts["export_aggregation_window_size"]))
    if window <= 0:
        raise ValueError("--export-aggregation-window-size must be positive")
    filters = ExportFilterConfig(
        allow=tuple(parse_filters("export-allowlist", str(opts["export_allowlist"]))),
        deny=tuple(parse_filters("export-denylist", str(opts["export_denylist"]))),
        fields=tuple(parse_field_filters(str(opts["field_filters"]))),
        aggregation=bool(opts["enable_export_aggregation"]),
        aggregation_window=window,
        aggregation_buffer=int(opts["export_aggregation_buffer_size"]),
    )
    return OperatorConfig(
        export_filters=filters,
        health_address=str(opts["health_server_address"]).strip(),
        health_interval=float(opts["health_server_interval"]),
        health_explicit=_given(ctx, "health_server_address"),
        keep_sensors_on_exit=bool(opts["keep_sensors_on_exit"]),
    )


def _given(ctx: click.Context | None, param: str) -> bool:
    if ctx is None:
        return True
    return ctx.get_parameter_source(param) not in (click.core.ParameterSource.DEFAULT, None)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339 UTC), level, logger, msg[, error]."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | None, fmt: str) -> None:
    """Apply --log-level/--log-format to the root logger's handlers (stderr)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr)
    if level:
        name = level.upper()
        root.setLevel("WARNING" if name == "WARN" else name)
    formatter = JsonLogFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    for h in root.handlers:
        h.setFormatter(formatter)


__all__ = ["DEFAULT_HEALTH_ADDRESS", "JsonLogFormatter", "OperatorConfig", "operator_config",
           "operator_options", "setup_logging"]
