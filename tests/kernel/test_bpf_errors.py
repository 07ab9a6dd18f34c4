"""Clear errors from the BPF layer: a refused program, a missing libbpf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.bpf.object import BpfObject
from vigil.errors import VerifierError

ROOT = Path(__file__).resolve().parents[2]


def test_refused_program_names_itself_and_shows_the_verifier_log(tmp_path: Path) -> None:
    obj = tmp_path / "refused.bpf.o"
    subprocess.run(["clang-19", "-g", "-O2", "-target", "bpfel", f"-I{ROOT}/build",
                    f"-I{ROOT}/bpf/include", "-c", str(ROOT / "tests/progs/refused.bpf.c"),
                    "-o", str(obj)], check=True)
    with BpfObject(obj) as o, pytest.raises(VerifierError) as exc:
        o.load()
    err = exc.value
    assert err.program == "vg_refused"
    assert err.errno == 13  # EACCES: the verifier said no
    assert "invalid mem access 'map_value_or_null'" in err.log
    text = str(err)
    assert text.startswith("load program vg_refused: EACCES")
    assert "invalid mem access" in text.split("verifier log (last lines):", 1)[1]


def test_missing_libbpf_is_a_clear_error() -> None:
    code = ("from vigil.bpf import _libbpf\n"
            "try:\n    _libbpf.lib()\nexcept _libbpf.LibbpfMissing as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, VIGIL_LIBBPF="/nonexistent/libbpf.so.1"), check=True)
    assert "load libbpf.so.1 /nonexistent/libbpf.so.1" in out.stdout
    assert "apt-get install libbpf1" in out.stdout
