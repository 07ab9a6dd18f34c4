"""Telling the dynamic loader apart from the program being executed. Pure.

fanotify reports an exec-open (FAN_OPEN_EXEC_PERM) for the program *and* for its ELF
interpreter (ld.so), while the LSM hook ``bprm_check_security`` only sees the program
(and script interpreters). So an exec-open of a file that is itself a loader (an ELF
shared object without PT_INTERP) is an interpreter load when the task's execve names
another file; when the execve names the loader itself (``ld.so ./prog``), it is checked
like any program. This is fapolicyd's "ld_so" pattern, and it is what lets an allow-list
omit ld.so without letting ``ld.so /tmp/x`` through.
"""

from __future__ import annotations

import platform
import struct

PT_INTERP = 3
ET_EXEC = 2
ET_DYN = 3
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100

#: execve, execveat syscall numbers by machine
EXEC_SYSCALLS = {"x86_64": (59, 322), "aarch64": (221, 281), "riscv64": (221, 281),
                 "s390x": (11, 354), "ppc64le": (11, 362)}


def elf_kind(head: bytes) -> str:
    """"loader" (ELF ET_DYN without PT_INTERP: ld.so, or a static-pie), "program" (other
    ELF), or "other" (not ELF, or program headers beyond ``head``)."""
    if len(head) < 64 or head[:4] != b"\x7fELF":
        return "other"
    end = "<" if head[5] == 1 else ">"
    e_type = struct.unpack_from(end + "H", head, 16)[0]
    if head[4] == 2:
        phoff = struct.unpack_from(end + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
    else:
        phoff = struct.unpack_from(end + "I", head, 28)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
    if phentsize < 4 or phoff + phentsize * phnum > len(head):
        return "other"
    for i in range(phnum):
        if struct.unpack_from(end + "I", head, phoff + i * phentsize)[0] == PT_INTERP:
            return "program"
    return "loader" if e_type == ET_DYN else "program"


def parse_syscall(text: str) -> tuple[int, list[int]] | None:
    """/proc/PID/syscall of a blocked task -> (number, six arguments)."""
    parts = text.split()
    if len(parts) < 7 or parts[0] in ("running", "-1"):
        return None
    try:
        return int(parts[0]), [int(p, 16) for p in parts[1:7]]
    except ValueError:
        return None


def exec_call(nr: int, args: list[int], machine: str | None = None) -> tuple[int, int, int] | None:
    """(dirfd, filename pointer, flags) of an execve/execveat in progress, else None."""
    calls = EXEC_SYSCALLS.get(machine or platform.machine())
    if not calls:
        return None
    if nr == calls[0]:
        return AT_FDCWD, args[0], 0
    if nr == calls[1]:
        dirfd = args[0] - (1 << 64) if args[0] >= 1 << 63 else args[0]
        return int(dirfd) if dirfd >= -(1 << 31) else AT_FDCWD, args[1], args[4]
    return None
