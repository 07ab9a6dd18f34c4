from __future__ import annotations

import click

from vigil import __version__
from vigil.cli.client import Client, ClientOptions, client_options


@click.command("version")
@click.option("-s", "--server", is_flag=True, help="Also ask the agent for its version.")
@client_options
def version(server: bool, client: ClientOptions) -> None:
    """Print Vigil's version (and the agent's, with --server)."""
    if not server:
        click.echo(__version__)
        return
    from vigil.api.tetragon import sensors_pb2
    with Client(client) as c:
        resp = c.call("GetVersion", sensors_pb2.GetVersionRequest())
    click.echo(f"CLI version: {__version__}")
    click.echo(f"Server version: {resp.version}")
