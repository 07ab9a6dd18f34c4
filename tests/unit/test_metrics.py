"""Metrics: names under both namespaces, bounded labels, health, HTTP and TLS serving."""

from __future__ import annotations

import datetime
import http.client
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from vigil.cli.observability import observability_config, observability_options
from vigil.export.ratelimit import rate_limit_export
from vigil.export.sink import QueueSink
from vigil.stream.hub import EventHub
from vigil.metrics import start_metrics
from vigil.metrics.collectors import KernelView, MetricsSources, SinkView
from vigil.metrics.config import MetricsConfig, metrics_config, parse_label_allow, parse_listen
from vigil.metrics.events import OTHER, EventMetrics, event_type, policy_hook
from vigil.metrics.health import Health, HealthProbe, SinkProbe
from vigil.metrics.registry import build_registry, event_metrics, sources_from_agent
from vigil.metrics.server import MetricsServer, tls_context
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.process.cache import ProcessCache
from vigil.stream.throttle import ThrottleTracker

# Every metric family the agent exposes (without namespace and without _total).
COUNTERS = [
    "events", "policy_events", "bpf_missed_events", "bpf_records_dropped", "bpf_read_errors",
    "bpf_records_sent", "observer_ringbuf_events_lost", "observer_ringbuf_events_received",
    "observer_ringbuf_errors", "msg_op", "handler_errors", "events_missing_process_info",
    "records_discarded",
    "cgroup_rate", "throttle_exit_events_suppressed", "throttled_events",
    "process_cache_evictions", "process_cache_early_deletions", "process_cache_misses",
    "events_exported", "export_events_dropped", "export_errors",
    "export_ratelimit_events_dropped", "notify_overflowed_events", "throttle_sweep_errors",
]
GAUGES = [
    "map_entries", "map_capacity", "process_cache_size", "process_cache_capacity",
    "observer_ringbuf_pending_bytes", "observer_ringbuf_capacity_bytes", "throttled_cgroups",
    "export_queue_events", "export_queue_capacity", "health_status", "build_info",
]


def exec_event(binary: str, pod: str = "", ns: str = "") -> dict[str, Any]:
    proc: dict[str, Any] = {"binary": binary}
    if pod:
        proc["pod"] = {"name": pod, "namespace": ns, "workload": pod.rsplit("-", 1)[0]}
    return {"process_exec": {"process": proc}, "node_name": "n", "time": "t"}


def fake_sources() -> MetricsSources:
    cache = ProcessCache(capacity=10)
    pipe = Pipeline(cache, EventOptions(), lambda: 0, ThrottleTracker(resolve=lambda _i: ""))
    pipe.records.update({5: 7, 7: 3})
    pipe.decode_errors.update({5: 1})
    pipe.unknown_ops = 2
    return MetricsSources(
        kernel=lambda: [KernelView({5: 7, 7: 3}, {(5, "RINGBUF_FULL"): 4, (5, "THROTTLED"): 9,
                                                  (5, "READ_ERROR"): 1})],
        ring=lambda: (128, 1 << 20, 1),
        pipeline=lambda: pipe,
        cache=lambda: cache,
        sinks=lambda: [SinkView("jsonl", 5, 2, 1, 3, 100)],
        ratelimit_dropped=lambda: 11,
        subscriber_dropped=lambda: 6,
        maps=lambda: {"vg_cgroup_rate": (3, 8192)},
        version="9.9",
    )


def registry_for(ns: str, events: EventMetrics | None = None,
                 health: Health | None = None) -> CollectorRegistry:
    cfg = MetricsConfig(namespace=ns)
    return build_registry(cfg, fake_sources(), events or event_metrics(cfg), health,
                          process=False)


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("ns", ["vigil", "tetragon"])
def test_every_metric_name_under_the_namespace(ns: str) -> None:
    reg = registry_for(ns, health=Health(lambda: HealthProbe(True, 1, 0)))
    families = {m.name: m.type for m in reg.collect()}
    for name in COUNTERS:
        assert families.get(f"{ns}_{name}") == "counter", name
    for name in GAUGES:
        assert families.get(f"{ns}_{name}") == "gauge", name
    assert all(n.startswith(f"{ns}_") for n in families)


