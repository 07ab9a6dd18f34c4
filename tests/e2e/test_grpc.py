"""The gRPC API against a running agent, with a real grpcio client and the CLI.

Two ways of running the agent: in-process (``Agent`` with the real BPF sensor; its hub
also takes synthetic events of every type, published by the test) and as a
``python -m vigil agent`` subprocess (socket permissions, TLS, restarts). Every agent
is stopped, and the test checks its socket, info file and BPF links are gone.
"""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e.agentproc import AgentProcess, links_of, live_links
from tests.unit.grpc_samples import NODE, samples
from vigil.api.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2
from vigil.events.compact import render
from vigil.server.config import ServerConfig
from vigil.server.convert import field_filter, filter_from_dict, response_to_dict
from vigil.server.filters import EventFilter, FieldFilters

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  tracepoints:
  - subsystem: sched
    event: sched_process_fork
    args:
    - index: 7
"""
WAIT = 30.0  # generous: only bounds a hang, never asserts speed


# --------------------------------------------------------------------------- helpers

def public_tmpdir() -> str:
    """A 0755 directory under /tmp: others can reach a socket in it (pytest's are 0700)."""
    d = tempfile.mkdtemp(prefix="vigil-grpc-")
    os.chmod(d, 0o755)
    return d


def stub(target: str, creds: grpc.ChannelCredentials | None = None,
         name: str = "") -> tuple[grpc.Channel, sensors_pb2_grpc.FineGuidanceSensorsStub]:
    opts = [("grpc.ssl_target_name_override", name)] if name else []
    ch = grpc.secure_channel(target, creds, options=opts) if creds else \
        grpc.insecure_channel(target)
    return ch, sensors_pb2_grpc.FineGuidanceSensorsStub(ch)


def vigil_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", *args], capture_output=True,
                          text=True, timeout=WAIT, **kw)


class Stream:
    """A GetEvents stream read by a background thread into a list."""

    def __init__(self, st: sensors_pb2_grpc.FineGuidanceSensorsStub,
                 req: events_pb2.GetEventsRequest | None = None, *,
                 keep_synthetic: bool = True) -> None:
        self.call = st.GetEvents(req or events_pb2.GetEventsRequest())
        self.events: list[dict[str, Any]] = []
        self.n_synthetic = 0  # counted as they come: predicates must not rescan
        self.keep_synthetic = keep_synthetic
        self.error: grpc.RpcError | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for resp in self.call:
                synthetic = resp.node_name == NODE
                ev = response_to_dict(resp) if self.keep_synthetic or not synthetic else None
                with self.cond:
                    self.n_synthetic += synthetic
                    if ev is not None:
                        self.events.append(ev)
                    self.cond.notify_all()
        except grpc.RpcError as err:
            self.error = err
        with self.cond:
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = WAIT) -> list[dict[str, Any]]:
        with self.cond:
            self.cond.wait_for(lambda: pred(self.events) or not self.thread.is_alive(),
                               timeout)
            return list(self.events)

    def wait_count(self, n: int, timeout: float = WAIT) -> int:
        """Wait until ``n`` synthetic events arrived (cheap: a counter)."""
        with self.cond:
            self.cond.wait_for(lambda: self.n_synthetic >= n or not self.thread.is_alive(),
                               timeout)
            return self.n_synthetic

    def synthetic(self) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if e.get("node_name") == NODE]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(WAIT)


def marker(n: int) -> dict[str, Any]:
    return {"test": {"arg0": str(n)}, "node_name": NODE, "time": "2024-01-02T00:00:00Z"}


def has_marker(n: int) -> Any:
    return lambda evs: any(e.get("test", {}).get("arg0") == str(n) for e in evs)


def hub_streams(agent: Any) -> set[str]:
    """Names of the GetEvents streams subscribed to the agent's hub right now."""
    from vigil.server.subscriber import StreamSubscriber
    return {s.name for s in agent.hub.subscribers if isinstance(s, StreamSubscriber)}


def wait_own_subscription(agent: Any, s: Stream) -> None:
    """Until ``s`` itself receives from the hub (another test's stream that is still
    closing can satisfy a subscriber count): publish probe markers until the stream
    receives anything at all (field masks may strip the marker's own fields)."""
    deadline = time.monotonic() + WAIT
    while True:
        before = len(s.events)
        agent.hub.publish([marker(next(_marker_ids))])
        if len(s.wait(lambda evs, n=before: len(evs) > n, timeout=0.2)) > before:
            return
        assert time.monotonic() < deadline, "GetEvents stream never subscribed"


