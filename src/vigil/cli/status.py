"""``vigil status``: the agent's health over the API (GetHealth), as ``tetra status``."""

from __future__ import annotations

import sys

import click

from vigil.cli.client import Client, ClientOptions, client_options


@click.command("status")
@client_options
def status(client: ClientOptions) -> None:
    """Print the agent's health; exit 1 unless it is running."""
    from vigil.api.tetragon import tetragon_pb2
    with Client(client) as c:
        resp = c.call("GetHealth", tetragon_pb2.GetHealthStatusRequest(
            event_set=[tetragon_pb2.HEALTH_STATUS_TYPE_STATUS]))
    ok = True
    for h in resp.health_status:
        state = tetragon_pb2.HealthStatusResult.Name(h.status).removeprefix(
            "HEALTH_STATUS_").lower()
        running = h.status == tetragon_pb2.HEALTH_STATUS_RUNNING
        ok = ok and running
        click.echo(f"Health Status: {state}" + ("" if h.details in ("", "running")
                                                else f" ({h.details})"))
    if not resp.health_status or not ok:
        sys.exit(1)
