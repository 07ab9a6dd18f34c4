"""``binaryDigests`` on uprobes: the binary is checked before a probe is attached to it.

The file is opened once; its digest (``sha1``/``sha256``/``sha384``/``sha512`` of the
contents, or ``build-id`` of its ELF note) is computed from that open file, and the
probe is attached through ``/proc/self/fd/N``, i.e. to the very inode that was checked:
renaming another file into the path meanwhile changes nothing. After attaching, the
file's size and modification time are compared with what was hashed, so a file
rewritten in place while it was hashed is refused too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from vigil.elfnote import file_build_id
from vigil.errors import PolicyError

_CHUNK = 1 << 20


class DigestMismatch(PolicyError):
    """The binary is not one of those a hook's binaryDigests allow."""


@dataclass
class CheckedBinary:
    """An open binary whose digest matched; attach through ``path``, then ``close``."""

    fd: int
    st: os.stat_result

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def unchanged(self) -> bool:
        now = os.fstat(self.fd)
        return (now.st_size, now.st_mtime_ns, now.st_ino) == \
            (self.st.st_size, self.st.st_mtime_ns, self.st.st_ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def file_digest(fd: int, algo: str) -> str:
    """Hex digest of the open file's contents (``algo`` a hashlib name) or its build id."""
    if algo == "build-id":
        bid = file_build_id(fd)
        return bid.hex() if bid is not None else ""
    h = hashlib.new(algo)
    off = 0
    while True:
        chunk = os.pread(fd, _CHUNK, off)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        off += len(chunk)


def check_binary(path: str, digests: tuple[str, ...], where: str) -> CheckedBinary:
    """Open ``path`` and check it against ``digests`` ("ALGO:HEX", any may match)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise DigestMismatch(f"{where}: cannot open {path} to verify its digest: "
                             f"{err.strerror}") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DigestMismatch(f"{where}: {path} is not a regular file")
        seen: dict[str, str] = {}
        for d in digests:
            algo, _, want = d.partition(":")
            if algo not in seen:
                seen[algo] = file_digest(fd, algo)
            if seen[algo] and seen[algo] == want.lower():
                return CheckedBinary(fd, st)
        found = ", ".join(f"{a}:{v or '(none)'}" for a, v in seen.items())
        raise DigestMismatch(f"{where}: {path} does not match binaryDigests (it is {found}); "
                             "the uprobe is not attached")
    except BaseException:
        os.close(fd)
        raise


__all__ = ["CheckedBinary", "DigestMismatch", "check_binary", "file_digest"]