def wait_subscribers(agent: Any, n: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(hub_streams(agent)) < n:
        assert time.monotonic() < deadline, "GetEvents stream never subscribed"
        time.sleep(0.02)


def assert_clean(sock: Path, info: Path, links: set[int]) -> None:
    assert not sock.exists(), f"{sock} left behind"
    assert not info.exists(), f"{info} left behind"
    assert not live_links(links), "BPF links left behind"


# --------------------------------------------------------------------------- in-process agent

@pytest.fixture(scope="module")
def agent() -> Iterator[Any]:
    """A real agent in this process, API on a unix socket, small per-client queues."""
    from vigil.daemon.agent import Agent, AgentConfig, ExportConfig
    d = Path(public_tmpdir())
    cfg = AgentConfig(
        export=ExportConfig(filename=str(d / "events.log"), stdout=False),
        server=ServerConfig(addresses=(f"unix://{d}/vigil.sock",),
                            info_file=str(d / "info.json"), queue_events=1024,
                            max_subscribers=16),
        self_protection=False)  # the policy listings below are this module's policies only
    a = Agent(cfg)
    a.start()
    links = links_of(os.getpid())
    a.test_dir = d  # type: ignore[attr-defined]
    try:
        yield a
    finally:
        a.stop()
        assert_clean(d / "vigil.sock", d / "info.json", links)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def api(agent: Any) -> Iterator[sensors_pb2_grpc.FineGuidanceSensorsStub]:
    ch, st = stub(agent.server.addresses[0])
    yield st
    ch.close()


def test_socket_is_0660_root_and_info_file_points_at_it(agent: Any) -> None:
    sock = agent.test_dir / "vigil.sock"
    st = sock.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, 0)
    info = json.loads((agent.test_dir / "info.json").read_text())
    assert info["server_address"] == f"unix://{sock}" and info["pid"] == os.getpid()
    assert sorted(p.name for p in agent.test_dir.iterdir()) == [
        "events.log", "info.json", "vigil.sock"]  # no temp dir left by the rename


