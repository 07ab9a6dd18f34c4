"""Pythonic BPF objects over ``_libbpf``: open -> configure -> load -> attach.

Lifetimes: a ``Link`` detaches when destroyed; ``BpfObject.close()`` destroys every link
made through it, then closes its programs and maps. ``close()`` is idempotent; use the
object as a context manager rather than relying on ``__del__``.
"""

from __future__ import annotations

import ctypes
import os
import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.bpf import _libbpf as L
from vigil.errors import AttachError, BpfError, VerifierError

_LOG_SIZE = 512 * 1024


class Link:
    """An attachment of a program to a hook; ``destroy()`` detaches it."""

    def __init__(self, ptr: Any, program: str, target: str) -> None:
        self._ptr = ptr
        self.program = program
        self.target = target

    @property
    def fd(self) -> int:
        return int(L.lib().bpf_link__fd(self._ptr))

    def pin(self, path: str) -> None:
        L.check_int(L.lib().bpf_link__pin(self._ptr, path.encode()), "pin link", path)

    def keep_pinned(self, path: str) -> None:
        """Pin the link at ``path`` and let go of it without detaching: it stays attached
        as long as the pin exists (``unlink(path)`` detaches it), whatever this process
        does. Unlike ``destroy()``, this never disables a tracepoint's perf event (a perf
        link's perf event descriptor stays open until the process exits)."""
        self.pin(path)
        fd = self.fd
        L.lib().bpf_link__disconnect(self._ptr)
        self.destroy()
        os.close(fd)  # the pin now holds the link

    def destroy(self) -> None:
        if self._ptr:
            L.lib().bpf_link__destroy(self._ptr)
            self._ptr = None

    @property
    def attached(self) -> bool:
        return bool(self._ptr)

    def read_iter(self, limit: int = 1 << 20) -> bytes:
        """Run an iterator link once (a new seq file from bpf_iter_create) and return what
        its program wrote, read to the end or to ``limit`` bytes."""
        fd = L.check_int(L.lib().bpf_iter_create(self.fd), "create iterator", self.target)
        out = bytearray()
        try:
            while len(out) < limit:
                chunk = os.read(fd, min(limit - len(out), 1 << 16))
                if not chunk:
                    break
                out += chunk
        except OSError as err:
            raise BpfError(err.errno or 5, "read iterator", self.target) from err
        finally:
            os.close(fd)
        return bytes(out)


