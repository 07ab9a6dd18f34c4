"""Tamper-evident export files: a keyed hash chain kept next to each JSON-lines file.

The export lines stay byte for byte Tetragon's; the evidence lives in a *chain file*
beside each export file (``vigil.log`` -> ``vigil.log.chain``, a rotated
``vigil-<ts>.log[.gz]`` -> ``vigil-<ts>.log.chain``). A chain file is text, one record
per line:

``H <json> <tag>``
    Segment header: starts the chain of one export file, or continues it after an
    agent restart. The JSON holds the format version, the key ``epoch``, the global
    sequence number ``seq`` of its first line, the ``line`` of the export file it starts
    at, the predecessor's final chain value ``prev`` and the predecessor's file name
    ``prev_file`` (the rotated file, or "" when the chain continues in the same file or
    starts here).
``<tag>``
    One per export line, in order: the chain value after that line.
``S <json> <tag>``
    Seal, written at clean close and before rotation: the number of lines and the last
    sequence number. Without a seal the end of the file cannot be vouched for (lines
    could have been cut together with their tags).

Every tag is a 128-bit truncated HMAC-SHA256 under the segment's MAC key, over a type
byte, the previous chain value and the record: ``L | prev | seq (8 bytes) | line``,
``H | prev | json``, ``S | prev | json``. So each value covers everything before it,
and each line is bound to its position; the header of a rotated-to file binds the
predecessor's seal, which links the files into one chain.

Forward security: the key evolves once per segment (each new export file and each
agent start): ``k[e+1] = HMAC(k[e], "vigil-export-ratchet")``; the MAC key of epoch e is
``HMAC(k[e], "vigil-export-mac")``. The agent keeps only the current key in memory and
the next one in the key file (rewritten atomically at every evolution), so someone who
takes the host later holds keys for the present and the future only: a file sealed
under an older epoch cannot be rewritten without the verifier noticing (epochs must not
go backwards or skip along the chain). The verifier starts from the original key
(epoch 0), kept off the host.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CHAIN_SUFFIX = ".chain"
TAG_BYTES = 16
KEY_MAGIC = "vigil-export-key-v1"
FORMAT_VERSION = 1
MIN_KEY_BYTES = 16
_ZERO = bytes(TAG_BYTES)
_RATCHET = b"vigil-export-ratchet"
_MACKEY = b"vigil-export-mac"


class IntegrityError(OSError):
    """A key file that cannot be used, or a chain file that cannot be started (an OSError:
    the agent reports it as it reports an export path it cannot open)."""


# -- keys -----------------------------------------------------------------------------


def ratchet(key: bytes) -> bytes:
    """The next epoch's key (one-way: the previous key cannot be recovered from it)."""
    return hmac.digest(key, _RATCHET, "sha256")


def mac_key(key: bytes) -> bytes:
    """The key the tags of an epoch are made with (never the ratchet key itself)."""
    return hmac.digest(key, _MACKEY, "sha256")


def key_at(key: bytes, epoch: int, target: int) -> bytes:
    """Evolve ``key`` (of ``epoch``) forward to ``target``; ValueError for a past epoch."""
    if target < epoch:
        raise ValueError(f"key is at epoch {epoch}, epoch {target} is before it")
    for _ in range(target - epoch):
        key = ratchet(key)
    return key


def check_key_file_mode(path: str, st: os.stat_result) -> None:
    """Refuse a key file that is not a regular file or is accessible by group or others."""
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"integrity key file {path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise IntegrityError(f"integrity key file {path}: mode {mode:04o} gives group/other "
                             "access; make it 0600 (chmod 600)")


