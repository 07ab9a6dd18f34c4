"""The running kernel's BTF, read directly (no bpftool, no libbpf): just enough for the
policy compiler to check that a kernel function exists, see its parameters, and turn a
``resolve: "a.b.c"`` field path into offsets.

One pass over ``/sys/kernel/btf/vmlinux`` indexes every type's position; names of
functions and structs go into dicts; everything else is decoded on demand.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

VMLINUX = "/sys/kernel/btf/vmlinux"

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, \
    FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(1, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


class BtfError(ValueError):
    """A name or field path that the kernel's BTF does not have."""


@dataclass(frozen=True)
class Param:
    name: str
    type_id: int


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


@dataclass(frozen=True)
class Step:
    """A resolved field path: pointer hops, then the last member."""

    offsets: tuple[int, ...]  # bytes; a pointer is followed between consecutive offsets
    last: str                 # "ptr" (pointer member), "int" (integer), "struct" (by address)
    size: int                 # bytes of the last member
    signed: bool
    type_name: str            # C spelling of the last member's type, for messages


class KernelBtf:
    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data)
        if magic != 0xEB9F:
            raise BtfError("not BTF data")
        self._d = data
        self._types = hdr_len + type_off
        self._strs = hdr_len + str_off
        self._str_end = self._strs + str_len
        # split BTF (a module's, on top of vmlinux): string offsets from _base_strs on
        # are the module's own strings, at _mod_strs in _d
        self._base_strs = str_len
        self._mod_strs = self._mod_str_end = 0
        self._pos = array("I", [0])  # type id -> offset of its record (id 0 = void)
        self.funcs: dict[str, int] = {}
        self.structs: dict[str, int] = {}
        self.tp_typedefs: dict[str, int] = {}  # btf_trace_<event> typedefs (raw tracepoints)
        self._index(self._types, self._types + type_len)

    @classmethod
    def load(cls, path: str = VMLINUX) -> KernelBtf:
        return cls(Path(path).read_bytes())

    @classmethod
    def from_file(cls, path: str) -> KernelBtf:
        """Another kernel's BTF: raw BTF (as ``/sys/kernel/btf/vmlinux`` of that kernel
        reads) or an ELF ``vmlinux`` whose ``.BTF`` section holds it."""
        data = Path(path).read_bytes()
        if data[:4] == b"\x7fELF":
            data = elf_section(data, ".BTF")
        elif data[:2] != b"\x9f\xeb":
            raise BtfError("not BTF data (neither raw BTF nor an ELF vmlinux)")
        try:
            return cls(data)
        except struct.error:
            raise BtfError("truncated BTF data") from None

    def split(self, data: bytes) -> KernelBtf:
        """A module's split BTF (``/sys/kernel/btf/<module>``) on top of this one (the
        vmlinux BTF): its type ids continue this one's, its string offsets continue this
        one's strings. The module's structs and functions shadow same-named ones."""
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data)
        if magic != 0xEB9F:
            raise BtfError("not BTF data")
        out = KernelBtf.__new__(KernelBtf)
        out._d = self._d + data
        base = len(self._d)
        out._types, out._strs, out._str_end = base + hdr_len + type_off, self._strs, self._str_end
        out._base_strs = self._base_strs
        out._mod_strs = base + hdr_len + str_off
        out._mod_str_end = out._mod_strs + str_len
        out._pos = array("I", self._pos)
        out.funcs, out.structs = {}, {}
        out.tp_typedefs = dict(self.tp_typedefs)
        out._index(out._types, out._types + type_len)
        out.funcs = {**self.funcs, **out.funcs}
        out.structs = {**self.structs, **out.structs}
        return out

    def _index(self, pos: int, end: int) -> None:
        d, pos_list = self._d, self._pos
        unpack = _TYPE.unpack_from
        sizes = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
        per_member = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
        names: list[tuple[int, int, int]] = []
        while pos < end:
            name_off, info, _ = unpack(d, pos)
            kind = (info >> 24) & 0x1F
            tid = len(pos_list)
            pos_list.append(pos)
            if kind in (FUNC, STRUCT, UNION, TYPEDEF) and name_off:
                names.append((kind, name_off, tid))
            pos += 12 + sizes.get(kind, 0) + per_member.get(kind, 0) * (info & 0xFFFF)
        for kind, name_off, tid in names:
            name = self._str(name_off)
            if kind == TYPEDEF:
                if name.startswith("btf_trace_"):
                    self.tp_typedefs.setdefault(name[10:], tid)
                continue
            (self.funcs if kind == FUNC else self.structs).setdefault(name, tid)

    def _str(self, off: int) -> str:
        if self._mod_strs and off >= self._base_strs:  # a split BTF's own strings
            start, end = self._mod_strs + off - self._base_strs, self._mod_str_end
        else:
            start, end = self._strs + off, self._str_end
        return self._d[start:self._d.index(b"\0", start, end)].decode()

    def _t(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kflag, size_or_type, name_off) of type `tid`."""
        name_off, info, st = _TYPE.unpack_from(self._d, self._pos[tid])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, st, name_off

    def strip(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        while tid:
            kind, _, _, st, _ = self._t(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = st
        return tid

    def kind(self, tid: int) -> int:
        return self._t(tid)[0] if tid else 0

    def name(self, tid: int) -> str:
        return self._str(self._t(tid)[4]) if tid else "void"

    def size(self, tid: int) -> int:
        tid = self.strip(tid)
        kind, vlen, _, st, _ = self._t(tid)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return st
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, _, n = struct.unpack_from("<III", self._d, self._pos[tid] + 12)
            return self.size(elem) * int(n)
        return 0

    def int_signed(self, tid: int) -> bool:
        tid = self.strip(tid)
        kind, _, kflag, _, _ = self._t(tid)
        if kind == INT:
            enc = struct.unpack_from("<I", self._d, self._pos[tid] + 12)[0]
            return bool((enc >> 24) & 1)
        if kind in (ENUM, ENUM64):
            return bool(kflag)
        return False

    def spell(self, tid: int) -> str:
        """A C-ish spelling: ``struct file *``, ``int``, ``kernel_cap_t``."""
        if not tid:
            return "void"
        kind, _, _, st, name_off = self._t(tid)
        if kind == PTR:
            return self.spell(st) + " *"
        if kind in (CONST, VOLATILE, RESTRICT, TYPE_TAG):
            return self.spell(st)
        word = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum ",
                FWD: "struct "}.get(kind, "")
        return word + (self._str(name_off) if name_off else "(anon)")

    def pointee(self, tid: int) -> int:
        """The type a pointer points to (stripped), 0 if `tid` is not a pointer."""
        tid = self.strip(tid)
        kind, _, _, st, _ = self._t(tid)
        return self.strip(st) if kind == PTR else 0

    def members(self, tid: int) -> list[Member]:
        tid = self.strip(tid)
        kind, vlen, kflag, _, _ = self._t(tid)
        if kind not in (STRUCT, UNION):
            return []
        out, base = [], self._pos[tid] + 12
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._d, base + 12 * i)
            bits, bsize = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            out.append(Member(self._str(name_off), mtype, bits, bsize))
        return out

    def func_params(self, name: str) -> list[Param] | None:
        """Parameters of kernel function `name`; None if BTF has no such function."""
        tid = self.funcs.get(name)
        if tid is None:
            return None
        proto = self._t(tid)[3]
        _, vlen, _, _, _ = self._t(proto)
        base = self._pos[proto] + 12
        return [Param(self._str(n), t) for n, t in
                (struct.unpack_from("<II", self._d, base + 8 * i) for i in range(vlen))]

    def raw_tp_arity(self, event: str) -> int | None:
        """Arguments of raw tracepoint `event` (its TP_PROTO, from the ``btf_trace_<event>``
        typedef: a pointer to a function taking a context and then those arguments);
        None if BTF does not describe it."""
        tid = self.tp_typedefs.get(event)
        if tid is None:
            return None
        proto = self.pointee(tid)
        if not proto or self.kind(proto) != FUNC_PROTO:
            return None
        return max(self._t(proto)[1] - 1, 0)

    def raw_tp_params(self, event: str) -> list[int] | None:
        """Type ids of raw tracepoint `event`'s arguments (after the context), from
        its ``btf_trace_<event>`` typedef; None if BTF does not describe it."""
        tid = self.tp_typedefs.get(event)
        proto = self.pointee(tid) if tid is not None else 0
        if not proto or self.kind(proto) != FUNC_PROTO:
            return None
        _, vlen, _, _, _ = self._t(proto)
        base = self._pos[proto] + 12
        return [struct.unpack_from("<II", self._d, base + 8 * i)[1] for i in range(1, vlen)]

    def tp_field_type(self, event: str, field: str) -> int | None:
        """Type id of field `field` of classic tracepoint `event`'s record, from the
        record's struct ``trace_event_raw_<event>``; None if BTF has no such struct (the
        event shares its class's struct) or the struct no such field."""
        tid = self.structs.get(f"trace_event_raw_{event}")
        found = self._find_member(tid, field) if tid is not None else None
        return found[0].type_id if found else None

    def func_return(self, name: str) -> int:
        tid = self.funcs[name]
        return self._t(self._t(tid)[3])[3]

    def struct_id(self, name: str) -> int:
        name = name.removeprefix("struct ").strip()
        if name not in self.structs:
            raise BtfError(f"no struct {name} in the kernel's BTF")
        return self.structs[name]

    def _find_member(self, tid: int, name: str) -> tuple[Member, int] | None:
        """Member `name` of struct/union `tid`, looking into anonymous members; (member,
        byte offset from `tid`)."""
        for m in self.members(tid):
            if m.name == name:
                return m, m.bit_offset // 8
            if not m.name and self.kind(self.strip(m.type_id)) in (STRUCT, UNION):
                found = self._find_member(m.type_id, name)
                if found:
                    return found[0], m.bit_offset // 8 + found[1]
        return None

    def resolve(self, start: int, path: str) -> Step:
        """Field path ``a.b[2].c`` from type `start` (a struct, or a pointer to one)."""
        tid = self.pointee(start) or self.strip(start)
        offsets: list[int] = []
        cur = 0
        last_tid = tid
        parts = [p for p in path.split(".") if p]
        if not parts:
            raise BtfError("empty resolve path")
        if parts[0].startswith("["):  # "[N]...": the N-th element the argument points at
            k = int(parts[0][1:].partition("]")[0])
            elem = tid
            cur += k * self.size(elem)
            rest = parts[0].partition("]")[2]
            parts = ([rest.lstrip(".")] if rest.lstrip(".") else []) + parts[1:]
            if not parts:
                kind = self.kind(elem)
                last = "ptr" if kind == PTR else "int" if kind in (INT, ENUM, ENUM64) \
                    else "struct"
                return Step((cur,), last, self.size(elem), self.int_signed(elem),
                            self.spell(elem))
        for i, part in enumerate(parts):
            name, _, idx = part.partition("[")
            if self.kind(tid) == PTR:  # the previous member was a pointer: follow it
                offsets.append(cur)
                cur = 0
                tid = self.pointee(tid)
            if self.kind(tid) not in (STRUCT, UNION):
                raise BtfError(f"{'.'.join(parts[:i]) or 'the argument'} is "
                               f"{self.spell(tid)}, not a struct: cannot take .{name}")
            found = self._find_member(tid, name)
            if found is None:
                raise BtfError(f"{self.spell(tid)} has no member {name}")
            m, off = found
            if m.bitfield_size:
                raise BtfError(f"{name} is a bit field")
            cur += off
            tid = self.strip(m.type_id)
            if idx:
                if self.kind(tid) != ARRAY:
                    raise BtfError(f"{name} is not an array")
                elem, _, n = struct.unpack_from("<III", self._d, self._pos[tid] + 12)
                k = int(idx.rstrip("]"))
                if not 0 <= k < n:
                    raise BtfError(f"{name}[{k}] is out of bounds (0..{n - 1})")
                cur += k * self.size(elem)
                tid = self.strip(elem)
            last_tid = m.type_id
        offsets.append(cur)
        kind = self.kind(tid)
        last = "ptr" if kind == PTR else "int" if kind in (INT, ENUM, ENUM64) else "struct"
        return Step(tuple(offsets), last, self.size(tid), self.int_signed(tid),
                    self.spell(last_tid))