def test_tetragon_names_and_values() -> None:
    reg = registry_for("tetragon")
    v = reg.get_sample_value
    assert v("tetragon_bpf_missed_events_total", {"msg_op": "5", "error": "EAGAIN"}) == 4
    assert v("tetragon_observer_ringbuf_events_lost_total") == 4
    assert v("tetragon_observer_ringbuf_events_received_total") == 10
    assert v("tetragon_observer_ringbuf_errors_total") == 1 + 2 + 1  # decode, unknown, discard
    assert v("tetragon_bpf_records_dropped_total", {"msg_op": "5", "reason": "throttled"}) == 9
    assert v("tetragon_bpf_read_errors_total", {"msg_op": "5"}) == 1
    assert v("tetragon_msg_op_total", {"msg_op": "7"}) == 3
    assert v("tetragon_map_entries", {"map": "vg_cgroup_rate"}) == 3
    assert v("tetragon_map_capacity", {"map": "vg_cgroup_rate"}) == 8192
    assert v("tetragon_process_cache_capacity") == 10
    assert v("tetragon_events_exported_total") == 5
    assert v("tetragon_export_events_dropped_total", {"exporter": "jsonl"}) == 2
    assert v("tetragon_export_ratelimit_events_dropped_total") == 11
    assert v("tetragon_notify_overflowed_events_total") == 6
    assert v("tetragon_cgroup_rate_total", {"type": "throttle_start"}) == 0
    assert v("tetragon_build_info", {"version": "9.9"}) == 1


def test_registry_is_fresh_each_time() -> None:
    a, b = registry_for("vigil"), registry_for("vigil")
    assert a is not b
    from prometheus_client import REGISTRY
    assert REGISTRY.get_sample_value("vigil_events_exported_total") is None


def test_process_collector_is_included_by_default() -> None:
    cfg = MetricsConfig()
    reg = build_registry(cfg, MetricsSources(), event_metrics(cfg))
    assert reg.get_sample_value("process_resident_memory_bytes") > 0


def test_bad_namespace_and_labels_are_refused() -> None:
    with pytest.raises(ValueError):
        MetricsConfig(namespace="vigil-agent")
    with pytest.raises(ValueError):
        MetricsConfig(process_labels=("binary", "pid"))
    with pytest.raises(ValueError):
        MetricsConfig(tls_cert_file="c.pem")


# --------------------------------------------------------------------------- labels

def test_events_total_by_type_and_labels() -> None:
    em = EventMetrics(("binary", "pod"))
    em.offer([exec_event("/bin/ls", "web-1"), exec_event("/bin/ls", "web-1"),
              {"process_throttle": {"type": "THROTTLE_START", "cgroup": "x"}, "time": "t"}])
    reg = registry_for("vigil", em)
    v = reg.get_sample_value
    assert v("vigil_events_total", {"type": "PROCESS_EXEC", "binary": "/bin/ls",
                                    "pod": "web-1"}) == 2
    assert v("vigil_events_total", {"type": "PROCESS_THROTTLE", "binary": "", "pod": ""}) == 1


def test_label_values_are_bounded_first_n() -> None:
    em = EventMetrics(("binary",), max_values=3)
    em.offer([exec_event(f"/tmp/evil-{i}") for i in range(1000)])
    em.offer([exec_event("/tmp/evil-0")])
    evs, _ = em.snapshot()
    got = dict(evs)
    assert len(got) == 4  # three admitted values + other
    assert got[("PROCESS_EXEC", "/tmp/evil-0")] == 2
    assert got[("PROCESS_EXEC", OTHER)] == 997


def test_label_allow_list() -> None:
    em = EventMetrics(("binary",), allow={"binary": frozenset({"/usr/bin/curl"})})
    em.offer([exec_event("/usr/bin/curl"), exec_event("/bin/sh"), exec_event("/bin/ls")])
    assert dict(em.snapshot()[0]) == {("PROCESS_EXEC", "/usr/bin/curl"): 1,
                                      ("PROCESS_EXEC", OTHER): 2}


def test_series_are_bounded_across_labels() -> None:
    em = EventMetrics(("binary", "pod"), max_values=1000, max_series=10)
    em.offer([exec_event(f"/b{i}", f"pod-{i}") for i in range(100)])
    got = dict(em.snapshot()[0])
    assert len(got) == 11
    assert got[(OTHER, OTHER, OTHER)] == 90


def test_label_filter_removes_labels() -> None:
    em = EventMetrics(())
    em.offer([exec_event("/bin/ls", "p")])
    reg = registry_for("vigil", em)
    assert reg.get_sample_value("vigil_events_total", {"type": "PROCESS_EXEC"}) == 1


