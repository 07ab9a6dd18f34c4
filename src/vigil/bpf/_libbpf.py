"""Raw ctypes declarations for the system libbpf (libbpf.so.1, >= 1.1), exact C names.

Nothing here is Pythonic: ``vigil.bpf.object`` wraps it. The library is loaded lazily
by ``lib()`` (never at import), path overridable with ``VIGIL_LIBBPF``. Every function
is declared once in ``_SIGNATURES``; pointer-returning calls return None on failure and
int-returning calls a negative errno (libbpf 1.0 semantics), which ``check_ptr`` and
``check_int`` turn into ``BpfError``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from ctypes import (
    CFUNCTYPE, POINTER, Structure, c_bool, c_char, c_char_p, c_int, c_long, c_size_t,
    c_uint, c_uint32, c_uint64, c_void_p,
)
from typing import Any

from vigil.errors import BpfError


class BpfObject(Structure):
    """Opaque ``struct bpf_object``."""


class BpfProgram(Structure):
    """Opaque ``struct bpf_program``."""


class BpfMap(Structure):
    """Opaque ``struct bpf_map``."""


class BpfLink(Structure):
    """Opaque ``struct bpf_link``."""


BpfObjectP = POINTER(BpfObject)
BpfProgramP = POINTER(BpfProgram)
BpfMapP = POINTER(BpfMap)
BpfLinkP = POINTER(BpfLink)


class bpf_object_open_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class bpf_uprobe_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("ref_ctr_offset", c_size_t),
        ("bpf_cookie", c_uint64),
        ("retprobe", c_bool),
        ("func_name", c_char_p),
    ]


class bpf_usdt_opts(Structure):
    _fields_ = [("sz", c_size_t), ("usdt_cookie", c_uint64)]


class bpf_tracepoint_opts(Structure):
    _fields_ = [("sz", c_size_t), ("bpf_cookie", c_uint64)]


class bpf_test_run_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


def opts(cls: type[Structure], **fields: Any) -> Structure:
    """A zeroed libbpf options struct with ``sz`` set, as LIBBPF_OPTS does."""
    o = cls(**fields)
    o.sz = ctypes.sizeof(cls)
    return o


PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_probe_bpf_prog_type": (c_int, [c_int, c_void_p]),
    "libbpf_probe_bpf_map_type": (c_int, [c_int, c_void_p]),
    "libbpf_probe_bpf_helper": (c_int, [c_int, c_int, c_void_p]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (BpfObjectP, [c_char_p, POINTER(bpf_object_open_opts)]),
    "bpf_object__load": (c_int, [BpfObjectP]),
    "bpf_object__close": (None, [BpfObjectP]),
    "bpf_object__find_program_by_name": (BpfProgramP, [BpfObjectP, c_char_p]),
    "bpf_object__find_map_by_name": (BpfMapP, [BpfObjectP, c_char_p]),
    "bpf_object__next_program": (BpfProgramP, [BpfObjectP, BpfProgramP]),
    "bpf_object__next_map": (BpfMapP, [BpfObjectP, BpfMapP]),
    "bpf_program__name": (c_char_p, [BpfProgramP]),
    "bpf_program__section_name": (c_char_p, [BpfProgramP]),
    "bpf_program__fd": (c_int, [BpfProgramP]),
    "bpf_program__set_autoload": (c_int, [BpfProgramP, c_bool]),
    "bpf_program__autoload": (c_bool, [BpfProgramP]),
    "bpf_program__set_log_buf": (c_int, [BpfProgramP, c_void_p, c_size_t]),
    "bpf_program__set_log_level": (c_int, [BpfProgramP, c_uint32]),
    "bpf_program__set_attach_target": (c_int, [BpfProgramP, c_int, c_char_p]),
    "bpf_program__attach": (BpfLinkP, [BpfProgramP]),
    "bpf_program__attach_trace": (BpfLinkP, [BpfProgramP]),
    "bpf_program__attach_raw_tracepoint": (BpfLinkP, [BpfProgramP, c_char_p]),
    "bpf_program__attach_tracepoint": (BpfLinkP, [BpfProgramP, c_char_p, c_char_p]),
    "bpf_program__attach_kprobe": (BpfLinkP, [BpfProgramP, c_bool, c_char_p]),
    "bpf_program__attach_uprobe_opts": (
        BpfLinkP, [BpfProgramP, c_int, c_char_p, c_size_t, POINTER(bpf_uprobe_opts)]),
    "bpf_program__attach_usdt": (
        BpfLinkP, [BpfProgramP, c_int, c_char_p, c_char_p, c_char_p, POINTER(bpf_usdt_opts)]),
    "bpf_program__attach_cgroup": (BpfLinkP, [BpfProgramP, c_int]),
    "bpf_program__attach_lsm": (BpfLinkP, [BpfProgramP]),
    "bpf_program__attach_iter": (BpfLinkP, [BpfProgramP, c_void_p]),
    "bpf_iter_create": (c_int, [c_int]),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(bpf_test_run_opts)]),
    "bpf_link__destroy": (c_int, [BpfLinkP]),
    "bpf_link__fd": (c_int, [BpfLinkP]),
    "bpf_link__pin": (c_int, [BpfLinkP, c_char_p]),
    "bpf_link__unpin": (c_int, [BpfLinkP]),
    "bpf_link__disconnect": (None, [BpfLinkP]),
    "bpf_map__name": (c_char_p, [BpfMapP]),
    "bpf_map__fd": (c_int, [BpfMapP]),
    "bpf_map__max_entries": (c_uint32, [BpfMapP]),
    "bpf_map__set_max_entries": (c_int, [BpfMapP, c_uint32]),
    "bpf_map__key_size": (c_uint32, [BpfMapP]),
    "bpf_map__value_size": (c_uint32, [BpfMapP]),
    "bpf_map__type": (c_int, [BpfMapP]),
    "bpf_map__set_initial_value": (c_int, [BpfMapP, c_void_p, c_size_t]),
    "bpf_map__initial_value": (c_void_p, [BpfMapP, POINTER(c_size_t)]),
    "bpf_map__reuse_fd": (c_int, [BpfMapP, c_int]),
    "bpf_map__pin": (c_int, [BpfMapP, c_char_p]),
    "bpf_map__unpin": (c_int, [BpfMapP, c_char_p]),
    "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
}

log = logging.getLogger("vigil.libbpf")


class LibbpfMissing(BpfError):
    """libbpf.so.1 could not be loaded."""

    def __init__(self, detail: str) -> None:
        super().__init__(2, "load libbpf.so.1", detail)


@functools.cache
def lib() -> ctypes.CDLL:
    """The system libbpf with every symbol in ``_SIGNATURES`` declared."""
    path = os.environ.get("VIGIL_LIBBPF") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(path, use_errno=True)
    except OSError as err:
        raise LibbpfMissing(f"{path} ({err}); install libbpf1 (apt-get install libbpf1)") from err
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, name, None)
        if fn is None:
            continue  # newer symbol: callers check has()
        fn.restype = restype
        fn.argtypes = argtypes
    _install_print(handle)
    return handle


def has(name: str) -> bool:
    """Whether this libbpf exports ``name`` (newer symbols are features)."""
    return hasattr(lib(), name)


def version() -> tuple[int, int]:
    lb = lib()
    return lb.libbpf_major_version(), lb.libbpf_minor_version()


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.vsnprintf.restype = c_int
    libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    return libc


_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


@PRINT_FN
def _print(level: int, fmt: bytes, va: int) -> int:
    """libbpf's log callback: format the va_list with vsnprintf, hand it to logging."""
    try:
        buf = ctypes.create_string_buffer(2048)
        _libc().vsnprintf(buf, len(buf), fmt, va)
        text = buf.value.decode(errors="replace").rstrip()
        if text:
            log.log(_LEVELS.get(level, logging.DEBUG), "%s", text)
    except Exception:  # noqa: BLE001 - never let an exception cross into C
        pass
    return 0


def _install_print(handle: ctypes.CDLL) -> None:
    handle.libbpf_set_print(_print)


def check_ptr(ptr: Any, op: str, target: str = "") -> Any:
    """Return ``ptr`` or raise BpfError with errno if it is NULL."""
    if not ptr:
        raise BpfError(ctypes.get_errno() or 22, op, target)
    return ptr


def check_int(ret: int, op: str, target: str = "") -> int:
    """Return ``ret`` or raise BpfError if it is a negative errno."""
    if ret < 0:
        raise BpfError(-ret, op, target)
    return ret


__all__ = [
    "BpfObjectP", "BpfProgramP", "BpfMapP", "BpfLinkP", "bpf_object_open_opts",
    "bpf_uprobe_opts", "bpf_usdt_opts", "bpf_tracepoint_opts", "bpf_test_run_opts", "opts", "lib", "has",
    "version",
    "check_ptr", "check_int", "LibbpfMissing", "c_char", "c_long", "c_uint",
]
