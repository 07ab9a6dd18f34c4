"""Policy-hook records (VG_MSG_GENERIC_*) -> Tetragon ``KprobeArgument`` dicts. Pure.

The record says which hook fired, which selector matched, the action, the return value
and each argument's bytes; the hook's ``ArgSpec`` list (from the policy compiler) says
how to render each one (§2.5 of the interface reference).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from vigil.abi import _generated as abi
from vigil.events.decode import DecodeError
from vigil.events.encode import CAP_NAMES

_MSG = abi.VG_GENERIC_MSG
_IX = abi.VG_GENERIC_MSG_INDEX
_NARGS = int(abi.GenLimits.GEN_ARGS)
_I64 = struct.Struct("<q")

# Tetragon's KprobeAction names, by vg_action value.
ACTION_NAMES = {
    0: "KPROBE_ACTION_UNKNOWN", 1: "KPROBE_ACTION_POST", 3: "KPROBE_ACTION_SIGKILL",
    5: "KPROBE_ACTION_OVERRIDE", 9: "KPROBE_ACTION_NOPOST", 10: "KPROBE_ACTION_SIGNAL",
}
_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6"}


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """How to render one captured argument: ``out`` is the KprobeArgument variant."""

    out: str           # int | uint | long | size | string | bytes | file | sockaddr | capability | syscall64
    label: str = ""


@dataclass(frozen=True, slots=True)
class GenericRecord:
    op: int
    ktime: int
    pid: int
    tid: int
    hook_id: int
    selector: int
    action: int
    flags: int
    ret: int
    args: tuple[bytes, ...]
    orig_len: tuple[int, ...]

    @property
    def has_return(self) -> bool:
        return bool(self.flags & abi.GenFlag.RETURN)


def decode_generic(rec: bytes) -> GenericRecord:
    if len(rec) < _MSG.size:
        raise DecodeError(f"generic record of {len(rec)} bytes < {_MSG.size}")
    v = _MSG.unpack_from(rec)
    nargs = min(v[_IX["nargs"]], _NARGS)
    offs = v[_IX["arg_off"]:_IX["arg_off"] + _NARGS]
    lens = v[_IX["arg_len"]:_IX["arg_len"] + _NARGS]
    origs = v[_IX["orig_len"]:_IX["orig_len"] + _NARGS]
    tail = memoryview(rec)[_MSG.size:]
    args = []
    for i in range(nargs):
        if offs[i] + lens[i] > len(tail):
            raise DecodeError(f"argument {i} beyond the record")
        args.append(bytes(tail[offs[i]:offs[i] + lens[i]]))
    return GenericRecord(
        op=v[_IX["hdr.op"]], ktime=v[_IX["hdr.ktime"]], pid=v[_IX["pid"]], tid=v[_IX["tid"]],
        hook_id=v[_IX["hook_id"]], selector=v[_IX["selector"]], action=v[_IX["action"]],
        flags=v[_IX["flags"]], ret=_signed64(v[_IX["ret"]]),
        args=tuple(args), orig_len=tuple(origs[:nargs]))


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int(raw: bytes) -> int:
    return _I64.unpack(raw[:8].ljust(8, b"\0"))[0] if raw else 0


def render_arg(spec: ArgSpec, raw: bytes, orig_len: int = 0) -> dict[str, Any]:
    """One KprobeArgument dict (protojson shape), with ``label`` if the policy set one."""
    out = spec.out
    if out in ("int", "uint", "long", "size", "capability", "syscall64"):
        v = _int(raw)
        if out == "int":
            arg: dict[str, Any] = {"int_arg": ((v + (1 << 31)) % (1 << 32)) - (1 << 31)}
        elif out == "uint":
            arg = {"uint_arg": v % (1 << 32)}
        elif out == "long":
            arg = {"long_arg": str(v)}
        elif out == "size":
            arg = {"size_arg": str(v % (1 << 64))}
        elif out == "capability":
            name = CAP_NAMES[v] if 0 <= v < len(CAP_NAMES) else str(v)
            arg = {"capability_arg": {"value": v, "name": name}}
        else:
            arg = {"syscall_id": {"id": v % (1 << 32), "abi": "x64"}}
    elif out == "string":  # tracepoint strings may carry their NUL and padding
        arg = {"string_arg": raw.split(b"\0", 1)[0].decode(errors="replace")}
    elif out == "file":
        arg = {"file_arg": {"path": raw.decode(errors="replace") or "/"}}
    elif out == "sockaddr":
        arg = {"sockaddr_arg": _sockaddr(raw)}
    else:  # bytes
        b64 = base64.b64encode(raw).decode()
        if orig_len > len(raw):
            arg = {"truncated_bytes_arg": {"bytes_arg": b64, "orig_size": str(orig_len)}}
        else:
            arg = {"bytes_arg": b64} if raw else {}
    if spec.label:
        arg["label"] = spec.label
    return arg


def _sockaddr(raw: bytes) -> dict[str, Any]:
    if len(raw) < 20:
        return {}
    family, port = struct.unpack_from("<HH", raw)
    out: dict[str, Any] = {"family": _FAMILIES.get(family, str(family))}
    if family == 2:
        out["addr"] = ".".join(str(b) for b in raw[4:8])
    elif family == 10:
        import ipaddress
        out["addr"] = str(ipaddress.IPv6Address(raw[4:20]))
    if port:
        out["port"] = port
    return out
