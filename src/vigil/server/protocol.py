"""gRPC over HTTP/2, served with the ``h2`` protocol library on asyncio.

Why not grpcio's server: grpcio hands each streamed message to its C core separately
(one completion-queue round trip per message), which capped a Python GetEvents stream
at ~6-14k messages/s on this project's machines. Here a stream handler returns many
length-prefixed messages at once, and they leave in as few DATA frames and socket
writes as the peer's HTTP/2 flow-control window and frame size allow (see
docs/api.md, "Transport").

What this layer does (the gRPC over HTTP/2 protocol, for a server):

* requests: ``POST /<service>/<method>``, ``content-type: application/grpc[+proto]``;
  one length-prefixed request message (uncompressed; a compressed one is UNIMPLEMENTED),
  at most ``max_recv_bytes`` (else RESOURCE_EXHAUSTED); unknown methods UNIMPLEMENTED;
* responses: ``:status 200`` headers, length-prefixed messages in DATA frames, then
  trailers with ``grpc-status`` and a percent-encoded ``grpc-message`` (or a
  trailers-only response when an RPC fails before its first message);
* ``grpc-timeout`` deadlines: the call ends with DEADLINE_EXCEEDED and its handler is
  told (``Context.is_active``/callbacks); a client's RST_STREAM cancels the call;
* flow control both ways (incoming data is acknowledged as the handler consumes it;
  outgoing data waits for WINDOW_UPDATE), PINGs answered (``h2``), keepalive PINGs
  sent on idle connections (a peer that does not answer is dropped), GOAWAY on stop.

Handlers (see :class:`Method`) know nothing of HTTP/2: unary ones are plain functions run
in a thread pool (a policy load may take seconds); streaming ones return a
:class:`MessageSource` the connection drains on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from vigil.server.status import StatusCode

log = logging.getLogger(__name__)

_PREFIX = struct.Struct(">BI")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Our receive window: large enough that a 10 MiB policy arrives in few round trips.
_RECV_WINDOW = 4 << 20
_MAX_STREAMS = 256
_FLUSH_BYTES = 256 << 10  # hand the socket at most this much at once
# Largest header block a client may send (grpcio's own default limit is 8 KiB); with
# the default 16 KiB frame size, h2 buffers at most 64 CONTINUATION frames (~1 MiB).
_MAX_HEADER_LIST = 64 << 10
# Request encodings we decompress (the gRPC names); others are UNIMPLEMENTED.
ACCEPT_ENCODING = "identity,gzip,deflate"
# request headers that are transport, not the caller's metadata
_RESERVED = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding",
                       "grpc-accept-encoding", "user-agent", "grpc-message-type"})


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return _PREFIX.pack(0, len(message)) + message


def grpc_message_escape(msg: str) -> str:
    """``grpc-message`` is percent-encoded UTF-8 (printable ASCII except '%' kept)."""
    return quote(msg, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout`` (e.g. ``"100m"``) in seconds; None if malformed."""
    if not 2 <= len(value) <= 9 or value[-1] not in _TIMEOUT_UNITS or \
            not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


class RpcError(Exception):
    """Ends a call with ``code`` and ``details`` (raised by :meth:`Context.abort`)."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def decompress(encoding: str, data: bytes, limit: int) -> bytes:
    """A compressed request message, at most ``limit`` bytes once inflated (a
    decompression bomb ends as RESOURCE_EXHAUSTED, corrupt data as INTERNAL)."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as err:
        raise RpcError(StatusCode.INTERNAL, f"cannot decompress the {encoding} "
                       f"request: {err}") from err
    if len(out) > limit:
        raise RpcError(StatusCode.RESOURCE_EXHAUSTED, f"request larger than {limit} "
                       "bytes once decompressed")
    if not d.eof or d.unused_data:
        raise RpcError(StatusCode.INTERNAL, f"truncated or trailing {encoding} data")
    return out


