"""Flood resistance end to end: a hostile workload in its own cgroup against the real agent.

The agent runs in this process (``vigil.daemon.agent.Agent``) with ``--cgroup-rate``
and the metrics server (TLS) wired in by the fixture. Each storm runs in its own
cgroup v2 child, a gentle control workload in another. Checked:

* THROTTLE_START names the storm's cgroup (only), THROTTLE_STOP follows once it is calm;
* the control cgroup is never throttled and its events keep arriving meanwhile;
* the agent stays responsive (health, /metrics over TLS) and its RSS bounded;
* accounting is exact per reason: for the storm cgroup, what the workload did ==
  what was delivered + what was throttled; every record the kernel counted as sent
  was received; nothing was lost to a full ring or a full export queue.

Cleans up: cgroups removed, agent stopped, every BPF link it made gone.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agentproc import links_of, live_links
from tests.unit.test_metrics import make_cert
from vigil.abi._generated import MsgOp
from vigil.bench.flood import (
    Cgroup, drained, exec_storm, in_cgroup, private_binary, rss_bytes, start_agent, wait_until,
)
from vigil.export import reader
from vigil.metrics import RunningMetrics, start_metrics
from vigil.metrics.config import MetricsConfig
from vigil.stream.throttle import CgroupRate, cgroup2_mount

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RATE = CgroupRate(events=200, interval_s=1.0, quiet_s=2.0)
STORM_EXECS = 4000
OPENS = 300_000
RSS_GROWTH_MAX = 100 << 20


@dataclass
class Env:
    tmp: Path
    agent: Any
    metrics: RunningMetrics
    tls: ssl.SSLContext
    tag: str

    @property
    def events_file(self) -> Path:
        return self.tmp / "events.log"

    def events(self) -> list[dict[str, Any]]:
        return list(reader.read(self.events_file))

    def cgroup(self, name: str) -> Cgroup:
        return Cgroup(f"{self.tag}-{name}")

    def get(self, path: str) -> tuple[int, bytes]:
        host, port = self.metrics.server.address  # type: ignore[union-attr]
        conn = http.client.HTTPSConnection(host, port, context=self.tls, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not cgroup2_mount():
        pytest.skip("needs a cgroup2 mount")
    tmp = tmp_path_factory.mktemp("flood")
    cert, key = make_cert(tmp)
    tls = ssl.create_default_context(cafile=str(cert))
    agent = start_agent(tmp, RATE, cache_size=16384, queue_events=16384)
    ours = links_of(os.getpid())
    metrics = None
    try:
        metrics = start_metrics(agent, MetricsConfig(port=0, tls_cert_file=str(cert),
                                                     tls_key_file=str(key), health_stall_s=5))
        yield Env(tmp, agent, metrics, tls, f"vigil-flood-test-{os.getpid()}")
    finally:
        if metrics is not None:
            metrics.close()
        agent.stop()
    assert len(ours) >= 3, "the base sensor's links were seen"
    assert not live_links(ours), "agent stop detached every program"
    root = Path(cgroup2_mount() or "/nonexistent")
    assert not list(root.glob(f"vigil-flood-test-{os.getpid()}-*")), "test cgroups removed"


@pytest.fixture
def cgroups(env: Env) -> Iterator[dict[str, Cgroup]]:
    made: dict[str, Cgroup] = {}

    class Maker(dict[str, Cgroup]):
        def __missing__(self, name: str) -> Cgroup:
            made[name] = self[name] = env.cgroup(name)
            return made[name]
    yield Maker()
    for cg in made.values():
        cg.remove()


class Watch:
    """Scrapes /healthz and /metrics (TLS) and samples RSS while a storm runs."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.codes: Counter[int] = Counter()
        self.slowest = 0.0
        self.health: list[bool] = []
        self.rss0 = rss_bytes()
        self.rss_peak = self.rss0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.rss_peak = max(self.rss_peak, rss_bytes())
            for path in ("/healthz", "/metrics"):
                t = time.monotonic()
                try:
                    code, _ = self.env.get(path)
                except OSError:
                    code = -1
                self.slowest = max(self.slowest, time.monotonic() - t)
                self.codes[code] += 1
            self.health.append(self.env.metrics.health.check().ok)

    def check(self) -> None:
        assert self.codes and set(self.codes) == {200}, f"scrapes during the storm: {self.codes}"
        assert self.slowest < 5.0, f"slowest scrape {self.slowest:.1f}s"
        assert self.health and all(self.health), "GetHealth's check failed during the storm"
        growth = self.rss_peak - self.rss0
        assert growth < RSS_GROWTH_MAX, f"RSS grew {growth >> 20} MiB during the storm"


def throttle_events(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(i, e["process_throttle"]["type"], e["process_throttle"].get("cgroup", ""))
            for i, e in enumerate(events) if "process_throttle" in e]


