"""Loader records (VG_MSG_LOADER) -> ``process_loader`` events, with the file's build id.

The kernel sends the path, device, inode and size of each file mapped executable; the
build id is read here from the file's ELF note (vigil.elfnote), through the mapping
process's root (``/proc/PID/root``, so a container's files are read from the container),
and only when the opened file is the inode the kernel reported. Results are cached by
(device, inode, size) in a bounded LRU: a library mapped by every process is read once.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from typing import Any

from vigil.abi import _generated as abi
from vigil.elfnote import file_build_id

_MSG = abi.VG_LOADER_MSG
_IX = abi.VG_LOADER_MSG_INDEX
_HEAD = _MSG.size - int(abi.Limits.PATH_MAX)  # the fixed part, before the path
CACHE_MAX = 4096


def kernel_dev(dev: int) -> int:
    """The kernel's s_dev (major << 20 | minor) as st_dev."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def same_file(st: os.stat_result, dev: int, ino: int, size: int) -> bool:
    """Whether the opened file is the one the kernel mapped: same device and inode; on a
    stacked filesystem (overlayfs: stat reports the overlay's device, the mapping holds
    the layer's inode) the same inode number and size."""
    if st.st_ino != ino:
        return False
    return st.st_dev == kernel_dev(dev) or st.st_size == size


class BuildIds:
    """(dev, ino, size) -> build id bytes (b"" when the file has none or cannot be read)."""

    def __init__(self, procfs: str = "/proc", size: int = CACHE_MAX) -> None:
        self.procfs = procfs
        self.size = size
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self.reads = 0
        self.unreadable = 0  # files not opened, or not the inode the kernel reported

    def get(self, pid: int, path: str, dev: int, ino: int, size: int) -> bytes:
        key = (dev, ino, size)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        found = self._read(pid, path, dev, ino, size)
        if found is None:  # not cached: another process may let us read it
            self.unreadable += 1
            return b""
        self._cache[key] = found
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return found

    def _read(self, pid: int, path: str, dev: int, ino: int, size: int) -> bytes | None:
        self.reads += 1
        for cand in (f"{self.procfs}/{pid}/root{path}", path):
            try:
                fd = os.open(cand, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                if not same_file(os.fstat(fd), dev, ino, size):
                    continue
                return file_build_id(fd) or b""
            finally:
                os.close(fd)
        return None


def parse(rec: bytes) -> dict[str, Any]:
    """The record's fields: pid, tid, hook_id, ktime, path, dev, ino, size, truncated."""
    from vigil.events.decode import DecodeError
    if len(rec) < _HEAD:
        raise DecodeError(f"loader record of {len(rec)} bytes < {_HEAD}")
    v = _MSG.unpack_from(rec.ljust(_MSG.size, b"\0"))
    n = v[_IX["path_len"]]
    if _HEAD + n > len(rec):
        raise DecodeError("loader path beyond the record")
    return {"pid": v[_IX["pid"]], "tid": v[_IX["tid"]], "hook_id": v[_IX["hook_id"]],
            "ktime": v[_IX["hdr.ktime"]],
            "path": rec[_HEAD:_HEAD + n].decode(errors="surrogateescape"),
            "dev": v[_IX["dev"]], "ino": v[_IX["ino"]], "size": v[_IX["size"]],
            "truncated": bool(v[_IX["flags"]] & int(abi.LoaderFlag.TRUNC))}


def body(proc: dict[str, Any], parent: dict[str, Any] | None, path: str,
         build_id: bytes) -> dict[str, Any]:
    """ProcessLoader in field order: process, path, buildid (bytes: base64), parent."""
    out: dict[str, Any] = {"process": proc, "path": path}
    if build_id:
        out["buildid"] = base64.b64encode(build_id).decode()
    if parent is not None:
        out["parent"] = parent
    return out


__all__ = ["BuildIds", "body", "kernel_dev", "parse"]
