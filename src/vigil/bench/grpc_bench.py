"""GetEvents throughput: events/s delivered to 1 and 10 subscribers with zero loss.

Four parts, all in one run (so ratios compare like with like on a noisy machine):

* ``transport``: the server path alone. Pre-built event dicts (the pipeline's shape: new
  event dicts, shared process dicts) are published into an ``EventHub`` served by a
  real ``GrpcServer`` on a unix socket; the server filters, encodes and sends them.
  Clients are separate processes (their CPU is not the server's) running
  ``vigil.bench.h2client``, which parses every ``GetEventsResponse`` and checks the
  sequence (each event exactly once, in order). The publisher paces itself on the
  subscribers' queues (never above half full), so the rate measured is the sustainable
  one; drops == 0 and every client's count and sequence are checked.
* ``grpcio_client``: the same with grpcio's Python client (what tests use): its
  per-message cost caps what one Python grpcio client can receive.
* ``baseline_grpcio_server``: grpcio's own server streaming identical pre-built
  messages (no hub, filter or encoding), read by the h2 client: the ceiling of the
  previous design (``ratio`` = ours / this).
* ``end_to_end``: the real agent (subprocess) during an exec storm, one h2 client
  subscribed: exec events of the storm delivered over gRPC vs execs performed. Bound
  by the kernel's exec rate and the agent's pipeline, not by the server.

CPU per event: the server process's CPU time (publisher + event loop) over the run
divided by events delivered (summed over subscribers).

Run: ``python -m vigil.bench grpc`` (or ``python -m vigil.bench.grpc_bench [N]``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

N_EVENTS = 200_000
BATCH = 512
ROUNDS = 3

# A grpcio client process: GetEvents until N events parsed, then print a JSON summary.
_GRPCIO_CLIENT = textwrap.dedent("""
    import json, os, sys, time, grpc
    from vigil.api.tetragon import events_pb2
    target, n, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ch = grpc.insecure_channel(target)
    call = ch.unary_stream(method, request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=events_pb2.GetEventsResponse.FromString)
    stream = call(events_pb2.GetEventsRequest())
    print("ready", flush=True)
    got, t0 = 0, None
    for resp in stream:
        if t0 is None:
            t0 = time.perf_counter()
        if resp.WhichOneof("event") is not None:
            got += 1
        if got >= n:
            break
    t1 = time.perf_counter()
    c = os.times()
    print(json.dumps({"got": got, "errors": 0, "seconds": t1 - (t0 or t1),
                      "end": time.time(), "cpu": c.user + c.system}), flush=True)
    stream.cancel()
""")


def _events(n: int) -> list[dict[str, Any]]:
    """``n`` events, exec then exit of n/2 processes sharing one parent (pipeline shape)."""
    from vigil.events.encode import exec_event, exit_event
    t = 1_700_000_000_000_000_000
    parent = {"exec_id": "bm9kZToxMDAwOjEwMA==", "pid": 100, "uid": 0, "cwd": "/root",
              "binary": "/usr/bin/bash", "arguments": "-l", "flags": "execve clone",
              "start_time": "2023-11-14T22:13:20.123456789Z", "auid": 0, "tid": 100,
              "in_init_tree": False}
    out = []
    for i in range(n // 2):
        pid = 1000 + i
        proc = {"exec_id": f"bm9kZToxMjM0NTY3ODk6{pid:08d}", "pid": pid, "uid": 0,
                "cwd": "/root", "binary": "/usr/bin/true", "arguments": f"--run {i}",
                "flags": "execve clone", "start_time": "2023-11-14T22:13:21.000000123Z",
                "auid": 0, "parent_exec_id": parent["exec_id"], "tid": pid,
                "in_init_tree": False}
        out.append(exec_event(proc, parent, None, "bench-node", t + i * 1000))
        out.append(exit_event(proc, parent, None, exit_code=0, exit_time_ns=t + i * 1000 + 500,
                              node_name="bench-node", time_ns=t + i * 1000 + 500))
    return out


def _policy_events(n: int, procs: int = 32) -> list[dict[str, Any]]:
    """``n`` process_kprobe events (an openat policy's shape) from ``procs`` processes:
    the common high-rate case, where each process's dict is shared by many events."""
    from vigil.events.encode import rfc3339
    t = 1_700_000_000_000_000_000
    parent = {"exec_id": "bm9kZToxMDAwOjEwMA==", "pid": 100, "uid": 0, "cwd": "/root",
              "binary": "/usr/bin/bash", "arguments": "-l", "flags": "execve clone",
              "start_time": "2023-11-14T22:13:20.123456789Z", "auid": 0, "tid": 100,
              "in_init_tree": False}
    ps = [{"exec_id": f"bm9kZToxMjM0NTY3ODk6{1000 + j:08d}", "pid": 1000 + j, "uid": 0,
           "cwd": "/root", "binary": "/usr/bin/cat", "arguments": f"/etc/file{j}",
           "flags": "execve clone", "start_time": "2023-11-14T22:13:21.000000123Z",
           "auid": 0, "parent_exec_id": parent["exec_id"], "tid": 1000 + j,
           "in_init_tree": False} for j in range(procs)]
    return [{"process_kprobe": {
                "process": ps[i % procs], "parent": parent,
                "function_name": "__x64_sys_openat",
                "args": [{"int_arg": -100}, {"string_arg": f"/seq/{i}"},
                         {"int_arg": 0}],
                "action": "KPROBE_ACTION_POST", "policy_name": "bench-openat"},
             "node_name": "bench-node", "time": rfc3339(t + i * 1000)}
            for i in range(n)]


def _spawn_clients(target: str, n: int, k: int, method: str, client: str = "h2",
                   extra: tuple[str, ...] = ()) -> list[subprocess.Popen[str]]:
    env = dict(os.environ, GRPC_VERBOSITY="NONE")
    if client == "h2":
        cmd = [sys.executable, "-m", "vigil.bench.h2client", target, str(n),
               "--method", method, *extra]
    else:
        cmd = [sys.executable, "-c", _GRPCIO_CLIENT, target, str(n), method]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(k)]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("bench client did not start")
    return procs


