"""``vigil agent`` options for redaction and the network exporters (syslog over TLS,
OTLP over HTTPS). Apply ``export_options`` to the agent command and turn the parsed
values into config with ``export_config(opts)`` (ValueError when invalid, before any
BPF is loaded). Imports neither the OpenTelemetry SDK nor libbpf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

OPTIONS = [
    click.option("--redaction-filters", default="", metavar="JSON",
                 help="Tetragon's redaction filters: newline-separated JSON objects "
                      "{\"binary_regex\": [RE2...], \"redact\": [RE2...]}; every capture "
                      "group of a redact match in a process's arguments becomes '*****' "
                      "in every output. '@PATH' reads them from a file."),
    # syslog over TLS (RFC 5425)
    click.option("--export-syslog-address", default="", metavar="tls://HOST:PORT",
                 help="Send every event to this syslog collector over TLS (RFC 5425 "
                      "framing, RFC 5424 messages with the JSON event). Default port 6514."),
    click.option("--export-syslog-ca-file", default="", metavar="PATH",
                 help="CA certificates (PEM) the collector's certificate must chain to. "
                      "Default: the system's."),
    click.option("--export-syslog-cert-file", default="", metavar="PATH",
                 help="Client certificate (PEM) for mutual TLS."),
    click.option("--export-syslog-key-file", default="", metavar="PATH",
                 help="Private key (PEM) of --export-syslog-cert-file."),
    click.option("--export-syslog-server-name", default="", metavar="NAME",
                 help="Name the collector's certificate must carry (and SNI). Default: "
                      "the address's host."),
    click.option("--export-syslog-facility", default="local0", show_default=True,
                 help="Syslog facility of the messages (severity is informational)."),
    click.option("--export-syslog-tls-skip-verify", is_flag=True,
                 help="Do not verify the collector's certificate: loopback only unless "
                      "--export-syslog-allow-insecure."),
    click.option("--export-syslog-allow-insecure", is_flag=True,
                 help="Allow tcp:// (plaintext) or an unverified TLS collector that is "
                      "not on loopback. Events then travel readable by anyone on the path."),
    click.option("--export-syslog-queue-size", default=65536, show_default=True, type=int,
                 help="Events queued for the collector; overflow is dropped and counted."),
    # OpenTelemetry logs over OTLP/HTTPS
    click.option("--export-otlp-endpoint", default="", metavar="https://HOST:PORT[/PATH]",
                 help="Send every event as an OpenTelemetry log record (OTLP/HTTP "
                      "protobuf) to this endpoint; no path means /v1/logs."),
    click.option("--export-otlp-ca-file", default="", metavar="PATH",
                 help="CA certificates (PEM) the collector's certificate must chain to. "
                      "Default: the system's."),
    click.option("--export-otlp-cert-file", default="", metavar="PATH",
                 help="Client certificate (PEM) for mutual TLS."),
    click.option("--export-otlp-key-file", default="", metavar="PATH",
                 help="Private key (PEM) of --export-otlp-cert-file."),
    click.option("--export-otlp-header", multiple=True, metavar="NAME=VALUE",
                 help="HTTP header on every export request (repeatable), e.g. an "
                      "authorization token."),
    click.option("--export-otlp-compression", default="gzip", show_default=True,
                 type=click.Choice(["none", "gzip", "deflate"])),
    click.option("--export-otlp-tls-skip-verify", is_flag=True,
                 help="Do not verify the collector's certificate: loopback only unless "
                      "--export-otlp-allow-insecure."),
    click.option("--export-otlp-allow-insecure", is_flag=True,
                 help="Allow http:// (plaintext) or an unverified TLS collector that is "
                      "not on loopback."),
    click.option("--export-otlp-queue-size", default=65536, show_default=True, type=int,
                 help="Events queued for the collector; overflow is dropped and counted."),
]


def export_options(f: F) -> F:
    """Decorate a click command with every option above."""
    for option in reversed(OPTIONS):
        f = option(f)
    return f


@dataclass(frozen=True)
class ExportOptions:
    redaction_filters: str = ""
    syslog: Any = None          # vigil.export.syslog.SyslogConfig
    syslog_queue: int = 65536
    otlp: Any = None            # vigil.export.otlp.OtlpConfig
    otlp_queue: int = 65536


def _read_filters(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    return value


def _check_tls_files(prefix: str, ca: str, cert: str, key: str) -> None:
    """Load the CA, certificate and key now, so an unusable file stops start-up with its
    flag's name instead of failing every connection later."""
    import ssl

    from vigil.export.syslog import tls_client_context
    try:
        tls_client_context(ca, cert, key)
    except (OSError, ssl.SSLError) as err:
        files = ", ".join(f"--{prefix}-{n}-file {v}" for n, v in
                          (("ca", ca), ("cert", cert), ("key", key)) if v)
        raise ValueError(f"{files}: cannot be used: "
                         f"{getattr(err, 'strerror', None) or err}") from err