def read_key_file(path: str) -> tuple[int, bytes]:
    """``(epoch, key)`` from a key file: ``vigil-export-key-v1 EPOCH HEX`` (as written by
    ``vigil export keygen`` and by the agent's ratchet), else the raw bytes as the epoch-0
    key (at least 16 bytes, e.g. ``head -c 32 /dev/urandom``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise IntegrityError(f"integrity key file {path}: {err.strerror}") from None
    try:
        check_key_file_mode(path, os.fstat(fd))
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read(4096)
    finally:
        if fd >= 0:
            os.close(fd)
    text = raw.strip()
    if text.startswith(KEY_MAGIC.encode()):
        parts = text.split()
        try:
            if len(parts) != 3:
                raise ValueError("expected 3 fields")
            epoch, key = int(parts[1]), binascii.unhexlify(parts[2])
            if epoch < 0 or len(key) < MIN_KEY_BYTES:
                raise ValueError("bad epoch or key length")
        except (ValueError, binascii.Error) as err:
            raise IntegrityError(f"integrity key file {path}: malformed ({err})") from None
        return epoch, key
    if len(raw) < MIN_KEY_BYTES:
        raise IntegrityError(f"integrity key file {path}: {len(raw)} bytes; at least "
                             f"{MIN_KEY_BYTES} random bytes are needed")
    return 0, raw


def format_key(epoch: int, key: bytes) -> bytes:
    return f"{KEY_MAGIC} {epoch} {key.hex()}\n".encode()


def write_key_file(path: str, epoch: int, key: bytes, *, exclusive: bool = False) -> None:
    """Atomically (temporary file + rename, fsynced) store ``(epoch, key)``, mode 0600."""
    if exclusive:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(format_key(epoch, key))
            f.flush()
            os.fsync(f.fileno())
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vigil-key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(format_key(epoch, key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class KeyRatchet:
    """The agent's side of the key: the current epoch's MAC key in memory, the next
    epoch's key on disk. :meth:`advance` moves to the next epoch and forgets the old one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.epoch, self._key = read_key_file(path)
        self._persisted = False

    @property
    def mac_key(self) -> bytes:
        return mac_key(self._key)

    def persist_next(self) -> None:
        """Replace the key file with the next epoch's key: from now on the disk no longer
        holds a key that can make tags of this epoch or any earlier one."""
        if self._persisted:
            return
        try:
            write_key_file(self.path, self.epoch + 1, ratchet(self._key))
        except OSError as err:
            raise IntegrityError(f"integrity key file {self.path}: cannot store the next "
                                 f"key: {err.strerror}") from None
        self._persisted = True

    def advance(self) -> None:
        """Move to the next epoch (the one already on disk) and forget the current key."""
        self.persist_next()
        self._key = ratchet(self._key)
        self.epoch += 1
        self._persisted = False


# -- tags -------------------------------------------------------------------------------


def line_tag(mk: bytes, prev: bytes, seq: int, line: bytes) -> bytes:
    return hmac.digest(mk, b"L" + prev + seq.to_bytes(8, "big") + line, "sha256")[:TAG_BYTES]


