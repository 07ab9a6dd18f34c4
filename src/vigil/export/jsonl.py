"""Size-rotated JSON-lines export file with Tetragon/lumberjack-compatible backup names.

The export file holds security events, so it is always created with an exact
mode (default 0600, see the threat model) that the process umask cannot widen,
and a pre-existing file with wider permissions is tightened.

Rotation follows lumberjack conventions so existing log shippers keep working:
``/var/log/vigil/vigil.log`` is renamed to ``vigil-2026-11-23T03-51-07.123.log``
(UTC timestamp of the rotation), optionally gzipped to ``...log.gz``, and the
oldest backups beyond ``max_backups`` are deleted (``max_backups=0`` keeps all,
as in lumberjack).

Threading: one writer thread calls :meth:`RotatingFileWriter.write_lines`; other
threads may call :meth:`reopen`/:meth:`rotate`/:meth:`close` (all serialised by
a lock).  Do not call these methods from a signal handler: set a flag there and
call :meth:`reopen` from a normal thread, otherwise the handler may deadlock on
the lock held by the interrupted main thread.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vigil.export.integrity import ChainWriter

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_PERM = 0o600
# Tetragon masks export-file-perm with `& 0777 &^ 0113`: exec bits and other-write
# are never granted.
PERM_FORBIDDEN_BITS = 0o113
DIR_PERM = 0o700

_OPEN_FLAGS = os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_TS_FORMAT = "%Y-%m-%dT%H-%M-%S"
_TS_REGEX = r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})"
_TMP_SUFFIX = ".tmp"


def mask_perm(perm: int) -> int:
    """Apply Tetragon's export-file permission mask (no exec bits, no other-write)."""
    return perm & 0o777 & ~PERM_FORBIDDEN_BITS


class RateLimitedLog:
    """Log at most one message per ``interval`` seconds, reporting how many were suppressed.

    Used on error paths that can fire once per event (ENOSPC, broken pipe) so a
    full disk does not also flood the agent's own log.  Races between threads
    only affect the suppressed count, so no lock is taken.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` at ``level`` unless rate-limited; return whether it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            msg = f"{msg} (%d similar messages suppressed)"
            args = (*args, self._suppressed)
        self._last = now
        self._suppressed = 0
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True


@dataclass(frozen=True)
class BackupNaming:
    """Lumberjack backup naming for one export path: ``<dir>/<stem>-<timestamp><ext>[.gz]``."""

    directory: str
    stem: str
    ext: str

    @classmethod
    def for_path(cls, path: str) -> BackupNaming:
        """Split ``path`` into directory, stem and extension (``vigil.log`` -> ``vigil``, ``.log``)."""
        directory, base = os.path.split(path)
        stem, ext = os.path.splitext(base)
        return cls(directory, stem, ext)

    @staticmethod
    def timestamp(ts: float) -> str:
        """Format epoch seconds as lumberjack's UTC ``2006-01-02T15-04-05.000``."""
        # Decimal(repr()) avoids float artefacts (…07.123 must not become .122).
        millis = int(Decimal(repr(float(ts))) * 1000)
        secs, ms = divmod(millis, 1000)
        stamp = datetime.fromtimestamp(secs, tz=timezone.utc).strftime(_TS_FORMAT)
        return f"{stamp}.{ms:03d}"

    def backup_path(self, ts: float) -> str:
        """Return the (uncompressed) backup path for a rotation at epoch ``ts``."""
        return os.path.join(self.directory, f"{self.stem}-{self.timestamp(ts)}{self.ext}")

    def pattern(self) -> re.Pattern[str]:
        """Regex matching backup basenames; group 1 = timestamp, group 2 = ``.gz`` or None."""
        return re.compile(
            re.escape(self.stem) + "-" + _TS_REGEX + re.escape(self.ext) + r"(\.gz)?\Z"
        )

    def list_backups(self) -> list[tuple[str, str]]:
        """Return ``(timestamp, basename)`` for every backup file, oldest first."""
        pat = self.pattern()
        found = []
        try:
            names = os.listdir(self.directory or ".")
        except OSError:
            return []
        for name in names:
            m = pat.match(name)
            if m:
                found.append((m.group(1), name))
        found.sort()
        return found