MODULES = "/sys/kernel/btf"


def module_btf(base: KernelBtf, module: str, root: str = MODULES) -> KernelBtf | None:
    """``base`` (the vmlinux BTF) extended with kernel module ``module``'s BTF
    (``/sys/kernel/btf/<module>``, present while the module is loaded), cached on ``base``;
    None if the module has none here."""
    if "/" in module or module in ("", ".", "..", "vmlinux"):
        return None
    if isinstance(base, SharedKernelBtf):
        base = base.get()
    cache: dict[str, KernelBtf] = base.__dict__.setdefault("_modules", {})
    if module not in cache:
        try:
            cache[module] = base.split(Path(root, module).read_bytes())
        except OSError:
            return None
    return cache[module]


@functools.cache
def elf_section(elf: bytes, name: str) -> bytes:
    """The bytes of section ``name`` of a 64-bit little-endian ELF file."""
    if elf[4:6] != b"\x02\x01":
        raise BtfError("not a 64-bit little-endian ELF file")
    try:
        shoff, = struct.unpack_from("<Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
        headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
                   for i in range(shnum)]
        names_at = headers[shstrndx][4]
        for sh_name, _type, _flags, _addr, offset, size in headers:
            end = elf.index(b"\0", names_at + sh_name)
            if elf[names_at + sh_name:end].decode("ascii", "replace") == name:
                return elf[offset:offset + size]
    except (struct.error, IndexError, ValueError):
        raise BtfError("malformed ELF file") from None
    raise BtfError(f"the ELF file has no {name} section")


