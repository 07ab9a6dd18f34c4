"""Generated straight-line encoders for the common shape of events (the GetEvents hot path).

``vigil.server.convert.EventEncoder`` interprets the message descriptors field by field;
that costs ~20 us per event here, too much for 100k events/s. This module generates,
once per message type, a Python function that encodes a dict holding exactly the
common representations (snake_case keys, ``str`` strings, ``int`` integers, ``bool``
bools, enum names, RFC 3339 ``...Z`` timestamps, ``int`` wrapper values, nested dicts and
lists) with the field keys as constants, in field-number order.

Anything else (a camelCase or unknown key, an int64 given as a string, a value of the
wrong type, a string that is not valid UTF-8, a map or packed field...) raises
:class:`Slow`, and the caller encodes the whole event again with the interpreting
encoder: the bytes are the same either way (tests compare both on every sample event),
the fast path only has less to decide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor as _d

_T = _d.FieldDescriptor


class Slow(Exception):
    """This value is not in the fast path's shape: use the general encoder."""


_SV = [bytes([i]) for i in range(128)]
_V_MAX = 1 << 14
# Every varint below 2**14 (one or two bytes: message lengths, most ports, uids, small
# pids), so generated code writes them with one list index. With _W and _LO below, about
# 2 MiB of the agent's memory: built (``build_tables``) when the first encoder is made or
# the first number encoded, so an agent nobody streams events from never holds them.
_V: list[bytes] = []
# The body of an integer wrapper (UInt32Value...) of a small value, length first.
_W: list[bytes] = []
# The low 14 bits of a larger number: two bytes, both with the continuation bit.
_LO: list[bytes] = []
_TABLES_LOCK = threading.Lock()
# Small negative numbers (AT_FDCWD, -errno return values) take 10 bytes: cached.
_NEG: dict[int, bytes] = {}


def build_tables() -> None:
    """Fill _V, _W and _LO (once; each list appears whole to other threads)."""
    with _TABLES_LOCK:
        if _LO:
            return
        v = _SV + [bytes((n & 0x7F | 0x80, n >> 7)) for n in range(128, _V_MAX)]
        _W[:] = [b"\x00"] + [bytes((1 + len(v[n]), 8)) + v[n] for n in range(1, _V_MAX)]
        _V[:] = v
        _LO[:] = [bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(_V_MAX)]


def _varint(n: int) -> bytes:
    if not _LO:
        build_tables()
    if 0 <= n < _V_MAX:
        return _V[n]
    if 0 < n < 1 << 28:  # pids, nanoseconds: two table lookups
        return _LO[n & 0x3FFF] + _V[n >> 14]
    if n < 0:
        if n >= -65536:
            b = _NEG.get(n)
            if b is None:
                b = _NEG[n] = _varint(n + (1 << 64))
            return b
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


# The one varint writer of the server (the general encoder in convert.py uses these too):
# base-128; negative numbers as 64-bit two's complement (10 bytes).
varint = _varint
field_key = _key


_SECONDS: dict[str, bytes] = {}
_SCALE = [10 ** (9 - i) for i in range(10)]


def _seconds(prefix: str) -> bytes:
    """The encoded seconds field of ``YYYY-MM-DDTHH:MM:SS`` (cached: a stream's events
    share few distinct seconds)."""
    secs = _SECONDS.get(prefix)
    if secs is None:
        y, m, day = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10])
        if not (1 <= m <= 12 and 1 <= day <= 31 and prefix[4] == "-" and prefix[7] == "-"
                and prefix[10] == "T" and prefix[13] == ":" and prefix[16] == ":"):
            raise Slow
        y -= m <= 2
        era = y // 400
        yoe = y - era * 400
        doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + day - 1
        days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
        n = (days * 86400 + int(prefix[11:13]) * 3600 + int(prefix[14:16]) * 60
             + int(prefix[17:19]))
        secs = b"\x08" + _varint(n) if n else b""
        if len(_SECONDS) > 8192:
            _SECONDS.clear()
        _SECONDS[prefix] = secs
    return secs


# The last timestamp encoded (an exit event carries the same time twice); the initial
# entry is a true one.
_LAST_TS: tuple[str, bytes] = ("1970-01-01T00:00:00Z", b"")


