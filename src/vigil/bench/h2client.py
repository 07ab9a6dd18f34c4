"""A minimal GetEvents client on ``h2`` for benchmarks: not the bottleneck it measures.

A Python grpcio client pays a C-core round trip per received message (~10k messages/s
here), so it cannot tell whether a server delivers 100k/s. This one reads the HTTP/2
stream directly with a large flow-control window, splits the gRPC length-prefixed
messages and, per message, checks what the benchmark needs:

* ``--expect-seq``: the benchmark's synthetic events carry their index in the process
  arguments (``--run <i>``; exec then exit of each process): every index must arrive,
  in order, exactly twice: a lost, duplicated or reordered event fails the run
  (kprobe events carry it as their second argument, ``/seq/<i>``, once each);
* ``--marker M``: count exec events of processes whose arguments are exactly ``M``
  (the end-to-end exec storm); other events are counted but not checked.

Usage: ``python -m vigil.bench.h2client unix:///path N [--expect-seq | --marker M]``;
prints ``ready`` once the stream is open, then a JSON summary when N messages (or N
marked execs) have arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

_WINDOW = 16 << 20
_PREFIX = struct.Struct(">BI")


def connect(target: str) -> socket.socket:
    if target.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target[len("unix://"):])
        return s
    host, _, port = target.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("n", type=int)
    ap.add_argument("--expect-seq", action="store_true")
    ap.add_argument("--marker", default="")
    ap.add_argument("--method", default="/tetragon.FineGuidanceSensors/GetEvents")
    args = ap.parse_args(argv)
    from vigil.api.tetragon import events_pb2
    parse = events_pb2.GetEventsResponse.FromString

    sock = connect(args.target)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                          h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
    conn.increment_flow_control_window(_WINDOW)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                            (":path", args.method), (":authority", "localhost"),
                            ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(sid, _PREFIX.pack(0, 0), end_stream=True)  # an empty GetEventsRequest
    sock.sendall(conn.data_to_send())
    print("ready", flush=True)

    buf = bytearray()
    got = marked = errors = 0
    expect = 0          # --expect-seq: the next index, each seen twice (exec, exit)
    seen_twice = False
    status = None
    t0 = None
    want = args.n
    marker = args.marker
    done = False
    while not done:
        data = sock.recv(1 << 20)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                if t0 is None:
                    t0 = time.perf_counter()
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                buf += ev.data
                pos = 0
                while len(buf) - pos >= 5:
                    _, length = _PREFIX.unpack_from(buf, pos)
                    if len(buf) - pos - 5 < length:
                        break
                    msg = parse(bytes(buf[pos + 5:pos + 5 + length]))
                    pos += 5 + length
                    got += 1
                    kind = msg.WhichOneof("event")
                    if args.expect_seq and kind == "process_kprobe":
                        kp = msg.process_kprobe  # policy shape: args[1] is /seq/<i>
                        if len(kp.args) < 2 or kp.args[1].string_arg != f"/seq/{expect}":
                            errors += 1
                        expect += 1
                    elif args.expect_seq:
                        proc = getattr(msg, kind).process if kind else None
                        if proc is None or proc.arguments != f"--run {expect}":
                            errors += 1
                        if seen_twice:
                            expect += 1
                        seen_twice = not seen_twice
                    elif marker and kind == "process_exec" and \
                            msg.process_exec.process.arguments == marker:
                        marked += 1
                    if (marked if marker else got) >= want:
                        done = True
                        break
                del buf[:pos]
            elif isinstance(ev, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                hdrs = dict(ev.headers)
                if b"grpc-status" in hdrs:
                    status = int(hdrs[b"grpc-status"])
                    if status != 0:
                        done = True
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                                 h2.events.ConnectionTerminated)):
                done = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    t1 = time.perf_counter()
    c = os.times()
    print(json.dumps({"got": got, "marked": marked, "errors": errors, "status": status,
                      "seconds": t1 - (t0 or t1), "end": time.time(),
                      "cpu": c.user + c.system}), flush=True)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
