"""``vigil agent``: run the agent. Flag names follow Tetragon's where one exists."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from vigil.cli.config import ConfiguredCommand
from vigil.cli.export_options import export_config, export_options
from vigil.cli.observability import observability_config, observability_options
from vigil.cli.operator import operator_config, operator_options
from vigil.cli.k8s_options import k8s_config, k8s_options
from vigil.containers.options import container_options, containers_config
from vigil.errors import VigilError
from vigil.server.config import (
    DEFAULT_ADDRESS,
    DEFAULT_INFO_FILE,
    DEFAULT_PERSIST_DIR,
    ServerConfig,
)


def _size(value: str) -> int:
    """'64M', '1G', '65536' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    v = value.strip().upper().removesuffix("B").removesuffix("I")
    if v and v[-1] in units:
        return int(float(v[:-1]) * units[v[-1]])
    return int(v)


def _server_config(opts: dict[str, Any]) -> ServerConfig:
    """The --server-* / --persist-grpc-* flags."""
    from vigil.server.listen import parse_addresses, validate
    addresses = parse_addresses(str(opts["server_address"]))
    cas = tuple(c.strip() for v in opts["server_tls_client_ca_files"]
                for c in str(v).split(",") if c.strip())
    cfg = ServerConfig(
        addresses=addresses,
        socket_group=str(opts["server_socket_group"]),
        tls_cert_file=str(opts["server_tls_cert_file"]),
        tls_key_file=str(opts["server_tls_key_file"]),
        tls_client_ca_files=cas,
        allow_insecure_tcp=bool(opts["server_allow_insecure_tcp"]),
        persist_policies=bool(opts["persist_grpc_policies"]),
        persist_dir=str(opts["persist_grpc_policies_dir"]),
        info_file=str(opts["server_info_file"]),
        queue_events=int(opts["event_queue_size"]),
        explicit=_given("server_address"),
    )
    validate(cfg)  # ConfigError now, before any BPF is loaded
    return cfg


