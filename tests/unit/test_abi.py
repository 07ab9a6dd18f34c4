"""The generated Python view of abi.h matches the BTF of every shipped object."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.abi import _generated as gen
from vigil.abi import btf

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = sorted((ROOT / "src" / "vigil" / "bpf" / "objects").glob("*.bpf.o"))

pytestmark = pytest.mark.skipif(not OBJECTS or not shutil.which("bpftool"),
                                reason="needs built objects and bpftool (make bpf)")


def test_generated_file_is_current(tmp_path: Path) -> None:
    out = tmp_path / "gen.py"
    anchor = ROOT / "src" / "vigil" / "bpf" / "objects" / "abi_anchor.bpf.o"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_abi.py"), str(anchor), str(out)],
                   check=True)
    committed = (ROOT / "src" / "vigil" / "abi" / "_generated.py").read_text()
    assert out.read_text() == committed, "abi.h changed: run `make abi` and commit"


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda p: p.name)
def test_object_layouts_match_generated(obj: Path) -> None:
    found = btf.layouts(btf.dump(str(obj)))
    shared = set(found) & set(gen.LAYOUTS)
    for name in shared:
        size, fields = gen.LAYOUTS[name]
        assert found[name].size == size, name
        assert [(f.name, f.offset, f.size, f.count) for f in found[name].fields] == \
            [tuple(f) for f in fields], name


def test_struct_formats_cover_whole_records() -> None:
    for name, (size, _fields) in gen.LAYOUTS.items():
        assert getattr(gen, name.upper()).size == size, name


def test_process_object_uses_the_records() -> None:
    obj = ROOT / "src" / "vigil" / "bpf" / "objects" / "process.bpf.o"
    names = set(btf.layouts(btf.dump(str(obj))))
    # records built on the stack (clone, exit) only reach BTF through the anchor
    assert {"vg_exec_msg", "vg_stats", "vg_config"} <= names