def test_policy_events_and_hooks() -> None:
    em = EventMetrics(("binary",))
    ev = {"process_kprobe": {"process": {"binary": "/bin/cat"}, "function_name": "fd_install",
                             "policy_name": "files", "action": "KPROBE_ACTION_POST"}}
    em.offer([ev, ev])
    reg = registry_for("tetragon", em)
    assert reg.get_sample_value("tetragon_policy_events_total", {
        "policy": "files", "hook": "kprobe:fd_install", "action": "KPROBE_ACTION_POST"}) == 2
    assert policy_hook("process_tracepoint", {"subsys": "syscalls", "event": "sys_enter_open"}) \
        == "tracepoint:syscalls/sys_enter_open"
    assert policy_hook("process_uprobe", {"path": "/bin/bash", "symbol": "readline"}) == \
        "uprobe:/bin/bash/readline"
    assert policy_hook("process_lsm", {"function_name": "file_open"}) == "lsm:file_open"
    assert event_type({"rate_limit_info": {}, "time": "t"}) == "RATE_LIMIT_INFO"
    assert event_type({"node_name": "n"}) == "unknown"


# --------------------------------------------------------------------------- health

class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_health_stuck_only_with_pending_and_no_progress() -> None:
    clock = StepClock()
    probe = HealthProbe(True, 10, 0)
    h = Health(lambda: probe, stall_after=5, clock=clock)
    assert h.check().ok
    clock.t = 100
    assert h.check().ok  # idle ring: not stuck
    probe = HealthProbe(True, 10, 4096)
    assert not h.check().ok  # bytes waiting, no progress since t=0
    probe = HealthProbe(True, 11, 4096)
    st = h.check()
    assert st.ok, st.text  # progress resets the clock
    clock.t = 104
    assert h.check().ok
    clock.t = 106
    st = h.check()
    assert not st.ok and "reader stuck" in st.text
    assert st.tetragon()["status"] == "HEALTH_STATUS_ERROR"


def test_health_dead_reader_and_stuck_exporter() -> None:
    clock = StepClock()
    probe = HealthProbe(False, 1, 0)
    h = Health(lambda: probe, stall_after=5, clock=clock)
    assert "not running" in h.check().text
    probe = HealthProbe(True, 1, 0, (SinkProbe("jsonl", 10, 3),))
    assert h.check().ok
    clock.t = 6
    st = h.check()
    assert not st.ok and "exporter jsonl stuck" in st.text


def test_health_probe_failure_is_unhealthy() -> None:
    def boom() -> HealthProbe:
        raise RuntimeError("x")
    assert not Health(boom).check().ok


def test_a_failing_source_does_not_fail_the_scrape() -> None:
    def boom() -> Any:
        raise RuntimeError("sensor closed under the scrape")
    cfg = MetricsConfig()
    reg = build_registry(cfg, MetricsSources(cache=boom, version="1"), event_metrics(cfg),
                         process=False)
    assert reg.get_sample_value("vigil_build_info", {"version": "1"}) == 1
    assert reg.get_sample_value("vigil_process_cache_size") is None


def test_health_gauge() -> None:
    probe = HealthProbe(False, 0, 0)
    reg = registry_for("vigil", health=Health(lambda: probe))
    assert reg.get_sample_value("vigil_health_status") == 0


# --------------------------------------------------------------------------- agent view

def fake_agent() -> SimpleNamespace:
    cache = ProcessCache(capacity=64)
    pipe = Pipeline(cache, EventOptions(), lambda: 0, ThrottleTracker(resolve=lambda _i: ""))
    hub = EventHub()
    sink = QueueSink("jsonl", lambda evs: None, max_events=4)
    limited, _close = rate_limit_export(sink, 1, "n", interval=3600)
    hub.subscribe(limited)
    client = SimpleNamespace(name="grpc", dropped=0, offer=lambda b: 0)
    hub.subscribe(client)
    # every part vigil.metrics.agentview.ObservedAgent names, and nothing else
    return SimpleNamespace(cache=cache, pipeline=pipe, hub=hub, sinks=[sink], sensor=None,
                           reader_heartbeat=None, reader_alive=lambda: False,
                           remote_sinks=[], redactor=None, policy_events=None, server=None,
                           client=client)