def _given(param: str) -> bool:
    """Whether a flag was set (command line or environment), not left at its default."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    return ctx.get_parameter_source(param) not in (click.core.ParameterSource.DEFAULT, None)


@click.command("agent", cls=ConfiguredCommand)
@click.option("--export-filename", default="", metavar="PATH",
              help="Write events as JSON lines to PATH (created 0600). Default: none, "
                   "events go to stdout.")
@click.option("--export-file-max-size-mb", default=10.0, show_default=True,
              help="Rotate the export file at this size.")
@click.option("--export-file-max-backups", default=5, show_default=True,
              help="Rotated files to keep (0 keeps all).")
@click.option("--export-file-compress", is_flag=True, help="gzip rotated files.")
@click.option("--export-file-perm", default="600", show_default=True,
              help="Octal mode of export files (exec and other-write bits are always cleared).")
@click.option("--export-stdout/--no-export-stdout", default=None,
              help="Also write events to stdout. Default: on when there is no export file.")
@click.option("--stdout-format", type=click.Choice(["json", "compact"]), default="json",
              show_default=True, help="Format of events on stdout.")
@click.option("--node-name", default="",
              help="node_name of events and in exec_id. Default: $HUBBLE_NODE_NAME, "
                   "$NODE_NAME, else the hostname.")
@click.option("--procfs", default="/proc", show_default=True, help="procfs to scan at start.")
@click.option("--process-cache-size", default=65536, show_default=True,
              help="Processes kept in the cache (bounded; exited ones evicted first).")
@click.option("--enable-process-cred", is_flag=True,
              help="Add cap and process_credentials to processes.")
@click.option("--process-cred-changes", type=click.Choice(["events", "follow", "off"]),
              default="events", show_default=True,
              help="Credential changes after exec (setuid, capset, ...): 'events' follows "
                   "them (later events report the current uid and credentials) and exports "
                   "each as a process_kprobe of policy process-credentials-changed; "
                   "'follow' only follows; 'off' reports the credentials of exec time, "
                   "as Tetragon.")
@click.option("--enable-process-ns", is_flag=True, help="Add namespaces to processes.")
@click.option("--enable-ancestors", default="", metavar="LIST",
              help="Comma list of event kinds with ancestors; 'base' for exec/exit.")
@click.option("--rb-size", default="0", show_default=True,
              help="BPF ring buffer size per CPU (K/M/G suffix); 0: 1M per CPU, at least "
                   "2M in all. The total is rounded up to a power of two.")
@click.option("--rb-size-total", default="0", show_default=True,
              help="BPF ring buffer size in all (K/M/G suffix; rounded up to a power of "
                   "two); overrides --rb-size.")
@click.option("--tracing-policy", multiple=True, metavar="FILE",
              help="TracingPolicy YAML to load at start (repeatable). A policy that is "
                   "invalid or cannot load here stops start-up with its diagnostics.")
@click.option("--tracing-policy-dir", default="/etc/vigil/tracing-policies.d", show_default=True,
              metavar="DIR", help="Load every policy file in DIR (and one level below) at start.")
@click.option("--enforcement-fail-closed", is_flag=True,
              help="When the fanotify decider stalls past its deadline, deny (default: allow, "
                   "counted and logged).")
@click.option("--fanotify-decision-timeout", default=0.5, show_default=True,
              help="Seconds a file/exec permission decision may take before the watchdog answers.")
@click.option("--kprobe-mode", type=click.Choice(["auto", "kprobe", "kprobe_multi", "fentry"]),
              default="auto", show_default=True,
              help="How kprobes on kernel functions attach; auto picks the best this kernel "
                   "allows (fentry, then kprobe.multi, then kprobe).")
@click.option("--exec-args-max-bytes", default=16128, show_default=True,
              help="argv bytes captured per exec (max 16128; longer argv is flagged truncArgs).")
@click.option("--server-address", default=DEFAULT_ADDRESS, show_default=True,
              metavar="ADDR[,ADDR]",
              help="gRPC API (Tetragon's FineGuidanceSensors): unix:///abs/path or "
                   "host:port, comma-separated for several; '' disables it. TCP needs TLS.")
@click.option("--server-socket-group", default="", metavar="GROUP",
              help="Group (name or gid) owning the 0660 unix socket. Default: root.")
@click.option("--server-tls-cert-file", default="", metavar="PATH",
              help="TLS certificate (PEM) for TCP addresses.")
@click.option("--server-tls-key-file", default="", metavar="PATH",
              help="TLS private key (PEM) for TCP addresses.")
@click.option("--server-tls-client-ca-files", multiple=True, metavar="PATH[,PATH]",
              help="CA certificates clients must present a certificate from (mTLS). "
                   "Repeatable or comma-separated.")
@click.option("--server-allow-insecure-tcp", is_flag=True,
              help="Allow a TCP address without TLS, on loopback only (with a warning).")
@click.option("--server-info-file", default=DEFAULT_INFO_FILE, show_default=True,
              metavar="PATH", help="Where to tell clients the server address.")
@click.option("--event-queue-size", default=32768, show_default=True,
              help="Events queued per GetEvents client before its overflow is dropped.")
@click.option("--persist-grpc-policies", is_flag=True,
              help="Keep policies added over gRPC across restarts.")
@click.option("--persist-grpc-policies-dir", default=DEFAULT_PERSIST_DIR, show_default=True,
              metavar="DIR", help="Where persisted gRPC policies are kept (0700).")
# -- integrity: tamper-evident export, signed policies (docs/security.md) --
@click.option("--export-integrity-key-file", default="", metavar="KEY",
              help="Chain every export line with a keyed hash (HMAC-SHA256) in a .chain "
                   "file next to each export file, checked by `vigil export verify`. KEY "
                   "(0600, from `vigil export keygen`) is evolved in place as files rotate.")
@click.option("--self-protection", type=click.BOOL, default=True, show_default=True,
              help="Report attempts on the agent itself: signals, ptrace, memory access "
                   "and bpf() on its objects by other processes (the built-in policy "
                   "vigil-self-protection, which can also be disabled or deleted like any "
                   "policy), and writes to its package, policy and key files (fanotify).")
@click.option("--policy-signing-key", default="", metavar="FILE",
              help="Load only policies with a valid ed25519 signature under this public "
                   "key (PEM or raw): POLICY.sig next to files, the vigil-policy-signature "
                   "header over gRPC. Others are refused.")
@observability_options
@operator_options
@export_options
@k8s_options
@container_options
def agent(**opts: Any) -> None:
    """Run the agent (root): watch every process start and exit on this host."""
    from vigil.daemon.agent import AgentConfig, ExportConfig, run

    ancestors = {a.strip() for a in str(opts["enable_ancestors"]).split(",") if a.strip()}
    try:
        obs = observability_config(opts)
        op = operator_config(opts)
        remote = export_config(opts)  # --redaction-filters, --export-syslog-*, --export-otlp-*
        cfg = AgentConfig(
            redaction_filters=remote.redaction_filters,
            remote_export=remote,
            export_filters=op.export_filters,
            health_address=op.health_address,
            health_interval=op.health_interval,
            health_explicit=op.health_explicit,
            keep_sensors_on_exit=op.keep_sensors_on_exit,
            node_name=str(opts["node_name"]),
            cgroup_rate=obs.cgroup_rate,
            tracing_policies=tuple(str(p) for p in opts["tracing_policy"]),
            tracing_policy_dir=str(opts["tracing_policy_dir"]),
            enforce=_enforce_config(opts),
            kprobe_mode=str(opts["kprobe_mode"]),
            export_rate_limit=obs.export_rate_limit,
            metrics=obs.metrics,
            procfs=str(opts["procfs"]),
            process_cache_size=int(opts["process_cache_size"]),
            enable_process_cred=bool(opts["enable_process_cred"]),
            process_cred_changes=str(opts["process_cred_changes"]),
            enable_process_ns=bool(opts["enable_process_ns"]),
            enable_ancestors="base" in ancestors,
            rb_size_total=_size(str(opts["rb_size_total"])),
            rb_size=_size(str(opts["rb_size"])),
            max_args=int(opts["exec_args_max_bytes"]),
            export=ExportConfig(
                filename=str(opts["export_filename"]),
                max_size_mb=float(opts["export_file_max_size_mb"]),
                max_backups=int(opts["export_file_max_backups"]),
                compress=bool(opts["export_file_compress"]),
                perm=int(str(opts["export_file_perm"]), 8),
                stdout=opts["export_stdout"],
                stdout_format=str(opts["stdout_format"]),
                integrity_key_file=_integrity_key(opts),
            ),
            policy_signing_key=str(opts["policy_signing_key"]),
            self_protection=bool(opts["self_protection"]),
            protected_files=_config_paths(opts),
            k8s=k8s_config(opts),
            server=_server_config(opts),
            containers=containers_config(opts),
        )
        run(cfg)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    except OSError as err:  # a policy file or export path that cannot be used
        click.echo(f"vigil agent: {err}", err=True)
        sys.exit(1)
    except VigilError as err:
        click.echo(f"vigil agent: {err}", err=True)
        for d in getattr(err, "diagnostics", ()):
            click.echo(f"  {d}", err=True)
        sys.exit(3 if getattr(err, "diagnostics", None) else 1)


def _config_paths(opts: dict[str, Any]) -> tuple[str, ...]:
    """Where this agent's options come from (files read, drop-in directories), for
    self-protection's watch of writes."""
    from vigil.cli.config import ETC_DROP_IN, SYSTEM_DROP_INS, YAML_FILES
    ctx = click.get_current_context(silent=True)
    read = getattr(ctx.command if ctx else None, "config_files", None) or ()
    paths = [str(opts.get("config_dir") or ""), *read, *SYSTEM_DROP_INS, ETC_DROP_IN,
             *(p for p in YAML_FILES if os.path.isabs(p))]
    return tuple(p for p in paths if p)


def _integrity_key(opts: dict[str, Any]) -> str:
    """--export-integrity-key-file, which needs an export file to chain."""
    key = str(opts["export_integrity_key_file"])
    if key and not opts["export_filename"]:
        raise ValueError("--export-integrity-key-file needs --export-filename (stdout is "
                         "not chained)")
    return key


def _enforce_config(opts: dict[str, Any]) -> object:
    from vigil.enforce.service import EnforceConfig
    return EnforceConfig(fail_closed=bool(opts["enforcement_fail_closed"]),
                         decision_timeout=float(opts["fanotify_decision_timeout"]))