class Program:
    """One program of an object."""

    def __init__(self, obj: BpfObject, ptr: Any) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = L.lib().bpf_program__name(ptr).decode()
        self.section: str = L.lib().bpf_program__section_name(ptr).decode()
        self._log: Any = None

    @property
    def fd(self) -> int:
        return int(L.lib().bpf_program__fd(self._ptr))

    @property
    def autoload(self) -> bool:
        return bool(L.lib().bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        L.check_int(L.lib().bpf_program__set_autoload(self._ptr, value), "set autoload", self.name)

    def set_attach_target(self, target: str) -> None:
        ret = L.lib().bpf_program__set_attach_target(self._ptr, 0, target.encode())
        L.check_int(ret, "set attach target", f"{self.name} -> {target}")

    def _capture_log(self) -> None:
        self._log = ctypes.create_string_buffer(_LOG_SIZE)
        L.lib().bpf_program__set_log_buf(self._ptr, self._log, _LOG_SIZE)

    def verifier_log(self) -> str:
        return self._log.value.decode(errors="replace") if self._log else ""

    def _attached(self, ptr: Any, target: str) -> Link:
        if not ptr:
            raise AttachError(ctypes.get_errno() or 22, self.name, target)
        link = Link(ptr, self.name, target)
        self._obj._links.append(link)
        return link

    def test_run(self) -> int:
        """Run the (loaded, unattached) program once with BPF_PROG_TEST_RUN; its return value.

        For raw_tp programs that take no context, e.g. periodic map sweeps.
        """
        o = L.opts(L.bpf_test_run_opts)
        L.check_int(L.lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(o)), "test run",
                    self.name)
        return int(o.retval)

    def attach(self) -> Link:
        """Attach by section name (tp_btf/..., tracepoint/..., lsm/..., fentry/...)."""
        return self._attached(L.lib().bpf_program__attach(self._ptr), self.section)

    def attach_tracepoint(self, category: str, name: str) -> Link:
        ptr = L.lib().bpf_program__attach_tracepoint(self._ptr, category.encode(), name.encode())
        return self._attached(ptr, f"tracepoint {category}/{name}")

    def attach_raw_tracepoint(self, name: str) -> Link:
        ptr = L.lib().bpf_program__attach_raw_tracepoint(self._ptr, name.encode())
        return self._attached(ptr, f"raw_tracepoint {name}")

    def attach_iter(self) -> Link:
        """Attach an iterator program (``iter/task``, ...) without parameters; each
        ``Link.read_iter()`` then runs it over the kernel objects once."""
        return self._attached(L.lib().bpf_program__attach_iter(self._ptr, None), self.section)

    def attach_kprobe(self, func: str, retprobe: bool = False, cookie: int = 0) -> Link:
        """A kprobe (or kretprobe) on ``func``; ``cookie``: what bpf_get_attach_cookie
        returns in the program."""
        if not cookie:
            ptr = L.lib().bpf_program__attach_kprobe(self._ptr, retprobe, func.encode())
        else:
            fn = L.lib().bpf_program__attach_kprobe_opts
            fn.restype = L.BpfLinkP
            fn.argtypes = [L.BpfProgramP, ctypes.c_char_p, ctypes.POINTER(_KprobeOpts)]
            o = L.opts(_KprobeOpts, bpf_cookie=cookie, retprobe=retprobe)
            ptr = fn(self._ptr, func.encode(), ctypes.byref(o))
        return self._attached(ptr, f"{'kretprobe' if retprobe else 'kprobe'} {func}")

    def attach_kprobe_multi(self, funcs: list[str], retprobe: bool = False,
                            cookies: list[int] | None = None) -> Link:
        """One kprobe.multi (fprobe) link on every function in ``funcs``; ``cookies``:
        one per function, what bpf_get_attach_cookie returns when that one fires."""
        fn = L.lib().bpf_program__attach_kprobe_multi_opts
        fn.restype = L.BpfLinkP
        fn.argtypes = [L.BpfProgramP, ctypes.c_char_p, ctypes.POINTER(_KprobeMultiOpts)]
        syms = (ctypes.c_char_p * len(funcs))(*(f.encode() for f in funcs))
        cks = (ctypes.c_uint64 * len(funcs))(*cookies) if cookies else None
        o = L.opts(_KprobeMultiOpts, syms=syms, cnt=len(funcs), retprobe=retprobe,
                   cookies=ctypes.cast(cks, ctypes.c_void_p) if cks is not None else None)
        ptr = fn(self._ptr, None, ctypes.byref(o))
        kind = "kretprobe.multi" if retprobe else "kprobe.multi"
        return self._attached(ptr, f"{kind} {','.join(funcs)}")

    def attach_uprobe(self, path: str, *, offset: int = 0, symbol: str | None = None,
                      retprobe: bool = False, pid: int = -1, ref_ctr_offset: int = 0) -> Link:
        """``ref_ctr_offset``: file offset of a USDT-style semaphore the kernel increments
        while the probe is attached (0: none)."""
        o = L.opts(L.bpf_uprobe_opts, retprobe=retprobe, ref_ctr_offset=ref_ctr_offset,
                   func_name=symbol.encode() if symbol else None)
        ptr = L.lib().bpf_program__attach_uprobe_opts(
            self._ptr, pid, path.encode(), offset, ctypes.byref(o))
        kind = "uretprobe" if retprobe else "uprobe"
        return self._attached(ptr, f"{kind} {path}:{symbol or hex(offset)}")

    def attach_usdt(self, path: str, provider: str, name: str, pid: int = -1) -> Link:
        """Every site of USDT probe ``provider:name`` in ``path`` (libbpf reads the ELF
        notes, sets the semaphores' reference counters and records argument specs for
        bpf_usdt_arg)."""
        o = L.opts(L.bpf_usdt_opts)
        ptr = L.lib().bpf_program__attach_usdt(self._ptr, pid, path.encode(),
                                               provider.encode(), name.encode(),
                                               ctypes.byref(o))
        link = self._attached(ptr, f"usdt {path}:{provider}:{name}")
        self._obj._keeps_libbpf = True  # the link's detach uses the object's USDT manager
        return link

    def attach_cgroup(self, cgroup_path: str) -> Link:
        fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            ptr = L.lib().bpf_program__attach_cgroup(self._ptr, fd)
            return self._attached(ptr, f"cgroup {cgroup_path}")
        finally:
            os.close(fd)