def export_config(opts: Mapping[str, Any]) -> ExportOptions:
    """The parsed options -> config; ValueError (-> click.BadParameter) when invalid."""
    from vigil.export.remote import check_target, parse_target
    from vigil.events.redact import parse_filters
    filters = _read_filters(str(opts["redaction_filters"]))
    parse_filters(filters)  # refuse a bad filter now, with its position and field
    syslog = otlp = None
    for flag in ("export_syslog_queue_size", "export_otlp_queue_size"):
        if int(opts[flag]) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive")
    if opts["export_syslog_address"]:
        from vigil.export.syslog import FACILITIES, SyslogConfig
        target = parse_target(str(opts["export_syslog_address"]),
                              flag="--export-syslog-address",
                              schemes={"tls": 6514, "tcp": 514})
        check_target(target, flag="--export-syslog-address",
                     skip_verify=bool(opts["export_syslog_tls_skip_verify"]),
                     allow_insecure=bool(opts["export_syslog_allow_insecure"]),
                     insecure_flag="--export-syslog-allow-insecure")
        facility = str(opts["export_syslog_facility"]).lower()
        if facility not in FACILITIES:
            raise ValueError(f"--export-syslog-facility: {facility!r} is not one of "
                             f"{', '.join(FACILITIES)}")
        if bool(opts["export_syslog_cert_file"]) != bool(opts["export_syslog_key_file"]):
            raise ValueError("--export-syslog-cert-file and --export-syslog-key-file go "
                             "together")
        _check_tls_files("export-syslog", str(opts["export_syslog_ca_file"]),
                         str(opts["export_syslog_cert_file"]),
                         str(opts["export_syslog_key_file"]))
        syslog = SyslogConfig(target=target, ca_file=str(opts["export_syslog_ca_file"]),
                              cert_file=str(opts["export_syslog_cert_file"]),
                              key_file=str(opts["export_syslog_key_file"]),
                              server_name=str(opts["export_syslog_server_name"]),
                              skip_verify=bool(opts["export_syslog_tls_skip_verify"]),
                              facility=FACILITIES[facility])
    if opts["export_otlp_endpoint"]:
        from vigil.export.otlp import OtlpConfig, logs_endpoint
        url = logs_endpoint(str(opts["export_otlp_endpoint"]))
        target = parse_target(url, flag="--export-otlp-endpoint",
                              schemes={"https": 443, "http": 80})
        check_target(target, flag="--export-otlp-endpoint",
                     skip_verify=bool(opts["export_otlp_tls_skip_verify"]),
                     allow_insecure=bool(opts["export_otlp_allow_insecure"]),
                     insecure_flag="--export-otlp-allow-insecure")
        if bool(opts["export_otlp_cert_file"]) != bool(opts["export_otlp_key_file"]):
            raise ValueError("--export-otlp-cert-file and --export-otlp-key-file go together")
        _check_tls_files("export-otlp", str(opts["export_otlp_ca_file"]),
                         str(opts["export_otlp_cert_file"]), str(opts["export_otlp_key_file"]))
        headers = []
        for h in opts["export_otlp_header"]:
            name, sep, value = str(h).partition("=")
            if not sep or not name.strip():
                raise ValueError(f"--export-otlp-header: {h!r} is not NAME=VALUE")
            headers.append((name.strip(), value.strip()))
        otlp = OtlpConfig(endpoint=url, target=target,
                          ca_file=str(opts["export_otlp_ca_file"]),
                          cert_file=str(opts["export_otlp_cert_file"]),
                          key_file=str(opts["export_otlp_key_file"]),
                          skip_verify=bool(opts["export_otlp_tls_skip_verify"]),
                          headers=tuple(headers),
                          compression=str(opts["export_otlp_compression"]))
    return ExportOptions(redaction_filters=filters, syslog=syslog,
                         syslog_queue=int(opts["export_syslog_queue_size"]),
                         otlp=otlp, otlp_queue=int(opts["export_otlp_queue_size"]))
