"""The control RPCs against a real agent, with a real grpcio client and the CLI:
GetInfo, GetDebug/SetDebug, ListDomains, ListSensors, RuntimeHook, EventLogService,
ConfigureTracingPolicy's mode (a Sigkill policy switched monitor <-> enforce in the
kernel, without a reload) and GetEvents' CEL expressions."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from tests.e2e.agentproc import links_of
from tests.e2e.test_grpc import (WAIT, Stream, assert_clean, public_tmpdir, stub, vigil_cli,
                                 wait_subscribers)
from vigil.api.tetragon import (eventlogservice_pb2, eventlogservice_pb2_grpc, events_pb2,
                                sensors_pb2, tetragon_pb2)
from vigil.server.config import ServerConfig
from vigil.server.convert import filter_from_dict

pytestmark = pytest.mark.e2e

FD = 4242  # the dup() argument the policy kills on: no other process asks for it
KILL_DUP = f"""\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {{name}}
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_dup
    args:
    - index: 5
      type: uint64
    selectors:
    - matchArgs:
      - index: 5
        operator: Equal
        values: ["{FD}"]
{{actions}}"""
SIGKILL = "      matchActions:\n      - action: Sigkill\n"
# dup() through libc: Python's os.dup uses fcntl(F_DUPFD_CLOEXEC), not the dup syscall
DUP = [sys.executable, "-c", f"import ctypes; ctypes.CDLL(None).dup({FD})"]


@pytest.fixture(scope="module")
def agent() -> Iterator[Any]:
    from vigil.daemon.agent import Agent, AgentConfig, ExportConfig
    d = Path(public_tmpdir())
    cfg = AgentConfig(
        export=ExportConfig(filename=str(d / "events.log"), stdout=False),
        server=ServerConfig(addresses=(f"unix://{d}/vigil.sock",),
                            info_file=str(d / "info.json")))
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
def channel(agent: Any) -> Iterator[grpc.Channel]:
    ch, _ = stub(agent.server.addresses[0])
    yield ch
    ch.close()


@pytest.fixture
def api(channel: grpc.Channel) -> Any:
    from vigil.api.tetragon import sensors_pb2_grpc
    return sensors_pb2_grpc.FineGuidanceSensorsStub(channel)


def cli(agent: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return vigil_cli(*args, "--server-address", agent.server.addresses[0])


def policy(api: Any, name: str) -> Any:
    (p,) = [p for p in api.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(),
                                               timeout=WAIT).policies if p.name == name]
    return p


def set_mode(api: Any, name: str, mode: int) -> None:
    api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(name=name, mode=mode),
                               timeout=WAIT)


# --------------------------------------------------------------------------- info, debug

def test_get_info(api: Any, agent: Any) -> None:
    from vigil import __version__
    info = api.GetInfo(sensors_pb2.GetInfoRequest(), timeout=WAIT)
    assert (info.name, info.version) == ("vigil", __version__)
    probes = {p.Name: p.Enabled.value for p in info.probes}
    # Tetragon's names where they map; this machine's kernel allows these
    assert probes["signal"] and probes["tracepoint"] and probes["ringbuf"]
    assert "send_signal" not in probes and "fmodret" in probes
    conf = {}
    for cv in info.conf:
        val = wrappers_pb2.StringValue()
        assert cv.value.Unpack(val)
        conf[cv.key] = val.value
    assert conf["export-filename"] == str(agent.test_dir / "events.log")
    assert conf["node-name"] == agent.node_name
    assert info.build.go_version.startswith("python3")


def test_log_level_get_and_set(api: Any) -> None:
    vigil_log = logging.getLogger("vigil")
    before = vigil_log.level
    try:
        resp = api.SetDebug(sensors_pb2.SetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL, level=sensors_pb2.LOG_LEVEL_DEBUG),
            timeout=WAIT)
        assert resp.level == sensors_pb2.LOG_LEVEL_DEBUG
        assert vigil_log.getEffectiveLevel() == logging.DEBUG
        got = api.GetDebug(sensors_pb2.GetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL), timeout=WAIT)
        assert (got.flag, got.level) == (sensors_pb2.CONFIG_FLAG_LOG_LEVEL,
                                         sensors_pb2.LOG_LEVEL_DEBUG)
        api.SetDebug(sensors_pb2.SetDebugRequest(
            flag=sensors_pb2.CONFIG_FLAG_LOG_LEVEL, level=sensors_pb2.LOG_LEVEL_WARN),
            timeout=WAIT)
        assert vigil_log.getEffectiveLevel() == logging.WARNING
        with pytest.raises(grpc.RpcError) as err:
            api.SetDebug(sensors_pb2.SetDebugRequest(
                flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE), timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        vigil_log.setLevel(before)


def test_dump_process_cache(api: Any) -> None:
    resp, call = api.GetDebug.with_call(sensors_pb2.GetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE), timeout=WAIT)
    procs = resp.processes.processes
    trailers = dict(call.trailing_metadata())
    assert int(trailers["vigil-process-cache-total"]) >= len(procs) > 0
    assert len(procs) <= int(trailers["vigil-process-cache-cap"])
    mine = [p for p in procs if p.process.pid.value == os.getpid()]
    assert mine and mine[0].process.exec_id and mine[0].refcnt.value >= 1
    skip = api.GetDebug(sensors_pb2.GetDebugRequest(
        flag=sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE,
        dump=sensors_pb2.DumpProcessCacheReqArgs(skip_zero_refcnt=True)), timeout=WAIT)
    assert all(p.refcnt.value > 0 for p in skip.processes.processes)


# --------------------------------------------------------------------------- domains, sensors, hook

def test_domains_and_sensors(api: Any) -> None:
    assert list(api.ListDomains(sensors_pb2.ListDomainsRequest(), timeout=WAIT).domains) == [
        "static", "grpc"]
    api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
        yaml=KILL_DUP.format(name="sensors-dup", actions="")), timeout=WAIT)
    try:
        sensors = [(s.name, s.enabled, s.collection) for s in
                   api.ListSensors(sensors_pb2.ListSensorsRequest(), timeout=WAIT).sensors]
        assert sensors[0] == ("__base__", True, "base")
        assert ("generic_tracepoint", True, "sensors-dup") in sensors
        api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(
            name="sensors-dup", enable=False), timeout=WAIT)
        sensors = api.ListSensors(sensors_pb2.ListSensorsRequest(), timeout=WAIT).sensors
        assert [(s.name, s.enabled) for s in sensors if s.collection == "sensors-dup"] == [
            ("generic_tracepoint", False)]
    finally:
        api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="sensors-dup"),
                                timeout=WAIT)


def test_runtime_hook_create_container(api: Any, agent: Any) -> None:
    before = agent.server.servicer.runtime_hooks
    api.RuntimeHook(tetragon_pb2.RuntimeHookRequest(createContainer=tetragon_pb2.CreateContainer(
        cgroupsPath=f"/kubepods/pod1/{'ab' * 32}", containerID="ab" * 32, containerName="app",
        podName="web", podNamespace="default", annotations={"k": "v"},
        mounts=[tetragon_pb2.Mount(destination="/data", type="bind", source="/srv")])),
        timeout=WAIT)
    assert agent.server.servicer.runtime_hooks == before + 1
    with pytest.raises(grpc.RpcError) as err:
        api.RuntimeHook(tetragon_pb2.RuntimeHookRequest(), timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- event log

def test_event_log_params(channel: grpc.Channel, agent: Any) -> None:
    el = eventlogservice_pb2_grpc.EventLogServiceStub(channel)
    writer = agent._writers[0]
    got = el.GetEventLogParams(eventlogservice_pb2.GetEventLogParamsRequest(), timeout=WAIT)
    assert (got.max_size, got.rotation_interval, got.max_backups) == (10, "0s", 5)
    try:
        el.SetEventLogParams(eventlogservice_pb2.SetEventLogParamsRequest(
            max_size=3, rotation_interval="90m", max_backups=2), timeout=WAIT)
        assert (writer.max_bytes, writer.rotation_interval, writer.max_backups) == (
            3 << 20, 5400.0, 2)
        el.SetEventLogParams(eventlogservice_pb2.SetEventLogParamsRequest(max_backups=4),
                             timeout=WAIT)  # unset fields stay
        got = el.GetEventLogParams(eventlogservice_pb2.GetEventLogParamsRequest(),
                                   timeout=WAIT)
        assert (got.max_size, got.rotation_interval, got.max_backups) == (3, "1h30m0s", 4)
        for bad in (eventlogservice_pb2.SetEventLogParamsRequest(rotation_interval="soon"),
                    eventlogservice_pb2.SetEventLogParamsRequest(max_size=0)):
            with pytest.raises(grpc.RpcError) as err:
                el.SetEventLogParams(bad, timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        writer.set_params(max_size_mb=10, rotation_interval=0, max_backups=5)


# --------------------------------------------------------------------------- policy mode

def test_set_mode_switches_enforcement_in_the_kernel(api: Any) -> None:
    """A Sigkill policy: enforce kills, monitor only counts (the process lives), enforce
    kills again; the hook stays attached (same links) and its counters keep counting."""
    api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
        yaml=KILL_DUP.format(name="mode-dup", actions=SIGKILL)), timeout=WAIT)
    try:
        p = policy(api, "mode-dup")
        assert p.mode == sensors_pb2.TP_MODE_ENFORCE
        assert [(h.section, h.state, h.hook_description, h.hook_idx)
                for h in p.hook_statuses] == [
            ("spec.tracepoints[0]", sensors_pb2.STATUS_LOADED,
             "tracepoint syscalls/sys_enter_dup", 0)]
        links = links_of(os.getpid())
        assert subprocess.run(DUP).returncode == -9
        c = policy(api, "mode-dup").stats.action_counters
        assert (c.signal, c.monitor_signal) == (1, 0)

        set_mode(api, "mode-dup", sensors_pb2.TP_MODE_MONITOR)
        assert policy(api, "mode-dup").mode == sensors_pb2.TP_MODE_MONITOR
        assert subprocess.run(DUP).returncode == 0
        c = policy(api, "mode-dup").stats.action_counters
        assert (c.signal, c.monitor_signal) == (1, 1)

        set_mode(api, "mode-dup", sensors_pb2.TP_MODE_ENFORCE)
        assert subprocess.run(DUP).returncode == -9
        c = policy(api, "mode-dup").stats.action_counters
        assert (c.signal, c.monitor_signal, c.post) == (2, 1, 3)
        assert links_of(os.getpid()) == links  # flipped in place: nothing reattached

        # a disabled policy keeps the mode it is given for its next load
        api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(
            name="mode-dup", enable=False, mode=sensors_pb2.TP_MODE_MONITOR), timeout=WAIT)
        api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(
            name="mode-dup", enable=True), timeout=WAIT)
        assert subprocess.run(DUP).returncode == 0
        assert policy(api, "mode-dup").mode == sensors_pb2.TP_MODE_MONITOR
    finally:
        api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="mode-dup"),
                                timeout=WAIT)


def test_set_mode_refusals(api: Any) -> None:
    api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(
        yaml=KILL_DUP.format(name="watch-dup", actions="")), timeout=WAIT)
    try:
        assert policy(api, "watch-dup").mode == sensors_pb2.TP_MODE_MONITOR_ONLY
        for mode, code in ((sensors_pb2.TP_MODE_ENFORCE, grpc.StatusCode.FAILED_PRECONDITION),
                           (sensors_pb2.TP_MODE_MONITOR_ONLY,
                            grpc.StatusCode.FAILED_PRECONDITION),
                           (77, grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                set_mode(api, "watch-dup", mode)
            assert err.value.code() == code, mode
        set_mode(api, "watch-dup", sensors_pb2.TP_MODE_MONITOR)  # already: accepted
        assert policy(api, "watch-dup").mode == sensors_pb2.TP_MODE_MONITOR_ONLY
        with pytest.raises(grpc.RpcError) as err:
            set_mode(api, "no-such-policy", sensors_pb2.TP_MODE_MONITOR)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="watch-dup"),
                                timeout=WAIT)


# --------------------------------------------------------------------------- CEL

def test_cel_expression_filters_the_stream(agent: Any, api: Any, tmp_path: Path) -> None:
    true = tmp_path / "vigil-cel-true"
    shutil.copy("/bin/true", true)
    expr = (f'process_exec.process.binary == "{true}" && '
            'process_exec.process.arguments == "pick-me"')
    s = Stream(api, events_pb2.GetEventsRequest(allow_list=[filter_from_dict(
        {"cel_expression": [expr]})]), keep_synthetic=False)
    try:
        wait_subscribers(agent, 1)
        for arg in ("skip-me", "pick-me"):
            subprocess.run([str(true), arg], check=True)
        got = s.wait(lambda evs: any("process_exec" in e for e in evs))
    finally:
        s.close()
    assert got and all(e["process_exec"]["process"]["arguments"] == "pick-me" for e in got)
    with pytest.raises(grpc.RpcError) as err:
        list(api.GetEvents(events_pb2.GetEventsRequest(allow_list=[events_pb2.Filter(
            cel_expression=["process_exec.process.pid =="])]), timeout=WAIT))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 1, column 28" in err.value.details()


# --------------------------------------------------------------------------- CLI

def test_cli_commands(agent: Any, tmp_path: Path) -> None:
    out = cli(agent, "info")
    assert out.returncode == 0 and "name: vigil" in out.stdout and "  signal: true" in out.stdout
    vigil_log = logging.getLogger("vigil")
    before = vigil_log.level
    try:
        out = cli(agent, "loglevel", "set", "debug")
        assert (out.returncode, out.stdout) == (0, "Log level set to: debug\n")
        out = cli(agent, "loglevel", "get")
        assert (out.returncode, out.stdout) == (0, "Current log level: debug\n")
    finally:
        vigil_log.setLevel(before)
    out = cli(agent, "tracingpolicy", "domains")
    assert (out.returncode, out.stdout) == (0, "static\ngrpc\n")
    out = cli(agent, "debug", "dump", "processcache")
    assert out.returncode == 0 and f'"pid":{os.getpid()},' in out.stdout
    out = cli(agent, "eventlog", "get")
    assert out.returncode == 0 and "rotation_interval: 0s" in out.stdout
    pol = tmp_path / "cli-dup.yaml"
    pol.write_text(KILL_DUP.format(name="cli-dup", actions=SIGKILL))
    assert cli(agent, "tracingpolicy", "add", str(pol)).returncode == 0
    try:
        out = cli(agent, "sensors", "list")
        assert out.returncode == 0 and "cli-dup" in out.stdout and "__base__" in out.stdout
        out = cli(agent, "tracingpolicy", "set-mode", "cli-dup", "monitor")
        assert (out.returncode, out.stdout) == (0, "tracing policy 'cli-dup' set to monitor "
                                                   "mode\n")
        assert subprocess.run(DUP).returncode == 0
        out = cli(agent, "tracingpolicy", "set-mode", "cli-dup", "enforce")
        assert out.returncode == 0
        assert subprocess.run(DUP).returncode == -9
    finally:
        cli(agent, "tracingpolicy", "delete", "cli-dup")
    out = cli(agent, "getevents", "--cel-expression", "process_exec.process.pid ==")
    assert out.returncode != 0 and "line 1, column 28" in out.stderr