def ensure_dir(directory: str) -> None:
    """Create ``directory`` and missing parents with mode 0700 (existing dirs are left alone).

    ``os.makedirs`` only applies ``mode`` to the leaf, so parents are created one by one.
    """
    missing = []
    cur = os.path.abspath(directory)
    while not os.path.isdir(cur):
        missing.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_PERM)
        except FileExistsError:
            continue
        os.chmod(d, DIR_PERM)  # umask may have narrowed it; keep exactly 0700


def open_private(path: str, perm: int) -> int:
    """Open ``path`` for appending with mode exactly ``perm``; return the fd.

    Refuses symlinks (O_NOFOLLOW) and non-regular files so a planted link cannot
    redirect root's writes (or the chmod) to another file.  A wider pre-existing
    mode is tightened with a warning.
    """
    fd = os.open(path, _OPEN_FLAGS, perm)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "export path is not a regular file", path)
        mode = stat.S_IMODE(st.st_mode)
        if mode != perm:
            if mode & ~perm:
                log.warning(
                    "export file %s had permissions %04o, tightening to %04o", path, mode, perm
                )
            os.fchmod(fd, perm)
    except BaseException:
        os.close(fd)
        raise
    return fd


def compress_file(src: str, perm: int) -> str:
    """Gzip ``src`` to ``src + ".gz"`` (created with ``perm``) and delete ``src``.

    Writes to a temporary name and renames it, so a crash never leaves a
    truncated ``.gz`` next to a deleted original.
    """
    dst = src + ".gz"
    tmp = dst + _TMP_SUFFIX
    try:
        os.unlink(tmp)  # leftover from a crash
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, perm)
    try:
        os.fchmod(fd, perm)
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as raw:
            fd = -1  # owned by `raw` now
            with gzip.GzipFile(filename=os.path.basename(src), mode="wb", fileobj=raw) as gz:
                shutil.copyfileobj(fin, gz, 1024 * 1024)
        os.rename(tmp, dst)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.unlink(src)
    return dst


