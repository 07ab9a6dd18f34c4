"""Configuration files of ``vigil agent`` (pure logic, unprivileged): the order of the
sources, drop-in directories as a ConfigMap mounts them, value checks naming the file,
and the export filter flag forms."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from vigil.cli import config
from vigil.cli.agent import agent
from vigil.server.exportfilters import FilteredSubscriber, ExportFilterConfig, parse_field_filters, parse_filters
from vigil.server.filters import FilterError


def _dirs(tmp: Path) -> dict[str, Path]:
    names = ["usr_lib", "usr_local_lib", "etc_d", "cfg"]
    out = {n: tmp / n for n in names}
    for d in out.values():
        d.mkdir()
    return out


def _load(tmp: Path, d: dict[str, Path], config_dir: str | None) -> config.Loaded:
    return config.load(config_dir, system_drop_ins=(str(d["usr_lib"]), str(d["usr_local_lib"])),
                       yaml_files=(str(tmp / "cwd.yaml"), str(tmp / "etc.yaml")),
                       etc_drop_in=str(d["etc_d"]))


def test_sources_in_tetragons_order(tmp_path: Path) -> None:
    d = _dirs(tmp_path)
    keys = ["node-name", "procfs", "export-filename", "tracing-policy-dir", "kprobe-mode",
            "process-cache-size"]
    # source i sets keys[i:], so key i ends with the value of source i
    sources = ["usr_lib", "usr_local_lib", "cwd.yaml", "etc.yaml", "etc_d", "cfg"]
    for i, src in enumerate(sources):
        for k in keys[i:]:
            if src.endswith(".yaml"):
                with (tmp_path / src).open("a") as f:
                    f.write(f"{k}: {src}\n")
            else:
                (d[src] / k).write_text(f"{src}\n")
    loaded = _load(tmp_path, d, str(d["cfg"]))
    assert {k: v for k, (v, _src) in loaded.values.items()} == dict(zip(keys, sources))
    assert loaded.values["node-name"][1] == str(d["usr_lib"] / "node-name")


def test_config_dir_may_be_named_by_a_file_and_empty_values_clear(tmp_path: Path) -> None:
    d = _dirs(tmp_path)
    (d["etc_d"] / "config-dir").write_text(str(d["cfg"]))
    (d["etc_d"] / "node-name").write_text("x")
    (d["cfg"] / "node-name").write_text("\n")          # clears it
    (d["cfg"] / "procfs").write_text("/host/proc\n")
    (d["cfg"] / ".hidden").write_text("ignored")
    (d["cfg"] / "..2026_12_07").mkdir()
    loaded = _load(tmp_path, d, None)
    assert "node-name" not in loaded.values
    assert loaded.values["procfs"][0] == "/host/proc"


def test_default_map_checks_keys_and_values_with_the_file(tmp_path: Path) -> None:
    good = config.Loaded()
    good.set("enable-process-cred", True, "f")
    good.set("process-cache-size", 100, "f")
    good.set("tracing-policy", "/a.yaml\n/b.yaml", "f")
    good.set("export-stdout", "false", "f")
    dm = config.default_map(agent, good)
    assert dm["enable_process_cred"] == "true" and dm["process_cache_size"] == "100"
    assert dm["tracing_policy"] == ["/a.yaml", "/b.yaml"]
    bad = config.Loaded()
    bad.set("process-cache-size", "many", "/etc/vigil/vigil.conf.d/process-cache-size")
    with pytest.raises(click.UsageError, match=r"vigil.conf.d/process-cache-size: "
                                               r"process-cache-size: 'many' is not a valid"):
        config.default_map(agent, bad)
    unknown = config.Loaded()
    unknown.set("bpf-lib", "/x", "/cfg/bpf-lib")
    with pytest.raises(click.UsageError, match=r"/cfg/bpf-lib: unknown option 'bpf-lib'"):
        config.default_map(agent, unknown)


def test_config_dir_from_args_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_AGENT_CONFIG_DIR", raising=False)
    assert config.config_dir_from(["--config-dir", "/a"]) == "/a"
    assert config.config_dir_from(["--config-dir=/b"]) == "/b"
    assert config.config_dir_from(["--", "--config-dir", "/c"]) is None
    monkeypatch.setenv("VIGIL_AGENT_CONFIG_DIR", "/env")
    assert config.config_dir_from([]) == "/env"


def test_filter_flag_forms() -> None:
    specs = parse_filters("export-denylist",
                          '{"health_check":true}\n{"namespace":["","kube-system"]}')
    assert specs == [{"health_check": True}, {"namespace": ["", "kube-system"]}]
    with pytest.raises(FilterError, match=r"line 2: .*eventset"):
        parse_filters("export-allowlist", '{"pid":[1]}\n{"eventset":["PROCESS_EXEC"]}')
    with pytest.raises(FilterError, match="line 1"):
        parse_filters("export-allowlist", '{"event_set":["PROCESS_NOPE"]}')
    with pytest.raises(FilterError, match="line 1: invalid JSON"):
        parse_filters("export-allowlist", '{"pid":')
    ff = parse_field_filters('{"event_set":["PROCESS_EXEC"],'
                             '"fields":"process.exec_id,process.parent_exec_id",'
                             '"action":"EXCLUDE","invert_event_set":true}')
    assert ff == [{"event_set": ["PROCESS_EXEC"],
                   "fields": ["process.exec_id", "process.parent_exec_id"],
                   "action": "EXCLUDE", "invert_event_set": True}]


class _Sink:
    name = "sink"

    def __init__(self) -> None:
        self.got: list[dict] = []

    def offer(self, batch: list[dict]) -> int:
        self.got += batch
        return 0


def test_deny_wins_and_fields_trim() -> None:
    sink = _Sink()
    sub = FilteredSubscriber(sink, ExportFilterConfig(
        allow=tuple(parse_filters("a", '{"event_set":["PROCESS_EXEC"]}')),
        deny=tuple(parse_filters("d", '{"binary_regex":["/bad$"]}')),
        fields=tuple(parse_field_filters('{"fields":"process.binary","action":"INCLUDE"}'))))
    def ev(b: str) -> dict[str, object]:
        return {"process_exec": {"process": {"binary": b, "pid": 1}}, "time": "t"}
    sub.offer([ev("/ok"), ev("/bad"), {"process_exit": {"process": {"binary": "/ok"}}}])
    assert sink.got == [{"process_exec": {"process": {"binary": "/ok"}}, "time": "t"}]
    assert sub.filtered == 2


def test_json_log_lines_parse() -> None:
    import json
    import logging
    from vigil.cli.operator import JsonLogFormatter
    rec = logging.LogRecord("vigil.agent", logging.WARNING, __file__, 1, "a %s \"b\"", ("x",),
                            None)
    out = json.loads(JsonLogFormatter().format(rec))
    assert out["level"] == "warning" and out["logger"] == "vigil.agent"
    assert out["msg"] == 'a x "b"' and out["time"].endswith("Z")
