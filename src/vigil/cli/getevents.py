"""``vigil getevents``: stream events from the agent (GetEvents), or read an export file.

Mirrors ``tetra getevents``: the filter flags become one allow-list ``Filter``
(``-e/--event-types``, ``--process``, ``--pod``, ``-n/--namespace``, ``--host``,
``--policy-names``, ...), ``-f``/``-F`` become INCLUDE/EXCLUDE field filters, and
``-o json|compact`` prints Tetragon's JSON lines or tetra's compact lines. With
``--file`` the same filters are applied locally to the file's events.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click
import orjson

from vigil.cli.client import Client, ClientOptions, client_options


def _emit(event: dict[str, Any], output: str, color: bool, timestamps: bool) -> None:
    if output == "json":
        sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
        return
    from vigil.events.compact import render
    line = render(event, color=color, timestamps=timestamps)
    if line:
        sys.stdout.write(line + "\n")


def _split(values: Iterable[str]) -> list[str]:
    """Repeatable, comma-separated flag values (tetra's string slices)."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _filters(opts: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(allow filter spec, field filter specs) from the flags."""
    from vigil.server.filters import FilterError, cli_filter
    try:
        allow = cli_filter(
            event_types=_split(opts["event_types"]), binaries=_split(opts["process"]),
            namespaces=_split(opts["namespace"]), pods=_split(opts["pod"]),
            policy_names=_split(opts["policy_names"]), pids=[int(p) for p in opts["pid"]],
            namespace_regex=_split(opts["namespace_regex"]),
            containers=_split(opts["containers"]), host=opts["host"],
            cel_expressions=list(opts["cel_expression"]))
    except FilterError as err:
        raise click.BadParameter(str(err)) from None
    fields = []
    if opts["include_fields"]:
        fields.append({"fields": _split(opts["include_fields"]), "action": "INCLUDE"})
    if opts["exclude_fields"]:
        fields.append({"fields": _split(opts["exclude_fields"]), "action": "EXCLUDE"})
    return allow, fields


def _from_file(path: str, follow: bool, allow: dict[str, Any] | None,
               fields: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    from vigil.export import reader
    from vigil.server.filters import EventFilter, FieldFilters, FilterError
    try:
        flt, trim = EventFilter([allow] if allow else []), FieldFilters(fields)
    except FilterError as err:
        raise click.BadParameter(str(err)) from None
    if path == "-":
        events: Iterable[dict[str, Any]] = (
            e for line in sys.stdin.buffer if line.strip()
            if isinstance(e := orjson.loads(line), dict))
    else:
        events = reader.follow(path) if follow else reader.read(path)
    for ev in events:
        if flt.matches(ev):
            yield trim.apply(ev)


def _from_agent(client_opts: ClientOptions, allow: dict[str, Any] | None,
                fields: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    import grpc

    from vigil.api.tetragon import events_pb2
    from vigil.server.convert import field_filter, filter_from_dict, response_to_dict
    req = events_pb2.GetEventsRequest(
        allow_list=[filter_from_dict(allow)] if allow else [],
        field_filters=[field_filter(f["fields"], include=f["action"] == "INCLUDE")
                       for f in fields])
    client = Client(client_opts)
    stream = client.stub.GetEvents(req)
    try:
        for resp in stream:
            yield response_to_dict(resp)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.CANCELLED:
            raise click.ClickException(client.explain(err, "GetEvents")) from None
    finally:
        stream.cancel()
        client.close()


@click.command("getevents")
@click.option("--file", "path", default="", metavar="PATH",
              help="Read events from an export file (JSON lines, .gz too; '-' for stdin) "
                   "instead of the agent.")
@click.option("--follow/--no-follow", default=False,
              help="With --file: keep reading as the file grows (and across rotation).")
@click.option("-o", "--output", type=click.Choice(["json", "compact"]), default="json",
              show_default=True)
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True)
@click.option("--timestamps", is_flag=True, help="Prefix compact lines with the event time.")
@click.option("-e", "--event-types", multiple=True, metavar="TYPES",
              help="Only these event types (PROCESS_EXEC,PROCESS_EXIT,PROCESS_KPROBE,...).")
@click.option("--process", multiple=True, metavar="REGEX",
              help="Only processes whose binary matches (RE2-style regex).")
@click.option("--pod", multiple=True, metavar="REGEX", help="Only pods whose name matches.")
@click.option("-n", "--namespace", multiple=True, metavar="NS",
              help="Only these Kubernetes namespaces.")
@click.option("--host", is_flag=True, help="Only host (non-pod) processes.")
@click.option("--policy-names", multiple=True, metavar="NAMES",
              help="Only events from these tracing policies.")
@click.option("--namespace-regex", multiple=True, metavar="REGEX",
              help="Only namespaces matching.")
@click.option("--containers", multiple=True, metavar="REGEX", hidden=True,
              help="Only containers whose name matches.")
@click.option("--pid", multiple=True, type=int, metavar="PID", help="Only these pids.")
@click.option("--cel-expression", multiple=True, metavar="EXPR",
              help="Only events for which this CEL expression is true (repeatable: any "
                   "of them); variables are the event keys, e.g. "
                   "'process_exec.process.binary.endsWith(\"/curl\")'.")
@click.option("-f", "--include-fields", multiple=True, metavar="FIELDS",
              help="Only these fields (e.g. process.binary,process.pid).")
@click.option("-F", "--exclude-fields", multiple=True, metavar="FIELDS",
              help="Drop these fields (e.g. parent).")
@click.option("--max-events", default=0, metavar="N", help="Stop after N events.")
@client_options
def getevents(path: str, follow: bool, output: str, color: str, timestamps: bool,
              max_events: int, client: ClientOptions, **opts: Any) -> None:
    """Print events from the agent (or --file), as JSON or in tetra's compact form."""
    use_color = color == "always" or (color == "auto" and sys.stdout.isatty())
    allow, fields = _filters(opts)
    events = (_from_file(path, follow, allow, fields) if path
              else _from_agent(client, allow, fields))
    n = 0
    try:
        for ev in events:
            _emit(ev, output, use_color, timestamps)
            if follow or not path:
                sys.stdout.flush()
            n += 1
            if max_events and n >= max_events:
                break
    except FileNotFoundError as err:
        raise click.ClickException(f"{path}: no such file") from err
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
