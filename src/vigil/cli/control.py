"""``vigil info``, ``loglevel``, ``debug dump processcache``, ``sensors list`` and
``eventlog get|set``: the agent's run-time controls over the API, as tetra's commands of
the same names (GetInfo, GetDebug/SetDebug, ListSensors, EventLogService)."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from vigil.cli.client import Client, ClientOptions, client_options

_LEVELS = ["panic", "fatal", "error", "warn", "info", "debug", "trace"]  # LogLevel order
_output = click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                       show_default=True)


def _json(msg: Any) -> None:
    from google.protobuf import json_format
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    sys.stdout.buffer.write(orjson.dumps(d, option=orjson.OPT_INDENT_2) + b"\n")


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


@click.command("info")
@_output
@client_options
def info(output: str, client: ClientOptions) -> None:
    """Print the agent's version, feature probes, configuration and build."""
    from google.protobuf import wrappers_pb2

    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("GetInfo", sensors_pb2.GetInfoRequest())
    if output == "json":
        _json(resp)
        return
    click.echo(f"name: {resp.name}\nversion: {resp.version}")
    b = resp.build
    click.echo(f"build: {b.go_version}" + (f" commit {b.commit}" if b.commit else ""))
    click.echo("probes:")
    for p in resp.probes:
        click.echo(f"  {p.Name}: {str(p.Enabled.value).lower()}")
    click.echo("conf:")
    for cv in resp.conf:
        val = wrappers_pb2.StringValue()
        text = val.value if cv.value.Unpack(val) else cv.value.type_url
        click.echo(f"  {cv.key}: {text}")


@click.group("loglevel")
def loglevel() -> None:
    """Get or set the log level of the agent's loggers at run time."""


@loglevel.command("get")
@client_options
def loglevel_get(client: ClientOptions) -> None:
    """Print the agent's current log level."""
    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("GetDebug", sensors_pb2.GetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL))
    click.echo(f"Current log level: {_LEVELS[resp.level]}")


@loglevel.command("set")
@click.argument("level", type=click.Choice(_LEVELS, case_sensitive=False))
@client_options
def loglevel_set(level: str, client: ClientOptions) -> None:
    """Set the agent's log level (lasts until it restarts)."""
    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("SetDebug", sensors_pb2.SetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL, level=_LEVELS.index(level.lower())))  # type: ignore[arg-type]  # enum number
    click.echo(f"Log level set to: {_LEVELS[resp.level]}")


@click.group("debug")
def debug() -> None:
    """Debugging dumps from the running agent."""


@debug.group("dump")
def dump() -> None:
    """Dump an internal table of the agent."""


@dump.command("processcache")
@click.option("--skip-zero-refcnt", is_flag=True,
              help="Leave out entries nothing references any more (exited, kept briefly).")
@click.option("--exclude-execve-map-processes", is_flag=True, hidden=True,
              help="Accepted for tetra compatibility (Vigil keeps no separate execve map).")
@client_options
def processcache(skip_zero_refcnt: bool, exclude_execve_map_processes: bool,
                 client: ClientOptions) -> None:
    """Print the agent's process cache, one JSON object a line (capped: see stderr)."""
    from google.protobuf import json_format

    from vigil.api.tetragon import sensors_pb2
    req = sensors_pb2.GetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE,
        dump=sensors_pb2.DumpProcessCacheReqArgs(
            skip_zero_refcnt=skip_zero_refcnt,
            exclude_execve_map_processes=exclude_execve_map_processes))
    with Client(client) as c:
        resp, trailers = c.call_with_trailers("GetDebug", req)
    procs = resp.processes.processes
    for p in procs:
        d = json_format.MessageToDict(p, preserving_proto_field_name=True)
        sys.stdout.buffer.write(orjson.dumps(d) + b"\n")
    total = int(trailers.get("vigil-process-cache-total", len(procs)))
    if total > len(procs):
        click.echo(f"process cache: {len(procs)} of {total} entries shown (the agent caps "
                   f"the dump at {trailers.get('vigil-process-cache-cap', len(procs))})",
                   err=True)


@click.group("sensors")
def sensors() -> None:
    """The agent's sensors (the base sensor and each policy's hooks)."""


@sensors.command("list")
@_output
@client_options
def sensors_list(output: str, client: ClientOptions) -> None:
    """List the loaded sensors: name, enabled, collection (the policy)."""
    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("ListSensors", sensors_pb2.ListSensorsRequest())
    if output == "json":
        _json(resp)
        return
    rows = [["NAME", "ENABLED", "COLLECTION"]]
    rows += [[s.name, str(s.enabled).lower(), s.collection] for s in resp.sensors]
    _table(rows)


@click.group("eventlog")
def eventlog() -> None:
    """The export file's rotation parameters (size, interval, backups) at run time."""


@eventlog.command("get")
@_output
@client_options
def eventlog_get(output: str, client: ClientOptions) -> None:
    """Print the export file's rotation parameters."""
    from vigil.api.tetragon import eventlogservice_pb2
    with Client(client) as c:
        resp = c.call("GetEventLogParams", eventlogservice_pb2.GetEventLogParamsRequest(),
                      stub=c.eventlog)
    if output == "json":
        _json(resp)
        return
    click.echo(f"max_size: {resp.max_size} MiB\nrotation_interval: {resp.rotation_interval}"
               f"\nmax_backups: {resp.max_backups}")


@eventlog.command("set")
@click.option("--max-size", type=click.IntRange(min=1), default=None, metavar="MIB",
              help="Rotate the file when it reaches this many MiB.")
@click.option("--rotation-interval", default=None, metavar="DURATION",
              help="Also rotate after this long (Go duration: 30m, 1h; 0s: off).")
@click.option("--max-backups", type=click.IntRange(min=0), default=None, metavar="N",
              help="Rotated files to keep.")
@client_options
def eventlog_set(max_size: int | None, rotation_interval: str | None,
                 max_backups: int | None, client: ClientOptions) -> None:
    """Change the export file's rotation parameters (unset options stay as they are)."""
    from vigil.api.tetragon import eventlogservice_pb2
    if max_size is None and rotation_interval is None and max_backups is None:
        raise click.UsageError("give at least one of --max-size, --rotation-interval, "
                               "--max-backups")
    req = eventlogservice_pb2.SetEventLogParamsRequest()
    if max_size is not None:
        req.max_size = max_size
    if rotation_interval is not None:
        req.rotation_interval = rotation_interval
    if max_backups is not None:
        req.max_backups = max_backups
    with Client(client) as c:
        c.call("SetEventLogParams", req, stub=c.eventlog)
        resp = c.call("GetEventLogParams", eventlogservice_pb2.GetEventLogParamsRequest(),
                      stub=c.eventlog)
    click.echo(f"event log set: max_size {resp.max_size} MiB, rotation_interval "
               f"{resp.rotation_interval}, max_backups {resp.max_backups}")
