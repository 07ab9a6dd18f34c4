"""FileType / NotFileType matchArgs with the real BPF objects: the type of a file or path
argument's inode (i_mode & S_IFMT) against Tetragon's names.

Everywhere: a raw tracepoint (``filelock/flock_lock_inode``) whose ``struct file_lock *``
argument is followed with ``resolve`` to its ``struct file *``, flock(2) on a regular
file, a directory, a FIFO and a character device. On kernel functions, which need
kprobes or BPF trampolines (on the hardened host these skip with the probe's reason,
inside the kernel lane they must run): a ``file`` argument (``security_file_open``) and a
``path`` argument (``security_inode_getattr``); with BPF LSM, an LSM hook's ``file``
(``file_open``)."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lane import need
from tests.kernel.test_new_types import _policy
from tests.kernel.test_policies import Env, _body


@pytest.fixture
def files() -> Iterator[dict[str, Path]]:
    """A regular file, a directory and a FIFO in a fresh directory, and /dev/null."""
    d = Path("/tmp") / f"vft-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / "reg").write_text("x")
    (d / "dir").mkdir()
    os.mkfifo(d / "fifo")
    try:
        yield {"reg": d / "reg", "dir": d / "dir", "fifo": d / "fifo",
               "chr": Path("/dev/null")}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _open(p: Path) -> int:
    # O_RDWR | O_NONBLOCK: a FIFO opens without a peer
    flags = os.O_RDONLY if p.is_dir() else os.O_RDWR | os.O_NONBLOCK
    return os.open(p, flags)


def _flock_all(files: dict[str, Path]) -> None:
    for p in files.values():
        fd = _open(p)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _seen(evs: list[object], files: dict[str, Path], key: str) -> set[str]:
    """Names (reg, dir, ...) of the test's files among the events' first argument."""
    by_path = {str(p): name for name, p in files.items()}
    paths = {_body(e)["args"][0][key]["path"] for e in evs}  # type: ignore[arg-type]
    return {by_path[p] for p in paths if p in by_path}


def _file_lock_file() -> str:
    """struct file_lock's file: in its file_lock_core `c` since Linux 6.9."""
    from vigil.policy.kbtf import kernel_btf
    btf = kernel_btf()
    try:
        btf.resolve(btf.struct_id("file_lock"), "c.flc_file")
    except Exception:  # an older layout
        return "fl_file"
    return "c.flc_file"


def _flock_policy(name: str, op: str, values: str) -> str:
    return _policy(name, f"""  tracepoints:
  - subsystem: filelock
    event: flock_lock_inode
    raw: true
    args:
    - index: 1
      type: file
      resolve: {_file_lock_file()}
    selectors:
    - matchArgs:
      - index: 1
        operator: {op}
        values: {values}
""")


@pytest.mark.parametrize("op,values,want", [
    ("FileType", "[dir, fifo]", {"dir", "fifo"}),
    ("FileType", "[regular, char]", {"reg", "chr"}),
    ("NotFileType", "[reg]", {"dir", "fifo", "chr"}),
    ("NotFileType", "[dir, pipe, chr, reg]", set()),
])
def test_raw_tracepoint_file_type(env: Env, files: dict[str, Path], op: str, values: str,
                                  want: set[str]) -> None:
    """flock(2) on each kind of file: only the listed types (FileType) or the others
    (NotFileType) report, each with its path."""
    with env.policy(_flock_policy("vft-flock", op, values)) as info:
        assert "raw_tracepoint flock_lock_inode" in info.info
        evs = env.run(lambda: _flock_all(files), {os.getpid()})
    assert _seen(evs, files, "file_arg") == want


def test_file_type_decided_before_the_read(env: Env, files: dict[str, Path]) -> None:
    """A FileType filter that no file passes stops the call before anything is read: no
    event at all from this process, whatever it locks."""
    with env.policy(_flock_policy("vft-none", "FileType", "[blk, sock]")):
        evs = env.run(lambda: _flock_all(files), {os.getpid()})
    assert evs == []


# ---- kernel functions (kprobes / fentry: the kernel lane) ------------------------------

def test_kprobe_file_argument_file_type(env: Env, kfuncs: None,
                                        files: dict[str, Path]) -> None:
    """security_file_open(struct file *): FileType on each kind of file opened."""
    pol = _policy("vft-open", """  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: FileType
        values: [dir, chr]
""")

    def trigger() -> None:
        for p in files.values():
            os.close(_open(p))
    with env.policy(pol):
        evs = env.run(trigger, {os.getpid()})
    assert _seen(evs, files, "file_arg") == {"dir", "chr"}


def test_kprobe_path_argument_not_file_type(env: Env, kfuncs: None,
                                            files: dict[str, Path]) -> None:
    """security_inode_getattr(const struct path *): NotFileType on each kind of file
    stat'ed."""
    pol = _policy("vft-getattr", """  kprobes:
  - call: security_inode_getattr
    syscall: false
    args:
    - index: 0
      type: path
    selectors:
    - matchArgs:
      - index: 0
        operator: NotFileType
        values: [reg, dir]
""")

    def trigger() -> None:
        for p in files.values():
            os.stat(p)
    with env.policy(pol):
        evs = env.run(trigger, {os.getpid()})
    assert _seen(evs, files, "path_arg") == {"fifo", "chr"}


def test_lsm_hook_file_type(env: Env, files: dict[str, Path]) -> None:
    """lsmhooks file_open(struct file *): FileType picks the FIFO among the files opened."""
    need("lsm")
    pol = _policy("vft-lsm", """  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: FileType
        values: [fifo]
""")

    def trigger() -> None:
        for p in files.values():
            os.close(_open(p))
    with env.policy(pol):
        env.pipe.handle(env.base.ring.drain())
        trigger()
        time.sleep(0.3)
        evs = [e for e in env.pipe.handle(env.base.ring.drain())
               if next(iter(e)) == "process_lsm" and _body(e)["process"]["pid"] == os.getpid()]
    assert _seen(evs, files, "file_arg") == {"fifo"}