def test_version_health_and_unimplemented(api: Any) -> None:
    from vigil import __version__
    assert api.GetVersion(sensors_pb2.GetVersionRequest()).version == __version__
    h = api.GetHealth(tetragon_pb2.GetHealthStatusRequest()).health_status
    assert [(x.event, x.status) for x in h] == [
        (tetragon_pb2.HEALTH_STATUS_TYPE_STATUS, tetragon_pb2.HEALTH_STATUS_RUNNING)]
    with pytest.raises(grpc.RpcError) as err:
        api.EnableSensor(sensors_pb2.EnableSensorRequest(name="__base__"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_standard_health_service(agent: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(agent.server.addresses[0]) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "liveness", "tetragon.FineGuidanceSensors"):
            resp = h.Check(health_pb2.HealthCheckRequest(service=svc), timeout=WAIT)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_real_exec_and_exit_arrive_as_in_the_export(agent: Any, api: Any,
                                                    tmp_path: Path) -> None:
    binary = tmp_path / "vigil-grpc-probe"
    shutil.copy("/bin/true", binary)
    s = Stream(api, events_pb2.GetEventsRequest(allow_list=[
        filter_from_dict({"binary_regex": [f"{binary.name}$"]})]))
    try:
        wait_subscribers(agent, 1)
        proc = subprocess.run([str(binary), "--flag", "two words"], check=True)
        del proc
        got = s.wait(lambda evs: len(evs) >= 2)
    finally:
        s.close()
    assert [next(iter(e)) for e in got[:2]] == ["process_exec", "process_exit"]
    ex = got[0]["process_exec"]["process"]
    assert ex["binary"] == str(binary) and ex["arguments"] == '--flag "two words"'
    assert got[1]["process_exit"]["process"]["exec_id"] == ex["exec_id"]
    exported = {}
    deadline = time.monotonic() + WAIT
    while len(exported) < 2 and time.monotonic() < deadline:
        from vigil.export import reader
        exported = {(next(iter(e)), e[next(iter(e))]["process"]["exec_id"]): e
                    for e in reader.read(agent.test_dir / "events.log")
                    if next(iter(e)) in ("process_exec", "process_exit")
                    and e[next(iter(e))]["process"].get("exec_id") == ex["exec_id"]}
        time.sleep(0.1)
    # the stream is the export, event for event (wire-compatible, lossless)
    assert got[0] == exported[("process_exec", ex["exec_id"])]
    assert got[1] == exported[("process_exit", ex["exec_id"])]


# --------------------------------------------------------------------------- filters, masks

FILTERS: dict[str, dict[str, Any]] = {
    "event_set": {"event_set": ["PROCESS_EXIT", "PROCESS_LSM"]},
    "binary_regex": {"binary_regex": ["curl$"]},
    "parent_binary_regex": {"parent_binary_regex": ["^/usr/bin/bash$"]},
    "ancestor_binary_regex": {"ancestor_binary_regex": ["init"]},
    "pid": {"pid": [100]},
    "pid_set": {"pid_set": [100]},
    "namespace_host": {"namespace": [""]},
    "namespace": {"namespace": ["web"]},
    "namespace_regex": {"namespace_regex": ["^we"]},
    "pod_regex": {"pod_regex": ["nginx"]},
    "labels": {"labels": ["app=nginx"]},
    "arguments_regex": {"arguments_regex": ["cilium"]},
    "parent_arguments_regex": {"parent_arguments_regex": ["^-l$"]},
    "container_id": {"container_id": ["^0123"]},
    "container_name_regex": {"container_name_regex": ["^nginx$"]},
    "policy_names": {"policy_names": ["write-watch", "syscalls"]},
    "health_check": {"health_check": True},
    "in_init_tree": {"in_init_tree": True},
    "capabilities": {"capabilities": {"effective": {"any": ["CAP_SYS_ADMIN"]}}},
    "combined": {"event_set": ["PROCESS_KPROBE"], "binary_regex": ["curl"],
                 "policy_names": ["connect"]},
}
_marker_ids = iter(range(1000, 10**6))


def publish_and_collect(agent: Any, st: Any, req: events_pb2.GetEventsRequest,
                        events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Publish ``events`` + a marker through the agent; the synthetic events received."""
    n = next(_marker_ids)
    if req.allow_list:  # let the marker through (filters are OR-ed)
        req.allow_list.append(filter_from_dict({"event_set": ["TEST"]}))
    s = Stream(st, req)
    try:
        wait_own_subscription(agent, s)
        agent.hub.publish(events + [marker(n)])
        s.wait(has_marker(n))
    finally:
        s.close()
    got = [e for e in s.synthetic() if "test" not in e]
    assert s.error is None or s.error.code() == grpc.StatusCode.CANCELLED, s.error
    return got


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter(agent: Any, api: Any, name: str) -> None:
    events = [e for k, e in samples().items() if k != "test"]
    spec = FILTERS[name]
    got = publish_and_collect(agent, api, events_pb2.GetEventsRequest(
        allow_list=[filter_from_dict(spec)]), events)
    expected = [e for e in events if EventFilter([spec]).matches(e)]
    assert expected, "a filter test must select something"
    assert len(expected) < len(events), "a filter test must reject something"
    assert got == expected


def test_deny_list_wins(agent: Any, api: Any) -> None:
    events = [e for k, e in samples().items() if k != "test"]
    allow, deny = {"event_set": ["PROCESS_EXEC", "PROCESS_EXIT"]}, {"binary_regex": ["curl"]}
    got = publish_and_collect(agent, api, events_pb2.GetEventsRequest(
        allow_list=[filter_from_dict(allow)], deny_list=[filter_from_dict(deny),
                                                         filter_from_dict({"pid": [1]})]),
        events)
    assert [next(iter(e)) for e in got] == ["process_exec", "process_exit"]
    assert all(e[next(iter(e))]["process"]["pid"] in (100, 300) for e in got)


def test_invalid_filter_is_invalid_argument(api: Any) -> None:
    for spec in ({"binary_regex": ["("]}, {"cel_expression": ["process_exec.process.pid =="]}):
        call = api.GetEvents(events_pb2.GetEventsRequest(allow_list=[filter_from_dict(spec)]))
        with pytest.raises(grpc.RpcError) as err:
            next(call)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_field_masks(agent: Any, api: Any) -> None:
    events = [e for k, e in samples().items() if k != "test"]
    req = events_pb2.GetEventsRequest(
        allow_list=[filter_from_dict({"event_set": ["PROCESS_EXEC", "PROCESS_KPROBE",
                                                    "PROCESS_EXIT"]})],
        field_filters=[field_filter(["process.binary", "process.pid", "parent.exec_id",
                                     "function_name", "signal"], include=True),
                       field_filter(["process.pid"], include=False,
                                    event_set=["PROCESS_EXIT"])])
    got = publish_and_collect(agent, api, req, events)
    trim = FieldFilters([{"fields": ["process.binary", "process.pid", "parent.exec_id",
                                     "function_name", "signal"], "action": "INCLUDE"},
                         {"fields": ["process.pid"], "action": "EXCLUDE",
                          "event_set": ["PROCESS_EXIT"]}])
    assert got == [trim.apply(e) for e in events
                   if next(iter(e)) in ("process_exec", "process_kprobe", "process_exit")]
    assert got[0]["process_exec"] == {"process": {"pid": 200, "binary": "/usr/bin/curl"},
                                      "parent": {"exec_id": "bm9kZS0xOjEwMDA6MTAw"}}
    exits = [e["process_exit"] for e in got if "process_exit" in e]
    assert exits[0] == {"process": {"binary": "/usr/bin/curl"},
                        "parent": {"exec_id": "bm9kZS0xOjEwMDA6MTAw"}, "signal": "SIGKILL"}


# --------------------------------------------------------------------------- slow clients

def test_stuck_subscriber_alongside_live_ones(agent: Any, api: Any, tmp_path: Path) -> None:
    """A client that never reads loses events (counted, reported), the others lose none,
    and the pipeline (real exec events, the export) keeps flowing."""
    queue = agent.cfg.server.queue_events
    flt = filter_from_dict({"event_set": ["PROCESS_EXEC", "TEST", "RATE_LIMIT_INFO"]})
    # never read; no BDP probing, so its transport window stays small (64 KiB)
    stuck_ch = grpc.insecure_channel(agent.server.addresses[0],
                                     options=[("grpc.http2.bdp_probe", 0)])
    stuck = sensors_pb2_grpc.FineGuidanceSensorsStub(stuck_ch).GetEvents(
        events_pb2.GetEventsRequest(allow_list=[flt]))
    lives = [Stream(api, events_pb2.GetEventsRequest(allow_list=[flt]), keep_synthetic=False)
             for _ in range(3)]
    wait_subscribers(agent, 4)
    subs = agent.server.servicer.subscribers.live()
    exporter_dropped = {s.name: s.dropped for s in agent.sinks}
    ev = samples()["exec"]
    total, batch = queue * 8, 256
    try:
        for i in range(0, total, batch):
            agent.hub.publish([ev] * batch)
            # pace on the live streams only: they must never overflow
            for s in lives:
                s.wait_count(i + batch)
        # a real process still gets through to the live streams while one is stuck
        binary = tmp_path / "vigil-grpc-alive"
        shutil.copy("/bin/true", binary)
        subprocess.run([str(binary)], check=True)
        for s in lives:
            s.wait(lambda evs: any(e.get("process_exec", {}).get("process", {})
                                   .get("binary") == str(binary) for e in evs))
            assert s.n_synthetic == total
            assert any(e.get("process_exec", {}).get("process", {}).get("binary")
                       == str(binary) for e in s.events)
        stuck_sub = [s for s in subs if s.dropped]
        assert len(stuck_sub) == 1, [s.stats() for s in subs]
        dropped = stuck_sub[0].dropped
        # its queue holds every event (filtering happens on its worker), so its drops
        # include host events as well as ours: only bounds can be asserted
        assert dropped > 0
        assert agent.stats()["grpc"]["dropped"] >= dropped
        assert all(s.dropped == 0 for s in subs if s is not stuck_sub[0])
        assert {s.name: s.dropped for s in agent.sinks} == exporter_dropped
        # the stuck client now reads: what it missed is reported in rate_limit_info; a
        # marker, published once its queue has room again, ends the reading
        n, sent = next(_marker_ids), False
        reported = received = 0
        for resp in stuck:
            e = response_to_dict(resp)
            if "rate_limit_info" in e:
                reported += int(e["rate_limit_info"]["number_of_dropped_process_events"])
            elif e.get("node_name") == NODE and "process_exec" in e:
                received += 1
            if e.get("test", {}).get("arg0") == str(n):
                break
            if not sent and stuck_sub[0].queued < queue // 2:
                agent.hub.publish([marker(n)])
                sent = True
        assert reported == stuck_sub[0].dropped >= dropped  # every drop reported, once
        assert 0 < received < total  # it got some of ours, and lost the rest
    finally:
        stuck.cancel()
        stuck_ch.close()
        for s in lives:
            s.close()


def test_concurrent_subscribers_limit(agent: Any, api: Any) -> None:
    limit = agent.cfg.server.max_subscribers
    streams = [Stream(api) for _ in range(limit)]
    try:
        wait_subscribers(agent, limit)
        extra = api.GetEvents(events_pb2.GetEventsRequest())
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for s in streams:
            s.close()


# --------------------------------------------------------------------------- policies

def test_policy_lifecycle_over_the_api(api: Any) -> None:
    add = sensors_pb2.AddTracingPolicyRequest
    api.AddTracingPolicy(add(yaml=POLICY.format(name="p-life")))
    for bad, code in ((POLICY.format(name="p-life"), grpc.StatusCode.ALREADY_EXISTS),
                      ("kind: Nope\n", grpc.StatusCode.INVALID_ARGUMENT),
                      ("a: [", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            api.AddTracingPolicy(add(yaml=bad))
        assert err.value.code() == code
    with pytest.raises(grpc.RpcError) as err:
        api.AddTracingPolicy(add(yaml=POLICY.format(name="x"), domain="k8s"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def state() -> int:
        pols = api.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest()).policies
        (p,) = [p for p in pols if p.name == "p-life"]
        assert p.domain == "grpc" and p.sensors == ["generic_tracepoint"]
        return p.state

    assert state() == sensors_pb2.TP_STATE_ENABLED
    api.DisableTracingPolicy(sensors_pb2.DisableTracingPolicyRequest(name="p-life"))
    assert state() == sensors_pb2.TP_STATE_DISABLED
    api.EnableTracingPolicy(sensors_pb2.EnableTracingPolicyRequest(name="p-life"))
    assert state() == sensors_pb2.TP_STATE_ENABLED
    api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name="p-life",
                                                                         enable=False))
    assert state() == sensors_pb2.TP_STATE_DISABLED
    assert not api.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(
        domain="static")).policies
    api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="p-life"))
    for call, req in ((api.DeleteTracingPolicy, sensors_pb2.DeleteTracingPolicyRequest),
                      (api.EnableTracingPolicy, sensors_pb2.EnableTracingPolicyRequest)):
        with pytest.raises(grpc.RpcError) as err:
            call(req(name="p-life"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_policy_events_over_the_api(agent: Any, api: Any, tmp_path: Path) -> None:
    """A policy added over gRPC loads and its events stream over GetEvents; invalid
    policies are refused with the engine's diagnostics."""
    with pytest.raises(grpc.RpcError) as err:
        api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
            yaml=POLICY.format(name="bad") + "    - index: 99\n"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.tracepoints[0]" in err.value.details()
    sh = tmp_path / "vigil-grpc-forker"
    shutil.copy("/bin/sh", sh)
    s = Stream(api, events_pb2.GetEventsRequest(allow_list=[filter_from_dict(
        {"policy_names": ["forks"], "binary_regex": [f"{sh.name}$"]})]))
    api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=POLICY.format(name="forks")))
    try:
        wait_subscribers(agent, 1)
        subprocess.run([str(sh), "-c", "/bin/true & wait"], check=True)
        got = s.wait(lambda evs: len(evs) >= 1)
    finally:
        s.close()
        api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="forks"))
    ev = got[0]["process_tracepoint"]
    assert (ev["policy_name"], ev["subsys"], ev["event"]) == ("forks", "sched",
                                                               "sched_process_fork")
    assert ev["process"]["binary"] == str(sh)