def _collect(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, _ = p.communicate()
        out.append(json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else
                   {"got": 0, "errors": 1, "seconds": 0.0, "end": time.time(), "cpu": 0.0})
    return out


def _cpu() -> float:
    c = os.times()
    return c.user + c.system


def bench_getevents(k: int, n: int = N_EVENTS, client: str = "h2",
                    shape: str = "exec_exit") -> dict[str, Any]:
    """``k`` subscribers, ``n`` events each; zero loss enforced by pacing, checked.
    ``shape``: ``exec_exit`` (a new process per two events) or ``policy`` (kprobe
    events of 32 long-lived processes)."""
    from vigil.stream.hub import EventHub
    from vigil.server.config import ServerConfig
    from vigil.server.server import GrpcServer

    events = _events(n) if shape == "exec_exit" else _policy_events(n)
    d = tempfile.mkdtemp(prefix="vigil-bench-")
    hub = EventHub()
    cfg = ServerConfig(addresses=(f"unix://{d}/b.sock",), info_file="",
                       queue_events=65536, max_subscribers=max(16, k))
    srv = GrpcServer(cfg, events=hub, node_name="bench-node", policies=lambda: None,
                     health_check=lambda: (True, "running"))
    srv.start()
    try:
        procs = _spawn_clients(srv.addresses[0], n, k,
                               "/tetragon.FineGuidanceSensors/GetEvents", client,
                               ("--expect-seq",))
        subs = srv.servicer.subscribers
        deadline = time.monotonic() + 30
        while len(subs.live()) < k and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu0, t0 = _cpu(), time.time()
        high = cfg.queue_events // 2
        for i in range(0, n, BATCH):
            while max(s.queued for s in subs.live()) > high:
                time.sleep(0.0005)
            hub.publish(events[i:i + BATCH])
        results = _collect(procs, timeout=600)
        t1 = max(r["end"] for r in results)
        cpu = _cpu() - cpu0
        dropped = subs.dropped
    finally:
        srv.stop(grace=0)
        shutil.rmtree(d, ignore_errors=True)
    got = [r["got"] for r in results]
    errors = sum(r["errors"] for r in results)
    wall = t1 - t0
    return {
        "client": client, "shape": shape, "subscribers": k, "events_per_subscriber": n,
        "events_per_s_per_subscriber": round(n / wall),
        "events_per_s_total": round(n * k / wall),
        "server_cpu_us_per_event": round(cpu / (n * k) * 1e6, 2),
        "client_cpu_us_per_event": round(sum(r["cpu"] for r in results) / (n * k) * 1e6, 2),
        "dropped": dropped, "lost": n * k - sum(got), "sequence_errors": errors,
        "zero_loss": dropped == 0 and errors == 0 and all(g == n for g in got),
    }


def bench_grpc_floor(n: int = N_EVENTS) -> dict[str, Any]:
    """grpcio's server alone: one stream of ``n`` identical pre-built messages (the
    previous design's ceiling), read by the h2 client."""
    import grpc

    from vigil.server.convert import EventEncoder
    msg = EventEncoder().encode_event(_events(2)[0])
    d = tempfile.mkdtemp(prefix="vigil-bench-")

    def stream(req: bytes, ctx: Any) -> Any:
        for _ in range(n):
            yield msg

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {
        "Get": grpc.unary_stream_rpc_method_handler(stream)}),))
    server.add_insecure_port(f"unix://{d}/f.sock")
    server.start()
    try:
        cpu0 = _cpu()
        procs = _spawn_clients(f"unix://{d}/f.sock", n, 1, "/bench.Floor/Get")
        results = _collect(procs, timeout=600)
        cpu = _cpu() - cpu0
    finally:
        server.stop(0)
        shutil.rmtree(d, ignore_errors=True)
    r = results[0]
    return {"msgs_per_s": round(r["got"] / r["seconds"]) if r["seconds"] else 0,
            "server_cpu_us_per_msg": round(cpu / max(r["got"], 1) * 1e6, 2),
            "message_bytes": len(msg)}