class Context:
    """What a handler may ask of its call (the subset of grpc.ServicerContext used)."""

    def __init__(self, peer: str, deadline: float | None,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._peer = peer
        self._metadata = tuple(metadata)
        self.deadline = deadline  # time.monotonic() value, or None
        self._callbacks: list[Callable[[], None]] = []
        self._done = False
        self.trailing_metadata: tuple[tuple[str, str], ...] = ()

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The request's custom metadata (headers other than pseudo-headers and gRPC's
        own), lower-case keys, as grpc.ServicerContext.invocation_metadata."""
        return self._metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        """Extra trailers sent with the status (lower-case ASCII keys, as gRPC wants)."""
        self.trailing_metadata = tuple((k.lower(), v) for k, v in metadata)

    def abort(self, code: StatusCode, details: str) -> None:
        raise RpcError(code, details)

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self._done

    def add_callback(self, fn: Callable[[], None]) -> bool:
        """``fn`` runs once when the call ends, however it ends."""
        if self._done:
            return False
        self._callbacks.append(fn)
        return True

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        for fn in self._callbacks:
            try:
                fn()
            except Exception:  # a callback's failure must not break the connection
                log.exception("gRPC call callback failed")
        self._callbacks.clear()


class MessageSource(Protocol):
    """A server stream: ``next()`` gives one or more already framed messages (bytes
    from :func:`frame`, concatenated) or None at the end; ``close()`` runs once when the
    call ends for any reason (client gone, deadline, server stop)."""

    def next(self) -> Awaitable[bytes | None]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Method:
    """One served method. ``handler(request, context)`` returns the serialized response
    (unary, run in a thread) or a :class:`MessageSource` (``streaming``, called on the
    event loop: it must not block)."""

    deserialize: Callable[[bytes], Any]
    handler: Callable[[Any, Context], Any]
    streaming: bool = False


class _Call:
    __slots__ = ("sid", "path", "ctx", "body", "body_len", "method", "task",
                 "headers_sent", "ended", "remote_closed", "timer", "encoding", "charged")

    def __init__(self, sid: int, path: str, ctx: Context, method: Method | None) -> None:
        self.sid = sid
        self.path = path
        self.ctx = ctx
        self.method = method
        self.body: list[bytes] = []
        self.body_len = 0
        self.task: asyncio.Task[None] | None = None
        self.headers_sent = False
        self.ended = False
        self.remote_closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.encoding = "identity"
        self.charged = 0  # bytes of this request counted in ProtocolConfig.buffered


class ConnectionStats:
    """Server-wide connection counters (one event loop: plain ints suffice)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused = 0             # over max_connections
        self.handshake_timeouts = 0  # no HTTP/2 preface/SETTINGS in time
        self.protocol_errors = 0     # bad preface, malformed frames: GOAWAY + close
        self.keepalive_timeouts = 0  # PING not answered
        self.buffer_refusals = 0     # requests refused for the request-buffer budget

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class ProtocolConfig:
    methods: dict[str, Method]
    executor: concurrent.futures.Executor
    max_recv_bytes: int = 10 << 20
    keepalive_time: float = 120.0      # PING an idle connection after this long...
    keepalive_timeout: float = 20.0    # ...and drop it if no PING ACK arrives by then
    handshake_timeout: float = 10.0    # close a connection with no HTTP/2 preface by then
    max_connections: int = 256         # more are refused (GOAWAY, then closed)
    # Request bytes held (received, not yet answered) across all connections; a request
    # that would go over is refused with RESOURCE_EXHAUSTED.
    max_buffered_bytes: int = 64 << 20
    buffered: int = 0
    stats: ConnectionStats = field(default_factory=ConnectionStats)


