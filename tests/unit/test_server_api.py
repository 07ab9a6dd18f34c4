"""The gRPC server on a fake policy store and a bare event hub: status mapping, policy
persistence, address parsing. No agent, no BPF, no privileges (a unix socket in tmp)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from vigil.api.tetragon import sensors_pb2, sensors_pb2_grpc
from vigil.errors import BpfError, ConfigError, FeatureNotSupported, PolicyError
from vigil.stream.hub import EventHub
from vigil.policy.store_api import PolicyMode, PolicyState
from vigil.server import listen
from vigil.server.config import ServerConfig
from vigil.server.fakes import StaticPolicyStore
from vigil.server.persist import PersistentPolicyStore, policy_filename
from vigil.server.server import GrpcServer

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec: {{}}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[StaticPolicyStore, sensors_pb2_grpc.FineGuidanceSensorsStub]]:
    store = StaticPolicyStore()
    cfg = ServerConfig(addresses=(f"unix://{tmp_path}/s.sock",), info_file=str(tmp_path / "i.json"))
    srv = GrpcServer(cfg, events=EventHub(), node_name="n", policies=lambda: store,
                     health_check=lambda: (True, "running"))
    srv.start()
    ch = grpc.insecure_channel(srv.addresses[0])
    try:
        yield store, sensors_pb2_grpc.FineGuidanceSensorsStub(ch)
    finally:
        ch.close()
        srv.stop(grace=0)
    assert not (tmp_path / "s.sock").exists() and not (tmp_path / "i.json").exists()


@pytest.mark.parametrize(("error", "code"), [
    (PolicyError("bad", ["spec.kprobes[0].args: too many"]), grpc.StatusCode.INVALID_ARGUMENT),
    (FeatureNotSupported("lsm", "no BPF LSM"), grpc.StatusCode.FAILED_PRECONDITION),
    (BpfError(22, "load program", "generic_kprobe"), grpc.StatusCode.FAILED_PRECONDITION),
    (RuntimeError("boom"), None),
])
def test_store_errors_become_statuses(served, error, code):
    store, api = served
    store.fail_add = error
    with pytest.raises(grpc.RpcError) as err:
        api.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml="x"))
    if code is None:  # an engine bug is not the client's fault: UNKNOWN, not a crash
        assert err.value.code() == grpc.StatusCode.UNKNOWN
    else:
        assert err.value.code() == code
    if isinstance(error, PolicyError):
        assert "spec.kprobes[0].args: too many" in err.value.details()


def test_domains_and_not_found(served):
    store, api = served
    store.add(POLICY.format(name="from-file"), source="static")
    with pytest.raises(grpc.RpcError) as err:
        api.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="from-file"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "in domain 'static'" in err.value.details()
    api.DisableTracingPolicy(sensors_pb2.DisableTracingPolicyRequest(name="from-file",
                                                                     domain="static"))
    assert store.list()[0].state == PolicyState.DISABLED
    listed = api.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(domain="grpc"))
    assert not listed.policies
    api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(
        name="from-file", domain="static", mode=sensors_pb2.TP_MODE_MONITOR))
    assert store.list()[0].mode == PolicyMode.MONITOR
    with pytest.raises(grpc.RpcError) as err:
        api.ConfigureTracingPolicy(sensors_pb2.ConfigureTracingPolicyRequest(
            name="from-file", domain="static", mode=sensors_pb2.TP_MODE_MONITOR_ONLY))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_no_policy_engine_is_unavailable(tmp_path: Path):
    cfg = ServerConfig(addresses=(f"unix://{tmp_path}/s.sock",), info_file="")
    srv = GrpcServer(cfg, events=EventHub(), node_name="n", policies=lambda: None,
                     health_check=lambda: (False, "reader thread is not running"))
    srv.start()
    try:
        with grpc.insecure_channel(srv.addresses[0]) as ch:
            api = sensors_pb2_grpc.FineGuidanceSensorsStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                api.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(grace=0)


def test_persistence_files_and_restore(tmp_path: Path):
    d = tmp_path / "persist"
    store = PersistentPolicyStore(StaticPolicyStore(), d)
    store.add(POLICY.format(name="a"), source="grpc")
    store.add(POLICY.format(name="b"), source="grpc")
    store.add(POLICY.format(name="static-one"), source="static")  # files are not persisted
    store.disable("b")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == ["a.yaml", "b.yaml", "b.yaml.disabled"]
    assert stat.S_IMODE((d / "a.yaml").stat().st_mode) == 0o600
    (d / "broken.yaml").write_text("kind: nope\n")  # logged, skipped, left in place
    again = PersistentPolicyStore(StaticPolicyStore(), d)
    restored = again.restore()
    assert sorted(p.name for p in restored) == ["a", "b"]
    assert {p.name: p.state for p in again.list()} == {"a": PolicyState.ENABLED,
                                                       "b": PolicyState.DISABLED}
    again.delete("b")
    assert not (d / "b.yaml").exists() and not (d / "b.yaml.disabled").exists()


def test_persistence_is_all_or_nothing(tmp_path: Path):
    inner = StaticPolicyStore()
    store = PersistentPolicyStore(inner, tmp_path)
    with pytest.raises(ValueError):
        store.add(POLICY.format(name="Bad_Name"), source="grpc")  # not a DNS name
    assert inner.list() == []
    assert policy_filename("p", "ns") == "ns_p.yaml"


def test_addresses():
    a = listen.parse_address("unix:///var/run/vigil/vigil.sock")
    assert (a.kind, a.path, a.loopback) == ("unix", "/var/run/vigil/vigil.sock", True)
    assert listen.parse_address("localhost").target == "localhost:54321"
    assert listen.parse_address("[::1]:5").loopback
    assert not listen.parse_address("0.0.0.0:1").loopback
    assert listen.parse_addresses(" unix:///a.sock , 127.0.0.1:1 ") == ("unix:///a.sock",
                                                                        "127.0.0.1:1")
    for bad in ("unix://relative.sock", "1.2.3.4:99999", "::1:5"):
        with pytest.raises(ConfigError):
            listen.parse_address(bad)


def test_validate_refuses_plain_tcp():
    with pytest.raises(ConfigError, match="refusing plain TCP"):
        listen.validate(ServerConfig(addresses=("127.0.0.1:0",)))
    with pytest.raises(ConfigError, match="loopback"):
        listen.validate(ServerConfig(addresses=("10.0.0.1:1",), allow_insecure_tcp=True))
    listen.validate(ServerConfig(addresses=("127.0.0.1:0",), allow_insecure_tcp=True))
    with pytest.raises(ConfigError, match="mTLS"):
        listen.validate(ServerConfig(addresses=("unix:///x",), tls_client_ca_files=("ca",)))


def test_stale_socket_is_replaced_and_a_file_is_not(tmp_path: Path):
    import socket
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # stale: nobody listens
    cfg = ServerConfig(addresses=(f"unix://{path}",), info_file="")
    srv = GrpcServer(cfg, events=EventHub(), node_name="n", policies=lambda: None,
                     health_check=lambda: (True, "running"))
    srv.start()
    srv.stop(grace=0)
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        GrpcServer(cfg, events=EventHub(), node_name="n", policies=lambda: None,
                   health_check=lambda: (True, "")).start()
    assert path.read_text() == "not a socket"
    os.unlink(path)