def kernel_btf() -> KernelBtf | None:
    """The running kernel's BTF, parsed once; None if the kernel exposes none."""
    try:
        return KernelBtf.load()
    except OSError:
        return None


@functools.cache
def has_kfunc(name: str, path: str = VMLINUX) -> bool:
    """Whether BPF programs may call kernel function ``name`` (a kfunc such as
    bpf_strnstr): the running kernel's BTF names it, which is how Tetragon detects kfuncs
    too. Read, not loaded: no privileges needed. Asked once per process.

    The raw BTF is scanned, not parsed: the name in its string section, then a FUNC
    record naming it in its type section. A full parse costs about 20 MB that a
    long-running agent would keep (the allocator does not give it back)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return False
    return _btf_has_func(raw, name.encode())


def _btf_has_func(raw: bytes, name: bytes) -> bool:
    """Whether the BTF blob ``raw`` has a FUNC type called ``name``."""
    if len(raw) < 24 or struct.unpack_from("<H", raw, 0)[0] != 0xEB9F:
        return False
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<5I", raw, 4)
    strings = raw[hdr_len + str_off:hdr_len + str_off + str_len]
    types = raw[hdr_len + type_off:hdr_len + type_off + type_len]
    at = strings.find(b"\0" + name + b"\0")
    if at < 0:
        return False
    # a FUNC record starts with name_off, then info = kind 12 << 24 | linkage (0..2);
    # records are 4-byte aligned, so only aligned hits count
    for linkage in range(3):
        needle = struct.pack("<II", at + 1, (12 << 24) | linkage)
        i = types.find(needle)
        while i >= 0:
            if i % 4 == 0:
                return True
            i = types.find(needle, i + 1)
    return False


class SharedKernelBtf:
    """The running kernel's BTF for a long-running agent: parsed when a policy first needs
    it, dropped again after ``idle_s`` seconds without use.

    Parsed, the vmlinux BTF takes about 20 MB of the agent's memory, and most policies
    (tracepoints, uprobes, USDT) never look at it. Attribute access is passed through to
    the parsed :class:`KernelBtf`, so the compiler uses either the same way.
    """

    def __init__(self, path: str = VMLINUX, idle_s: float = 60.0) -> None:
        self.path = path
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._btf: KernelBtf | None = None
        self._used = 0.0
        self._timer: threading.Timer | None = None

    def get(self) -> KernelBtf:
        """The parsed BTF (parsing it now if it was dropped); OSError if unreadable."""
        with self._lock:
            self._used = time.monotonic()
            if self._btf is None:
                self._btf = KernelBtf.load(self.path)
            if self._timer is None:
                self._arm(self.idle_s)
            return self._btf

    @property
    def loaded(self) -> bool:
        return self._btf is not None

    def release(self) -> None:
        """Drop the parsed BTF now (the next use parses it again)."""
        with self._lock:
            self._btf = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._expire)
        self._timer.name = "vigil-btf-release"
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            idle = time.monotonic() - self._used
            if idle >= self.idle_s:
                self._btf, self._timer = None, None
            else:
                self._arm(self.idle_s - idle)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.get(), name)


_shared: SharedKernelBtf | None = None


def shared_kernel_btf() -> SharedKernelBtf | None:
    """The agent's :class:`SharedKernelBtf` of the running kernel (one per process); None
    if the kernel exposes no BTF."""
    global _shared
    if not os.path.exists(VMLINUX):
        return None
    if _shared is None:
        _shared = SharedKernelBtf()
    return _shared
