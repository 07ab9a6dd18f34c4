"""gRPC-over-HTTP/2 edge cases against the real server (``vigil.server.server``).

The server runs in this process on a unix socket, fed by an ``EventHub`` the test
publishes into (so queue and connection state can be inspected); clients are grpcio's
Python client and, for what grpcio cannot produce (bad prefaces, missing pseudo-headers,
a client that never reads, raw RST_STREAM / PING / GOAWAY handling), raw ``h2`` clients
over a socket. Deadlines here only bound hangs; nothing asserts a speed.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from vigil.api.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc
from vigil.stream.hub import EventHub
from vigil.server.config import ServerConfig
from vigil.server.fakes import StaticPolicyStore
from vigil.server.server import GrpcServer
from vigil.server.subscriber import StreamSubscriber

pytestmark = pytest.mark.e2e

WAIT = 30.0  # bounds a hang, never asserts speed
SVC = "/tetragon.FineGuidanceSensors/"
POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  kprobes:
  - call: security_file_open
"""
_PREFIX = struct.Struct(">BI")


def frame(msg: bytes, flag: int = 0) -> bytes:
    return _PREFIX.pack(flag, len(msg)) + msg


def marker(i: int) -> dict[str, Any]:
    return {"test": {"arg0": str(i)}, "node_name": "proto-node",
            "time": "2024-01-02T00:00:00Z"}