class _KprobeOpts(ctypes.Structure):
    """``struct bpf_kprobe_opts`` up to ``retprobe`` (libbpf >= 0.7; later fields
    default to zero, as a smaller ``sz`` tells libbpf)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class _KprobeMultiOpts(ctypes.Structure):
    """``struct bpf_kprobe_multi_opts`` (libbpf >= 0.8)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("syms", ctypes.POINTER(ctypes.c_char_p)),
        ("addrs", ctypes.c_void_p),
        ("cookies", ctypes.c_void_p),
        ("cnt", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class _MapOps:
    """Element operations on a map by its file descriptor (``fd``, ``name``,
    ``key_size`` and ``value_size`` come from the subclass)."""

    name: str

    @property
    def fd(self) -> int:
        raise NotImplementedError

    @property
    def key_size(self) -> int:
        raise NotImplementedError

    @property
    def value_size(self) -> int:
        raise NotImplementedError

    def lookup(self, key: bytes, value_size: int | None = None) -> bytes:
        """The value at ``key``; KeyError if absent. Per-CPU maps: pass the full size."""
        size = value_size or self.value_size
        out = ctypes.create_string_buffer(size)
        if L.lib().bpf_map_lookup_elem(self.fd, key, out) < 0:
            err = ctypes.get_errno()
            if err == 2:
                raise KeyError(key)
            raise BpfError(err, "map lookup", self.name)
        return out.raw

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        L.check_int(L.lib().bpf_map_update_elem(self.fd, key, value, flags), "map update", self.name)

    def delete(self, key: bytes) -> None:
        if L.lib().bpf_map_delete_elem(self.fd, key) < 0:
            err = ctypes.get_errno()
            if err == 2:
                raise KeyError(key)
            raise BpfError(err, "map delete", self.name)

    def keys(self) -> Iterator[bytes]:
        ks = self.key_size
        cur: bytes | None = None
        nxt = ctypes.create_string_buffer(ks)
        while L.lib().bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            cur = nxt.raw
            yield cur


class Map(_MapOps):
    """One map of an open object; ``lookup``/``update``/``delete``/``keys`` on raw bytes."""

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr
        self.name: str = L.lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return int(L.lib().bpf_map__fd(self._ptr))

    @property
    def key_size(self) -> int:
        return int(L.lib().bpf_map__key_size(self._ptr))

    @property
    def value_size(self) -> int:
        return int(L.lib().bpf_map__value_size(self._ptr))

    @property
    def max_entries(self) -> int:
        return int(L.lib().bpf_map__max_entries(self._ptr))

    def set_max_entries(self, n: int) -> None:
        L.check_int(L.lib().bpf_map__set_max_entries(self._ptr, n), "set max_entries", self.name)

    def set_initial_value(self, data: bytes) -> None:
        """Set a global-data map (.rodata/.data/.bss) before load."""
        size = ctypes.c_size_t(0)
        L.lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if len(data) > size.value:
            raise BpfError(22, "set initial value", f"{self.name}: {len(data)} > {size.value}")
        full = data + bytes(size.value - len(data))
        buf = ctypes.create_string_buffer(full, len(full))
        L.check_int(L.lib().bpf_map__set_initial_value(self._ptr, buf, len(full)),
                    "set initial value", self.name)

    def reuse_fd(self, fd: int) -> None:
        """Share an existing map (e.g. the event ring) instead of creating this one."""
        L.check_int(L.lib().bpf_map__reuse_fd(self._ptr, fd), "reuse map fd", self.name)


class HeldMap(_MapOps):
    """A loaded map kept by a duplicate of its descriptor once its object has let go of
    libbpf's copy (``BpfObject.settle``): same element operations as ``Map``."""

    def __init__(self, m: Map) -> None:
        self.name = m.name
        self._fd = os.dup(m.fd)
        self._key_size, self._value_size = m.key_size, m.value_size
        self.max_entries = m.max_entries

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def key_size(self) -> int:
        return self._key_size

    @property
    def value_size(self) -> int:
        return self._value_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class HeldProgram:
    """A loaded program of a settled object: its name and a duplicate of its descriptor
    (what ``kernel_memory`` style accounting reads)."""

    name: str
    fd: int
    autoload: bool = True


class BpfObject:
    """A BPF ELF object. ``open`` it, configure maps/programs, ``load``, then attach."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = str(path)
        o = L.opts(L.bpf_object_open_opts, object_name=name.encode() if name else None)
        ptr = L.lib().bpf_object__open_file(self.path.encode(), ctypes.byref(o))
        self._ptr = L.check_ptr(ptr, "open object", self.path)
        self.name = name or Path(self.path).stem
        self._seq = next(_created)
        self._links: list[Link] = []
        self.loaded = False
        # after settle(): the maps and programs, held by their own descriptors
        self._held_maps: dict[str, HeldMap] | None = None
        self._held_progs: list[HeldProgram] = []
        # a link whose detach still needs libbpf's object (USDT): settle() keeps it
        self._keeps_libbpf = False
        _open_objects.add(self)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def programs(self) -> list[Any]:
        """The object's programs (``HeldProgram`` views once settled)."""
        if self._held_maps is not None:
            return list(self._held_progs)
        out: list[Program] = []
        cur = None
        while True:
            cur = L.lib().bpf_object__next_program(self._ptr, cur)
            if not cur:
                return out
            out.append(Program(self, cur))

    def program(self, name: str) -> Program:
        self._not_settled("find program", name)
        ptr = L.lib().bpf_object__find_program_by_name(self._ptr, name.encode())
        return Program(self, L.check_ptr(ptr, "find program", name))

    def map(self, name: str) -> Any:
        """The map called ``name``: a ``Map``, or a ``HeldMap`` once settled."""
        if self._held_maps is not None:
            if name not in self._held_maps:
                raise BpfError(2, "find map", name)
            return self._held_maps[name]
        ptr = L.lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        return Map(L.check_ptr(ptr, "find map", name))

    def maps(self) -> list[Any]:
        if self._held_maps is not None:
            return list(self._held_maps.values())
        out: list[Map] = []
        cur = None
        while True:
            cur = L.lib().bpf_object__next_map(self._ptr, cur)
            if not cur:
                return out
            out.append(Map(cur))

    def set_rodata(self, data: bytes) -> None:
        """Set the object's load-time config (``vg_cfg``, the only .rodata variable)."""
        self.map(".rodata").set_initial_value(data)

    def load(self) -> None:
        """Load every autoload program; on refusal raise VerifierError naming the program."""
        progs = [p for p in self.programs() if p.autoload]
        for p in progs:
            p._capture_log()
        ret = L.lib().bpf_object__load(self._ptr)
        if ret < 0:
            failed = next((p for p in progs if p.verifier_log() and p.fd < 0), None)
            if failed is not None:
                raise VerifierError(-ret, failed.name, failed.verifier_log())
            raise BpfError(-ret, "load object", self.path)
        for p in progs:
            p._log = None  # free the 512 KiB log buffers
        self.loaded = True

    @property
    def links(self) -> list[Link]:
        return [lk for lk in self._links if lk.attached]

    def settle(self) -> None:
        """Once loaded and attached for good: keep the kernel's programs, maps and links
        by their own descriptors and free libbpf's copy of the object (instructions,
        BTF, relocation data: most of a generic hook's ~0.8 MB of agent memory). After
        this, maps and programs are read and updated as before, but nothing can be
        configured or attached any more. An object with a USDT link is left as it is:
        detaching that link uses the object's USDT manager."""
        if self._held_maps is not None or not self._ptr or self._keeps_libbpf:
            return
        if not self.loaded:
            raise BpfError(22, "settle object", f"{self.path}: not loaded")
        held: dict[str, HeldMap] = {}
        progs: list[HeldProgram] = []
        try:
            for m in self.maps():
                if m.fd >= 0:
                    held[m.name] = HeldMap(m)
            for p in self.programs():
                if p.autoload and p.fd >= 0:
                    progs.append(HeldProgram(p.name, os.dup(p.fd)))
        except BaseException:
            for hm in held.values():
                hm.close()
            for hp in progs:
                os.close(hp.fd)
            raise
        self._held_maps, self._held_progs = held, progs
        L.lib().bpf_object__close(self._ptr)  # links are libbpf objects of their own
        self._ptr = None

    @property
    def settled(self) -> bool:
        return self._held_maps is not None

    def _not_settled(self, op: str, what: str) -> None:
        if self._held_maps is not None:
            raise BpfError(22, op, f"{what}: {self.name} is settled (loaded for good)")

    def close(self) -> None:
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self._ptr:
            L.lib().bpf_object__close(self._ptr)
            self._ptr = None
        for hm in (self._held_maps or {}).values():
            hm.close()
        for hp in self._held_progs:
            os.close(hp.fd)
        self._held_progs = []
        if self._held_maps is not None:
            self._held_maps = {}
        _open_objects.discard(self)


# Every BpfObject not yet closed, in creation order of the live ones (``open_objects``):
# what ``vigil.bpf.keep`` pins when the agent keeps its sensors on exit.
_open_objects: weakref.WeakSet[BpfObject] = weakref.WeakSet()
_created: itertools.count[int] = itertools.count()


def open_objects() -> list[BpfObject]:
    """The BpfObjects not closed yet, oldest first."""
    return sorted(_open_objects, key=lambda o: o._seq)


def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (libbpf's possible-CPU count)."""
    return int(L.lib().libbpf_num_possible_cpus())


def create_hash_map(name: str, key_size: int, value_size: int, max_entries: int) -> int:
    """A new BPF_MAP_TYPE_HASH map, not tied to any object; the caller owns the fd."""
    return L.check_int(L.lib().bpf_map_create(1, name.encode()[:15], key_size, value_size,
                                              max_entries, None), "map create", name)


class MapFd(_MapOps):
    """A map held by its own file descriptor, so it outlives the object that created it
    (a map shared by several policies' objects, kept while any of them is loaded). The
    caller owns the descriptor."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self.name = name

    @property
    def fd(self) -> int:
        return self._fd

    def delete(self, key: bytes) -> None:
        """Remove ``key``; a key that is not there is not an error."""
        try:
            super().delete(key)
        except KeyError:
            pass