def bench_end_to_end(execs: int = 20_000) -> dict[str, Any]:
    """The real agent during an exec storm; one h2 GetEvents client counts the storm's
    exec events. Needs root and the BPF objects."""
    from vigil.bench.core import TRUE, _cpu_seconds
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    sock = tmp / "e2e.sock"
    agent = subprocess.Popen(
        [sys.executable, "-m", "vigil", "agent", "--export-filename", str(tmp / "ev.log"),
         "--no-export-stdout", "--export-file-max-size-mb", "4000",
         "--server-address", f"unix://{sock}", "--server-info-file", str(tmp / "i.json")],
        stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stderr is not None
        for line in agent.stderr:
            if "vigil agent started" in line:
                break
        else:
            raise RuntimeError("agent did not start")
        marker = "grpc-e2e"
        procs = _spawn_clients(f"unix://{sock}", execs, 1,
                               "/tetragon.FineGuidanceSensors/GetEvents", "h2",
                               ("--marker", marker))
        time.sleep(0.5)  # the stream is subscribed once the server has read the request
        cpu0, t0 = _cpu_seconds(agent.pid), time.time()
        subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {execs} ]; do {TRUE} "
                        f"{marker}; i=$((i+1)); done"], check=True)
        t_storm = time.time() - t0
        r = _collect(procs, timeout=120)[0]
        cpu = _cpu_seconds(agent.pid) - cpu0
        wall = r["end"] - t0
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"execs": execs, "exec_per_s": round(execs / t_storm),
            "storm_execs_delivered": r["marked"], "events_delivered": r["got"],
            "events_per_s": round(r["got"] / wall), "lost_storm_execs": execs - r["marked"],
            "agent_cpu_us_per_event": round(cpu / max(r["got"], 1) * 1e6, 1)}


def bench_encode(n: int = 20_000) -> dict[str, Any]:
    """Per-event encoding cost: our encoder (warm process cache) vs ParseDict."""
    from google.protobuf import json_format

    from vigil.api.tetragon import events_pb2
    from vigil.server.convert import EventEncoder
    events = _events(n)
    enc = EventEncoder()

    def timed(fn: Callable[[dict[str, Any]], Any], evs: list[dict[str, Any]]) -> float:
        t = time.perf_counter()
        for e in evs:
            fn(e)
        return (time.perf_counter() - t) / len(evs) * 1e6

    ours = timed(enc.encode_event, events)
    ref = timed(lambda e: json_format.ParseDict(e, events_pb2.GetEventsResponse())
                .SerializeToString(), events[:2000])
    return {"encoder_us_per_event": round(ours, 2), "parsedict_us_per_event": round(ref, 2)}


def _best(fn: Callable[[], dict[str, Any]], key: str, rounds: int = ROUNDS) -> dict[str, Any]:
    """Best of ``rounds`` (the host is shared: noise only ever slows a run down); every
    round must be lossless."""
    runs = [fn() for _ in range(rounds)]
    best = max(runs, key=lambda r: r[key])
    best["rounds"] = [r[key] for r in runs]
    if "zero_loss" in best:
        best["zero_loss"] = all(r["zero_loss"] for r in runs)
    return best


def main(n: int = N_EVENTS) -> dict[str, Any]:
    floor = _best(lambda: bench_grpc_floor(n // 4), "msgs_per_s")
    one = _best(lambda: bench_getevents(1, n), "events_per_s_per_subscriber")
    ten = _best(lambda: bench_getevents(10, n // 10), "events_per_s_total")
    one_policy = _best(lambda: bench_getevents(1, n, shape="policy"),
                       "events_per_s_per_subscriber")
    ten_policy = _best(lambda: bench_getevents(10, n // 10, shape="policy"),
                       "events_per_s_total")
    grpcio_client = _best(lambda: bench_getevents(1, n // 10, "grpcio"),
                          "events_per_s_per_subscriber", 1)
    result: dict[str, Any] = {
        "baseline_grpcio_server": floor,
        "transport_one_subscriber": one,
        "transport_ten_subscribers": ten,
        "transport_one_subscriber_policy_events": one_policy,
        "transport_ten_subscribers_policy_events": ten_policy,
        "transport_one_grpcio_client": grpcio_client,
        "encode": bench_encode(),
        "ratio_one_vs_baseline": round(one["events_per_s_per_subscriber"]
                                       / max(floor["msgs_per_s"], 1), 2),
        "target_events_per_s_one_subscriber": 100_000,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if os.geteuid() == 0:
        try:
            result["end_to_end"] = bench_end_to_end()
        except Exception as err:  # noqa: BLE001 - no BPF here: report, keep the transport figures
            result["end_to_end"] = {"error": repr(err)}
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else N_EVENTS), indent=2))