def _unloadable_policy(agent: Any) -> str:
    """A valid policy this kernel cannot load (a BPF feature it refuses)."""
    view = agent.policies._view()
    if not view.lsm:
        return LSM_POLICY
    if not view.fentry:
        return FENTRY_POLICY
    pytest.skip("this kernel offers BPF LSM and fentry: no valid policy fails to load")


LSM_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: needs-bpf-lsm
spec:
  lsmhooks:
  - hook: inode_unlink
"""
FENTRY_POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: needs-fentry
spec:
  fentries:
  - call: security_file_open
    args:
    - index: 0
      type: file
"""


def test_invalid_and_unloadable_policies_get_distinct_statuses(agent: Any, api: Any) -> None:
    """Invalid policy: INVALID_ARGUMENT with the located diagnostic; valid but refused
    by this kernel: FAILED_PRECONDITION, saying so; neither is left behind."""
    add = sensors_pb2.AddTracingPolicyRequest
    with pytest.raises(grpc.RpcError) as err:
        api.AddTracingPolicy(add(yaml=POLICY.format(name="bad-idx") + "    - index: 99\n"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.tracepoints[0]" in err.value.details() and ":" in err.value.details()
    policy = _unloadable_policy(agent)
    with pytest.raises(grpc.RpcError) as err:
        api.AddTracingPolicy(add(yaml=policy))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    details = err.value.details()
    assert "not supported on this kernel" in details and "spec." in details, details
    names = {p.name for p in api.ListTracingPolicies(
        sensors_pb2.ListTracingPoliciesRequest()).policies}
    assert not names & {"bad-idx", "needs-bpf-lsm", "needs-fentry"}


def test_cli_policy_exit_codes(agent: Any, tmp_path: Path) -> None:
    """tracingpolicy add: 3 for an invalid policy (as `check` and the agent), 1 for a
    valid one this kernel cannot load, 0 when added."""
    addr = ["--server-address", agent.server.addresses[0]]
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.format(name="cli-bad") + "    - index: 99\n")
    r = vigil_cli("tracingpolicy", "add", str(bad), *addr)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "spec.tracepoints[0]" in r.stderr and "INVALID_ARGUMENT" in r.stderr
    r = vigil_cli("tracingpolicy", "check", str(bad))
    assert r.returncode == 3
    unloadable = tmp_path / "unloadable.yaml"
    unloadable.write_text(_unloadable_policy(agent))
    r = vigil_cli("tracingpolicy", "add", str(unloadable), *addr)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "FAILED_PRECONDITION" in r.stderr and "not supported on this kernel" in r.stderr


def test_cli_policy_commands(agent: Any, tmp_path: Path) -> None:
    addr = ["--server-address", agent.server.addresses[0]]
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY.format(name="cli-pol"))
    r = vigil_cli("tracingpolicy", "add", str(pol), *addr)
    assert r.returncode == 0 and "tracing policy 'cli-pol' added" in r.stdout, r.stderr
    r = vigil_cli("tp", "add", str(pol), *addr)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = vigil_cli("tp", "disable", "cli-pol", *addr)
    assert r.returncode == 0
    r = vigil_cli("tp", "list", *addr)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "DOMAIN", "STATE", "FILTERID", "NAMESPACE",
                                "SENSORS", "KERNELMEMORY", "MODE", "NPOST", "NENFORCE",
                                "NMONITOR"]
    row = [ln for ln in lines if " cli-pol " in ln][0].split()
    assert row[1:4] == ["cli-pol", "grpc", "disabled"]
    r = vigil_cli("tp", "list", "-o", "json", *addr)
    (p,) = [p for p in json.loads(r.stdout)["policies"] if p["name"] == "cli-pol"]
    assert p["state"] == "TP_STATE_DISABLED"
    assert vigil_cli("tp", "enable", "cli-pol", *addr).returncode == 0
    assert vigil_cli("tp", "delete", "cli-pol", *addr).returncode == 0
    r = vigil_cli("tp", "delete", "cli-pol", *addr)
    assert r.returncode == 1 and "not found" in r.stderr


