"""Coverage of issue #3's matrix in the real kernel (see docs/policies.md "Test coverage").

Each test loads real policies through the real PolicyManager, runs real triggers and
asserts the exact events — and that the calls that must not match produce none. Helpers
and the module's Env come from test_policies.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.test_policies import (CAT, ME, PY, Env, _body, _cat, _my_links,  # noqa: F401
                                        env, opened_paths, openat_policy, tdir, touch,
                                        uprobe_target)
from vigil.errors import PolicyError

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
NR_OPENAT, NR_PRCTL = 257, 157


def policy(name: str, body: str) -> str:
    return (f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
            f"  name: {name}\nspec:\n{body}")


def args_of(evs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [_body(e)["args"] for e in evs]


# ---- argument types ---------------------------------------------------------------------

SEEK_SET, SEEK_HOLE = 0, 4
BIG = 0x1_8000_8085  # low byte 0x85, low 16 bits 0x8085, low 32 bits 0x80008085
_INT_TYPES = {
    # type: (rendering of BIG, rendering of -2)
    "int": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "sint32": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "int32": ({"int_arg": -2147450747}, {"int_arg": -2}),
    "sint16": ({"int_arg": -32635}, {"int_arg": -2}),
    "int16": ({"int_arg": -32635}, {"int_arg": -2}),
    "sint8": ({"int_arg": -123}, {"int_arg": -2}),
    "int8": ({"int_arg": -123}, {"int_arg": -2}),
    "uint32": ({"uint_arg": 0x80008085}, {"uint_arg": 0xFFFFFFFE}),
    "uint16": ({"uint_arg": 0x8085}, {"uint_arg": 0xFFFE}),
    "uint8": ({"uint_arg": 0x85}, {"uint_arg": 0xFE}),
    "long": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "sint64": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "int64": ({"long_arg": str(BIG)}, {"long_arg": "-2"}),
    "ulong": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
    "uint64": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
    "size_t": ({"size_arg": str(BIG)}, {"size_arg": str((1 << 64) - 2)}),
}
_GROUPS = [list(_INT_TYPES)[i:i + 4] for i in range(0, len(_INT_TYPES), 4)]


@pytest.mark.parametrize("types", _GROUPS, ids=["-".join(g) for g in _GROUPS])
def test_integer_types(env: Env, tdir: Path, types: list[str]) -> None:
    """lseek's off_t argument read as each integer type (truncation and sign), filtered on
    whence: the SEEK_SET call must not produce an event."""
    args = "".join(f"    - index: 1\n      type: {t}\n" for t in types)
    pol = policy("vc-ints", f"""  kprobes:
  - call: sys_lseek
    args:
    - index: 2
      type: uint32
{args}    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["{SEEK_HOLE}"]
""")
    f = tdir / "seek"
    f.write_bytes(b"x")
    fd = os.open(f, os.O_RDONLY)

    def trigger() -> None:
        for off, whence in ((BIG, SEEK_HOLE), (0, SEEK_SET), (-2, SEEK_HOLE)):
            try:
                os.lseek(fd, off, whence)
            except OSError:
                pass
    try:
        with env.policy(pol):
            evs = env.run(trigger, ME)
    finally:
        os.close(fd)
    assert args_of(evs) == [
        [{"uint_arg": SEEK_HOLE}] + [_INT_TYPES[t][0] for t in types],
        [{"uint_arg": SEEK_HOLE}] + [_INT_TYPES[t][1] for t in types]]


def test_capability_arg(env: Env) -> None:
    """prctl(PR_CAPBSET_READ, cap): the cap as capability_arg, filtered by CAP_ name."""
    pol = policy("vc-cap", f"""  kprobes:
  - call: sys_prctl
    args:
    - index: 0
      type: int
    - index: 1
      type: capability
      label: cap
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["23"]
      - index: 1
        operator: Equal
        values: ["CAP_SYS_ADMIN", "CAP_BPF"]
""")

    def trigger() -> None:
        for cap in (21, 12, 39):  # CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF
            LIBC.prctl(23, cap, 0, 0, 0)
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert args_of(evs) == [
        [{"int_arg": 23}, {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}, "label": "cap"}],
        [{"int_arg": 23}, {"capability_arg": {"value": 39, "name": "CAP_BPF"}, "label": "cap"}]]


def test_filename_and_user_strings_read_safely(env: Env, tdir: Path) -> None:
    """`filename` is a user string like `string`; an unreadable pointer and a path longer
    than the capture limit are handled without losing the event."""
    pol = policy("vc-strings", f"""  kprobes:
  - call: sys_openat
    args:
    - index: 1
      type: filename
      label: name
    - index: 2
      type: int
    selectors:
    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["{os.O_NOFOLLOW | os.O_CLOEXEC}"]
""")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC  # the marker the selector matches
    long_name = "/" + "a" * 5000

    def openat(path: Any, fl: int) -> None:
        LIBC.syscall(NR_OPENAT, -100, path, fl, 0)

    def trigger() -> None:
        openat(ctypes.c_char_p(str(tdir / "f").encode()), flags)
        openat(ctypes.c_void_p(8), flags)  # EFAULT for the kernel; empty for Vigil
        openat(ctypes.c_char_p(long_name.encode()), flags)  # ENAMETOOLONG
        openat(ctypes.c_char_p(str(tdir / "g").encode()), 0)  # other flags: no event
    with env.policy(pol):
        evs = env.run(trigger, ME)
    assert args_of(evs) == [
        [{"string_arg": str(tdir / "f"), "label": "name"}, {"int_arg": flags}],
        [{"string_arg": "", "label": "name"}, {"int_arg": flags}],
        [{"string_arg": long_name[:4095], "label": "name"}, {"int_arg": flags}]]