def timestamp(s: Any) -> bytes:
    """Timestamp message body of ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``."""
    global _LAST_TS
    if not _LO:
        build_tables()
    last = _LAST_TS
    if last[0] == s and s.__class__ is str:
        return last[1]
    out = _SECONDS.get(s[:19])  # only str prefixes are stored, each validated
    n = len(s)
    if out is not None and n == 30 and s[29] == "Z" and s[19] == ".":
        frac = s[20:29]  # nanoseconds: the pipeline's common form
        if frac.isdigit():
            nanos = int(frac)
            if nanos >= _V_MAX:
                hi = nanos >> 14
                out += b"\x10" + _LO[nanos & 0x3FFF] + (_V[hi] if hi < _V_MAX else
                                                       _varint(hi))
            elif nanos:
                out += b"\x10" + _V[nanos]
            _LAST_TS = (s, out)
            return out
    if s.__class__ is not str or s[-1] != "Z" or s[10] != "T":
        raise Slow
    if out is None:
        out = _seconds(s[:19])
    if n > 20:
        if s[19] != "." or n > 30:
            raise Slow
        frac = s[20:-1]
        if not frac.isdigit():
            raise Slow
        nanos = int(frac) * _SCALE[n - 21]
        if nanos >= _V_MAX:  # < 10**9 < 2**30: low 14 bits, then the rest
            hi = nanos >> 14
            out += b"\x10" + _LO[nanos & 0x3FFF] + (_V[hi] if hi < _V_MAX else _varint(hi))
        elif nanos:
            out += b"\x10" + _V[nanos]
    elif n != 20:
        raise Slow
    _LAST_TS = (s, out)
    return out


# Messages with more fields than this get one generated function per key tuple
# (_compile_dispatch) instead of probing every field.
_DISPATCH_ABOVE = 8
# Per string field: encodings of up to this many distinct values this short, by value.
_STR_CACHE_N = 256
_STR_CACHE_LEN = 64
# Distinct key tuples remembered per message (each a generated function).
_MAX_SHAPES = 64

_INT_KINDS = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64}
_INT_WRAPPERS = {"google.protobuf.UInt32Value", "google.protobuf.Int32Value",
                 "google.protobuf.UInt64Value", "google.protobuf.Int64Value"}