def hmac_states(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states after the padded key (RFC 2104).

    Copying them per line computes the same tag as ``hmac.digest`` in about half the
    time (the key blocks are hashed once per segment, not twice per line)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def record_tag(mk: bytes, kind: bytes, prev: bytes, body: bytes) -> bytes:
    return hmac.digest(mk, kind + prev + body, "sha256")[:TAG_BYTES]


def _json(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def chain_path(export_path: str) -> str:
    """The chain file of an export file (a ``.gz`` backup shares its uncompressed name's)."""
    return export_path.removesuffix(".gz") + CHAIN_SUFFIX


# -- writer -----------------------------------------------------------------------------


@dataclass
class _ChainTail:
    """What an existing chain file ends with (read at open to continue it)."""
    value: bytes = _ZERO
    next_seq: int = 1
    lines: int = 0          # export lines the chain covers
    sealed: bool = True
    epoch: int | None = None


def _read_tail(path: str) -> _ChainTail | None:
    """The state at the end of the chain file ``path``; None when there is none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    tail = _ChainTail()
    for rec in data.split(b"\n"):
        if not rec:
            continue
        try:
            if rec[:2] in (b"H ", b"S "):
                _kind, body, tag = rec.split(b" ")
                info = json.loads(body)
                tail.value = binascii.unhexlify(tag)
                if rec[:1] == b"H":
                    tail.next_seq, tail.lines = int(info["seq"]), int(info["line"]) - 1
                    tail.epoch, tail.sealed = int(info["epoch"]), False
                else:
                    tail.sealed = True
            else:
                tail.value = binascii.unhexlify(rec)
                tail.next_seq += 1
                tail.lines += 1
                tail.sealed = False
        except (ValueError, KeyError, binascii.Error):
            continue  # a damaged record: the verifier reports it
    return tail


def _count_lines(path: str) -> int:
    n = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
    except FileNotFoundError:
        pass
    return n


class ChainWriter:
    """Keeps the chain file of the export file a :class:`RotatingFileWriter` writes.

    Called by the writer with its lock held: :meth:`open` after the export file is
    opened, :meth:`lines` after lines were written, :meth:`seal` before a rotation or at
    close, :meth:`rotated` after the export file was renamed to a backup.
    """

    def __init__(self, key: KeyRatchet) -> None:
        self.key = key
        self._fd: int | None = None
        self._mk = b""
        self._inner: Any = None
        self._outer: Any = None
        self._prev = _ZERO
        self._seq = 1
        self._path = ""
        self._prev_file = ""   # backup name the next header links to
        self._sealed = True
        self.tag_errors = 0
        self.seals = 0
        self._first_open = True

    def open(self, export_path: str, perm: int) -> None:
        """Start a segment for ``export_path``: the first of a new file, or one continuing
        the chain in the same file (agent restart, failed rotation, reopen)."""
        self._path = chain_path(export_path)
        tail = _read_tail(self._path)
        if self._first_open:
            if tail is not None:  # a previous run wrote this file: continue its chain
                if tail.epoch is not None and tail.epoch > self.key.epoch:
                    raise IntegrityError(
                        f"{self._path} was written with key epoch {tail.epoch} but the key "
                        f"file {self.key.path} is at epoch {self.key.epoch}: wrong key file?")
                self._prev, self._seq = tail.value, tail.next_seq
        else:
            self.key.advance()  # a new segment, a new epoch; the old key is forgotten
        data_lines = _count_lines(export_path)
        fd = os.open(self._path, os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_CLOEXEC
                     | os.O_NOFOLLOW, perm)
        try:
            os.fchmod(fd, perm)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._mk = self.key.mac_key
        self._inner, self._outer = hmac_states(self._mk)
        header: dict[str, object] = {
            "v": FORMAT_VERSION, "epoch": self.key.epoch, "seq": self._seq,
            "line": data_lines + 1, "prev": self._prev.hex(),
            "prev_file": self._prev_file if tail is None and not self._first_open else "",
            "time": round(time.time(), 3),
        }
        self._first_open = False
        if tail is not None and not tail.sealed:
            header["unclean"] = True  # the last run did not seal: it stopped uncleanly
        body = _json(header)
        tag = record_tag(self._mk, b"H", self._prev, body)
        self._write(b"H " + body + b" " + tag.hex().encode() + b"\n")
        self._prev = tag
        self._sealed = False
        self.key.persist_next()

    def lines(self, lines: Sequence[bytes]) -> None:
        """Chain ``lines`` (just written to the export file) and append their tags."""
        if self._fd is None or not lines:
            return
        prev, seq = self._prev, self._seq
        icopy, ocopy = self._inner.copy, self._outer.copy
        out = []
        for line in lines:  # line_tag(), inlined: this runs for every exported event
            inner = icopy()
            inner.update(b"L" + prev + seq.to_bytes(8, "big") + line)
            outer = ocopy()
            outer.update(inner.digest())
            prev = outer.digest()[:16]
            out.append(prev)
            seq += 1
        self._prev, self._seq = prev, seq
        self._write(b"\n".join([binascii.hexlify(t) for t in out]) + b"\n")

    def seal(self) -> None:
        """Write the seal of the current segment (clean close or rotation)."""
        if self._fd is None or self._sealed:
            return
        body = _json({"seq": self._seq - 1, "time": round(time.time(), 3)})
        tag = record_tag(self._mk, b"S", self._prev, body)
        self._write(b"S " + body + b" " + tag.hex().encode() + b"\n")
        self._prev = tag
        self._sealed = True
        self.seals += 1
        try:
            os.fsync(self._fd)
        except OSError:
            pass

    def rotated(self, backup_path: str) -> None:
        """The export file became ``backup_path``: its chain file follows it."""
        self.close()
        try:
            os.rename(self._path, chain_path(backup_path))
        except OSError:
            self.tag_errors += 1
        self._prev_file = os.path.basename(backup_path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            self.tag_errors += 1


# -- verifier ---------------------------------------------------------------------------


@dataclass
class Problem:
    """One finding: ``where`` is ``file:line`` or a file name. ``tampered`` is False when
    the file could not be checked at all (a key that cannot verify it)."""
    where: str
    what: str
    tampered: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class _Segment:
    header: dict[str, Any]      # JSON
    header_line: int            # line of the chain file
    tags: list[bytes] = field(default_factory=list)
    seal: dict[str, Any] | None = None
    seal_tag: bytes = b""
    start_tag: bytes = b""


@dataclass
class FileResult:
    name: str
    lines: int = 0
    first_seq: int | None = None
    last_value: bytes | None = None
    last_seq: int = 0
    first_header: dict[str, object] | None = None
    first_epoch: int | None = None
    last_epoch: int | None = None
    sealed: bool = False
    problems: list[Problem] = field(default_factory=list)


def _read_data(path: str) -> tuple[list[bytes], str | None]:
    """Lines of an export file (``.gz`` transparently) and why it is damaged, if it is."""
    damage = None
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (EOFError, OSError, zlib.error) as err:
            # read what can be read: the stream is cut short
            data = b""
            try:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                with open(path, "rb") as raw:
                    data = d.decompress(raw.read())
            except zlib.error:
                pass
            damage = f"compressed file is damaged or truncated ({err})"
    else:
        with open(path, "rb") as f:
            data = f.read()
    lines = data.split(b"\n")
    last = lines.pop()  # "" when the file ends with a newline
    if last:
        lines.append(last)
        damage = damage or f"truncated: line {len(lines)} has no end of line"
    return lines, damage


def _parse_chain(path: str, name: str, problems: list[Problem]) -> list[_Segment]:
    with open(path, "rb") as f:
        recs = f.read().split(b"\n")
    if recs and recs[-1] == b"":
        recs.pop()
    segs: list[_Segment] = []
    for i, rec in enumerate(recs, 1):
        where = f"{name}:{i}"
        try:
            if rec[:2] == b"H ":
                _k, body, tag = rec.split(b" ")
                segs.append(_Segment(json.loads(body), i, start_tag=binascii.unhexlify(tag)))
                segs[-1].header["_body"] = body
                continue
            if not segs:
                problems.append(Problem(where, "chain file does not start with a header"))
                return segs
            if rec[:2] == b"S ":
                _k, body, tag = rec.split(b" ")
                if segs[-1].seal is not None:
                    raise ValueError("record after the seal")
                segs[-1].seal = json.loads(body)
                segs[-1].seal["_body"] = body
                segs[-1].seal_tag = binascii.unhexlify(tag)
                continue
            if segs[-1].seal is not None:
                raise ValueError("line tag after the seal")
            tag = binascii.unhexlify(rec)
            if len(tag) != TAG_BYTES:
                raise ValueError("bad tag length")
            segs[-1].tags.append(tag)
        except (ValueError, binascii.Error) as err:
            problems.append(Problem(where, f"chain file record is damaged ({err})"))
            return segs
    return segs


def _classify(mk: bytes, tags: list[bytes], prev0: bytes, seq0: int, lines: list[bytes],
              i: int) -> str:
    """Why data line ``i`` (0-based within the segment) does not match tag ``i``."""
    def ok(pos: int, j: int) -> bool:
        if pos >= len(tags) or j >= len(lines) or j < 0:
            return False
        before = prev0 if pos == 0 else tags[pos - 1]
        return hmac.compare_digest(line_tag(mk, before, seq0 + pos, lines[j]), tags[pos])
    if ok(i, i + 1) and ok(i + 1, i):
        return "reordered (swapped with the next line)"
    if ok(i, i + 1):
        return "inserted (not written by the agent; the next line is the expected one)"
    if ok(i + 1, i):
        return "removed (the line written here is missing; this is the next one)"
    if any(ok(i, j) for j in range(len(lines)) if j != i):
        return "reordered (the expected line is elsewhere in the file)"
    return "altered (does not match its chain value)"


class Verifier:
    """Checks export files (and their chain files) against the original key."""

    def __init__(self, key: bytes, key_epoch: int = 0) -> None:
        self._key = key
        self._key_epoch = key_epoch
        self._mk: dict[int, bytes] = {}

    @property
    def key_epoch(self) -> int:
        return self._key_epoch

    def mac_key(self, epoch: int) -> bytes:
        if epoch not in self._mk:
            if epoch < self._key_epoch:
                raise ValueError(f"the key file is at epoch {self._key_epoch}; this file "
                                 f"needs epoch {epoch}: use the original key")
            self._mk[epoch] = mac_key(key_at(self._key, self._key_epoch, epoch))
        return self._mk[epoch]

    def verify_file(self, path: str) -> FileResult:
        name = os.path.basename(path)
        res = FileResult(name)
        cpath = chain_path(path)
        cname = os.path.basename(cpath)
        if not os.path.exists(path):
            res.problems.append(Problem(name, "missing (its chain file is present)"))
            return res
        if not os.path.exists(cpath):
            res.problems.append(Problem(name, f"no chain file {cname}: cannot be vouched for"))
            return res
        lines, damage = _read_data(path)
        res.lines = len(lines)
        segs = _parse_chain(cpath, cname, res.problems)
        if not segs:
            if not res.problems:
                res.problems.append(Problem(cname, "chain file is empty"))
            return res
        cursor = 0          # 0-based index of the next data line to check
        prev: bytes | None = None
        prev_seq = 0
        prev_epoch: int | None = None
        for si, seg in enumerate(segs):
            h = seg.header
            try:
                epoch, seq, line = int(h["epoch"]), int(h["seq"]), int(h["line"])
                hprev = bytes.fromhex(str(h["prev"]))
            except (KeyError, ValueError, TypeError) as err:
                res.problems.append(Problem(f"{cname}:{seg.header_line}",
                                            f"segment header unusable: {err}"))
                return res
            try:
                mk = self.mac_key(epoch)
            except ValueError as err:
                res.problems.append(Problem(name, str(err), tampered=False))
                return res
            body = h.pop("_body")
            if not hmac.compare_digest(record_tag(mk, b"H", hprev, body), seg.start_tag):
                res.problems.append(Problem(f"{cname}:{seg.header_line}",
                                            "segment header altered or forged"))
                return res
            if si == 0:
                res.first_header, res.first_seq, res.first_epoch = h, seq, epoch
            else:
                if hprev != prev or seq != prev_seq + 1:
                    res.problems.append(Problem(
                        f"{cname}:{seg.header_line}",
                        "segment does not continue the previous one (chain records removed)"))
                    return res
                if prev_epoch is not None and not 0 <= epoch - prev_epoch <= 1:
                    res.problems.append(Problem(
                        f"{cname}:{seg.header_line}",
                        f"key epoch {epoch} after {prev_epoch}: rewritten with a later key"))
                    return res
                if h.get("unclean"):
                    res.problems.append(Problem(
                        f"{name}:{line}", "the agent stopped without sealing before this "
                        "line: lines before it may have been removed"))
            if line - 1 != cursor:
                if line - 1 > cursor:
                    res.problems.append(Problem(
                        f"{name}:{cursor + 1}",
                        f"lines {cursor + 1}-{line - 1} are not chained (inserted, or written "
                        "before integrity was enabled or before a crash)"))
                else:
                    res.problems.append(Problem(f"{name}:{line}",
                                                "chain segment starts past a removed line"))
                return res
            value = seg.start_tag
            for k, tag in enumerate(seg.tags):
                if cursor >= len(lines):
                    res.problems.append(Problem(
                        f"{name}:{cursor + 1}",
                        f"truncated: {len(lines)} lines, the chain has "
                        f"{line - 1 + len(seg.tags)}" + (f"; {damage}" if damage else "")))
                    return res
                want = line_tag(mk, value, seq + k, lines[cursor])
                if not hmac.compare_digest(want, tag):
                    if damage and cursor == len(lines) - 1:
                        res.problems.append(Problem(f"{name}:{cursor + 1}", damage))
                        return res
                    what = _classify(mk, seg.tags, seg.start_tag, seq, lines[line - 1:],
                                     k)
                    res.problems.append(Problem(f"{name}:{cursor + 1}", f"line {what}"))
                    return res
                value = tag
                cursor += 1
            last_seq = seq + len(seg.tags) - 1
            if seg.seal is not None:
                sbody = seg.seal.pop("_body")
                if (not hmac.compare_digest(record_tag(mk, b"S", value, sbody), seg.seal_tag)
                        or int(seg.seal.get("seq", -1)) != last_seq):
                    res.problems.append(Problem(f"{cname}", "seal altered or forged"))
                    return res
                value = seg.seal_tag
            elif si != len(segs) - 1:
                pass  # the next header says "unclean"; reported there
            prev, prev_seq, prev_epoch = value, last_seq, epoch
        res.last_value, res.last_seq, res.last_epoch = prev, prev_seq, prev_epoch
        res.sealed = segs[-1].seal is not None
        if cursor < len(lines):
            res.problems.append(Problem(f"{name}:{cursor + 1}",
                                        f"lines {cursor + 1}-{len(lines)} are not chained "
                                        "(appended by someone else, or after a crash)"))
        elif damage:
            res.problems.append(Problem(name, damage))
        return res


def export_set(path: str) -> list[str]:
    """The files of the export ``path``: its rotated backups (``.gz`` or not, and those
    whose chain file remains though the backup is gone), oldest first, then ``path``."""
    from vigil.export.jsonl import BackupNaming
    naming = BackupNaming.for_path(os.path.abspath(path))
    pat = re.compile(re.escape(naming.stem) + r"-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})"
                     + re.escape(naming.ext) + r"(\.gz|\.chain)?\Z")
    by_ts: dict[str, str] = {}
    try:
        names = os.listdir(naming.directory or ".")
    except OSError:
        names = []
    for n in names:
        m = pat.match(n)
        if not m:
            continue
        base = n.removesuffix(CHAIN_SUFFIX)
        full = os.path.join(naming.directory, base)
        if m.group(2) == ".chain":
            # the data file is the .log or the .log.gz
            if os.path.exists(full + ".gz"):
                full += ".gz"
            by_ts.setdefault(m.group(1), full)
        else:
            by_ts[m.group(1)] = full
    files = [by_ts[ts] for ts in sorted(by_ts)]
    return files + [os.path.abspath(path)]


@dataclass
class Report:
    files: list[FileResult]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_paths(verifier: Verifier, paths: Iterable[str], *, allow_unsealed: bool = False,
                 allow_pruned: bool = False) -> Report:
    """Verify the files in chain order; each file must link to the one before it."""
    results: list[FileResult] = []
    problems: list[Problem] = []
    paths = list(paths)
    for i, path in enumerate(paths):
        r = verifier.verify_file(path)
        results.append(r)
        problems += r.problems
        h = r.first_header
        if h is None:
            continue
        prev_name = str(h.get("prev_file") or "")
        hprev = str(h.get("prev", ""))
        named = [os.path.basename(p).removesuffix(".gz") for p in paths]
        want = named[i - 1] if i else ""
        if prev_name != want or (i == 0 and hprev != _ZERO.hex()):
            if prev_name and prev_name in named:
                problems.append(Problem(r.name, f"rotated files out of order: it follows "
                                        f"{prev_name}" + (f", not {want}" if want else "")))
            elif i == 0:
                if not allow_pruned:
                    problems.append(Problem(r.name, "the chain starts earlier, in "
                                            f"{prev_name or 'an earlier file'}, which is "
                                            "missing (removed, or pruned by max-backups: "
                                            "--allow-pruned accepts that)"))
            elif not prev_name:
                problems.append(Problem(r.name, "rotated files out of order: it starts the "
                                        f"chain but comes after {want}"))
            else:
                problems.append(Problem(prev_name, "rotated file missing (named by "
                                        f"{r.name} as its predecessor)"))
            continue
        if i == 0:
            if r.first_epoch is not None and r.first_epoch != verifier.key_epoch:
                # a chain begins under the key it was made from: a genesis at a later epoch
                # is a history replaced by someone holding a later (stolen) key
                problems.append(Problem(r.name, f"the chain starts at key epoch "
                                        f"{r.first_epoch}, not at the key's epoch "
                                        f"{verifier.key_epoch}: earlier files were removed "
                                        "or the history was replaced"))
            continue
        before = results[i - 1]
        if before.last_value is not None and (hprev != before.last_value.hex()
                                               or r.first_seq != before.last_seq + 1):
            problems.append(Problem(r.name, f"does not continue {want} (its last records "
                                    "were removed or replaced)"))
        elif (before.last_epoch is not None and r.first_epoch is not None
              and not 0 <= r.first_epoch - before.last_epoch <= 1):
            problems.append(Problem(r.name, f"key epoch {r.first_epoch} after "
                                    f"{before.last_epoch}: rewritten with a later key"))
        if not before.sealed and not before.problems:
            problems.append(Problem(before.name, "not sealed before rotation: its last "
                                    "lines may have been removed"))
    if results and not results[-1].sealed and not results[-1].problems and not allow_unsealed:
        problems.append(Problem(results[-1].name, "not sealed: the agent is still writing it "
                                "or stopped uncleanly, so lines at its end may have been "
                                "removed (--allow-unsealed accepts that for a live file)"))
    return Report(results, problems)


__all__ = ["CHAIN_SUFFIX", "ChainWriter", "IntegrityError", "KeyRatchet", "Problem",
           "Report", "Verifier", "chain_path", "export_set", "read_key_file",
           "verify_paths", "write_key_file"]
