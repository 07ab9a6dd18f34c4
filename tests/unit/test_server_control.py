"""The control RPCs' pure pieces: Go durations, log levels, probe names, and the export
writer's run-time rotation parameters."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vigil.export.jsonl import RotatingFileWriter
from vigil.server import control


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("0s", 0.0), ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0),
    ("500ms", 0.5), ("2h0m0s", 7200.0)])
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert control.parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10", "1x", "h1", "1h 2m"])
def test_parse_go_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        control.parse_go_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (5, "5s"), (90, "1m30s"), (3600, "1h0m0s"), (5400, "1h30m0s"), (0.5, "500ms")])
def test_format_go_duration(seconds: float, text: str) -> None:
    assert control.format_go_duration(seconds) == text


def test_log_levels_round_trip() -> None:
    vigil_log = logging.getLogger(control.VIGIL_LOGGER)
    before = vigil_log.level
    try:
        for level in range(7):
            got = control.set_log_level(level)
            # PANIC and FATAL are both CRITICAL, read back as PANIC
            assert got == (0 if level == 1 else level)
            assert control.get_log_level() == got
        with pytest.raises(ValueError):
            control.set_log_level(9)
        control.set_log_level(5)
        assert logging.getLogger("vigil.server.servicer").isEnabledFor(logging.DEBUG)
    finally:
        vigil_log.setLevel(before)


def test_probe_names_are_tetragons() -> None:
    names = control.TETRAGON_PROBE_NAMES
    assert names["send_signal"] == "signal" and names["fmod_ret_security"] == "fmodret"
    assert names["fmod_ret_syscall"] == "fmodret_syscall"


def test_writer_params_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = RotatingFileWriter(tmp_path / "e.log", max_size_mb=10, max_backups=5)
    try:
        w.set_params(max_size_mb=2, max_backups=1)
        assert (w.max_bytes, w.max_backups, w.rotation_interval) == (2 << 20, 1, 0.0)
        for bad in ({"max_size_mb": 0}, {"rotation_interval": -1}, {"max_backups": -1}):
            with pytest.raises(ValueError):
                w.set_params(**bad)
        w.write_lines([b'{"a":1}'])
        w.set_params(rotation_interval=60)
        now = [1000.0]
        monkeypatch.setattr("vigil.export.jsonl.time.monotonic", lambda: now[0])
        w._opened_at = now[0]
        w.write_lines([b'{"a":2}'])  # younger than the interval: same file
        assert w.rotations == 0
        now[0] += 61
        w.write_lines([b'{"a":3}'])  # older: rotated before the write
        assert w.rotations == 1
        assert (tmp_path / "e.log").read_bytes() == b'{"a":3}\n'
    finally:
        w.close()