class SlowStore(StaticPolicyStore):
    """A policy store whose ``add`` blocks until released (a slow policy load)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()
        self.adds = 0

    def add(self, yaml_text: str, *, source: str) -> Any:
        self.adds += 1
        assert self.release.wait(WAIT)
        return super().add(yaml_text, source=source)


@dataclass
class Served:
    srv: GrpcServer
    hub: EventHub
    store: SlowStore
    path: str

    @property
    def target(self) -> str:
        return f"unix://{self.path}"

    def streams(self) -> list[StreamSubscriber]:
        return self.srv.servicer.subscribers.live()

    def hub_streams(self) -> list[Any]:
        return [s for s in self.hub.subscribers if isinstance(s, StreamSubscriber)]

    def conn_stats(self) -> dict[str, int]:
        return self.srv.stats()["connections"]

    def wait(self, pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def stub(self) -> tuple[grpc.Channel, sensors_pb2_grpc.FineGuidanceSensorsStub]:
        ch = grpc.insecure_channel(self.target)
        return ch, sensors_pb2_grpc.FineGuidanceSensorsStub(ch)


@contextlib.contextmanager
def serving(**kw: Any) -> Iterator[Served]:
    d = tempfile.mkdtemp(prefix="vigil-proto-")
    hub = EventHub()
    store = SlowStore()
    opts: dict[str, Any] = {"queue_events": 1024, "max_subscribers": 16, **kw}
    cfg = ServerConfig(addresses=(f"unix://{d}/v.sock",), info_file="", **opts)
    srv = GrpcServer(cfg, events=hub, node_name="proto-node", policies=lambda: store,
                     health_check=lambda: (True, "running"))
    srv.start()
    try:
        yield Served(srv, hub, store, f"{d}/v.sock")
    finally:
        store.release.set()
        srv.stop(grace=0)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving(handshake_timeout=2.0) as s:
        yield s


# --------------------------------------------------------------------------- raw client

@dataclass
class Resp:
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int | None:
        """grpc-status from the trailers (or a trailers-only response)."""
        v = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if v is None else int(v)

    @property
    def message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        out, pos, buf = [], 0, bytes(self.data)
        while len(buf) - pos >= 5:
            _, n = _PREFIX.unpack_from(buf, pos)
            if len(buf) - pos - 5 < n:
                break
            out.append(buf[pos + 5:pos + 5 + n])
            pos += 5 + n
        return out


class Raw:
    """A hand-driven HTTP/2 client: sends what it is told, reads only when asked."""

    def __init__(self, path: str, *, window: int | None = None, handshake: bool = True
                 ) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        deadline = time.monotonic() + WAIT
        while True:  # a full listen backlog answers EAGAIN: retry, as clients do
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "could not connect"
                time.sleep(0.01)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.resps: dict[int, Resp] = {}
        self.pings: list[bytes] = []        # PINGs the server sent us
        self.ping_acks: list[bytes] = []    # ACKs of ours
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True
        if handshake:
            self.conn.initiate_connection()
            if window is not None:
                self.conn.update_settings(
                    {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server closed it: what it sent can still be read

    def request(self, method: str, body: bytes | None = b"", *, path: str | None = None,
                headers: list[tuple[str, str]] | None = None, end: bool = True,
                verb: str = "POST", ctype: str = "application/grpc") -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", verb), (":scheme", "http"), (":path", path or SVC + method),
                (":authority", "localhost"), ("content-type", ctype), ("te", "trailers"),
                *(headers or [])]
        self.conn.send_headers(sid, hdrs, end_stream=body is None and end)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.resps[sid] = Resp()
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        view = memoryview(body)
        while True:
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(view))
            if len(view) and room <= 0:
                self.flush()
                self.read_once()
                if self.closed or self.resps.get(sid, Resp()).ended:
                    return
                continue
            self.conn.send_data(sid, view[:room].tobytes(),
                                end_stream=end and room == len(view))
            view = view[room:]
            if not len(view):
                break
        self.flush()

    def read_once(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            sid = getattr(ev, "stream_id", 0)
            r = self.resps.setdefault(sid, Resp()) if sid else None
            if isinstance(ev, h2.events.ResponseReceived):
                r.headers.update(dict(ev.headers))  # type: ignore[union-attr]
            elif isinstance(ev, h2.events.TrailersReceived):
                r.trailers.update(dict(ev.headers))  # type: ignore[union-attr]
            elif isinstance(ev, h2.events.DataReceived):
                r.data += ev.data  # type: ignore[union-attr]
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                r.ended = True  # type: ignore[union-attr]
            elif isinstance(ev, h2.events.StreamReset):
                r.reset = ev.error_code  # type: ignore[union-attr]
                r.ended = True  # type: ignore[union-attr]
            elif isinstance(ev, h2.events.PingReceived):
                self.pings.append(ev.ping_data)
            elif isinstance(ev, h2.events.PingAckReceived):
                self.ping_acks.append(ev.ping_data)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        with contextlib.suppress(Exception):
            self.flush()

    def read_until(self, pred: Callable[[], bool], what: str = "") -> None:
        deadline = time.monotonic() + WAIT
        while not pred() and not self.closed:
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.read_once()
        assert pred(), f"connection closed before {what}"

    def call(self, method: str, body: bytes | None, **kw: Any) -> Resp:
        sid = self.request(method, body, **kw)
        self.read_until(lambda: self.resps[sid].ended, f"{method} to end")
        return self.resps[sid]

    def wait_closed(self) -> None:
        """Read (and discard) until the server closes the connection."""
        deadline = time.monotonic() + WAIT
        while not self.closed:
            assert time.monotonic() < deadline, "server never closed the connection"
            self.read_once()

    def close(self) -> None:
        self.sock.close()


def version_req() -> bytes:
    return frame(sensors_pb2.GetVersionRequest().SerializeToString())


def getevents_req() -> bytes:
    return frame(events_pb2.GetEventsRequest().SerializeToString())


def still_serves(s: Served) -> None:
    ch, st = s.stub()
    with ch:
        assert st.GetVersion(sensors_pb2.GetVersionRequest(), timeout=WAIT).version


# --------------------------------------------------------------------------- deadlines

def test_unary_deadline_expires_while_the_handler_runs(served: Served) -> None:
    """A policy load outlasting grpc-timeout: DEADLINE_EXCEEDED from the server itself
    (a raw client enforces nothing), the connection stays usable, and the handler's
    late answer is discarded."""
    served.store.release.clear()
    try:
        raw = Raw(served.path)
        body = frame(sensors_pb2.AddTracingPolicyRequest(
            yaml=POLICY.format(name="slow")).SerializeToString())
        r = raw.call("AddTracingPolicy", body, headers=[("grpc-timeout", "200m")])
        assert r.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], r
        assert served.store.adds >= 1
    finally:
        served.store.release.set()
    # the same connection still works; grpcio's view of a deadline too
    assert raw.call("GetVersion", version_req()).status == 0
    raw.close()
    served.store.release.clear()
    ch, st = served.stub()
    with ch, pytest.raises(grpc.RpcError) as err:
        try:
            st.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
                yaml=POLICY.format(name="slow2")), timeout=0.3)
        finally:
            served.store.release.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_getevents_deadline_ends_the_stream_and_frees_the_subscriber(served: Served
                                                                     ) -> None:
    raw = Raw(served.path)
    sid = raw.request("GetEvents", getevents_req(), headers=[("grpc-timeout", "500m")])
    served.wait(lambda: len(served.streams()) == 1, "the stream to subscribe")
    served.hub.publish([marker(1)])
    raw.read_until(lambda: raw.resps[sid].ended, "the deadline")
    r = raw.resps[sid]
    assert r.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert r.messages() in ([], [events_pb2.GetEventsResponse(  # delivered, if in time
        test={"arg0": 1}, node_name="proto-node",
        time={"seconds": 1704153600}).SerializeToString()])
    served.wait(lambda: not served.streams() and not served.hub_streams(),
                "the subscriber to go")
    raw.close()
    # grpcio: its deadline ends the call, the server frees the subscriber too
    ch, st = served.stub()
    with ch:
        call = st.GetEvents(events_pb2.GetEventsRequest(), timeout=0.5)
        with pytest.raises(grpc.RpcError) as err:
            for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    served.wait(lambda: not served.streams() and not served.hub_streams(),
                "the subscriber to go")


def test_cancel_frees_the_subscriber(served: Served) -> None:
    ch, st = served.stub()
    with ch:
        call = st.GetEvents(events_pb2.GetEventsRequest())
        served.wait(lambda: len(served.streams()) == 1, "the stream to subscribe")
        served.hub.publish([marker(2)])
        assert next(call).test.arg0 == 2
        call.cancel()
        served.wait(lambda: not served.streams() and not served.hub_streams(),
                    "grpcio's cancel to free the subscriber")
    raw = Raw(served.path)
    sid = raw.request("GetEvents", getevents_req())
    served.wait(lambda: len(served.streams()) == 1, "the stream to subscribe")
    raw.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    raw.flush()
    served.wait(lambda: not served.streams() and not served.hub_streams(),
                "RST_STREAM to free the subscriber")
    assert raw.call("GetVersion", version_req()).status == 0  # connection still fine
    raw.close()


# --------------------------------------------------------------------------- PING, GOAWAY

def test_client_pings_are_answered(served: Served) -> None:
    raw = Raw(served.path)
    raw.conn.ping(b"12345678")
    raw.flush()
    raw.read_until(lambda: b"12345678" in raw.ping_acks, "the PING ACK")
    raw.close()


def test_server_keepalive_pings_and_drops_silent_peers() -> None:
    # PING after 0.3 s of silence; 3 s to answer (ample for the answering thread even on
    # a loaded host)
    with serving(keepalive_time=0.3, keepalive_timeout=3.0) as s:
        live = Raw(s.path)          # answers PINGs (h2 acknowledges them)
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set() and not live.closed:
                live.read_once()
        t = threading.Thread(target=answer, daemon=True)
        t.start()
        dead = Raw(s.path)          # sends its preface, then never answers
        deadline = time.monotonic() + WAIT
        while True:  # raw bytes only: the PINGs are read but never acknowledged
            data = dead.sock.recv(65536)
            if not data:
                break
            assert time.monotonic() < deadline, "a silent peer was never dropped"
        assert s.conn_stats()["keepalive_timeouts"] >= 1
        seen = len(live.pings)
        s.wait(lambda: len(live.pings) >= seen + 2 or live.closed, "more PINGs")
        assert seen >= 1 and not live.closed
        assert s.conn_stats()["open"] == 1  # the live one
        stop.set()
        live.sock.shutdown(socket.SHUT_RDWR)
        t.join(WAIT)
        live.close()
        dead.close()


def test_goaway_on_stop_drains_and_ends_streams_cleanly() -> None:
    with serving() as s:
        ch, st = s.stub()
        call = st.GetEvents(events_pb2.GetEventsRequest())
        raw = Raw(s.path)
        sid = raw.request("GetEvents", getevents_req())
        s.wait(lambda: len(s.streams()) == 2, "both streams")
        s.hub.publish([marker(i) for i in range(500)])  # queued when stop begins
        got: list[int] = []
        done = threading.Event()

        def read() -> None:
            for resp in call:
                got.append(resp.test.arg0)
            done.set()  # iteration ended without an RpcError: status OK
        threading.Thread(target=read, daemon=True).start()
        s.srv.stop(grace=WAIT)
        raw.read_until(lambda: raw.resps[sid].ended and raw.goaway is not None,
                       "trailers and GOAWAY")
        assert raw.resps[sid].status == 0
        assert raw.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert len(raw.resps[sid].messages()) == 500
        assert done.wait(WAIT) and got == list(range(500))
        assert call.code() == grpc.StatusCode.OK
        raw.close()
        ch.close()


# --------------------------------------------------------------------------- bad requests

def test_request_over_the_limit_is_resource_exhausted(served: Served) -> None:
    big = POLICY.format(name="big") + "#" * (11 << 20)
    ch, st = served.stub()
    with ch, pytest.raises(grpc.RpcError) as err:
        st.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=big), timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    raw = Raw(served.path)  # a length prefix announcing 2 GiB, a few bytes sent
    r = raw.call("GetVersion", _PREFIX.pack(0, 2 << 30) + b"\x00" * 16)
    assert r.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    raw.close()
    served.wait(lambda: served.conn_stats()["request_bytes_buffered"] == 0,
                "request buffers to be released")
    assert served.store.adds == 0 or "big" not in [p.name for p in served.store.list()]


def test_unknown_method_is_unimplemented(served: Served) -> None:
    ch, _ = served.stub()
    with ch:
        for path in (SVC + "NoSuchMethod", "/no.such.Service/Call"):
            call = ch.unary_unary(path)
            with pytest.raises(grpc.RpcError) as err:
                call(b"", timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, path


def test_malformed_requests(served: Served) -> None:
    """gRPC's table: a request proto that does not parse is INTERNAL; zero or two
    request messages for a unary call (a cardinality violation) UNIMPLEMENTED."""
    ch, _ = served.stub()
    with ch:
        for method in ("GetVersion", "GetEvents"):
            call = (ch.unary_unary if method == "GetVersion" else ch.unary_stream)(
                SVC + method)
            with pytest.raises(grpc.RpcError) as err:
                resp = call(b"\xff\xff\xff\xff", timeout=WAIT)
                if method == "GetEvents":
                    list(resp)
            assert err.value.code() == grpc.StatusCode.INTERNAL, method
            assert "cannot parse request" in err.value.details()
    assert not served.streams()
    raw = Raw(served.path)
    assert raw.call("GetVersion", b"").status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert raw.call("GetVersion", version_req() * 2).status == \
        grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert raw.call("GetVersion", version_req()[:3]).status == \
        grpc.StatusCode.INTERNAL.value[0]
    assert raw.call("GetVersion", _PREFIX.pack(0, 10) + b"abc").status == \
        grpc.StatusCode.INTERNAL.value[0]
    assert raw.call("GetVersion", version_req()).status == 0
    raw.close()


def test_non_grpc_requests_get_http_errors(served: Served) -> None:
    raw = Raw(served.path)
    r = raw.call("GetVersion", version_req(), ctype="application/json")
    assert r.headers[":status"] == "415" and r.status is None
    r = raw.call("GetVersion", None, verb="GET")
    assert r.headers[":status"] == "405"
    assert raw.call("GetVersion", version_req()).status == 0  # the connection lives on
    raw.close()


def test_missing_path_is_a_protocol_error_for_that_connection_only(served: Served
                                                                   ) -> None:
    raw = Raw(served.path)
    # h2 refuses to send a request without :path: write the HEADERS frame by hand
    from hpack import Encoder
    block = Encoder().encode([(":method", "POST"), (":scheme", "http"),
                              (":authority", "x"), ("content-type", "application/grpc")])
    raw.sock.sendall(struct.pack(">I", len(block))[1:] + b"\x01\x05" +
                     struct.pack(">I", 1) + block)  # HEADERS, END_STREAM|END_HEADERS
    raw.wait_closed()
    assert raw.goaway is not None
    assert raw.goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    still_serves(served)


def test_garbage_preface_and_silent_clients_are_closed(served: Served) -> None:
    before = served.conn_stats()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT)
    s.connect(served.path)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    while s.recv(65536):  # the server's SETTINGS and GOAWAY, then EOF
        pass
    s.close()
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(5)]
    for c in silent:
        c.settimeout(WAIT)
        c.connect(served.path)
    for c in silent:  # closed after handshake_timeout (2 s here)
        while c.recv(65536):
            pass
        c.close()
    after = served.conn_stats()
    assert after["protocol_errors"] >= before["protocol_errors"] + 1
    assert after["handshake_timeouts"] >= before["handshake_timeouts"] + 5
    served.wait(lambda: served.conn_stats()["open"] == 0, "connections to close")
    still_serves(served)


def test_connection_limit() -> None:
    with serving(max_connections=8) as s:
        clients = [Raw(s.path) for _ in range(8)]
        for c in clients:  # each one is served
            assert c.call("GetVersion", version_req()).status == 0
        extra = Raw(s.path)
        extra.wait_closed()
        assert extra.goaway is not None
        assert extra.goaway.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert s.conn_stats()["refused"] == 1 and s.conn_stats()["open"] == 8
        for c in clients:
            c.close()
        s.wait(lambda: s.conn_stats()["open"] == 0, "connections to close")
        still_serves(s)


def test_many_connections_at_once_under_the_default_limit(served: Served) -> None:
    """200 connections open together (the default limit is 256), each with a call in
    flight before any is answered; all are served, and all are gone once closed."""
    clients = [Raw(served.path) for _ in range(200)]
    sids = [c.request("GetVersion", version_req()) for c in clients]
    for c, sid in zip(clients, sids, strict=True):
        c.read_until(lambda c=c, sid=sid: c.resps[sid].ended, "GetVersion")
        assert c.resps[sid].status == 0
    assert served.conn_stats()["refused"] == 0
    for c in clients:
        c.close()
    served.wait(lambda: served.conn_stats()["open"] == 0, "connections to close")


def test_compressed_requests(served: Served) -> None:
    """gzip and deflate requests are accepted (grpcio's compression option); other
    encodings UNIMPLEMENTED, naming the accepted ones; corrupt data INTERNAL; a
    decompression bomb RESOURCE_EXHAUSTED."""
    ch = grpc.insecure_channel(served.target, compression=grpc.Compression.Gzip)
    with ch:
        st = sensors_pb2_grpc.FineGuidanceSensorsStub(ch)
        assert st.GetVersion(sensors_pb2.GetVersionRequest(), timeout=WAIT).version
        st.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
            yaml=POLICY.format(name="gzipped")), timeout=WAIT)
    assert "gzipped" in [p.name for p in served.store.list()]
    raw = Raw(served.path)
    req = sensors_pb2.GetVersionRequest().SerializeToString()
    r = raw.call("GetVersion", frame(req), headers=[("grpc-encoding", "snappy")])
    assert r.status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "gzip" in r.headers.get("grpc-accept-encoding", "")
    r = raw.call("GetVersion", frame(b"not gzip", 1), headers=[("grpc-encoding", "gzip")])
    assert r.status == grpc.StatusCode.INTERNAL.value[0]
    r = raw.call("GetVersion", frame(gzip.compress(req), 1))  # flag without encoding
    assert r.status == grpc.StatusCode.INTERNAL.value[0]
    bomb = gzip.compress(b"\x00" * (11 << 20))
    r = raw.call("GetVersion", frame(bomb, 1), headers=[("grpc-encoding", "gzip")])
    assert r.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    raw.close()


# --------------------------------------------------------------------------- slow readers

def test_a_client_that_never_reads_stays_bounded_and_others_get_everything() -> None:
    """A GetEvents client that never reads: the server holds at most its queue
    (1024 events) plus one flow-control window; the excess is dropped and counted, the
    live subscriber gets every event, and once the stuck client reads again it is told
    how many it lost: received + reported lost == published."""
    n = 20_000
    with serving() as s:
        stuck = Raw(s.path)  # 64 KiB stream window, never acknowledged while stuck
        stuck.auto_ack = False
        sid = stuck.request("GetEvents", getevents_req())
        ch, st = s.stub()
        call = st.GetEvents(events_pb2.GetEventsRequest())
        s.wait(lambda: len(s.streams()) == 2, "both streams")
        got = []

        def read() -> None:
            for resp in call:
                got.append(resp.test.arg0)
                if len(got) == n:
                    return
        t = threading.Thread(target=read, daemon=True)
        t.start()
        stuck_sub = next(x for x in s.streams() if x.peer.startswith("unix"))
        for i in range(0, n, 500):
            s.hub.publish([marker(j) for j in range(i, i + 500)])
            assert stuck_sub.queued <= 1024
            # never let the live (grpcio) client fall more than its queue behind
            s.wait(lambda: s.streams() and min(x.queued for x in s.streams()
                                               if x is not stuck_sub) < 512,
                   "the live subscriber")
        t.join(WAIT)
        assert got == list(range(n))  # all, in order
        stats = s.srv.stats()
        stuck_stats = next(x for x in stats["subscribers"] if x["name"] == stuck_sub.name)
        assert stuck_stats["dropped"] > 0 and stats["dropped"] == stuck_stats["dropped"]
        assert stuck_sub.queued <= stuck_sub.max_events
        conn = next(c for c in s.srv._connections if sid in c.calls)
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() <= 1 << 20
        # now it reads: queued events, then the drop notice
        stuck.auto_ack = True
        stuck.conn.acknowledge_received_data(len(stuck.resps[sid].data), sid)
        stuck.flush()

        def accounted() -> bool:
            evs = [events_pb2.GetEventsResponse.FromString(m)
                   for m in stuck.resps[sid].messages()]
            lost = sum(int(e.rate_limit_info.number_of_dropped_process_events)
                       for e in evs if e.HasField("rate_limit_info"))
            return sum(e.HasField("test") for e in evs) + lost == n
        stuck.read_until(accounted, "received + reported lost == published")
        assert stuck_sub.dropped == stuck_stats["dropped"]  # nothing more lost
        call.cancel()
        stuck.close()
        ch.close()


def test_a_stuck_client_that_disconnects_is_freed() -> None:
    """The server stopped reading a client whose answers fill the socket; when that
    client goes away, the write fails and its stream and queue are freed anyway."""
    with serving() as s:
        stuck = Raw(s.path)
        stuck.auto_ack = False
        stuck.request("GetEvents", getevents_req())
        s.wait(lambda: len(s.streams()) == 1, "the stream")
        sub = s.streams()[0]
        i = 0
        while sub.dropped == 0:  # until its window, the socket and its queue are full
            s.hub.publish([marker(j) for j in range(i, i + 500)])
            i += 500
            assert i < 1_000_000, "a client that never reads was never throttled"
        stuck.close()
        s.wait(lambda: not s.streams() and not s.hub_streams(), "the stream to be freed")
        s.wait(lambda: s.conn_stats()["open"] == 0, "the connection to close")
        assert sub.queued == 0 and sub.offered == sub.delivered + sub.dropped
        still_serves(s)
