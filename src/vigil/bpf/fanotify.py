"""Thin ctypes layer over fanotify(7): the group, its marks, events and responses.

Only the syscalls and the byte layouts live here (``vigil.bpf`` is the one package that
imports ctypes); what to decide and what to mark is ``vigil.enforce``'s business.

    fd = init(CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK)
    mark(fd, FAN_MARK_ADD, FAN_OPEN_EXEC_PERM, "/usr/bin/nc")
    for ev in parse(os.read(fd, 65536)): ... respond(fd, ev.fd, FAN_DENY); os.close(ev.fd)

Kernel facts this relies on (checked by tests/kernel/test_enforce_fanotify.py):
- a permission event blocks the task until some reader of the group answers it; the
  wait is killable, and closing the last reference to the group answers every pending
  and queued event with "allow";
- ``write(2)`` takes one ``struct fanotify_response`` per call;
- a custom errno (``FAN_DENY_ERRNO``) needs a FAN_CLASS_PRE_CONTENT group and Linux >=
  6.14, and only EPERM, EIO, EBUSY, ETXTBSY, EAGAIN, ENOSPC and EDQUOT are accepted.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# fanotify_init flags
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_CLASS_CONTENT = 0x4
FAN_CLASS_PRE_CONTENT = 0x8
FAN_UNLIMITED_QUEUE = 0x10
FAN_UNLIMITED_MARKS = 0x20
FAN_ENABLE_AUDIT = 0x40

# fanotify_mark flags
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_DONT_FOLLOW = 0x4
FAN_MARK_ONLYDIR = 0x8
FAN_MARK_MOUNT = 0x10
FAN_MARK_IGNORED_MASK = 0x20
FAN_MARK_IGNORED_SURV_MODIFY = 0x40
FAN_MARK_FLUSH = 0x80
FAN_MARK_FILESYSTEM = 0x100
FAN_MARK_EVICTABLE = 0x200

# event bits
FAN_OPEN = 0x20
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_ACCESS_PERM = 0x20000
FAN_OPEN_EXEC_PERM = 0x40000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000

# responses
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_AUDIT = 0x10
FAN_ERRNO_SHIFT = 24
FAN_NOFD = -1

#: errnos a permission event may be denied with (FAN_DENY_ERRNO), Linux >= 6.14
DENY_ERRNOS = frozenset({_errno.EPERM, _errno.EIO, _errno.EBUSY, _errno.ETXTBSY,
                         _errno.EAGAIN, _errno.ENOSPC, _errno.EDQUOT})

_AT_FDCWD = -100
METADATA = struct.Struct("<IBBHQii")   # struct fanotify_event_metadata (version 3)
RESPONSE = struct.Struct("<iI")        # struct fanotify_response
METADATA_VERSION = 3


def deny_errno(err: int) -> int:
    """The response that denies with ``err`` (FAN_DENY alone means EPERM)."""
    if err in (0, _errno.EPERM):
        return FAN_DENY
    return FAN_DENY | (err & 0xFF) << FAN_ERRNO_SHIFT


@dataclass(frozen=True, slots=True)
class Event:
    mask: int
    fd: int      # the file, opened for this reader (FAN_NOFD for an overflow)
    pid: int     # thread group of the task that caused it


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_init.restype = ctypes.c_int
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.c_char_p]
    libc.fanotify_mark.restype = ctypes.c_int
    return libc


def init(flags: int, event_f_flags: int = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC) -> int:
    """A new fanotify group; raises OSError (EPERM without CAP_SYS_ADMIN)."""
    fd = _libc().fanotify_init(flags, event_f_flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)}")
    return int(fd)


def mark(fd: int, flags: int, mask: int, path: str | None = None, dirfd: int = _AT_FDCWD) -> None:
    """fanotify_mark(2); ``path`` None with ``dirfd`` = an open file marks that file."""
    p = path.encode(errors="surrogateescape") if path is not None else None
    if _libc().fanotify_mark(fd, flags, mask, dirfd, p) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark {path or f'fd {dirfd}'}: {os.strerror(err)}")


def parse(buf: bytes) -> Iterator[Event]:
    """Events in one ``read(2)`` of the group (a truncated tail is ignored)."""
    off, end = 0, len(buf)
    unpack = METADATA.unpack_from
    while off + METADATA.size <= end:
        length, _vers, _res, _mlen, mask, efd, pid = unpack(buf, off)
        if length < METADATA.size:
            return
        yield Event(mask, efd, pid)
        off += length


def respond(fd: int, event_fd: int, response: int) -> bool:
    """Answer one permission event; False when the kernel no longer holds it (ENOENT:
    someone answered first) — any other error raises OSError."""
    try:
        os.write(fd, RESPONSE.pack(event_fd, response))
    except OSError as err:
        if err.errno == _errno.ENOENT:
            return False
        raise
    return True


def has_deny_errno(fd: int) -> bool:
    """Whether this kernel and group accept FAN_DENY_ERRNO: answer a response for an fd
    that holds no event; EINVAL means the errno field itself is refused."""
    try:
        os.write(fd, RESPONSE.pack(2**31 - 1, deny_errno(_errno.EIO)))
    except OSError as err:
        return err.errno != _errno.EINVAL
    return True


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


@functools.cache
def _vm_readv() -> ctypes._CFuncPtr:  # type: ignore[name-defined]  # private in typeshed
    fn = _libc().process_vm_readv
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_ssize_t
    return fn


def read_user_string(pid: int, addr: int, limit: int = 4096) -> str:
    """A NUL-terminated string from another process's memory (process_vm_readv: one
    syscall; reads page by page so an unmapped page after the string does not fail it)."""
    out = b""
    buf = ctypes.create_string_buffer(4096)
    while len(out) < limit:
        at = addr + len(out)
        n = 4096 - at % 4096
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), n)
        remote = _IoVec(at, n)
        got = _vm_readv()(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            err = ctypes.get_errno()
            raise OSError(err, f"process_vm_readv {pid}: {os.strerror(err)}")
        data = buf.raw[:got]
        nul = data.find(b"\0")
        if nul >= 0:
            return (out + data[:nul]).decode(errors="surrogateescape")
        out += data
    return out.decode(errors="surrogateescape")


def read_small(path: str, size: int = 4096) -> bytes:
    """One read of a small procfs file (no Python file object: this is the hot path)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


# ---- inotify: the decider re-marks a named file when its directory entry is replaced ----

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
INOTIFY_EVENT = struct.Struct("<iIII")


def inotify_init() -> int:
    libc = _libc()
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_init1: {os.strerror(err)}")
    return int(fd)


def inotify_watch(fd: int, path: str, mask: int) -> int:
    libc = _libc()
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    wd = libc.inotify_add_watch(fd, path.encode(errors="surrogateescape"), mask)
    if wd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
    return int(wd)


def inotify_parse(buf: bytes) -> Iterator[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each event in one read."""
    off = 0
    while off + INOTIFY_EVENT.size <= len(buf):
        wd, mask, _cookie, length = INOTIFY_EVENT.unpack_from(buf, off)
        name = buf[off + 16:off + 16 + length].split(b"\0", 1)[0]
        yield wd, mask, name.decode(errors="surrogateescape")
        off += 16 + length
