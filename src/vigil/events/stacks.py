"""Stack traces of policy events -> Tetragon ``StackTraceEntry`` dicts.

A record carries return addresses (``kernelStackTrace`` / ``userStackTrace``); they are
symbolized here, as Tetragon renders them:

- kernel: ``address`` (the return address), ``offset`` (from the symbol's start),
  ``symbol``, and ``module`` for addresses in a module. The stack's first frames in BPF
  code (the hook's own program and its trampoline) are left out: the trace starts at
  the traced function, as a kprobe's does. Symbols come from
  /proc/kallsyms, read once and kept (text symbols only, a sorted array: bounded by the
  kernel's symbol count). Without addresses in kallsyms (kptr_restrict, not root) the
  entries carry the address alone.
- user: ``address`` (the offset in the mapped file), ``offset`` (from the symbol's
  start), ``symbol`` and ``module`` (the file's path), from the thread's
  /proc/PID/maps at the time the event is built and the file's ELF symbol tables
  (.symtab, else .dynsym). ELF tables are cached per (path, inode, mtime), at most
  ``ELF_CACHE`` files. An address outside the process's file mappings (user stacks are
  unwound by frame pointers: code built without them leaves junk past the first frame;
  or the process exited) is left out, as Tetragon leaves out what it cannot symbolize.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from array import array
from collections import OrderedDict
from typing import Any

log = logging.getLogger("vigil.events.stacks")

ELF_CACHE = 64          # ELF symbol tables kept (LRU)
ELF_MAX_SYMBOLS = 1 << 20  # symbols read from one file at most


class _Table:
    """Sorted (start address, name, module) of one symbol source."""

    __slots__ = ("addrs", "names", "sizes", "mods", "bias")

    def __init__(self, rows: list[tuple[int, int, str, str]], bias: int = 0) -> None:
        self.bias = bias  # ELF: vaddr - file offset of the executable segment
        rows.sort()
        self.addrs = array("Q", (r[0] for r in rows))
        self.sizes = array("Q", (r[1] for r in rows))
        self.names = [r[2] for r in rows]
        self.mods = [r[3] for r in rows]

    def find(self, addr: int) -> tuple[str, int, str] | None:
        """(symbol, offset, module) of the symbol containing ``addr``."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        size = self.sizes[i]
        off = addr - self.addrs[i]
        if size and off >= size:
            return None
        return self.names[i], off, self.mods[i]