def wait_stopped(env: Env, cg: Cgroup, timeout: float = 30) -> None:
    t = env.agent.pipeline.throttle
    assert wait_until(lambda: cg.id in t.cgroups and not t.cgroups[cg.id].throttled, timeout) \
        is not None, f"no THROTTLE_STOP for {cg.name}"
    assert wait_until(lambda: drained(env.agent), 30) is not None, "pipeline did not drain"


def ring_full(counters: Any) -> dict[int, int]:
    return {op: n for (op, r), n in counters.drops.items() if r == "RINGBUF_FULL"}


def test_exec_storm_is_throttled_and_accounted(env: Env,
                                               cgroups: dict[str, Cgroup]) -> None:
    storm_cg, ctl_cg = cgroups["exec"], cgroups["exec-ctl"]
    storm_bin = private_binary(env.tmp, "storm-true")
    ctl_bin = private_binary(env.tmp, "ctl-true")
    full0 = ring_full(env.agent.sensor.counters())
    dropped_metric0 = env.metric("vigil_bpf_records_dropped_total",
                                 {"msg_op": str(int(MsgOp.EXEC)), "reason": "throttled"})
    ctl = in_cgroup(ctl_cg, f"while :; do {ctl_bin}; /bin/sleep 0.1; done")
    with Watch(env) as watch:
        storm = in_cgroup(storm_cg, exec_storm(storm_bin, STORM_EXECS))
        assert storm.wait(timeout=300) == 0
    wait_stopped(env, storm_cg)
    ctl.kill()
    ctl.wait()
    wait_until(lambda: drained(env.agent), 30)
    watch.check()

    events = env.events()
    thr = throttle_events(events)
    names = {name for _i, _t, name in thr}
    assert storm_cg.name in names
    assert ctl_cg.name not in names
    starts = [i for i, t, n in thr if n == storm_cg.name and t == "THROTTLE_START"]
    stops = [i for i, t, n in thr if n == storm_cg.name and t == "THROTTLE_STOP"]
    assert starts and len(stops) == len(starts) and stops[0] > starts[0]
    ctl_during = [i for i, e in enumerate(events) if starts[0] < i < stops[0]
                  and e.get("process_exec", {}).get("process", {}).get("binary") == ctl_bin]
    assert ctl_during, "the control cgroup's execs stopped arriving during the storm"

    # exact accounting for the storm cgroup: its shell (+1) and its STORM_EXECS children;
    # the launcher's exec (same pid, before it joined the cgroup) is not the storm's
    sh = storm.pid
    mine = [e for e in events
            if (b := e.get("process_exec") or e.get("process_exit"))
            and (b["process"].get("pid") == sh or b.get("parent", {}).get("pid") == sh)
            and "cgroup.procs" not in b["process"].get("arguments", "")]
    execs = sum(1 for e in mine if "process_exec" in e)
    exits = sum(1 for e in mine if "process_exit" in e)
    st = env.agent.pipeline.throttle.cgroups[storm_cg.id]
    assert st.dropped > 0 and st.exits_suppressed > 0, "the storm was not throttled"
    assert execs + st.dropped == STORM_EXECS + 1, (execs, st.dropped)
    assert exits + st.exits_suppressed == STORM_EXECS + 1, (exits, st.exits_suppressed)
    assert ring_full(env.agent.sensor.counters()) == full0, "records lost to a full ring"
    assert env.agent.pipeline.throttle.cgroups.get(ctl_cg.id) is None

    # the same numbers through /metrics (TLS)
    code, body = env.get("/metrics")
    assert code == 200 and b"vigil_cgroup_rate_total{type=\"throttle_start\"}" in body
    assert env.metric("vigil_bpf_records_dropped_total",
                      {"msg_op": str(int(MsgOp.EXEC)), "reason": "throttled"}) \
        - dropped_metric0 >= st.dropped
    assert env.metric("vigil_events_total", {"type": "PROCESS_THROTTLE", "binary": "",
                                             "pod": "", "namespace": "", "workload": ""}) >= 2
    assert env.metric("vigil_throttle_exit_events_suppressed_total") >= st.exits_suppressed


def test_kernel_sent_equals_user_received(env: Env) -> None:
    """Sandwich: records sent before k1 were all received by the time the ring drained,
    and nothing was received that the kernel did not count as sent."""
    k1 = env.agent.sensor.counters()
    assert wait_until(lambda: drained(env.agent), 30) is not None
    received = dict(env.agent.pipeline.records)
    k2 = env.agent.sensor.counters()
    for op in (MsgOp.EXEC, MsgOp.CLONE, MsgOp.EXIT, MsgOp.THROTTLE):
        assert k1.sent.get(op, 0) <= received.get(op, 0) <= k2.sent.get(op, 0), op
    sink = next(s for s in env.agent.sinks if s.name == "jsonl")
    assert sink.dropped == 0 and sink.errors == 0
    assert wait_until(lambda: sink.pending() == 0, 10) is not None
    assert sum(1 for _ in reader.read(env.events_file)) == sink.delivered


