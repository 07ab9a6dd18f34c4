"""Dict events <-> Tetragon protobuf, and request/status messages <-> Python values.

The hot path is :class:`EventEncoder`: it writes ``GetEventsResponse`` wire bytes
straight from an event dict (protojson shape, snake_case keys, as
``vigil.events.encode`` builds them), driven by the message descriptors of
``vigil.api.tetragon``. ``json_format.ParseDict`` + ``SerializeToString`` gives the same
message but costs ~20x more per event, which would be the whole CPU budget.

Two identity caches make a busy stream cheap, both keyed by ``id()`` of objects the
pipeline builds once and never mutates (each entry keeps a reference to its key object,
so an id cannot be reused while its entry lives):

* a process dict -> its ``Process`` bytes: one process appears in its exec, its exit,
  its children's ``parent`` and every hook event it triggers;
* an event dict -> its ``GetEventsResponse`` bytes: N subscribers without field filters
  encode each event once between them.

Both are bounded (oldest entries evicted first) and safe to share between the threads
serving GetEvents streams (they only use single dict operations under the GIL).

Values are converted as protojson parsing would: 64-bit integers from strings or ints,
enums from names or numbers, ``bytes`` from base64, ``Timestamp`` from RFC 3339, wrapper
types (``UInt32Value``...) from bare values. Zero scalars are skipped (proto3 implicit
presence) but a present message is always written, even empty -- the same bytes as
``ParseDict`` + ``SerializeToString``. Keys the proto does not know are skipped and
counted (``unknown_keys``), so a newer event field never breaks older streams.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import struct
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from google.protobuf import descriptor as _d
from google.protobuf import json_format

from vigil.api.tetragon import events_pb2, sensors_pb2
from vigil.policy.store_api import PolicyInfo
from vigil.server.fastencode import FastEncoders, Slow
from vigil.server.fastencode import field_key as _key
from vigil.server.fastencode import varint

Event = dict[str, Any]

_T = _d.FieldDescriptor
_VARINT_KINDS = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64,
                 _T.TYPE_BOOL, _T.TYPE_ENUM}
_FIXED32_KINDS = {_T.TYPE_FIXED32, _T.TYPE_SFIXED32, _T.TYPE_FLOAT}
_FIXED64_KINDS = {_T.TYPE_FIXED64, _T.TYPE_SFIXED64, _T.TYPE_DOUBLE}
_WRAPPERS = {
    "google.protobuf.UInt32Value", "google.protobuf.Int32Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int64Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue",
    "google.protobuf.BytesValue", "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
}
# Messages worth caching by identity (shared between events).
_CACHED_MESSAGES = {"tetragon.Process"}


class EncodeError(ValueError):
    """An event value does not fit its proto field."""


# --------------------------------------------------------------------------- wire primitives

def _ld(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return key + varint(len(payload)) + payload


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise EncodeError(f"expected an integer, got {v!r}")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_timestamp(s: str) -> tuple[int, int]:
    """RFC 3339 -> (seconds, nanos). Fast path for ``YYYY-MM-DDTHH:MM:SS[.f]Z``."""
    if not isinstance(s, str):
        raise EncodeError(f"expected an RFC 3339 timestamp, got {s!r}")
    try:
        if len(s) >= 20 and s[-1] == "Z" and s[10] == "T" and s[4] == "-":
            secs = (_days_from_civil(int(s[0:4]), int(s[5:7]), int(s[8:10])) * 86400
                    + int(s[11:13]) * 3600 + int(s[14:16]) * 60 + int(s[17:19]))
            frac = s[20:-1] if len(s) > 20 and s[19] == "." else ""
            if len(frac) > 9 or (len(s) > 20 and s[19] != "."):
                raise ValueError(s)
            return secs, int(frac.ljust(9, "0")) if frac else 0
        t = _dt.datetime.fromisoformat(s)
        if t.tzinfo is None:
            raise ValueError(s)
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return delta.days * 86400 + delta.seconds, delta.microseconds * 1000
    except (ValueError, IndexError) as err:
        raise EncodeError(f"invalid timestamp {s!r}") from err


def parse_duration(s: Any) -> tuple[int, int]:
    """protojson Duration (``"1.5s"``) -> (seconds, nanos)."""
    if not isinstance(s, str) or not s.endswith("s"):
        raise EncodeError(f"invalid duration {s!r}")
    neg = s.startswith("-")
    whole, _, frac = s[1 if neg else 0:-1].partition(".")
    secs = int(whole or "0")
    nanos = int(frac.ljust(9, "0")[:9]) if frac else 0
    return (-secs, -nanos) if neg else (secs, nanos)


def valid_utf8(s: str) -> bytes:
    """UTF-8 of a str holding undecodable bytes (``surrogateescape``) or lone surrogates,
    each invalid sequence replaced by U+FFFD as Go's ``strings.ToValidUTF8``: a proto
    ``string`` must be valid UTF-8 or clients reject the whole message."""
    raw = s.encode("utf-8", "surrogateescape") if _escaped_only(s) else \
        s.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace").encode("utf-8")


def _escaped_only(s: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in s)


def _b64(v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if not isinstance(v, str):
        raise EncodeError(f"expected base64 bytes, got {v!r}")
    try:
        padded = v + "=" * (-len(v) % 4)
        if "-" in v or "_" in v:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise EncodeError(f"invalid base64 {v!r}") from err


# --------------------------------------------------------------------------- compiled schema

class _Field:
    """How to write one proto field; built once per descriptor field."""

    __slots__ = ("number", "kind", "repeated", "packed", "key", "packed_key", "msg",
                 "enum", "wkt", "map_key", "map_value", "cached", "presence")

    def __init__(self, fd: _d.FieldDescriptor, schema: _Schema) -> None:
        self.number = fd.number
        self.kind = fd.type
        self.repeated = fd.is_repeated
        self.packed = self.repeated and fd.is_packed
        # a oneof member (or proto3 ``optional``) is written even when zero: the
        # receiver must see which member is set (``KprobeArgument{int_arg: 0}``)
        self.presence = fd.containing_oneof is not None
        if fd.type in _VARINT_KINDS:
            wire = 0
        elif fd.type in _FIXED32_KINDS:
            wire = 5
        elif fd.type in _FIXED64_KINDS:
            wire = 1
        else:
            wire = 2
        self.key = _key(fd.number, wire)
        self.packed_key = _key(fd.number, 2)
        self.enum = ({v.name: v.number for v in fd.enum_type.values}
                     if fd.type == _T.TYPE_ENUM else None)
        self.msg: _Message | None = None
        self.wkt = ""
        self.map_key: _Field | None = None
        self.map_value: _Field | None = None
        self.cached = False
        if fd.type == _T.TYPE_MESSAGE:
            mt = fd.message_type
            if mt.GetOptions().map_entry:
                self.map_key = _Field(mt.fields_by_number[1], schema)
                self.map_value = _Field(mt.fields_by_number[2], schema)
            elif mt.full_name in _WRAPPERS or mt.full_name in (
                    "google.protobuf.Timestamp", "google.protobuf.Duration",
                    "google.protobuf.FieldMask"):
                self.wkt = mt.full_name
                if mt.full_name in _WRAPPERS:
                    self.map_value = _Field(mt.fields_by_number[1], schema)
            else:
                self.msg = schema.message(mt)
                self.cached = mt.full_name in _CACHED_MESSAGES


class _Message:
    """A compiled message: field specs by JSON key (proto name and lowerCamel name)."""

    __slots__ = ("full_name", "fields")

    def __init__(self, full_name: str) -> None:
        self.full_name = full_name
        self.fields: dict[str, _Field] = {}


class _Schema:
    """Compiled messages by full name (recursive types compile once)."""

    def __init__(self) -> None:
        self._messages: dict[str, _Message] = {}

    def message(self, desc: _d.Descriptor) -> _Message:
        m = self._messages.get(desc.full_name)
        if m is None:
            m = self._messages[desc.full_name] = _Message(desc.full_name)
            for fd in desc.fields:
                f = _Field(fd, self)
                m.fields[fd.name] = f
                m.fields.setdefault(fd.json_name, f)
        return m


# --------------------------------------------------------------------------- encoder

class _IdentityCache:
    """Bounded ``id(obj) -> (obj, bytes)``; evicts the oldest eighth when full.

    ``lookup(id(obj))`` is the raw dict lookup for generated code (the entry counts
    only if ``entry[0] is obj``); ``stored`` counts encodings put (misses)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 8)
        self._d: dict[int, tuple[Any, bytes]] = {}  # never rebound: lookup is bound to it
        self.lookup = self._d.get
        self.stored = 0

    def get(self, obj: Any) -> bytes | None:
        entry = self._d.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        return None

    def put(self, obj: Any, data: bytes) -> None:
        d = self._d
        if len(d) >= self.capacity:
            try:
                for k in list(islice(d, self.capacity // 8)):
                    d.pop(k, None)
            except RuntimeError:  # resized by another thread mid-iteration: skip this round
                pass
        d[id(obj)] = (obj, data)
        self.stored += 1

    def __len__(self) -> int:
        return len(self._d)


# What makes the generated fast path give up on an event (it never writes wrong bytes:
# the general encoder then decides, raising EncodeError for what is really invalid).
FAST_PATH_MISSES = (Slow, UnicodeError, ValueError, TypeError, KeyError, IndexError)


class EventEncoder:
    """Event dicts -> ``GetEventsResponse`` wire bytes. Thread-safe, shareable."""

    def __init__(self, process_cache: int = 32768, event_cache: int = 16384) -> None:
        self._schema = _Schema()
        self._response = self._schema.message(events_pb2.GetEventsResponse.DESCRIPTOR)
        self.processes = _IdentityCache(process_cache)
        self.events = _IdentityCache(event_cache)
        self.unknown_keys = 0
        self.slow_path = 0
        self._fast = FastEncoders(_CACHED_MESSAGES, self.processes).encoder(
            events_pb2.GetEventsResponse.DESCRIPTOR)
        # the generated encoder alone (raises one of FAST_PATH_MISSES when the event is
        # not in its shape: then encode_event decides); no caching
        self.fast = self._fast

    def encode_event(self, ev: Mapping[str, Any], *, shared: bool = True) -> bytes:
        """``GetEventsResponse`` bytes of ``ev``. ``shared``: ``ev`` is a pipeline event
        (immutable, worth caching); pass False for per-subscriber copies."""
        if shared:
            entry = self.events.lookup(id(ev))
            if entry is not None and entry[0] is ev:
                return entry[1]
        try:
            data = self._fast(ev)
        except FAST_PATH_MISSES:  # not the common shape: interpret it (same bytes)
            self.slow_path += 1
            data = self._message(self._response, ev)
        if shared:
            self.events.put(ev, data)
        return data

    def encode(self, desc: _d.Descriptor, value: Mapping[str, Any]) -> bytes:
        """Any message of the tetragon API from its protojson dict (tests, tools)."""
        return self._message(self._schema.message(desc), value)

    # -- internals -------------------------------------------------------------------

    def _message(self, m: _Message, d: Mapping[str, Any]) -> bytes:
        if not isinstance(d, Mapping):
            raise EncodeError(f"{m.full_name}: expected an object, got {type(d).__name__}")
        parts: list[bytes] = []
        numbers: list[int] = []
        fields = m.fields
        for k, v in d.items():
            f = fields.get(k)
            if f is None:
                self.unknown_keys += 1
                continue
            if v is None:
                continue
            data = self._field(f, v)
            if data:
                parts.append(data)
                numbers.append(f.number)
        if numbers != sorted(numbers):  # keep field-number order, as protobuf writes
            parts = [p for _, p in sorted(zip(numbers, parts), key=lambda t: t[0])]
        return b"".join(parts)

    def _field(self, f: _Field, v: Any) -> bytes:
        if f.map_key is not None:
            return self._map(f, v)
        if f.repeated:
            if not isinstance(v, (list, tuple)):
                raise EncodeError(f"field {f.number}: expected a list, got {v!r}")
            if f.packed:
                payload = b"".join(self._scalar(f, x, keep_zero=True)[len(f.key):] for x in v)
                return _ld(f.packed_key, payload) if payload else b""
            return b"".join(self._single(f, x, keep_zero=True) for x in v)
        return self._single(f, v, keep_zero=f.presence)

    def _single(self, f: _Field, v: Any, *, keep_zero: bool) -> bytes:
        if f.msg is not None:
            if f.cached:  # the cache holds length + payload: the key depends on the field
                body = self.processes.get(v)
                if body is None:
                    payload = self._message(f.msg, v)
                    body = varint(len(payload)) + payload
                    self.processes.put(v, body)
                return f.key + body
            return _ld(f.key, self._message(f.msg, v))
        if f.wkt:
            return _ld(f.key, self._wkt(f, v))
        return self._scalar(f, v, keep_zero=keep_zero)

    def _map(self, f: _Field, v: Any) -> bytes:
        if not isinstance(v, Mapping):
            raise EncodeError(f"field {f.number}: expected an object, got {v!r}")
        assert f.map_key is not None and f.map_value is not None
        out = []
        for k, x in v.items():
            entry = (self._scalar(f.map_key, k, keep_zero=False)
                     + self._single(f.map_value, x, keep_zero=False))
            out.append(_ld(f.key, entry))
        return b"".join(out)

    def _wkt(self, f: _Field, v: Any) -> bytes:
        if f.wkt == "google.protobuf.Timestamp":
            secs, nanos = parse_timestamp(v)
            return _seconds_nanos(secs, nanos)
        if f.wkt == "google.protobuf.Duration":
            secs, nanos = parse_duration(v)
            return _seconds_nanos(secs, nanos)
        if f.wkt == "google.protobuf.FieldMask":
            paths = v.split(",") if isinstance(v, str) else list(v.get("paths", []))
            return b"".join(_ld(b"\x0a", p.encode()) for p in paths if p)
        assert f.map_value is not None  # a wrapper: its one field, "value" = 1
        return self._scalar(f.map_value, v, keep_zero=False)

    def _scalar(self, f: _Field, v: Any, *, keep_zero: bool) -> bytes:
        kind = f.kind
        if kind == _T.TYPE_STRING:
            if not isinstance(v, str):
                raise EncodeError(f"field {f.number}: expected a string, got {v!r}")
            if not v and not keep_zero:
                return b""
            try:
                b = v.encode("utf-8")
            except UnicodeEncodeError:
                b = valid_utf8(v)
            return f.key + varint(len(b)) + b
        if kind == _T.TYPE_BYTES:
            b = _b64(v)
            if not b and not keep_zero:
                return b""
            return f.key + varint(len(b)) + b
        if kind == _T.TYPE_ENUM:
            assert f.enum is not None
            n = f.enum.get(v) if isinstance(v, str) else _to_int(v)
            if n is None:
                raise EncodeError(f"field {f.number}: unknown enum value {v!r}")
        elif kind == _T.TYPE_BOOL:
            if not isinstance(v, bool):
                raise EncodeError(f"field {f.number}: expected true/false, got {v!r}")
            n = int(v)
        elif kind in _FIXED32_KINDS or kind in _FIXED64_KINDS:
            return self._fixed(f, v, keep_zero)
        else:
            n = _to_int(v)
            if kind == _T.TYPE_SINT32 or kind == _T.TYPE_SINT64:
                n = (n << 1) ^ (n >> 63)
        if n == 0 and not keep_zero:
            return b""
        return f.key + varint(n)

    @staticmethod
    def _fixed(f: _Field, v: Any, keep_zero: bool) -> bytes:
        fmt = {_T.TYPE_FIXED32: "<I", _T.TYPE_SFIXED32: "<i", _T.TYPE_FLOAT: "<f",
               _T.TYPE_FIXED64: "<Q", _T.TYPE_SFIXED64: "<q", _T.TYPE_DOUBLE: "<d"}[f.kind]
        x: float | int = float(v) if fmt in ("<f", "<d") else _to_int(v)
        if x == 0 and not keep_zero:
            return b""
        return f.key + struct.pack(fmt, x)

    def stats(self) -> dict[str, int]:
        return {"process_cache": len(self.processes),
                "process_encoded": self.processes.stored,
                "event_cache": len(self.events), "event_encoded": self.events.stored,
                "unknown_keys": self.unknown_keys, "slow_path": self.slow_path}


def _seconds_nanos(secs: int, nanos: int) -> bytes:
    out = b""
    if secs:
        out += b"\x08" + varint(secs)
    if nanos:
        out += b"\x10" + varint(nanos)
    return out


# --------------------------------------------------------------------------- decoding (clients)

def response_to_dict(data: bytes | events_pb2.GetEventsResponse) -> Event:
    """A GetEventsResponse (bytes or message) as the export's JSON dict (snake_case)."""
    msg = data
    if isinstance(data, (bytes, bytearray, memoryview)):
        msg = events_pb2.GetEventsResponse.FromString(bytes(data))
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


# --------------------------------------------------------------------------- requests

def filter_to_dict(f: events_pb2.Filter) -> dict[str, Any]:
    """A Filter message in the protojson form ``vigil.server.filters`` takes."""
    return json_format.MessageToDict(f, preserving_proto_field_name=True)


def field_filter_to_dict(f: events_pb2.FieldFilter) -> dict[str, Any]:
    """A FieldFilter message as a dict; paths kept as sent (FieldMask JSON would
    reject capitalised names such as ``ProgType``)."""
    out: dict[str, Any] = {
        "event_set": [events_pb2.EventType.Name(t) if t in events_pb2.EventType.values()
                      else t for t in f.event_set],
        "fields": list(f.fields.paths),
        "action": events_pb2.FieldFilterAction.Name(f.action),
    }
    if f.HasField("invert_event_set"):
        out["invert_event_set"] = f.invert_event_set.value
    return out


def request_specs(req: events_pb2.GetEventsRequest) -> tuple[list[dict[str, Any]],
                                                              list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    """(allow, deny, field_filters) of a GetEventsRequest as filter specs."""
    return ([filter_to_dict(f) for f in req.allow_list],
            [filter_to_dict(f) for f in req.deny_list],
            [field_filter_to_dict(f) for f in req.field_filters])


def filter_from_dict(spec: Mapping[str, Any]) -> events_pb2.Filter:
    """A filter spec (protojson) -> Filter message (clients)."""
    return json_format.ParseDict(dict(spec), events_pb2.Filter())


def field_filter(paths: Iterable[str], *, include: bool,
                 event_set: Iterable[str] = ()) -> events_pb2.FieldFilter:
    """A FieldFilter message (clients)."""
    ff = events_pb2.FieldFilter(
        event_set=[events_pb2.EventType.Value(t) for t in event_set],
        action=events_pb2.INCLUDE if include else events_pb2.EXCLUDE)
    ff.fields.paths.extend(p for p in paths if p)
    return ff


# --------------------------------------------------------------------------- policies

def policy_status(p: PolicyInfo) -> sensors_pb2.TracingPolicyStatus:
    """PolicyInfo -> TracingPolicyStatus."""
    st = sensors_pb2.TracingPolicyStatus(
        id=p.id, name=p.name, namespace=p.namespace, info=p.info, sensors=list(p.sensors),
        enabled=p.enabled, filter_id=p.filter_id, error=p.error, state=int(p.state),  # type: ignore[arg-type]  # protobuf enum fields take numbers
        kernel_memory_bytes=p.kernel_memory_bytes, mode=int(p.mode), domain=p.domain)  # type: ignore[arg-type]  # protobuf enum fields take numbers
    if p.stats is not None:
        c = p.stats
        st.stats.action_counters.CopyFrom(sensors_pb2.TracingPolicyActionCounters(
            post=c.post, signal=c.signal, monitor_signal=c.monitor_signal,
            override=c.override, monitor_override=c.monitor_override,
            notify_enforcer=c.notify_enforcer,
            monitor_notify_enforcer=c.monitor_notify_enforcer, set=c.set,
            monitor_set=c.monitor_set, nopost=c.nopost))
    for i, h in enumerate(p.hooks):
        st.hook_statuses.add(section=h.section, hook_description=h.description, hook_idx=i,
                             state=sensors_pb2.STATUS_LOADED if h.loaded
                             else sensors_pb2.STATUS_UNSPECIFIED)
    return st


def status_to_dict(st: sensors_pb2.TracingPolicyStatus) -> dict[str, Any]:
    return json_format.MessageToDict(st, preserving_proto_field_name=True)


__all__ = ["EncodeError", "EventEncoder", "field_filter", "filter_from_dict",
           "filter_to_dict", "parse_timestamp", "policy_status", "request_specs",
           "response_to_dict", "status_to_dict", "varint"]
