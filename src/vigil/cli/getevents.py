"""``vigil getevents``: render events from an export file (following it as it grows)."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson


def _emit(event: dict[str, Any], output: str, color: bool, timestamps: bool) -> None:
    if output == "json":
        sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
        return
    from vigil.events.compact import render
    line = render(event, color=color, timestamps=timestamps)
    if line:
        sys.stdout.write(line + "\n")


@click.command("getevents")
@click.option("--file", "path", required=True, metavar="PATH",
              help="Export file (JSON lines, .gz too) to read.")
@click.option("-o", "--output", type=click.Choice(["json", "compact"]), default="json",
              show_default=True)
@click.option("--follow/--no-follow", default=False,
              help="Keep reading as the file grows (and across rotation).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True)
@click.option("--timestamps", is_flag=True, help="Prefix compact lines with the event time.")
def getevents(path: str, output: str, follow: bool, color: str, timestamps: bool) -> None:
    """Print events from an export file, as JSON or in tetra's compact form."""
    from vigil.export import reader
    use_color = color == "always" or (color == "auto" and sys.stdout.isatty())
    events = reader.follow(path) if follow else reader.read(path)
    try:
        for ev in events:
            _emit(ev, output, use_color, timestamps)
            if follow:
                sys.stdout.flush()
    except FileNotFoundError as err:
        raise click.ClickException(f"{path}: no such file") from err
    except (BrokenPipeError, KeyboardInterrupt):
        pass
