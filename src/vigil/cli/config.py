"""The agent's configuration files, with Tetragon's sources and precedence.

Lowest to highest (a later source overrides an earlier one, key by key):

1. drop-in directories ``/usr/lib/vigil/vigil.conf.d/``, ``/usr/local/lib/vigil/vigil.conf.d/``
2. ``vigil.yaml`` in the current directory, then ``/etc/vigil/vigil.yaml``
3. the drop-in directory ``/etc/vigil/vigil.conf.d/``
4. the directory given by ``--config-dir`` (e.g. a mounted Kubernetes ConfigMap)
5. environment variables ``VIGIL_AGENT_<KEY>`` (key upper-cased, ``-`` -> ``_``)
6. command-line flags

A drop-in directory holds one file per option: the file name is the option's key (the
flag without ``--``: ``export-filename``), the content its value (surrounding whitespace
trimmed). Hidden entries and directories are skipped, which is what a ConfigMap mount
needs (``..data`` and its timestamped directory). ``vigil.yaml`` maps the same keys to
values. An empty value clears a key set by a lower source (back to the default). A key
that is not an option of ``vigil agent``, or a value the option refuses, is an error
naming the file.

Sources 1-4 become click's ``default_map``, so click itself puts environment variables
and flags above them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

SYSTEM_DROP_INS = ("/usr/lib/vigil/vigil.conf.d", "/usr/local/lib/vigil/vigil.conf.d")
YAML_FILES = ("vigil.yaml", "/etc/vigil/vigil.yaml")  # the first one relative to the cwd
ETC_DROP_IN = "/etc/vigil/vigil.conf.d"
CONFIG_DIR_KEY = "config-dir"
ENV_PREFIX = "VIGIL_AGENT_"


class ConfigFileError(click.UsageError):
    """A configuration file names an unknown option or holds a value it refuses."""


@dataclass
class Loaded:
    """The merged file configuration: option key -> (value, file it came from)."""

    values: dict[str, tuple[Any, str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # every file read, in order

    def set(self, key: str, value: Any, source: str) -> None:
        if value is None or value == "":
            self.values.pop(key, None)  # an empty value clears what a lower source set
        else:
            self.values[key] = (value, source)


def option_keys(cmd: click.Command) -> dict[str, click.Option]:
    """Option key (long flag without ``--``) -> the click option."""
    keys: dict[str, click.Option] = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for opt in p.opts:
                if opt.startswith("--"):
                    keys[opt[2:]] = p
    return keys


def read_drop_in(directory: str | Path, into: Loaded) -> None:
    d = Path(directory)
    if not d.is_dir():
        return
    for entry in sorted(d.iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        try:
            value = entry.read_text().strip()
        except OSError as err:
            raise ConfigFileError(f"{entry}: cannot read: {err.strerror}") from err
        into.files.append(str(entry))
        into.set(entry.name, value, str(entry))


def read_yaml(path: str | Path, into: Loaded) -> None:
    p = Path(path)
    if not p.is_file():
        return
    import yaml
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigFileError(f"{p}: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{p}: expected a mapping of option keys to values")
    where = str(p.absolute())
    into.files.append(where)
    for key, value in data.items():
        into.set(str(key), value, where)


def load(config_dir: str | None, *, system_drop_ins: Sequence[str] = SYSTEM_DROP_INS,
         yaml_files: Sequence[str] = YAML_FILES, etc_drop_in: str = ETC_DROP_IN) -> Loaded:
    """Read every source up to ``--config-dir`` (lowest first). ``config_dir`` None: the
    one the files themselves name (key ``config-dir``), if any."""
    out = Loaded()
    for d in system_drop_ins:
        read_drop_in(d, out)
    for f in yaml_files:
        read_yaml(f, out)
    read_drop_in(etc_drop_in, out)
    if config_dir is None and CONFIG_DIR_KEY in out.values:
        config_dir = str(out.values[CONFIG_DIR_KEY][0])
    if config_dir:
        if not Path(config_dir).is_dir():
            raise ConfigFileError(f"--config-dir {config_dir}: not a directory")
        read_drop_in(config_dir, out)
    return out


def _value(opt: click.Option, key: str, value: Any, source: str) -> Any:
    """The value in the form click's default_map wants, checked by the option's type."""
    if opt.multiple:
        items = value if isinstance(value, list) else \
            [v for v in str(value).splitlines() if v.strip()]
        values = [str(v) for v in items]
    else:
        if isinstance(value, bool):
            value = "true" if value else "false"
        values = [str(value)]
    for v in values:
        try:
            opt.type.convert(v, opt, None)
        except click.BadParameter as err:
            raise ConfigFileError(f"{source}: {key}: {err.message}") from err
    return values if opt.multiple else values[0]


def default_map(cmd: click.Command, loaded: Loaded) -> dict[str, Any]:
    """``loaded`` as click's default_map for ``cmd`` (ConfigFileError on unknown keys)."""
    keys = option_keys(cmd)
    out: dict[str, Any] = {}
    for key, (value, source) in loaded.values.items():
        opt = keys.get(key)
        if opt is None or opt.name is None:
            raise ConfigFileError(f"{source}: unknown option {key!r} (not a flag of "
                                  f"'vigil {cmd.name}')")
        if opt.secondary_opts and f"--{key}" in opt.secondary_opts:
            raise ConfigFileError(f"{source}: {key}: write '{opt.opts[0][2:]}: false'")
        out[opt.name] = _value(opt, key, value, source)
    return out


def config_dir_from(args: Iterable[str]) -> str | None:
    """``--config-dir`` from the command line, else from the environment, else None."""
    args = list(args)
    for i, a in enumerate(args):
        if a == "--":
            break
        if a == f"--{CONFIG_DIR_KEY}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{CONFIG_DIR_KEY}="):
            return a.split("=", 1)[1]
    env = os.environ.get(ENV_PREFIX + CONFIG_DIR_KEY.upper().replace("-", "_"))
    return env if env is not None else None


class ConfiguredCommand(click.Command):
    """A click command whose defaults come from the configuration files above."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        if not any(a in ("-h", "--help") for a in args):
            loaded = load(config_dir_from(args))
            extra["default_map"] = {**(extra.get("default_map") or {}),
                                    **default_map(self, loaded)}
            self.config_files = loaded.files
        return super().make_context(info_name, args, parent, **extra)

    config_files: list[str] = []


__all__ = ["ConfigFileError", "ConfiguredCommand", "Loaded", "default_map", "load",
           "option_keys", "read_drop_in", "read_yaml"]