class Symbolizer:
    def __init__(self, kallsyms: str = "/proc/kallsyms", proc: str = "/proc") -> None:
        self._kallsyms_path = kallsyms
        self._proc = proc
        self._kernel: _Table | None = None
        self._elf: OrderedDict[tuple[str, int, int], _Table] = OrderedDict()
        self._lock = threading.Lock()

    # ---- kernel --------------------------------------------------------------------------

    def _kernel_table(self) -> _Table:
        if self._kernel is None:
            rows: list[tuple[int, int, str, str]] = []
            try:
                with open(self._kallsyms_path) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) < 3 or parts[1] not in "tTwW":
                            continue
                        addr = int(parts[0], 16)
                        if addr == 0:
                            continue  # addresses hidden (kptr_restrict)
                        mod = parts[3].strip("[]") if len(parts) > 3 else ""
                        rows.append((addr, 0, parts[2], mod))
            except OSError as err:
                log.warning("kernel stack traces unsymbolized: %s", err)
            self._kernel = _Table(rows)
        return self._kernel

    def kernel(self, addrs: list[int]) -> list[dict[str, Any]]:
        with self._lock:
            table = self._kernel_table()
        out: list[dict[str, Any]] = []
        for a in addrs:
            if not a:
                continue
            e: dict[str, Any] = {"address": str(a)}
            hit = table.find(a)
            if hit is not None and hit[2] == "bpf" and not out:
                continue  # the hook's own program and trampoline: not the traced call
            if hit is not None:
                name, off, mod = hit
                if off:
                    e["offset"] = str(off)
                e["symbol"] = name
                if mod:
                    e["module"] = mod
            out.append(e)
        return out

    # ---- user ----------------------------------------------------------------------------

    def _maps(self, pid: int) -> list[tuple[int, int, int, str]]:
        """(start, end, file offset, path) of the process's file-backed mappings."""
        out = []
        try:
            with open(f"{self._proc}/{pid}/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 6 or not parts[5].startswith("/"):
                        continue
                    lo, hi = parts[0].split("-")
                    out.append((int(lo, 16), int(hi, 16), int(parts[2], 16),
                                parts[5].rstrip("\n")))
        except (OSError, ValueError):
            pass
        return out

    def _elf_table(self, path: str, pid: int) -> _Table | None:
        # the file as the process sees it (its mount namespace)
        real = f"{self._proc}/{pid}/root{path}"
        try:
            st = os.stat(real)
        except OSError:
            return None
        key = (path, st.st_ino, st.st_mtime_ns)
        with self._lock:
            t = self._elf.get(key)
            if t is not None:
                self._elf.move_to_end(key)
                return t
        t = _read_elf(real)
        with self._lock:
            self._elf[key] = t
            while len(self._elf) > ELF_CACHE:
                self._elf.popitem(last=False)
        return t

    def user(self, pid: int, addrs: list[int]) -> list[dict[str, Any]]:
        maps = self._maps(pid) if any(addrs) else []
        starts = [m[0] for m in maps]
        out = []
        for a in addrs:
            if not a:
                continue
            i = bisect.bisect_right(starts, a) - 1
            if i < 0 or a >= maps[i][1]:
                continue  # not in a mapped file (an unwinding artefact, or it exited)
            lo, _hi, foff, path = maps[i]
            file_off = a - lo + foff
            e: dict[str, Any] = {"address": str(file_off)}
            table = self._elf_table(path, pid)
            hit = table.find(_vaddr(table, file_off)) if table is not None else None
            if hit is not None:
                name, off, _ = hit
                if off:
                    e["offset"] = str(off)
                e["symbol"] = name
            e["module"] = path
            out.append(e)
        return out


def _vaddr(table: _Table, file_off: int) -> int:
    """File offset -> the ELF's virtual address (through the executable segment)."""
    return file_off + table.bias


def _read_elf(path: str) -> _Table:
    """The function symbols of one ELF file (an empty table if it has none or is not ELF)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    rows: list[tuple[int, int, str, str]] = []
    bias = 0
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            # vaddr - file offset of the executable PT_LOAD segment
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 1:
                    bias = seg["p_vaddr"] - seg["p_offset"]
                    break
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if not isinstance(sec, SymbolTableSection):
                    continue
                for n, sym in enumerate(sec.iter_symbols()):
                    if n >= ELF_MAX_SYMBOLS:
                        break
                    if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                        rows.append((sym["st_value"], sym["st_size"], sym.name, ""))
                if rows:
                    break
    except (OSError, ELFError, ValueError) as err:
        log.debug("no ELF symbols from %s: %s", path, err)
    return _Table(rows, bias)


# enum hash_algo (include/uapi/linux/hash_info.h): name and digest size
_HASH_ALGOS = {0: ("md4", 16), 1: ("md5", 16), 2: ("sha1", 20), 3: ("rmd160", 20),
               4: ("sha256", 32), 5: ("sha384", 48), 6: ("sha512", 64), 7: ("sha224", 28),
               8: ("rmd128", 16), 9: ("rmd256", 32), 10: ("rmd320", 40), 11: ("wp256", 32),
               12: ("wp384", 48), 13: ("wp512", 64), 14: ("tgr128", 16), 15: ("tgr160", 20),
               16: ("tgr192", 24), 17: ("sm3", 32), 18: ("streebog256", 32),
               19: ("streebog512", 64)}


def ima_hash(raw: bytes) -> str:
    """A struct vg_ima_rec -> Tetragon's ``ima_hash``: ``ALGO:HEX`` ("" if malformed)."""
    if len(raw) < 8:
        return ""
    algo = int.from_bytes(raw[:4], "little", signed=True)
    name, size = _HASH_ALGOS.get(algo, (str(algo), len(raw) - 8))
    return f"{name}:{raw[8:8 + size].hex()}"