class FastEncoders:
    """``encoder(descriptor)`` -> function(dict) -> message bytes (raises Slow).

    ``cached``: full names of messages whose encodings are looked up in / stored into
    ``cache`` (an identity cache with ``get(obj)`` / ``put(obj, length+payload)``)."""

    def __init__(self, cached: set[str], cache: Any) -> None:
        build_tables()
        self._fns: dict[str, Callable[[Any], bytes]] = {}
        self._shapes: dict[str, dict[tuple[str, ...], Any]] = {}
        self._cached = cached
        self._cache = cache

    def _env(self) -> dict[str, Any]:
        """The globals of generated encoder code."""
        return {"Slow": Slow, "_SV": _SV, "_V": _V, "_W": _W, "_varint": _varint,
                "timestamp": timestamp, "cache": self._cache, "cache_lookup": self._cache.lookup}

    def encoder(self, desc: _d.Descriptor) -> Callable[[Any], bytes]:
        fn = self._fns.get(desc.full_name)
        if fn is None:
            fn = self._compile(desc)
        return fn

    def _compile(self, desc: _d.Descriptor) -> Callable[[Any], bytes]:
        if len(desc.fields) > _DISPATCH_ABOVE:
            return self._compile_dispatch(desc)
        name = "enc_" + desc.full_name.replace(".", "_")
        env = self._env()
        lines = [f"def {name}(d):",
                 "    if d.__class__ is not dict and not isinstance(d, dict):",
                 "        raise Slow",
                 "    out = []",
                 "    n = 0"]
        # a placeholder first, so recursive message types find themselves
        fns, full = self._fns, desc.full_name
        fns[full] = lambda d: fns[full](d)
        for fd in sorted(desc.fields, key=lambda f: f.number):
            body = self._field(fd, env)
            lines.append(f"    v = d.get({fd.name!r})")
            lines.append("    if v is not None:")
            lines.append("        n += 1")
            lines.extend("        " + b for b in body)
        lines += ["    if n != len(d):",
                  "        raise Slow",
                  "    return b''.join(out)"]
        exec("\n".join(lines), env)  # noqa: S102 (code built from our own descriptors)
        fn = env[name]
        self._fns[desc.full_name] = fn
        return fn

    def _compile_dispatch(self, desc: _d.Descriptor) -> Callable[[Any], bytes]:
        """For messages with many fields of which an event sets few (oneofs such as
        ``KprobeArgument`` and ``GetEventsResponse``, ``ProcessKprobe``): the dict's key
        tuple selects a straight-line function generated for exactly those keys (the
        pipeline builds each kind of event with the same keys in the same order, so a
        stream sees a handful of shapes). Fields are written in field-number order.
        More than ``_MAX_SHAPES`` shapes (never in practice): walk the dict instead."""
        fns, full = self._fns, desc.full_name
        fns[full] = lambda d: fns[full](d)
        fields = {fd.name: fd for fd in desc.fields}
        shapes = self._shapes_of(desc)
        walk = self._walker(desc)
        make = self._shape_maker(desc, fields)

        def encode(d: Any) -> bytes:
            if d.__class__ is not dict and not isinstance(d, dict):
                raise Slow
            keys = tuple(d)
            fn = shapes.get(keys)
            if fn is None:
                if len(shapes) >= _MAX_SHAPES:
                    return walk(d)
                fn = shapes[keys] = make(keys)
            return fn(d)

        encode.__name__ = "enc_" + full.replace(".", "_")
        encode.shapes = shapes  # type: ignore[attr-defined]  # read by the tests
        fns[full] = encode
        return encode

    def _shape_maker(self, desc: _d.Descriptor, fields: dict[str, _d.FieldDescriptor]
                     ) -> Callable[[tuple[str, ...]], Callable[[Any], bytes]]:
        env = self._env()

        def slow(d: Any) -> bytes:
            raise Slow

        def make(keys: tuple[str, ...]) -> Callable[[Any], bytes]:
            if any(k.__class__ is not str or k not in fields for k in keys):
                return slow  # an unknown or camelCase key: the general encoder decides
            lines = ["def shape(d):", "    out = []"]
            for k in sorted(keys, key=lambda k: fields[k].number):
                lines += [f"    v = d[{k!r}]", "    if v is not None:"]
                lines += ["        " + b for b in self._field(fields[k], env)]
            lines.append("    return b''.join(out)")
            exec("\n".join(lines), env)  # noqa: S102 (code built from our own descriptors)
            return env["shape"]
        return make

    def _walker(self, desc: _d.Descriptor) -> Callable[[Any], bytes]:
        """Encode by walking the dict's items, one small function per field."""
        env = self._env()
        table: dict[str, tuple[int, Callable[[Any, list[bytes]], None]]] = {}
        for fd in desc.fields:
            fname = f"fld_{fd.number}"
            src = [f"def {fname}(v, out):", *("    " + b for b in self._field(fd, env))]
            exec("\n".join(src), env)  # noqa: S102 (code built from our own descriptors)
            table[fd.name] = (fd.number, env[fname])
        get = table.get

        def walk(d: Any) -> bytes:
            entries = []
            for k, v in d.items():
                e = get(k)
                if e is None:
                    raise Slow
                if v is not None:
                    entries.append((e[0], e[1], v))
            entries.sort(key=lambda t: t[0])
            out: list[bytes] = []
            for _, fn, v in entries:
                fn(v, out)
            return b"".join(out)
        return walk

    def _field(self, fd: _d.FieldDescriptor, env: dict[str, Any]) -> list[str]:
        """Statements appending the encoding of ``v`` (not None) for field ``fd``."""
        if fd.is_repeated:
            if fd.type == _T.TYPE_MESSAGE and not fd.message_type.GetOptions().map_entry:
                key = _key(fd.number, 2)
                sub = f"sub_{fd.number}_{id(fd)}"
                call = self._call_sub(sub, fd.message_type, env, "x")
                return ["if v.__class__ is not list:", "    raise Slow",
                        "for x in v:",
                        f"    b = {call}",
                        "    k = len(b)",
                        f"    out.append({key!r} + (_V[k] if k < 16384 else _varint(k)) + b)"]
            if fd.type == _T.TYPE_STRING:
                key = _key(fd.number, 2)
                return ["if v.__class__ is not list:", "    raise Slow",
                        "for x in v:",
                        "    if x.__class__ is not str:", "        raise Slow",
                        "    b = x.encode()",
                        "    k = len(b)",
                        f"    out.append({key!r} + (_V[k] if k < 16384 else _varint(k)) + b)"]
            if fd.is_packed and fd.type == _T.TYPE_ENUM:  # capabilities, securebits
                key = _key(fd.number, 2)
                enum = f"enum_{fd.number}_{id(fd)}"
                env[enum] = {v.name: v.number for v in fd.enum_type.values}
                return ["if v.__class__ is not list:", "    raise Slow",
                        "if v:",
                        f"    b = b''.join([_V[{enum}[x]] for x in v])",
                        "    k = len(b)",
                        f"    out.append({key!r} + (_V[k] if k < 16384 else _varint(k)) + b)"]
            return ["raise Slow"]  # maps, other packed scalars: rare, the general encoder
        t = fd.type
        # zero values are skipped (proto3), except in a oneof / optional field
        nonzero = "if True:" if fd.containing_oneof is not None else "if v:"
        if t == _T.TYPE_STRING:
            # the whole encoded field by value, for short values (names, actions,
            # node and policy names repeat; unique ones stop being stored at the bound)
            key = _key(fd.number, 2)
            sc = f"strs_{fd.number}_{id(fd)}"
            env[sc] = {}
            return [f"c = {sc}.get(v)",
                    "if c is None:",
                    "    if v.__class__ is not str:", "        raise Slow",
                    "    " + nonzero,
                    "        b = v.encode()",
                    "        k = len(b)",
                    f"        c = {key!r} + (_V[k] if k < 16384 else _varint(k)) + b",
                    "    else:",
                    "        c = b''",
                    f"    if len(v) <= {_STR_CACHE_LEN} and len({sc}) < {_STR_CACHE_N}:",
                    f"        {sc}[v] = c",
                    "if c:",
                    "    out.append(c)"]
        if t in _INT_KINDS:
            key = _key(fd.number, 0)
            return ["if v.__class__ is str:", "    v = int(v)",  # protojson's int64
                    "elif v.__class__ is not int:", "    raise Slow",
                    nonzero,
                    f"    out.append({key!r} + (_V[v] if 0 <= v < 16384 else _varint(v)))"]
        if t == _T.TYPE_BOOL:
            key = _key(fd.number, 0)
            false = (f"    out.append({key!r} + b'\\x00')" if fd.containing_oneof is not None
                     else "    pass")
            return ["if v is True:", f"    out.append({key!r} + b'\\x01')",
                    "elif v is False:", false, "else:", "    raise Slow"]
        if t == _T.TYPE_ENUM:
            key = _key(fd.number, 0)
            enum = f"enum_{fd.number}_{id(fd)}"
            keep0 = fd.containing_oneof is not None
            env[enum] = {v.name: key + _varint(v.number) if v.number or keep0 else b""
                         for v in fd.enum_type.values}
            return [f"c = {enum}.get(v)",
                    "if c is None:",
                    "    if v.__class__ is not int:", "        raise Slow",
                    "    " + ("if True:" if keep0 else "if v:"),
                    f"        out.append({key!r} + (_V[v] if 0 <= v < 16384 else _varint(v)))",
                    "elif c:",
                    "    out.append(c)"]
        if t != _T.TYPE_MESSAGE:
            return ["raise Slow"]  # bytes (base64), fixed, float, sint: rare
        mt = fd.message_type
        key = _key(fd.number, 2)
        if mt.full_name == "google.protobuf.Timestamp":
            return ["b = timestamp(v)",
                    f"out.append({key!r} + _SV[len(b)] + b)"]
        if mt.full_name in _INT_WRAPPERS:
            return ["if v.__class__ is not int:", "    raise Slow",
                    "if 0 <= v < 16384:",
                    f"    out.append({key!r} + _W[v])",
                    "else:",
                    "    b = b'\\x08' + _varint(v)",
                    f"    out.append({key!r} + _SV[len(b)] + b)"]
        if mt.full_name == "google.protobuf.BoolValue":
            return ["if v is True:", f"    out.append({key!r} + b'\\x02\\x08\\x01')",
                    "elif v is False:", f"    out.append({key!r} + b'\\x00')",
                    "else:", "    raise Slow"]
        if mt.full_name.startswith("google.protobuf.") or mt.GetOptions().map_entry:
            return ["raise Slow"]
        sub = f"sub_{fd.number}_{id(fd)}"
        enc = [f"b = {self._call_sub(sub, mt, env, 'v')}",
               "k = len(b)",
               "body = (_V[k] if k < 16384 else _varint(k)) + b"]
        if mt.full_name in self._cached:
            return ["e = cache_lookup(id(v))",
                    "if e is not None and e[0] is v:",
                    "    body = e[1]",
                    "else:",
                    *("    " + e for e in enc),
                    "    cache.put(v, body)",
                    f"out.append({key!r} + body)"]
        return [*enc, f"out.append({key!r} + body)"]

    def _shapes_of(self, desc: _d.Descriptor) -> dict[tuple[str, ...], Any]:
        """The shape table of a dispatch message (made before it compiles, so that
        parents, even recursive ones, can look shapes up without calling through)."""
        return self._shapes.setdefault(desc.full_name, {})

    def _call_sub(self, sub: str, desc: _d.Descriptor, env: dict[str, Any], arg: str
                  ) -> str:
        """An expression encoding ``arg`` with ``desc``'s encoder (named ``sub`` in
        ``env``); for dispatch messages the shape lookup is inlined."""
        env[sub] = self._lazy(desc)
        if len(desc.fields) <= _DISPATCH_ABOVE:
            return f"{sub}({arg})"
        env[sub + "_s"] = self._shapes_of(desc).get
        return (f"(({sub}_s(tuple({arg})) or {sub}) if {arg}.__class__ is dict "
                f"else {sub})({arg})")

    def _lazy(self, desc: _d.Descriptor) -> Callable[[Any], bytes]:
        """The encoder of ``desc`` (a placeholder while it compiles: recursive types)."""
        return self.encoder(desc)
