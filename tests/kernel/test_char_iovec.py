"""char_iovec arguments with the real BPF objects: the bytes of a struct iovec array
(user memory), the number of entries from the ``sizeArgIndex`` argument, concatenated.

Everywhere: syscall hooks (``sys_writev`` / ``sys_readv``, on tracepoints). On kernel
functions, which need kprobes or BPF trampolines (on the hardened host this skips with
the probe's reason, inside the kernel lane it must run): ``vfs_writev``."""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.test_new_types import _policy
from tests.kernel.test_policies import Env, _body


@pytest.fixture
def target() -> Iterator[Path]:
    d = Path("/tmp") / f"vio-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        yield d / "data"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _syscall_policy(name: str, call: str, target: Path, extra: str = "") -> str:
    return _policy(name, f"""  kprobes:
  - call: {call}
    syscall: true
    args:
    - index: 0
      type: fd
    - index: 1
      type: char_iovec
      sizeArgIndex: 3{extra}
    - index: 2
      type: uint32
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{target}"]
""")


def _bytes(arg: dict[str, object]) -> tuple[bytes, int | None]:
    """(the bytes, orig_size when truncated) of a bytes_arg / truncated_bytes_arg."""
    if "truncated_bytes_arg" in arg:
        t = arg["truncated_bytes_arg"]
        assert isinstance(t, dict)
        return base64.b64decode(t["bytes_arg"]), int(t["orig_size"])
    b = arg["bytes_arg"]
    assert isinstance(b, str)
    return base64.b64decode(b), None


def test_writev_entries_concatenated(env: Env, target: Path) -> None:
    """writev(fd, 3 entries): the entries' bytes one after the other, and the count."""
    parts = [b"hello ", b"iovec ", b"world"]
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with env.policy(_syscall_policy("vio-writev", "sys_writev", target)):
            evs = env.run(lambda: os.writev(fd, parts), {os.getpid()})
    finally:
        os.close(fd)
    assert len(evs) == 1
    args = _body(evs[0])["args"]
    assert args[0] == {"file_arg": {"path": str(target)}}
    assert _bytes(args[1]) == (b"hello iovec world", None)
    assert args[2] == {"uint_arg": 3}


def test_writev_reads_seven_entries(env: Env, target: Path) -> None:
    """Tetragon reads the first 7 entries of the array: an eighth is left out."""
    parts = [bytes([0x61 + k]) * 3 for k in range(8)]
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with env.policy(_syscall_policy("vio-writev8", "sys_writev", target)):
            evs = env.run(lambda: os.writev(fd, parts), {os.getpid()})
    finally:
        os.close(fd)
    assert len(evs) == 1
    assert _bytes(_body(evs[0])["args"][1]) == (b"".join(parts[:7]), None)


def test_readv_return_copy_stops_at_the_return_value(env: Env, target: Path) -> None:
    """readv with returnCopy: read at return, the buffers as the call filled them, at most
    the return value's bytes in all (6 here, across two entries of 4 and 10 bytes)."""
    target.write_bytes(b"abcdef")
    fd = os.open(target, os.O_RDONLY)
    bufs = [bytearray(4), bytearray(10)]
    try:
        pol = _syscall_policy("vio-readv", "sys_readv", target, "\n      returnCopy: true")
        with env.policy(pol):
            evs = env.run(lambda: os.readv(fd, bufs), {os.getpid()})
    finally:
        os.close(fd)
    assert len(evs) == 1
    assert _bytes(_body(evs[0])["args"][1]) == (b"abcdef", None)


def test_char_iovec_string_filter(env: Env, target: Path) -> None:
    """matchArgs on a char_iovec argument compare its bytes as a char_buf's: Prefix."""
    pol = _policy("vio-prefix", """  kprobes:
  - call: sys_writev
    syscall: true
    args:
    - index: 1
      type: char_iovec
      sizeArgIndex: 3
    - index: 2
      type: uint32
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["vio-marker:"]
""")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)

    def trigger() -> None:
        os.writev(fd, [b"other", b" bytes"])
        os.writev(fd, [b"vio-", b"marker:", b" yes"])
    try:
        with env.policy(pol):
            evs = env.run(trigger, {os.getpid()})
    finally:
        os.close(fd)
    assert [_bytes(_body(e)["args"][0])[0] for e in evs] == [b"vio-marker: yes"]


# ---- kernel functions (kprobes / fentry: the kernel lane) ------------------------------

def test_vfs_writev_char_iovec(env: Env, kfuncs: None, target: Path) -> None:
    """vfs_writev(file, const struct iovec __user *vec, vlen, ...): the user iovec array
    a writev passes down, as on a syscall hook, with the file written."""
    pol = _policy("vio-vfs-writev", """  kprobes:
  - call: vfs_writev
    syscall: false
    args:
    - index: 0
      type: file
    - index: 1
      type: char_iovec
      sizeArgIndex: 3
    - index: 2
      type: uint64
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["vio-kfunc:"]
""")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with env.policy(pol):
            evs = env.run(lambda: os.writev(fd, [b"vio-kfunc:", b" one", b" two"]),
                          {os.getpid()})
    finally:
        os.close(fd)
    assert len(evs) == 1
    args = _body(evs[0])["args"]
    assert args[0] == {"file_arg": {"path": str(target)}}
    assert _bytes(args[1]) == (b"vio-kfunc: one two", None)
    assert args[2] == {"size_arg": "3"}
