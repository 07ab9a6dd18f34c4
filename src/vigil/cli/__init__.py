"""``vigil`` command line: a click group whose subcommands are imported on use.

``vigil --help``, ``vigil getevents --file`` and ``vigil tracingpolicy check`` import
neither ctypes nor libbpf; only ``vigil agent`` and ``vigil probe`` do.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 invalid policy.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

# name -> (module, attribute, one-line help shown by `vigil --help` without importing)
_COMMANDS = {
    "agent": ("vigil.cli.agent", "agent", "Run the agent (root)."),
    "debug": ("vigil.cli.control", "debug", "Debug dumps from the agent (process cache)."),
    "eventlog": ("vigil.cli.control", "eventlog",
                 "Get or set the export file's rotation parameters."),
    "info": ("vigil.cli.control", "info", "Print the agent's version, probes and config."),
    "loglevel": ("vigil.cli.control", "loglevel", "Get or set the agent's log level."),
    "sensors": ("vigil.cli.control", "sensors", "List the agent's sensors."),
    "export": ("vigil.cli.export", "export",
               "Tamper-evident export files: keygen, verify."),
    "getevents": ("vigil.cli.getevents", "getevents",
                  "Stream events from the agent (or an export file)."),
    "probe": ("vigil.cli.probe", "probe", "Probe which BPF features this kernel allows."),
    "status": ("vigil.cli.status", "status", "Print the running agent's health."),
    "tracingpolicy": ("vigil.cli.tracingpolicy", "tracingpolicy",
                      "Add, delete, list, enable, disable the agent's tracing policies."),
    "tp": ("vigil.cli.tracingpolicy", "tracingpolicy", "Alias of tracingpolicy."),
    "version": ("vigil.cli.version", "version", "Print Vigil's version."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        cmd: click.Command = getattr(importlib.import_module(module), attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "auto_envvar_prefix": "VIGIL"})
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log verbosity (logs go to stderr).")
def cli(log_level: str) -> None:
    """Vigil: runtime security observability and enforcement for Linux (eBPF).

    Reads Tetragon TracingPolicy YAML, writes Tetragon's JSON events.
    """
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="vigil")
