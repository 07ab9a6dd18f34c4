"""src/vigil/api/tetragon is what `make proto` generates from proto/tetragon."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "src" / "vigil" / "api" / "tetragon"


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools (test extra) not installed")
def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "tetragon"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), str(out)],
                   check=True, capture_output=True)
    fresh = {p.name: p.read_text() for p in out.iterdir()}
    committed = {p.name: p.read_text() for p in API.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: {stale} differ from proto/tetragon"


def test_generated_modules_import_as_vigil_api() -> None:
    from vigil.api.tetragon import events_pb2, sensors_pb2_grpc
    assert events_pb2.DESCRIPTOR.package == "tetragon"
    assert events_pb2.DESCRIPTOR.name == "tetragon/events.proto"
    assert hasattr(sensors_pb2_grpc, "FineGuidanceSensorsStub")
