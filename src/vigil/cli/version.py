from __future__ import annotations

import click

from vigil import __version__


@click.command("version")
def version() -> None:
    """Print Vigil's version."""
    click.echo(__version__)
