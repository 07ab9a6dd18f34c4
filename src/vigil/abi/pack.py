"""Build and read ABI structs by field name, from the generated layouts. Pure Python.

``pack("vg_hook_cfg", {"hook_id": 7, "args[0].kind": 2, "sel[0].pids": [1, 2]})`` gives
the struct's bytes: unnamed fields are zero, negative numbers are stored two's
complement, arrays of scalars take a list. Unknown names raise KeyError, so a typo in
the compiler cannot silently produce a zero.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from vigil.abi._generated import LAYOUTS


@functools.cache
def _fields(struct: str) -> dict[str, tuple[int, int, int]]:
    _size, fields = LAYOUTS[struct]
    return {name: (off, size, count) for name, off, size, count in fields}


def size_of(struct: str) -> int:
    return LAYOUTS[struct][0]


def pack(struct: str, values: Mapping[str, int | Sequence[int] | bytes]) -> bytes:
    """The bytes of ``struct`` with the named fields set."""
    out = bytearray(size_of(struct))
    fields = _fields(struct)
    for name, value in values.items():
        off, size, count = fields[name]
        if isinstance(value, (bytes, bytearray)):
            if size != 1 or len(value) > count:
                raise ValueError(f"{struct}.{name}: {len(value)} bytes do not fit {count}")
            out[off:off + len(value)] = value
            continue
        items = [value] if isinstance(value, int) else list(value)
        if len(items) > count:
            raise ValueError(f"{struct}.{name}: {len(items)} values > {count}")
        mask = (1 << (8 * size)) - 1
        for i, v in enumerate(items):
            start = off + i * size
            out[start:start + size] = (int(v) & mask).to_bytes(size, "little")
    return bytes(out)


def unpack_field(struct: str, name: str, data: bytes, signed: bool = False) -> int:
    off, size, _count = _fields(struct)[name]
    return int.from_bytes(data[off:off + size], "little", signed=signed)