# --------------------------------------------------------------------------- CLI events

def run_getevents(agent: Any, *args: str, until: int = 0) -> list[str]:
    """``vigil getevents`` against the agent while samples + a marker are published; its
    lines up to the marker (or ``until`` lines, or a timeout)."""
    import selectors
    n = next(_marker_ids)
    before = hub_streams(agent)  # a previous CLI's stream may still be leaving
    proc = subprocess.Popen([sys.executable, "-m", "vigil", "getevents",
                             "--server-address", agent.server.addresses[0], *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + WAIT
        while not hub_streams(agent) - before:
            assert time.monotonic() < deadline, "vigil getevents never subscribed"
            time.sleep(0.02)
        agent.hub.publish(list(samples().values()) + [marker(n)])
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf, deadline = b"", time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [d.decode() for d in done]
            if any(ln.startswith("TEST EVENT") or f'"arg0":"{n}"' in ln for ln in lines) \
                    or (until and len(lines) >= until):
                break
        return lines
    finally:
        proc.terminate()
        proc.wait(WAIT)


def test_cli_getevents_json_every_event_type(agent: Any) -> None:
    lines = run_getevents(agent, "-o", "json")
    got = [e for e in map(json.loads, lines) if e.get("node_name") == NODE]
    assert got[:-1] == list(samples().values())


def test_cli_getevents_compact_every_event_type(agent: Any) -> None:
    lines = run_getevents(agent, "-o", "compact")
    expected = [render(e, color=False) for e in samples().values()]
    # (a marker of an earlier run, also a TEST event, may come first)
    assert [ln for ln in lines if ln in expected][-len(expected):] == expected


def test_cli_getevents_filter_flags(agent: Any) -> None:
    # filter flags AND together: the marker (no process) cannot pass, so stop on a count
    lines = run_getevents(agent, "-o", "json", "-e", "PROCESS_EXEC,PROCESS_KPROBE",
                          "--process", "^/usr/bin/curl$", "--process", "^/sbin/init$",
                          until=4)
    got = [json.loads(ln) for ln in lines]
    got = [e for e in got if e.get("node_name") == NODE]
    assert [next(iter(e)) for e in got] == ["process_exec", "process_exec", "process_kprobe",
                                            "process_kprobe"]
    lines = run_getevents(agent, "-o", "json", "-e", "PROCESS_EXEC,TEST", "-f",
                          "process.binary")
    got = [json.loads(ln) for ln in lines]
    assert {"process_exec": {"process": {"binary": "/usr/bin/curl"}}, "node_name": NODE,
            "time": "2024-01-01T00:00:05.000001Z"} in got


def test_cli_status_and_version(agent: Any) -> None:
    addr = ["--server-address", agent.server.addresses[0]]
    r = vigil_cli("status", *addr)
    assert (r.returncode, r.stdout) == (0, "Health Status: running\n"), r.stderr
    r = vigil_cli("version", "--server", *addr)
    assert r.returncode == 0 and "Server version: " in r.stdout


def test_cli_finds_agent_through_info_file(agent: Any) -> None:
    env = dict(os.environ, VIGIL_SERVER_INFO_FILE=str(agent.test_dir / "info.json"))
    env.pop("VIGIL_SERVER_ADDRESS", None)
    r = vigil_cli("status", env=env)
    assert r.returncode == 0, r.stderr


def test_cli_agent_not_running(tmp_path: Path) -> None:
    r = vigil_cli("status", "--server-address", f"unix://{tmp_path}/none.sock")
    assert r.returncode == 1
    assert "no such socket. Is the agent running?" in r.stderr
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "stale.sock"))
    sock.close()
    r = vigil_cli("status", "--server-address", f"unix://{tmp_path}/stale.sock")
    assert r.returncode == 1 and "nothing is listening" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = vigil_cli("status", "--server-address", f"127.0.0.1:{port}")
    assert r.returncode == 1 and "connection refused" in r.stderr


