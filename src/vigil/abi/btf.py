"""Read struct and enum layouts out of a BPF object's BTF (via ``bpftool -j btf dump``).

Pure Python over bpftool's JSON: used at build time by tools/gen_abi.py and by the
layout test that checks every shipped object against ``vigil.abi._generated``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

_SCALAR_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class Field:
    name: str    # dotted for nested structs; arrays of structs as "name[i].field"
    offset: int  # bytes
    size: int    # bytes of one element
    count: int   # 1, or the array length


@dataclass(frozen=True)
class Layout:
    name: str
    size: int
    fields: tuple[Field, ...]  # flattened scalars (nested structs expanded), in offset order

    def format(self) -> str:
        """A little-endian ``struct`` format covering the whole struct, pads as ``x``."""
        out, pos = ["<"], 0
        for f in self.fields:
            if f.offset > pos:
                out.append(f"{f.offset - pos}x")
            if f.count > 1:  # char arrays unpack as one bytes value, others as `count` values
                out.append(f"{f.count}s" if f.size == 1 else f"{f.count}{_SCALAR_FMT[f.size]}")
            else:
                out.append(_SCALAR_FMT[f.size])
            pos = f.offset + f.size * f.count
        if self.size > pos:
            out.append(f"{self.size - pos}x")
        return "".join(out)


def dump(obj_path: str) -> dict[int, dict[str, Any]]:
    """BTF types of an object file, by id."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    raw = subprocess.run([bpftool, "-j", "btf", "dump", "file", obj_path],
                         check=True, capture_output=True, text=True).stdout
    return {t["id"]: t for t in json.loads(raw)["types"]}


def _resolve(types: dict[int, dict[str, Any]], tid: int) -> dict[str, Any]:
    t = types[tid]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        t = types[t["type_id"]]
    return t


def _flatten(types: dict[int, dict[str, Any]], t: dict[str, Any], base: int,
             prefix: str) -> list[Field]:
    out: list[Field] = []
    for m in t["members"]:
        mt = _resolve(types, m["type_id"])
        off = base + m["bits_offset"] // 8
        name = prefix + m["name"]
        if mt["kind"] == "STRUCT":
            out += _flatten(types, mt, off, name + ".")
        elif mt["kind"] == "ARRAY":
            et = _resolve(types, mt["type_id"])
            if et["kind"] == "STRUCT":  # arrays of structs: name[i].field, ...
                for i in range(mt["nr_elems"]):
                    out += _flatten(types, et, off + i * et["size"], f"{name}[{i}].")
            else:
                out.append(Field(name, off, et["size"], mt["nr_elems"]))
        else:
            out.append(Field(name, off, mt["size"], 1))
    return out


def layouts(types: dict[int, dict[str, Any]], prefix: str = "vg_") -> dict[str, Layout]:
    """Every named struct whose name starts with ``prefix``."""
    return {
        t["name"]: Layout(t["name"], t["size"], tuple(_flatten(types, t, 0, "")))
        for t in types.values()
        if t["kind"] == "STRUCT" and t["name"].startswith(prefix)
    }


def enums(types: dict[int, dict[str, Any]], prefix: str = "vg_") -> dict[str, dict[str, int]]:
    return {
        t["name"]: {v["name"]: v["val"] for v in t["values"]}
        for t in types.values()
        if t["kind"] in ("ENUM", "ENUM64") and t["name"].startswith(prefix)
    }