class _Maintenance:
    """Single background thread compressing backups then pruning old ones.

    One thread means at most one compression at a time; requests made while it
    is busy are coalesced into one more pass.
    """

    def __init__(self, job: Callable[[], None], name: str) -> None:
        self._job = job
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for one more maintenance pass (cheap; never blocks on the job)."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until all passes requested so far completed; return False on timeout."""
        with self._cond:
            target = self._requested
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def stop(self, timeout: float | None) -> bool:
        """Finish pending passes and stop the thread; return False if it did not finish in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._done or self._stopping)
                if self._requested == self._done:
                    return  # stopping and nothing pending
                target = self._requested
            try:
                self._job()
            except Exception:  # job logs its own errors; never kill the thread
                log.exception("export file maintenance failed")
            with self._cond:
                self._done = target
                self._cond.notify_all()


class RotatingFileWriter:
    """Append JSON lines to a private (0600) file, rotating it lumberjack-style by size.

    Errors while writing (ENOSPC, EIO, ...) are counted in ``write_errors`` and
    logged rate-limited, never raised from :meth:`write_lines`: losing export
    lines must not stop event processing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size_mb: float = 10,
        max_backups: int = 5,
        compress: bool = False,
        perm: int = DEFAULT_PERM,
        clock: Callable[[], float] = time.time,
        integrity: ChainWriter | None = None,
    ) -> None:
        """Open (creating if needed) ``path``; raises OSError if it cannot be opened.

        ``max_size_mb`` may be fractional (tests); ``max_backups=0`` keeps every
        backup (lumberjack semantics). ``integrity`` keeps a keyed hash chain of the
        lines in a ``.chain`` file next to each file (``vigil.export.integrity``).
        """
        if max_size_mb <= 0:
            raise ValueError("max_size_mb must be positive")
        if max_backups < 0:
            raise ValueError("max_backups must be >= 0")
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max(1, int(max_size_mb * MIB))
        self.max_backups = max_backups
        # seconds a file is written before it is rotated (0: by size only); settable at
        # run time (EventLogService.SetEventLogParams), checked at each write
        self.rotation_interval = 0.0
        self.compress = compress
        self.perm = mask_perm(perm)
        self._clock = clock
        self._naming = BackupNaming.for_path(self.path)
        self._lock = threading.Lock()
        self._errlog = RateLimitedLog(log)
        self._fd: int | None = None
        self._size = 0
        self._needs_newline = False  # last write stopped mid-line
        self._closed = False
        self._chain = integrity
        self.lines_written = 0
        self.bytes_written = 0
        self.write_errors = 0
        self.lines_dropped = 0
        self.rotations = 0
        self.compress_errors = 0
        ensure_dir(self._naming.directory)
        self._open()
        self._maint = _Maintenance(self._maintain, "vigil-export-gzip") if compress else None
        self._after_rotate()  # compress/prune backups left by a previous run

    # -- public API ---------------------------------------------------------

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Append each line plus ``\\n``; one ``os.write`` per batch unless it rotates.

        Lines must not contain newlines themselves (orjson output does not).
        """
        if not lines:
            return
        with self._lock:
            if self._closed:
                self.lines_dropped += len(lines)
                self._errlog(logging.WARNING, "export file %s: write after close", self.path)
                return
            if self._fd is None and not self._try_reopen():
                self.lines_dropped += len(lines)
                return
            if (self.rotation_interval > 0 and self._size > 0
                    and time.monotonic() - self._opened_at >= self.rotation_interval):
                self._rotate()
                if self._fd is None:
                    self.lines_dropped += len(lines)
                    return
            self._write_batch(lines)

    def reopen(self) -> None:
        """Close and reopen the path (after logrotate moved it away, on SIGHUP)."""
        with self._lock:
            if self._closed:
                return
            self._close_fd()
            if self._chain is not None:
                self._chain.seal()
                self._chain.close()
            self._try_reopen()

    def set_params(self, *, max_size_mb: float | None = None,
                   rotation_interval: float | None = None,
                   max_backups: int | None = None) -> None:
        """Change the rotation parameters of the open file at run time; the next write
        applies them. Raises ValueError for a non-positive size or negative counts."""
        if max_size_mb is not None and max_size_mb <= 0:
            raise ValueError("max_size must be positive")
        if rotation_interval is not None and rotation_interval < 0:
            raise ValueError("rotation_interval must not be negative")
        if max_backups is not None and max_backups < 0:
            raise ValueError("max_backups must be >= 0")
        with self._lock:
            if max_size_mb is not None:
                self.max_bytes = max(1, int(max_size_mb * MIB))
            if rotation_interval is not None:
                self.rotation_interval = rotation_interval
            if max_backups is not None:
                self.max_backups = max_backups

    def rotate(self) -> None:
        """Rotate now (e.g. for a time-based rotation interval); no-op on an empty file."""
        with self._lock:
            if not self._closed and self._fd is not None and self._size > 0:
                self._rotate()

    def flush(self, sync: bool = False) -> None:
        """Lines go straight to the kernel, so this only matters with ``sync=True`` (fdatasync)."""
        with self._lock:
            if sync and self._fd is not None:
                try:
                    os.fdatasync(self._fd)
                except OSError as e:
                    self._count_error("fdatasync", e)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for pending background compression/pruning; return False on timeout."""
        return True if self._maint is None else self._maint.wait_idle(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Close the file and let a running compression finish (up to ``timeout`` s)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_fd()
            if self._chain is not None:
                self._chain.seal()
                self._chain.close()
        if self._maint is not None and not self._maint.stop(timeout):
            log.warning("export file %s: backup compression still running at close", self.path)

    @property
    def size(self) -> int:
        """Current size in bytes of the active file as tracked by the writer."""
        return self._size

    def __enter__(self) -> RotatingFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with self._lock held) ------------------------------

    def _open(self) -> None:
        fd = open_private(self.path, self.perm)
        if self._chain is not None:
            try:
                self._chain.open(self.path, self.perm)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        self._opened_at = time.monotonic()  # for rotation_interval (the clock names files)
        self._size = os.fstat(fd).st_size
        self._needs_newline = False

    def _try_reopen(self) -> bool:
        try:
            self._open()
            return True
        except OSError as e:
            self._count_error("open", e)
            return False

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as e:
                self._count_error("close", e)

    def _count_error(self, what: str, err: OSError) -> None:
        self.write_errors += 1
        self._errlog(logging.ERROR, "export file %s: %s failed: %s", self.path, what, err)

    def _write_batch(self, lines: Sequence[bytes]) -> None:
        """Write ``lines`` in as few chunks as rotation boundaries allow."""
        total = sum(map(len, lines)) + len(lines)
        if self._size + total <= self.max_bytes:  # no rotation inside the batch
            self._emit(lines)
            return
        chunk: list[bytes] = []
        chunk_len = 0
        may_rotate = True
        for i, line in enumerate(lines):
            n = len(line) + 1
            used = self._size + chunk_len
            if may_rotate and used > 0 and used + n > self.max_bytes:
                self._emit(chunk)
                chunk, chunk_len = [], 0
                may_rotate = self._rotate()  # don't retry a failing rename per line
                if self._fd is None:  # rotated but the new file could not be opened
                    self.lines_dropped += len(lines) - i
                    return
            chunk.append(line)
            chunk_len += n
        self._emit(chunk)

    def _emit(self, lines: Sequence[bytes]) -> None:
        """Write ``lines``, each followed by a newline, with a single write loop."""
        if not lines or self._fd is None:
            return
        nlines = len(lines)
        prefix = self._needs_newline  # the last write stopped mid-line: end that line first
        data = b"\n".join([b"", *lines, b""] if prefix else [*lines, b""])
        done = 0
        try:
            done = os.write(self._fd, data)
            if done < len(data):
                view = memoryview(data)
                while done < len(data):
                    done += os.write(self._fd, view[done:])
        except OSError as e:
            self._count_error("write", e)
        self._size += done
        self.bytes_written += done
        if done == len(data):
            self._needs_newline = False
            self.lines_written += nlines
            if self._chain is not None:
                self._chain.lines(lines)
            return
        start = 1 if prefix else 0
        written = data[start:max(done, start)].count(b"\n")
        if self._chain is not None:
            self._chain.lines(lines[:written])
        self.lines_written += written
        self.lines_dropped += nlines - written
        self._needs_newline = done > 0 and data[done - 1:done] != b"\n"

    def _unique_backup(self) -> str:
        """Backup name for now; bumps the millisecond if that name is taken (fast rotations)."""
        ts = self._clock()
        for i in range(10_000):
            cand = self._naming.backup_path(ts + i / 1000)
            if not os.path.lexists(cand) and not os.path.lexists(cand + ".gz"):
                return cand
        raise OSError(errno.EEXIST, "no free backup name", cand)

    def _rotate(self) -> bool:
        """Rename the active file to a backup and open a fresh one; False if the rename failed."""
        chain = self._chain
        try:
            backup = self._unique_backup()
            if chain is not None:
                chain.seal()
            os.rename(self.path, backup)
        except OSError as e:
            self._count_error("rotate", e)
            if chain is not None:  # sealed but not rotated: continue in a new segment
                chain.close()
                try:
                    chain.open(self.path, self.perm)
                except OSError as err:
                    self._count_error("integrity chain", err)
            return False
        self._close_fd()
        if chain is not None:
            chain.rotated(backup)
        self.rotations += 1
        self._try_reopen()
        self._after_rotate()
        return True

    def _after_rotate(self) -> None:
        if self._maint is not None:
            self._maint.request()
        else:
            self._prune()

    def _maintain(self) -> None:
        """Background pass: gzip uncompressed backups, then prune."""
        for _, name in self._naming.list_backups():
            if name.endswith(".gz"):
                continue
            src = os.path.join(self._naming.directory, name)
            try:
                compress_file(src, self.perm)
            except OSError as e:
                self.compress_errors += 1
                self._errlog(logging.ERROR, "export file: compressing %s failed: %s", src, e)
        self._prune()

    def _prune(self) -> None:
        """Delete the oldest backups beyond ``max_backups`` (0 keeps all).

        A backup and its ``.gz`` sibling (same timestamp) count as one backup.
        """
        if self.max_backups <= 0:
            return
        by_ts: dict[str, list[str]] = {}
        for ts, name in self._naming.list_backups():
            by_ts.setdefault(ts, []).append(name)
        stale = sorted(by_ts)[: -self.max_backups]
        for ts in stale:
            if self._chain is not None:  # a pruned backup's chain file goes with it
                by_ts[ts].append(f"{self._naming.stem}-{ts}{self._naming.ext}.chain")
            for name in by_ts[ts]:
                try:
                    os.unlink(os.path.join(self._naming.directory, name))
                except FileNotFoundError:
                    pass
                except OSError as e:
                    self._errlog(logging.ERROR, "export file: removing %s failed: %s", name, e)