# --------------------------------------------------------------------------- open storm

def build_open_storm(tmp: Path) -> Path:
    clang = shutil.which("clang-19") or shutil.which("clang")
    vmlinux = ROOT / "build" / "vmlinux.h"
    if not clang or not vmlinux.exists():
        pytest.skip("needs clang and build/vmlinux.h (make bpf)")
    out = tmp / "open_storm.bpf.o"
    subprocess.run([clang, "-g", "-O2", "-Wall", "-Werror", "-target", "bpfel",
                    "-D__TARGET_ARCH_x86", f"-I{ROOT / 'build'}", f"-I{ROOT / 'bpf' / 'include'}",
                    "-mcpu=v3", "-c", str(ROOT / "tests" / "progs" / "open_storm.bpf.c"),
                    "-o", str(out)], check=True)
    return out


class Received:
    """Pipeline handler for the test sensor's records: counts them per cgroup."""

    def __init__(self) -> None:
        self.by_cgroup: Counter[int] = Counter()

    def __call__(self, rec: bytes) -> None:
        (cgid,) = struct.unpack_from("<Q", rec, 16)
        self.by_cgroup[cgid] += 1


def python_in(cg: Cgroup, code: str) -> subprocess.Popen[bytes]:
    return in_cgroup(cg, f"exec {sys.executable} -I -S -c {shlex.quote(code)}")


def test_open_storm_from_a_policy_sensor(env: Env, cgroups: dict[str, Cgroup]) -> None:
    from vigil.bpf.object import BpfObject
    storm_cg, ctl_cg = cgroups["open"], cgroups["open-ctl"]
    obj = BpfObject(build_open_storm(env.tmp), name="tst_open")
    received = Received()
    test_links: set[int] = set()
    env.agent.pipeline.add_handler(MsgOp.GENERIC_TRACEPOINT, received)
    try:
        obj.set_rodata(env.agent.sensor.rodata)
        have = {m.name for m in obj.maps()}
        for name, fd in env.agent.sensor.shared_maps().items():
            if name in have:  # the test object declares only common.bpf.h's maps
                obj.map(name).reuse_fd(fd)
        assert {"vg_events", "vg_cgroup_rate"} <= have
        obj.load()
        attempts = obj.map("tst_attempts")
        for cg in (storm_cg, ctl_cg):
            attempts.update(struct.pack("<Q", cg.id), struct.pack("<Q", 0))
        before = links_of(os.getpid())
        obj.program("tst_open").attach()
        test_links = links_of(os.getpid()) - before
        assert len(test_links) == 1
        ctl = python_in(ctl_cg, "import os,time\nwhile 1:\n os.close(os.open('/dev/null',0))"
                                "\n time.sleep(0.05)")
        tracker = env.agent.pipeline.throttle
        with Watch(env) as watch:
            storm = python_in(storm_cg, f"import os\nfor _ in range({OPENS}):\n"
                                        " os.close(os.open('/dev/null',0))")
            assert wait_until(lambda: storm_cg.id in tracker.cgroups, 30) is not None
            ctl_at_start = received.by_cgroup[ctl_cg.id]
            assert storm.wait(timeout=300) == 0
            time.sleep(1.0)  # still throttled: the quiet period has not passed
            ctl_while_throttled = received.by_cgroup[ctl_cg.id] - ctl_at_start
        wait_stopped(env, storm_cg)
        ctl.kill()
        ctl.wait()
        assert wait_until(lambda: drained(env.agent), 30) is not None
        watch.check()
        n = {cg.id: struct.unpack("<Q", attempts.lookup(struct.pack("<Q", cg.id)))[0]
             for cg in (storm_cg, ctl_cg)}
    finally:
        obj.close()
        env.agent.pipeline.remove_handler(MsgOp.GENERIC_TRACEPOINT)
    assert not live_links(test_links), "the test sensor's link is gone"

    st = tracker.cgroups[storm_cg.id]
    assert n[storm_cg.id] >= OPENS
    assert st.dropped > OPENS // 2, "the open storm was not throttled"
    assert received.by_cgroup[storm_cg.id] + st.dropped == n[storm_cg.id]
    assert received.by_cgroup[ctl_cg.id] == n[ctl_cg.id] > 0
    assert ctl_while_throttled > 0, "control records stopped while the storm was throttled"
    assert ctl_cg.id not in tracker.cgroups
    names = {name for _i, _t, name in throttle_events(env.events())}
    assert storm_cg.name in names and ctl_cg.name not in names
