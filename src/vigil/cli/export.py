"""``vigil export``: tamper evidence of export files (``keygen``, ``verify``).

Pure Python (no ctypes, no root): verification runs wherever the original key is kept.
"""

from __future__ import annotations

import os
import re
import sys

import click

# a rotated backup's name: <stem>-<UTC timestamp><ext>[.gz]
_BACKUP = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}(\.[^.]*)?(\.gz)?\Z")


@click.group("export")
def export() -> None:
    """Tamper-evident export files: make a key, verify files against it."""


@export.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
def keygen(key_file: str) -> None:
    """Write a new random integrity key (epoch 0, mode 0600) to KEY_FILE.

    Keep a copy off the host: the agent evolves the key in its file as it writes, and
    only the original verifies every file.
    """
    from vigil.export.integrity import write_key_file
    try:
        write_key_file(key_file, 0, os.urandom(32), exclusive=True)
    except FileExistsError:
        raise click.ClickException(f"{key_file} exists; not overwriting a key") from None
    except OSError as err:
        raise click.ClickException(f"{key_file}: {err.strerror}") from None
    click.echo(f"integrity key written to {key_file} (0600); copy it off the host for "
               "`vigil export verify`")


@export.command("verify")
@click.option("--key-file", required=True, metavar="KEY",
              help="The original integrity key (as made by `vigil export keygen`).")
@click.option("--allow-unsealed", is_flag=True,
              help="Accept a newest file without a seal (the agent is still writing it).")
@click.option("--allow-pruned", is_flag=True,
              help="Accept that the chain starts in a file no longer present "
                   "(backups pruned by --export-file-max-backups).")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
def verify(key_file: str, allow_unsealed: bool, allow_pruned: bool, quiet: bool,
           paths: tuple[str, ...]) -> None:
    """Check export files against their chain files; exit 0 when intact, 1 otherwise.

    A PATH that is the export file (``--export-filename``) brings its rotated backups
    (``.gz`` too), oldest first; several PATHs are checked in the order given. Each
    problem names the first altered, removed, inserted or reordered line (file:line),
    a truncated file, or a missing or out-of-order rotated file.
    """
    from vigil.export.integrity import IntegrityError, Verifier, export_set, read_key_file
    try:
        epoch, key = read_key_file(key_file)
    except IntegrityError as err:
        raise click.ClickException(str(err)) from None
    if len(paths) == 1 and not _BACKUP.search(os.path.basename(paths[0])):
        files = export_set(paths[0])  # the export file: with its backups
    else:
        files = [os.path.abspath(p) for p in paths]
    from vigil.export.integrity import verify_paths
    report = verify_paths(Verifier(key, epoch), files, allow_unsealed=allow_unsealed,
                          allow_pruned=allow_pruned)
    if not quiet:
        for r in report.files:
            if r.problems:
                click.echo(f"{r.name}: {r.lines} lines: FAILED")
            else:
                click.echo(f"{r.name}: {r.lines} lines, {'sealed' if r.sealed else 'not sealed'}"
                           ": ok")
    for prob in report.problems:
        click.echo(f"{'TAMPERED' if prob.tampered else 'CANNOT VERIFY'}: {prob}", err=True)
    if not report.ok:
        click.echo(f"verify: {len(report.problems)} problem(s) in {len(files)} file(s)",
                   err=True)
        sys.exit(1)
    lines = sum(r.lines for r in report.files)
    click.echo(f"verify: {len(files)} file(s), {lines} lines intact")
