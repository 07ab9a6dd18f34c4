"""The GNU build id of an ELF file, read from its PT_NOTE segments. Pure, bounded.

A build id (``NT_GNU_BUILD_ID``, owner ``GNU``) is what linkers stamp into a binary to
name its exact build; ``process_loader`` events and ``binaryDigests: ["build-id:HEX"]``
use it. Only the ELF header, the program headers and the note segments are read, each
bounded, through ``read_at(offset, size) -> bytes`` (a file, or a test's bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

PT_NOTE = 4
NT_GNU_BUILD_ID = 3
MAX_PHNUM = 256           # program headers looked at
MAX_NOTE_BYTES = 1 << 16  # bytes of one note segment looked at

ReadAt = Callable[[int, int], bytes]


def build_id(read_at: ReadAt) -> bytes | None:
    """The build id, or None (not ELF, no build-id note, or a malformed header)."""
    head = read_at(0, 64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or \
            head[5] not in (1, 2):
        return None
    end = "<" if head[5] == 1 else ">"
    is64 = head[4] == 2
    if is64:
        if len(head) < 64:
            return None
        phoff = struct.unpack_from(end + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        ph_fmt, min_ent = end + "IIQQQQQQ", 56
    else:
        phoff = struct.unpack_from(end + "I", head, 28)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
        ph_fmt, min_ent = end + "IIIIIIII", 32
    if phentsize < min_ent or phnum == 0:
        return None
    phnum = min(phnum, MAX_PHNUM)
    table = read_at(phoff, phentsize * phnum)
    for i in range(len(table) // phentsize):
        f = struct.unpack_from(ph_fmt, table, i * phentsize)
        p_type = f[0]
        off, filesz = (f[2], f[5]) if is64 else (f[1], f[4])
        if p_type != PT_NOTE:
            continue
        found = _in_notes(read_at(off, min(filesz, MAX_NOTE_BYTES)), end)
        if found is not None:
            return found
    return None


def _in_notes(data: bytes, end: str) -> bytes | None:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(end + "III", data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if pos > len(data):
            return None
        if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and desc:
            return desc
    return None


def file_build_id(fd: int) -> bytes | None:
    """The build id of the open file ``fd`` (read with pread: the offset is untouched)."""
    import os
    try:
        return build_id(lambda off, size: os.pread(fd, size, off))
    except (OSError, struct.error):
        return None


__all__ = ["build_id", "file_build_id"]