def test_sources_from_agent() -> None:
    agent = fake_agent()
    agent.hub.publish([exec_event("/bin/a")] * 3)  # 1 passes the limit, 2 dropped
    agent.client.dropped = 5
    cfg = MetricsConfig()
    reg = build_registry(cfg, sources_from_agent(agent), event_metrics(cfg), process=False)
    v = reg.get_sample_value
    assert v("vigil_export_ratelimit_events_dropped_total") == 2
    assert v("vigil_export_queue_events", {"exporter": "jsonl"}) == 1
    assert v("vigil_export_queue_capacity", {"exporter": "jsonl"}) == 4
    assert v("vigil_notify_overflowed_events_total") == 5
    agent.hub.unsubscribe(agent.client)  # a departed client's drops stay counted
    assert v("vigil_notify_overflowed_events_total") == 5
    assert v("vigil_process_cache_capacity") == 64
    assert v("vigil_observer_ringbuf_events_lost_total") == 0  # no sensor: zero, no error
    agent.server = SimpleNamespace(stats=lambda: {"dropped": 7})  # the gRPC server counts
    assert v("vigil_notify_overflowed_events_total") == 7


def test_start_metrics_counts_hub_events_and_serves() -> None:
    agent = fake_agent()
    running = start_metrics(agent, MetricsConfig(port=0))
    try:
        agent.hub.publish([exec_event("/bin/a")])
        body = fetch(running.url + "/metrics")[1]
        assert b'vigil_events_total{binary="/bin/a"' in body
        code, text = fetch(running.url + "/healthz")
        assert code == 503 and b"reader thread is not running" in text  # no reader here
    finally:
        running.close()
    assert running.events not in agent.hub.subscribers


# --------------------------------------------------------------------------- server