class GrpcConnection(asyncio.Protocol):
    """One client connection (plain, TLS or unix socket) speaking gRPC over HTTP/2."""

    def __init__(self, cfg: ProtocolConfig, connections: set[GrpcConnection]) -> None:
        self.cfg = cfg
        self._connections = connections
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_event_loop()
        self.calls: dict[int, _Call] = {}
        self.peer = ""
        self._window_open = asyncio.Event()   # set when a WINDOW_UPDATE/SETTINGS arrives
        self._writable = asyncio.Event()      # cleared while the transport buffer is full
        self._writable.set()
        self._closed = False
        self._last_rx = time.monotonic()
        self._ping_sent: float | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._handshake: asyncio.TimerHandle | None = None
        self._greeted = False  # the client's preface and SETTINGS arrived

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _peer_name(transport)
        stats = self.cfg.stats
        if len(self._connections) >= self.cfg.max_connections:
            stats.refused += 1
            log.warning("gRPC: refusing a connection from %s: %d connections already "
                        "(the limit)", self.peer, len(self._connections))
            self.conn.initiate_connection()
            self.conn.close_connection(h2.errors.ErrorCodes.REFUSED_STREAM,
                                       additional_data=b"too many connections")
            transport.write(self.conn.data_to_send())
            transport.close()
            self._closed = True
            return
        self._connections.add(self)
        stats.accepted += 1
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None and ssl_obj.selected_alpn_protocol() != "h2":
            log.debug("gRPC: %s did not negotiate h2 over TLS; closing", self.peer)
            transport.close()
            return
        self.conn.initiate_connection()
        self.conn.update_settings({
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECV_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST})
        self.conn.increment_flow_control_window(_RECV_WINDOW)
        self._flush()
        self._handshake = self.loop.call_later(self.cfg.handshake_timeout,
                                               self._handshake_expired)
        self._arm_keepalive()

    def _handshake_expired(self) -> None:
        if not self._greeted and not self._closed:
            self.cfg.stats.handshake_timeouts += 1
            log.debug("gRPC: %s sent no HTTP/2 preface in %.0f s; closing", self.peer,
                      self.cfg.handshake_timeout)
            self._abort_connection()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._handshake is not None:
            self._handshake.cancel()
        for call in list(self.calls.values()):
            self._end(call, cancelled=True)
        self.calls.clear()
        self._window_open.set()
        self._writable.set()

    def pause_writing(self) -> None:
        """The transport's buffer is full (the peer does not read): stop reading too,
        so a peer that sends PINGs or requests but never reads the answers cannot grow
        the buffer without bound."""
        self._writable.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self.cfg.stats.protocol_errors += 1
            log.debug("gRPC: HTTP/2 protocol error from %s: %s", self.peer, err)
            self._flush()  # h2 queued a GOAWAY with the error code
            self._abort_connection()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._on_request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                self._on_data(ev)
            elif isinstance(ev, h2.events.StreamEnded):
                self._on_stream_ended(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                call = self.calls.pop(ev.stream_id, None)
                if call is not None:
                    self._end(call, cancelled=True)
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self._window_open.set()
                self._greeted = True
            elif isinstance(ev, h2.events.PingAckReceived):
                self._ping_sent = None
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._flush()
                self._abort_connection()
                return
        self._flush()

    # -- requests --------------------------------------------------------------------

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        headers: dict[Any, Any] = dict(ev.headers or ())
        path = str(headers.get(":path", ""))
        timeout = headers.get("grpc-timeout")
        deadline = None
        if timeout is not None:
            secs = parse_timeout(str(timeout))
            if secs is not None:
                deadline = time.monotonic() + secs
        metadata = [(str(k).lower(), str(v)) for k, v in ev.headers or ()
                    if not str(k).startswith(":") and str(k).lower() not in _RESERVED]
        call = _Call(ev.stream_id, path, Context(self.peer, deadline, metadata),
                     self.cfg.methods.get(path))
        self.calls[ev.stream_id] = call
        if headers.get(":method") != "POST":
            self._respond_http(call, "405")
            return
        ctype = str(headers.get("content-type", ""))
        if not (ctype == "application/grpc" or ctype.startswith("application/grpc+")
                or ctype.startswith("application/grpc;")):
            self._respond_http(call, "415")
            return
        if call.method is None:
            self._finish(call, StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            return
        enc = str(headers.get("grpc-encoding", "identity"))
        if enc not in ("identity", "gzip", "deflate"):
            self._finish(call, StatusCode.UNIMPLEMENTED,
                         f"grpc-encoding {enc!r} is not supported (use one of "
                         f"{ACCEPT_ENCODING})")
            return
        call.encoding = enc
        if deadline is not None:
            call.timer = self.loop.call_later(max(0.0, deadline - time.monotonic()),
                                              self._deadline, call)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        call = self.calls.get(ev.stream_id)
        if call is None or call.ended:
            return
        n = len(ev.data)
        call.body_len += n
        if call.body_len > self.cfg.max_recv_bytes + 5:
            self._finish(call, StatusCode.RESOURCE_EXHAUSTED,
                         f"request larger than {self.cfg.max_recv_bytes} bytes")
            return
        cfg = self.cfg
        if cfg.buffered + n > cfg.max_buffered_bytes:
            cfg.stats.buffer_refusals += 1
            self._finish(call, StatusCode.RESOURCE_EXHAUSTED,
                         "the server holds too many unanswered request bytes; retry")
            return
        cfg.buffered += n
        call.charged += n
        call.body.append(ev.data)

    def _on_stream_ended(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        call.remote_closed = True
        if call.ended or call.task is not None:
            return
        body = b"".join(call.body)
        call.body.clear()
        if not body:  # gRPC: a request cardinality violation is UNIMPLEMENTED
            self._finish(call, StatusCode.UNIMPLEMENTED, "no request message")
            return
        if len(body) < 5:
            self._finish(call, StatusCode.INTERNAL, "truncated request message")
            return
        flag, length = _PREFIX.unpack_from(body)
        if flag > 1 or (flag and call.encoding == "identity"):
            self._finish(call, StatusCode.INTERNAL, "compressed message without a "
                         "grpc-encoding" if flag == 1 else "invalid message flags")
            return
        if length > self.cfg.max_recv_bytes:
            self._finish(call, StatusCode.RESOURCE_EXHAUSTED,
                         f"request of {length} bytes is larger than the limit of "
                         f"{self.cfg.max_recv_bytes}")
            return
        if len(body) != 5 + length:
            self._finish(call, StatusCode.UNIMPLEMENTED if len(body) > 5 + length else
                         StatusCode.INTERNAL, "expected exactly one request message"
                         if len(body) > 5 + length else "truncated request message")
            return
        assert call.method is not None
        payload = body[5:]
        if flag:
            try:
                payload = decompress(call.encoding, payload, self.cfg.max_recv_bytes)
            except RpcError as err:
                self._finish(call, err.code, err.details)
                return
        try:
            request = call.method.deserialize(payload)
        except Exception as err:  # noqa: BLE001 - any bad request is the caller's INTERNAL status
            self._finish(call, StatusCode.INTERNAL, f"cannot parse request: {err}")
            return
        run = self._stream if call.method.streaming else self._unary
        call.task = self.loop.create_task(run(call, request))

    # -- running calls ---------------------------------------------------------------

    async def _unary(self, call: _Call, request: Any) -> None:
        assert call.method is not None
        try:
            data = await self.loop.run_in_executor(self.cfg.executor, call.method.handler,
                                                   request, call.ctx)
        except RpcError as err:
            self._finish(call, err.code, err.details)
            return
        except Exception as err:
            log.exception("gRPC %s failed", call.path)
            self._finish(call, StatusCode.UNKNOWN, f"{type(err).__name__}: {err}")
            return
        if call.ended:
            return
        self._send_headers(call)
        await self._send(call, frame(data))
        self._finish(call, StatusCode.OK, "")

    async def _stream(self, call: _Call, request: Any) -> None:
        assert call.method is not None
        try:
            source: MessageSource = call.method.handler(request, call.ctx)
        except RpcError as err:
            self._finish(call, err.code, err.details)
            return
        call.ctx.add_callback(source.close)
        try:
            self._send_headers(call)
            while not call.ended:
                chunk = await source.next()
                if chunk is None or call.ended:
                    break
                await self._send(call, chunk)
        except RpcError as err:
            self._finish(call, err.code, err.details)
            return
        except asyncio.CancelledError:
            return
        except Exception as err:
            log.exception("gRPC stream %s failed", call.path)
            self._finish(call, StatusCode.UNKNOWN, f"{type(err).__name__}: {err}")
            return
        self._finish(call, StatusCode.OK, "")

    async def _send(self, call: _Call, data: bytes) -> None:
        """Send ``data`` on the call's stream in frames the peer's window allows."""
        view = memoryview(data)
        pending = 0
        while view and not call.ended and not self._closed:
            if not self._writable.is_set():
                self._flush()
                await self._writable.wait()
                continue
            try:
                room = min(self.conn.local_flow_control_window(call.sid),
                           self.conn.max_outbound_frame_size, len(view))
            except h2.exceptions.StreamClosedError:
                return
            if room <= 0:
                self._flush()
                self._window_open.clear()
                await self._window_open.wait()
                continue
            self.conn.send_data(call.sid, view[:room].tobytes())
            view = view[room:]
            pending += room
            if pending >= _FLUSH_BYTES:
                self._flush()
                pending = 0
        self._flush()

    # -- ending calls ----------------------------------------------------------------

    def _send_headers(self, call: _Call) -> None:
        if call.headers_sent or call.ended:
            return
        call.headers_sent = True
        self.conn.send_headers(call.sid, [(":status", "200"),
                                          ("content-type", "application/grpc"),
                                          ("grpc-accept-encoding", ACCEPT_ENCODING)])
        self._flush()

    def _finish(self, call: _Call, code: StatusCode, details: str) -> None:
        """End ``call`` with a status (trailers, or a trailers-only response)."""
        if call.ended or self._closed:
            self._end(call, cancelled=False)
            return
        trailers = [("grpc-status", str(code.value[0]))]
        trailers += call.ctx.trailing_metadata
        if details:
            trailers.append(("grpc-message", grpc_message_escape(details)))
        if code == StatusCode.UNIMPLEMENTED and not call.headers_sent:
            trailers.append(("grpc-accept-encoding", ACCEPT_ENCODING))
        try:
            if call.headers_sent:
                self.conn.send_headers(call.sid, trailers, end_stream=True)
            else:
                self.conn.send_headers(call.sid, [(":status", "200"), (
                    "content-type", "application/grpc"), *trailers], end_stream=True)
            if not call.remote_closed:  # the client still sends: tell it to stop
                self.conn.reset_stream(call.sid, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()
        self.calls.pop(call.sid, None)
        self._end(call, cancelled=False)

    def _respond_http(self, call: _Call, status: str) -> None:
        """A non-gRPC request: a bare HTTP status (as gRPC servers answer)."""
        self.conn.send_headers(call.sid, [(":status", status)], end_stream=True)
        self._flush()
        self.calls.pop(call.sid, None)
        self._end(call, cancelled=False)

    def _end(self, call: _Call, *, cancelled: bool) -> None:
        if call.charged:
            self.cfg.buffered -= call.charged
            call.charged = 0
        call.body.clear()
        if call.ended:
            return
        call.ended = True
        if call.timer is not None:
            call.timer.cancel()
        if cancelled and call.task is not None and call.method is not None \
                and call.method.streaming:
            call.task.cancel()
        call.ctx._finish()

    def _deadline(self, call: _Call) -> None:
        if not call.ended:
            if call.task is not None and call.method is not None and call.method.streaming:
                call.task.cancel()
            self._finish(call, StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    # -- connection ------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self._closed:
            self.transport.write(data)

    def _abort_connection(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def goaway(self) -> None:
        """Refuse new calls (server stopping); running calls go on until they end."""
        if self._closed:
            return
        self.conn.close_connection()
        self._flush()

    def end_all(self, code: StatusCode, details: str) -> None:
        for call in list(self.calls.values()):
            self._finish(call, code, details)
        if self.transport is not None:
            self.transport.close()

    def _arm_keepalive(self) -> None:
        self._keepalive = self.loop.call_later(self.cfg.keepalive_timeout
                                               if self._ping_sent else
                                               self.cfg.keepalive_time, self._check_alive)

    def _check_alive(self) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if self._ping_sent is not None and now - self._ping_sent >= self.cfg.keepalive_timeout:
            self.cfg.stats.keepalive_timeouts += 1
            log.info("gRPC: %s did not answer a keepalive PING; closing", self.peer)
            self._abort_connection()
            return
        if self._ping_sent is None and now - self._last_rx >= self.cfg.keepalive_time:
            self._ping_sent = now
            self.conn.ping(b"vigil-ka")
            self._flush()
        self._arm_keepalive()


def _peer_name(transport: asyncio.BaseTransport) -> str:
    """grpcio-style peer: ``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5`` or ``unix:/path``."""
    addr = transport.get_extra_info("peername")
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    sock = transport.get_extra_info("socket")
    name = sock.getsockname() if sock is not None else ""
    return f"unix:{name}" if name else "unix:"


__all__ = ["Context", "GrpcConnection", "Method", "MessageSource", "ProtocolConfig",
           "RpcError", "StatusCode", "frame", "grpc_message_escape", "parse_timeout"]