# --------------------------------------------------------------------------- non-root users

def nobody_python() -> list[str]:
    """An interpreter user nobody can run that imports vigil and grpc (the venv's
    python may live under /root)."""
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = [str(ROOT / "src"), *[p for p in sys.path if p.endswith("site-packages")]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    for exe in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/python{v}",
                shutil.which(f"python{v}") or ""):
        if not exe:
            continue
        try:
            r = subprocess.run([exe, "-c", "import vigil.cli, grpc"], user=65534,
                               group=65534, extra_groups=[], env=env, capture_output=True,
                               cwd="/", timeout=WAIT)
        except OSError:  # not executable by nobody (e.g. under /root)
            continue
        if r.returncode == 0:
            return [exe]
    msg = "no python interpreter that user nobody can run with vigil importable"
    if os.environ.get("VIGIL_TEST_STRICT") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def run_as_nobody(args: list[str], groups: tuple[int, int] = (65534, 65534)
                  ) -> subprocess.CompletedProcess[str]:
    py = nobody_python()
    paths = [str(ROOT / "src"), *[p for p in sys.path if p.endswith("site-packages")]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([*py, *args], user=65534, group=groups[1], extra_groups=[],
                          env=env, capture_output=True, text=True, cwd="/", timeout=WAIT)


CLIENT = """
import sys, grpc
from vigil.api.tetragon import sensors_pb2, sensors_pb2_grpc
st = sensors_pb2_grpc.FineGuidanceSensorsStub(grpc.insecure_channel(sys.argv[1]))
try:
    print(st.GetVersion(sensors_pb2.GetVersionRequest(), timeout=10).version)
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""


def test_nobody_is_refused_and_told_why() -> None:
    d = Path(public_tmpdir())
    sock, info = d / "vigil.sock", d / "info.json"
    try:
        with AgentProcess(d, "--server-address", f"unix://{sock}",
                          "--server-info-file", str(info)) as ag:
            links = links_of(ag.proc.pid)
            r = run_as_nobody(["-c", CLIENT, f"unix://{sock}"])
            assert r.stdout.startswith("UNAVAILABLE") and "Permission denied" in r.stdout, \
                r.stdout + r.stderr
            r = run_as_nobody(["-m", "vigil", "status", "--server-address", f"unix://{sock}"])
            assert r.returncode == 1
            assert "permission denied on" in r.stderr and "mode 0660, owner root:root" \
                in r.stderr and "--server-socket-group" in r.stderr, r.stderr
        assert_clean(sock, info, links)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_socket_group_lets_its_members_in() -> None:
    d = Path(public_tmpdir())
    sock, info = d / "vigil.sock", d / "info.json"
    group = grp.getgrgid(65534).gr_name
    try:
        with AgentProcess(d, "--server-address", f"unix://{sock}", "--server-info-file",
                          str(info), "--server-socket-group", group) as ag:
            links = links_of(ag.proc.pid)
            st = sock.lstat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, 65534)
            r = run_as_nobody(["-m", "vigil", "status", "--server-address", f"unix://{sock}"])
            assert (r.returncode, r.stdout) == (0, "Health Status: running\n"), r.stderr
        assert_clean(sock, info, links)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- TCP and TLS

def make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1/localhost, a client cert, and a rogue CA+client."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    out: dict[str, Path] = {}

    def write(name: str, cert: Any, key: Any) -> None:
        out[f"{name}.crt"] = d / f"{name}.crt"
        out[f"{name}.key"] = d / f"{name}.key"
        out[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{name}.key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def cert(cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool,
             sans: list[Any] | None = None, usage: Any = None) -> Any:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    for ca_name in ("ca", "rogue-ca"):
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vigil test {ca_name}")])
        c = cert(f"vigil test {ca_name}", k, name, k, True)
        write(ca_name, c, k)
        client_key = ec.generate_private_key(ec.SECP256R1())
        write(f"{ca_name}-client", cert("vigil-client", client_key, name, k, False,
                                        usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key)
        if ca_name == "ca":
            sk = ec.generate_private_key(ec.SECP256R1())
            write("server", cert("vigil-agent", sk, name, k, False, sans=[
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                usage=ExtendedKeyUsageOID.SERVER_AUTH), sk)
    return out


@pytest.fixture(scope="module")
def certs() -> Iterator[dict[str, Path]]:
    d = Path(tempfile.mkdtemp(prefix="vigil-certs-"))
    try:
        yield make_certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def tcp_agent(tmp: Path, *args: str) -> tuple[AgentProcess, str]:
    info = tmp / "info.json"
    ag = AgentProcess(tmp, "--server-address", "127.0.0.1:0", "--server-info-file",
                      str(info), *args)
    return ag, json.loads(info.read_text())["server_address"]


def tls_creds(certs: dict[str, Path], ca: str = "ca", client: str | None = None
              ) -> grpc.ChannelCredentials:
    key = certs[f"{client}.key"].read_bytes() if client else None
    crt = certs[f"{client}.crt"].read_bytes() if client else None
    return grpc.ssl_channel_credentials(certs[f"{ca}.crt"].read_bytes(), key, crt)


def version_or_code(target: str, creds: grpc.ChannelCredentials | None = None) -> str:
    ch, st = stub(target, creds)
    try:
        return st.GetVersion(sensors_pb2.GetVersionRequest(), timeout=10).version
    except grpc.RpcError as err:
        return err.code().name
    finally:
        ch.close()


def test_tls(certs: dict[str, Path], tmp_path: Path) -> None:
    ag, addr = tcp_agent(tmp_path, "--server-tls-cert-file", str(certs["server.crt"]),
                         "--server-tls-key-file", str(certs["server.key"]))
    with ag:
        links = links_of(ag.proc.pid)
        assert version_or_code(addr, tls_creds(certs)) != "UNAVAILABLE"
        assert version_or_code(addr, tls_creds(certs, ca="rogue-ca")) == "UNAVAILABLE"
        assert version_or_code(addr) == "UNAVAILABLE"  # plaintext client
        ca = ["--tls-ca-cert-files", str(certs["ca.crt"])]
        r = vigil_cli("status", "--server-address", addr, *ca)
        assert r.returncode == 0, r.stderr
        r = vigil_cli("status", "--server-address", addr)
        assert r.returncode == 1 and "requires TLS" in r.stderr, r.stderr
        r = vigil_cli("status", "--server-address", addr, "--tls-ca-cert-files",
                      str(certs["rogue-ca.crt"]))
        assert r.returncode == 1 and "does not verify" in r.stderr, r.stderr
    assert_clean(tmp_path / "none.sock", tmp_path / "info.json", links)


def test_mtls(certs: dict[str, Path], tmp_path: Path) -> None:
    ag, addr = tcp_agent(tmp_path, "--server-tls-cert-file", str(certs["server.crt"]),
                         "--server-tls-key-file", str(certs["server.key"]),
                         "--server-tls-client-ca-files", str(certs["ca.crt"]))
    with ag:
        links = links_of(ag.proc.pid)
        assert version_or_code(addr, tls_creds(certs, client="ca-client")) != "UNAVAILABLE"
        assert version_or_code(addr, tls_creds(certs)) == "UNAVAILABLE"
        assert version_or_code(addr, tls_creds(certs, client="rogue-ca-client")) \
            == "UNAVAILABLE"
        ca = ["--tls-ca-cert-files", str(certs["ca.crt"])]
        r = vigil_cli("status", "--server-address", addr, *ca, "--tls-cert-file",
                      str(certs["ca-client.crt"]), "--tls-key-file", str(certs["ca-client.key"]))
        assert r.returncode == 0, r.stderr
        r = vigil_cli("status", "--server-address", addr, *ca)
        assert r.returncode == 1 and "client certificate" in r.stderr, r.stderr
    assert_clean(tmp_path / "none.sock", tmp_path / "info.json", links)


def test_plain_tcp_refused_unless_forced_on_loopback(tmp_path: Path) -> None:
    for args, why in ((["--server-address", "127.0.0.1:0"], "refusing plain TCP"),
                      (["--server-address", "0.0.0.0:0", "--server-allow-insecure-tcp"],
                       "only allowed on a loopback address")):
        r = subprocess.run([sys.executable, "-m", "vigil", "agent", "--export-filename",
                            str(tmp_path / "x.log"), *args], capture_output=True, text=True,
                           timeout=WAIT)
        assert r.returncode == 1 and why in r.stderr, r.stderr
    ag, addr = tcp_agent(tmp_path, "--server-allow-insecure-tcp")
    with ag:
        links = links_of(ag.proc.pid)
        assert addr.startswith("127.0.0.1:")
        assert version_or_code(addr) not in ("UNAVAILABLE",)
        assert any("WITHOUT TLS" in ln for ln in ag.stderr)
    assert_clean(tmp_path / "none.sock", tmp_path / "info.json", links)


# --------------------------------------------------------------------------- persistence

def test_grpc_policies_persist_only_when_asked() -> None:
    d = Path(public_tmpdir())
    sock, info, pdir = d / "vigil.sock", d / "info.json", d / "grpc-policies"
    base = ["--server-address", f"unix://{sock}", "--server-info-file", str(info)]
    persist = ["--persist-grpc-policies", "--persist-grpc-policies-dir", str(pdir)]
    addr = ["--server-address", f"unix://{sock}"]
    pol = d / "p.yaml"
    try:
        with AgentProcess(d, *base, *persist) as ag:
            links = links_of(ag.proc.pid)
            pol.write_text(POLICY.format(name="kept"))
            assert vigil_cli("tp", "add", str(pol), *addr).returncode == 0
            pol.write_text(POLICY.format(name="kept-off"))
            assert vigil_cli("tp", "add", str(pol), *addr).returncode == 0
            assert vigil_cli("tp", "disable", "kept-off", *addr).returncode == 0
            pol.write_text(POLICY.format(name="gone"))
            assert vigil_cli("tp", "add", str(pol), *addr).returncode == 0
            assert vigil_cli("tp", "delete", "gone", *addr).returncode == 0
            assert stat.S_IMODE(pdir.stat().st_mode) == 0o700
            assert stat.S_IMODE((pdir / "kept.yaml").stat().st_mode) == 0o600
        assert_clean(sock, info, links)

        def states() -> dict[str, str]:
            r = vigil_cli("tp", "list", "-o", "json", "--domain", "grpc", *addr)
            return {p["name"]: p["state"] for p in json.loads(r.stdout).get("policies", [])}

        with AgentProcess(d, *base, *persist):
            assert states() == {"kept": "TP_STATE_ENABLED", "kept-off": "TP_STATE_DISABLED"}
        with AgentProcess(d, *base):  # not asked: nothing restored
            assert states() == {}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_second_agent_on_the_same_socket_is_refused() -> None:
    d = Path(public_tmpdir())
    sock, info = d / "vigil.sock", d / "info.json"
    try:
        with AgentProcess(d, "--server-address", f"unix://{sock}", "--server-info-file",
                          str(info)) as ag:
            links = links_of(ag.proc.pid)
            r = subprocess.run([sys.executable, "-m", "vigil", "agent", "--export-filename",
                                str(d / "2.log"), "--server-address", f"unix://{sock}",
                                "--server-info-file", str(d / "info2.json")],
                               capture_output=True, text=True, timeout=WAIT)
            assert r.returncode == 1 and "already serving" in r.stderr, r.stderr
            assert sock.exists()  # the failed agent did not remove the live one's socket
            assert vigil_cli("status", "--server-address", f"unix://{sock}").returncode == 0
        assert_clean(sock, info, links)
    finally:
        shutil.rmtree(d, ignore_errors=True)