def fetch(url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host.strip("[]"), int(port), context=ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    conn.request("GET", "/" + path)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


@pytest.fixture
def served() -> Iterator[MetricsServer]:
    srv = MetricsServer(registry_for("tetragon"), port=0,
                        health=Health(lambda: HealthProbe(True, 1, 0))).start()
    yield srv
    srv.close()


def test_http_metrics_healthz_404(served: MetricsServer) -> None:
    assert served.address[0] == "127.0.0.1"
    code, body = fetch(served.url + "/metrics")
    assert code == 200 and b"tetragon_events_exported_total 5.0" in body
    assert fetch(served.url + "/healthz") == (200, b"ok\n")
    assert fetch(served.url + "/nope")[0] == 404


def make_cert(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_metrics(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    srv = MetricsServer(registry_for("vigil"), port=0,
                        tls=tls_context(str(cert), str(key))).start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=str(cert))
        code, body = fetch(srv.url + "/metrics", client)
        assert code == 200 and b"vigil_events_exported_total" in body
        # plain HTTP to a TLS port gets nothing, and the server keeps serving
        with pytest.raises((http.client.HTTPException, OSError)):
            fetch(srv.url.replace("https", "http") + "/metrics")
        # an untrusted client refuses the certificate
        with pytest.raises(ssl.SSLError):
            fetch(srv.url + "/metrics", ssl.create_default_context())
        assert fetch(srv.url + "/healthz", client)[0] == 200
    finally:
        srv.close()


def test_slow_clients_cannot_exhaust_the_server() -> None:
    import socket
    srv = MetricsServer(registry_for("vigil"), port=0, max_connections=2).start()
    idle = [socket.create_connection(srv.address) for _ in range(5)]
    try:
        deadline = time.monotonic() + 15  # bounds a hang only: the server may be slow
        while srv._server.refused < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv._server.refused >= 3
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # slots free again once the idle ones are gone
        try:
            if fetch(srv.url + "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail("server did not recover")
    srv.close()


# --------------------------------------------------------------------------- config

def test_parse_listen() -> None:
    assert parse_listen("2112") == ("127.0.0.1", 2112)
    assert parse_listen(":2112") == ("127.0.0.1", 2112)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_listen("localhost")


def test_label_allow_parse() -> None:
    assert parse_label_allow(["binary=/a", "binary=/b", "pod=x"]) == {
        "binary": frozenset({"/a", "/b"}), "pod": frozenset({"x"})}
    with pytest.raises(ValueError):
        parse_label_allow(["pid=1"])
    assert metrics_config("") is None


def test_cli_options() -> None:
    seen: dict[str, Any] = {}

    @click.command()
    @observability_options
    def cmd(**opts: Any) -> None:
        seen["cfg"] = observability_config(opts)

    res = CliRunner().invoke(cmd, ["--metrics-server", "9100", "--metrics-namespace", "tetragon",
                                   "--cgroup-rate", "1000,1s", "--export-rate-limit", "60",
                                   "--metrics-label-allow", "binary=/bin/sh"])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.metrics.host, cfg.metrics.port, cfg.metrics.namespace) == \
        ("127.0.0.1", 9100, "tetragon")
    assert cfg.metrics.label_allow == {"binary": frozenset({"/bin/sh"})}
    assert (cfg.cgroup_rate.events, cfg.cgroup_rate.interval_s, cfg.cgroup_rate.quiet_s) == \
        (1000, 1.0, 5.0)
    assert cfg.export_rate_limit == 60
    res = CliRunner().invoke(cmd, [])
    assert res.exit_code == 0
    assert seen["cfg"].metrics is None and seen["cfg"].cgroup_rate is None


def test_exposition_is_valid_text() -> None:
    from prometheus_client.parser import text_string_to_metric_families
    text = generate_latest(registry_for("tetragon")).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "tetragon_observer_ringbuf_events_lost" in names


def test_pipeline_discards_are_exported() -> None:
    """Every record the pipeline reads but turns into no event is in some counter."""
    from vigil.abi import _generated as abi
    from vigil.events.generic import ArgSpec
    from vigil.policy.plan import HookPlan
    from vigil.stream.policy_events import HookRegistry, PolicyEvents, RegisteredHook
    from vigil.process.model import ProcessInfo

    def exit_rec(pid: int) -> bytes:
        vals = list(abi.VG_EXIT_MSG.unpack(bytes(abi.VG_EXIT_MSG.size)))
        ix = abi.VG_EXIT_MSG_INDEX
        vals[ix["hdr.op"]], vals[ix["pid"]], vals[ix["hdr.ktime"]] = abi.MsgOp.EXIT, pid, 9
        return abi.VG_EXIT_MSG.pack(*vals)

    def generic_rec(hook_id: int, pid: int) -> bytes:
        vals = list(abi.VG_GENERIC_MSG.unpack(bytes(abi.VG_GENERIC_MSG.size)))
        ix = abi.VG_GENERIC_MSG_INDEX
        vals[ix["hdr.op"]], vals[ix["hook_id"]] = abi.MsgOp.GENERIC_KPROBE, hook_id
        vals[ix["pid"]] = vals[ix["tid"]] = pid
        return abi.VG_GENERIC_MSG.pack(*vals)

    cache = ProcessCache()
    pipe = Pipeline(cache, EventOptions(node_name="n"), lambda: 0)
    reg = HookRegistry()
    pe = PolicyEvents(pipe, reg)
    reg.add([RegisteredHook(HookPlan(hook_id=1, section="s", event="process_kprobe", opcode=0,
                                     attach=(), config=b"", function_name="f",
                                     args=(ArgSpec("int"),)), "p", "")])
    cache.add(ProcessInfo(exec_id="e10", pid=10, tid=10, ktime=1, start_time_ns=1, binary="/b"))
    events = pipe.handle([
        exit_rec(10), exit_rec(10),        # the second exit of one instance
        exit_rec(77),                      # exit of a process never seen
        generic_rec(2, 10),                # hook already removed
        generic_rec(1, 78),                # policy event of a process not in the cache
        bytes([250]) + bytes(15),          # unknown opcode
        exit_rec(10)[:12],                 # malformed
    ])
    assert [next(iter(e)) for e in events] == ["process_exit", "process_kprobe"]
    reg_ = build_registry(MetricsConfig(namespace="vigil"),
                          MetricsSources(pipeline=lambda: pipe, policy_events=lambda: pe),
                          event_metrics(MetricsConfig()), process=False)
    v = reg_.get_sample_value
    assert v("vigil_records_discarded_total", {"reason": "duplicate_exit"}) == 1
    assert v("vigil_records_discarded_total", {"reason": "unknown_hook"}) == 1
    assert v("vigil_events_missing_process_info_total") == 2
    assert v("vigil_handler_errors_total", {"opcode": "unknown", "error": "unknown_opcode"}) == 1
    assert v("vigil_handler_errors_total", {"opcode": str(int(abi.MsgOp.EXIT)),
                                            "error": "event_handler_failed"}) == 1
    assert v("vigil_observer_ringbuf_events_received_total") == 7
