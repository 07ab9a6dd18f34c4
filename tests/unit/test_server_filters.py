"""vigil.server.filters (GetEvents filters and field filters) and vigil.server.convert
(dict event -> GetEventsResponse bytes). Pure: no agent, no privileges."""

from __future__ import annotations

import copy

import pytest
from google.protobuf import json_format

from tests.unit.grpc_samples import BASH, CURL, INIT, NODE, encoder_samples, samples
from vigil.api.tetragon import events_pb2, sensors_pb2
from vigil.policy.store_api import ActionCounters, PolicyInfo, PolicyState
from vigil.server import filters as F
from vigil.server.convert import (
    EncodeError,
    EventEncoder,
    field_filter,
    field_filter_to_dict,
    filter_from_dict,
    parse_timestamp,
    policy_status,
    request_specs,
    response_to_dict,
    varint,
)

S = samples()


def matching(allow: list[dict] | None = None, deny: list[dict] | None = None) -> set[str]:
    flt = F.EventFilter(allow or [], deny or [])
    return {name for name, ev in S.items() if flt.matches(ev)}


PROCESS_EVENTS = {n for n in S if n not in ("throttle", "rate_limit", "test")}


# --------------------------------------------------------------------------- filters

def test_no_filter_matches_everything():
    assert matching() == set(S)


def test_event_set_by_name_and_number():
    assert matching([{"event_set": ["PROCESS_EXIT"]}]) == {"exit", "exit_status"}
    assert matching([{"event_set": [9, "PROCESS_LSM"]}]) == {"kprobe", "kprobe_sock", "lsm"}
    assert matching([{"event_set": ["PROCESS_THROTTLE", "RATE_LIMIT_INFO", "TEST"]}]) == {
        "throttle", "rate_limit", "test"}


def test_unknown_event_type_is_an_error():
    with pytest.raises(F.FilterError, match="unknown event type"):
        F.EventFilter([{"event_set": ["PROCESS_NOPE"]}])


def test_binary_regex_is_a_search_and_ored():
    assert matching([{"binary_regex": ["curl"]}]) == {
        "exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}
    assert matching([{"binary_regex": ["^/sbin/init$", "nginx"]}]) == {"exec_init",
                                                                         "exec_pod"}


def test_invalid_regex_is_an_error():
    with pytest.raises(F.FilterError, match="binary_regex: invalid regular expression"):
        F.EventFilter([{"binary_regex": ["("]}])


def test_parent_binary_and_arguments_regex():
    assert matching([{"parent_binary_regex": ["bash$"]}]) == {
        "exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}
    assert matching([{"arguments_regex": ["cilium\\.io"]}]) == {
        "exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}
    assert matching([{"parent_arguments_regex": ["^-l$"]}]) == {
        "exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}


def test_ancestor_binary_regex():
    assert matching([{"ancestor_binary_regex": ["init"]}]) == {"exec", "kprobe"}


def test_pid_and_pid_set():
    assert matching([{"pid": [100]}]) == {"exit_status", "tracepoint", "uprobe", "usdt"}
    # pid_set: pid 1 and its descendants: bash (child of 1) joins on its exec... here the
    # samples only have events whose parent is 1 or 100; 200's parent is 100
    flt = F.EventFilter([{"pid_set": [1]}])
    order = ["exec_init", "exec_pod", "exit_status", "exec", "kprobe"]
    got = [n for n in order if flt.matches(S[n])]
    assert got == ["exec_init", "exec_pod", "exit_status"]  # 200's parent 100 not in set
    bash_exec = {"process_exec": {"process": BASH, "parent": INIT}, "time": "2024-01-01T00:00:01Z"}
    assert flt.matches(bash_exec)          # parent 1 in set -> 100 joins
    assert flt.matches(S["exec"])          # now 200 (parent 100) matches, and joins
    assert flt.matches(S["kprobe"])


def test_namespace_host_and_pod():
    assert matching([{"namespace": [""]}]) == PROCESS_EVENTS - {"exec_pod"}
    assert matching([{"namespace": ["web"]}]) == {"exec_pod"}
    assert matching([{"namespace_regex": ["^w"]}]) == {"exec_pod"}


def test_pod_container_labels_health_check():
    assert matching([{"pod_regex": ["^nginx-"]}]) == {"exec_pod"}
    assert matching([{"container_id": ["^0123"]}]) == {"exec_pod"}
    assert matching([{"container_name_regex": ["ngin"]}]) == {"exec_pod"}
    assert matching([{"labels": ["app=nginx,tier in (front, back)"]}]) == {"exec_pod"}
    assert matching([{"labels": ["app!=nginx"]}]) == set()  # host events never match
    assert matching([{"labels": ["!missing"]}]) == {"exec_pod"}
    assert matching([{"health_check": True}]) == {"exec_pod"}
    assert matching([{"health_check": False}]) == PROCESS_EVENTS - {"exec_pod"}


def test_label_selector_syntax():
    sel = F.compile_label_selector("a=1, b==2, c!=3, d in (x,y), e notin (z), f, !g")
    assert sel({"a": "1", "b": "2", "d": "y", "f": ""})
    assert not sel({"a": "1", "b": "2", "d": "y", "f": "", "g": "1"})
    assert not sel({"a": "1", "b": "2", "d": "q", "f": ""})
    with pytest.raises(F.FilterError):
        F.compile_label_selector("a=(")


def test_in_init_tree():
    assert matching([{"in_init_tree": True}]) == {"exec_pod"}


def test_policy_names():
    assert matching([{"policy_names": ["write-watch", "lsm-open"]}]) == {"kprobe", "lsm"}


def test_capabilities():
    assert matching([{"capabilities": {"effective": {"any": ["CAP_SYS_ADMIN"]}}}]) == {
        "exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}
    assert matching([{"capabilities": {"permitted": {"all": ["CAP_CHOWN", "DAC_OVERRIDE"]},
                                       "effective": {"exactly": ["CAP_SYS_ADMIN"]}}}]) \
        == {"exec", "exit", "kprobe", "kprobe_sock", "lsm", "loader"}
    assert matching([{"capabilities": {"effective": {"none": ["CAP_SYS_ADMIN"]}}}]) == set()
    with pytest.raises(F.FilterError, match="exactly one"):
        F.EventFilter([{"capabilities": {"effective": {"any": ["CAP_KILL"],
                                                       "all": ["CAP_KILL"]}}}])


def test_fields_are_anded_and_filters_ored():
    one = {"event_set": ["PROCESS_EXEC"], "binary_regex": ["curl"]}
    assert matching([one]) == {"exec"}
    assert matching([one, {"event_set": ["PROCESS_THROTTLE"]}]) == {"exec", "throttle"}


def test_deny_wins_over_allow():
    assert matching([{"event_set": ["PROCESS_EXEC"]}], [{"namespace": ["web"]}]) == {
        "exec", "exec_init"}
    assert matching(None, [{"binary_regex": ["."]}]) == {"throttle", "rate_limit", "test"}


def test_process_fields_never_match_processless_events():
    for f in ({"binary_regex": ["."]}, {"pid": [0]}, {"namespace": [""]},
              {"health_check": False}, {"in_init_tree": False}):
        assert not {"throttle", "rate_limit", "test"} & matching([f]), f


def test_cel_expression_binds_the_event_key():
    proc = {"binary": "/usr/bin/curl", "pid": 42, "arguments": "-s example"}
    exec_ev = {"process_exec": {"process": proc}, "node_name": "n"}
    kprobe_ev = {"process_kprobe": {"process": proc, "function_name": "tcp_connect",
                                    "policy_name": "p"}}
    f = F.EventFilter([{"cel_expression": [
        'process_exec.process.binary.endsWith("curl") && process_exec.process.pid > 40']}])
    assert f.matches(exec_ev) and not f.matches(kprobe_ev)
    # another event type's variable: no match (not an error); alternatives are OR-ed
    f = F.EventFilter([{"cel_expression": ['process_kprobe.function_name == "tcp_connect"',
                                           "process_exec.process.pid == 7"]}])
    assert f.matches(kprobe_ev) and not f.matches(exec_ev)
    # a non-bool result or a run-time type error does not match
    assert not F.EventFilter([{"cel_expression": ["process_exec.process.pid"]}]).matches(exec_ev)
    assert not F.EventFilter([{"cel_expression": ['process_exec.process.pid + "x" == 1']}]
                             ).matches(exec_ev)
    # AND with the other fields of the same Filter
    f = F.EventFilter([{"cel_expression": ["true"], "event_set": ["PROCESS_KPROBE"]}])
    assert f.matches(kprobe_ev) and not f.matches(exec_ev)


def test_cel_syntax_error_names_the_position():
    with pytest.raises(F.FilterError, match=r"cel_expression: invalid expression "
                       r"'process_exec.process.pid ==' at line 1, column 28"):
        F.EventFilter([{"cel_expression": ["process_exec.process.pid =="]}])


def test_unknown_filter_field_is_an_error():
    with pytest.raises(F.FilterError, match="unknown filter field"):
        F.EventFilter([{"binary": ["x"]}])


def test_cli_filter_maps_tetra_flags():
    assert F.cli_filter() is None
    spec = F.cli_filter(event_types=["process_exec", "PROCESS_EXIT"], binaries=["curl"],
                        namespaces=["web"], host=True, pods=["p"], policy_names=["x"])
    assert spec == {"event_set": ["PROCESS_EXEC", "PROCESS_EXIT"], "binary_regex": ["curl"],
                    "namespace": ["web", ""], "pod_regex": ["p"], "policy_names": ["x"]}


# --------------------------------------------------------------------------- field filters

def test_include_keeps_only_listed_fields_and_never_mutates():
    ev = S["exec"]
    before = copy.deepcopy(ev)
    ff = F.FieldFilters([{"fields": "process.binary,process.pid,parent", "action": "INCLUDE"}])
    out = ff.apply(ev)
    assert out == {"process_exec": {"process": {"pid": 200, "binary": "/usr/bin/curl"},
                                    "parent": BASH},
                   "node_name": NODE, "time": ev["time"]}
    assert ev == before and CURL["binary"] == "/usr/bin/curl"


def test_exclude_removes_and_wins_over_include():
    ff = F.FieldFilters([
        {"fields": {"paths": ["process", "parent.binary"]}, "action": "INCLUDE"},
        {"fields": ["process.cap", "process.ns"], "action": 1}])
    out = ff.apply(S["exec"])["process_exec"]
    assert set(out) == {"process", "parent"}
    assert "cap" not in out["process"] and "ns" not in out["process"]
    assert out["parent"] == {"binary": "/usr/bin/bash"}


def test_field_filter_event_set_and_invert():
    ff = F.FieldFilters([{"event_set": ["PROCESS_EXIT"], "fields": "signal",
                          "action": "EXCLUDE"}])
    assert "signal" not in ff.apply(S["exit"])["process_exit"]
    assert ff.apply(S["exec"]) is S["exec"]
    inv = F.FieldFilters([{"event_set": ["PROCESS_EXIT"], "invert_event_set": True,
                           "fields": "parent", "action": "EXCLUDE"}])
    assert "parent" in inv.apply(S["exit"])["process_exit"]
    assert "parent" not in inv.apply(S["exec"])["process_exec"]


def test_field_filter_paths_into_lists_and_camel_case():
    ff = F.FieldFilters([{"fields": "args.fileArg.path,functionName", "action": "INCLUDE"}])
    out = ff.apply(S["kprobe"])["process_kprobe"]
    assert out == {"function_name": "__x64_sys_write",
                   "args": [{"file_arg": {"path": "/etc/passwd"}}, {}, {}]}


def test_field_filter_errors():
    with pytest.raises(F.FilterError):
        F.FieldFilters([{"fields": "a..b"}])
    with pytest.raises(F.FilterError):
        F.FieldFilters([{"fields": "a", "action": "MAYBE"}])


# --------------------------------------------------------------------------- encoder

SHARED_ENCODER = EventEncoder()  # caches warm across the parametrized cases, as in a stream


ENC_S = encoder_samples()


@pytest.mark.parametrize("name", sorted(ENC_S))
@pytest.mark.parametrize("encoder", ["fresh", "shared"])
def test_encoder_matches_protobuf_for_every_event_type(name, encoder):
    ev = ENC_S[name]
    ref = json_format.ParseDict(copy.deepcopy(ev), events_pb2.GetEventsResponse())
    enc = EventEncoder() if encoder == "fresh" else SHARED_ENCODER
    data = enc.encode_event(ev)
    assert events_pb2.GetEventsResponse.FromString(data) == ref
    if "pod_labels" not in str(ev):  # map entry order is unspecified
        assert data == ref.SerializeToString()
    assert response_to_dict(data) == ev  # and back: the export's JSON, unchanged


def test_shared_process_under_different_field_numbers():
    """One process dict as ``process`` (1), ``parent`` (2 or 4) and ``ancestors`` (3, 13)."""
    enc = EventEncoder()
    for name in ("exec", "kprobe", "loader", "exit", "exec", "loader"):
        ref = json_format.ParseDict(copy.deepcopy(S[name]), events_pb2.GetEventsResponse())
        assert events_pb2.GetEventsResponse.FromString(
            enc.encode_event(S[name], shared=False)) == ref


def test_encoder_caches_by_identity_and_is_not_fooled_by_equal_copies():
    enc = EventEncoder()
    a = enc.encode_event(S["exec"])
    assert enc.encode_event(S["exec"]) is a
    changed = copy.deepcopy(S["exec"])
    changed["process_exec"]["process"]["binary"] = "/bin/other"
    assert response_to_dict(enc.encode_event(changed))["process_exec"]["process"][
        "binary"] == "/bin/other"
    stored = enc.processes.stored
    assert stored >= 2  # the exec's process and parent
    enc.encode_event(S["exit"])  # shares CURL and BASH with the exec: no new encodings
    assert enc.processes.stored == stored


def test_encoder_skips_unknown_keys_and_rejects_bad_values():
    enc = EventEncoder()
    ev = {"process_exec": {"process": {"pid": 1, "future_field": 3}}, "time": "2024-01-01T00:00:00Z"}
    assert response_to_dict(enc.encode_event(ev, shared=False)) == {
        "process_exec": {"process": {"pid": 1}}, "time": "2024-01-01T00:00:00Z"}
    assert enc.unknown_keys == 1
    with pytest.raises(EncodeError):
        enc.encode_event({"process_exec": {"process": {"pid": "x"}}}, shared=False)
    with pytest.raises(EncodeError):
        enc.encode_event({"time": "yesterday"}, shared=False)


def test_encoder_cache_is_bounded():
    enc = EventEncoder(process_cache=16, event_cache=16)
    for i in range(100):
        enc.encode_event({"process_exec": {"process": {"pid": i}}})
    assert len(enc.events) <= 16 and len(enc.processes) <= 16


def test_timestamps_and_varints():
    assert parse_timestamp("1970-01-01T00:00:00Z") == (0, 0)
    assert parse_timestamp("2022-10-18T03:16:22.225265555Z") == (1666062982, 225265555)
    assert parse_timestamp("2024-02-29T23:59:59.5Z") == (1709251199, 500000000)
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == (1704067200, 0)
    assert varint(300) == b"\xac\x02" and varint(-1) == b"\xff" * 9 + b"\x01"


# --------------------------------------------------------------------------- requests, policies

def test_request_specs_round_trip_through_protobuf():
    req = events_pb2.GetEventsRequest(
        allow_list=[filter_from_dict({"event_set": ["PROCESS_EXEC"], "health_check": False,
                                      "capabilities": {"effective": {"any": ["CAP_BPF"]}}})],
        deny_list=[filter_from_dict({"pid": [1, 2]})],
        field_filters=[field_filter(["process.binary", "KprobeBpfAttr.ProgType"],
                                    include=True, event_set=["PROCESS_KPROBE"])])
    allow, deny, ff = request_specs(events_pb2.GetEventsRequest.FromString(
        req.SerializeToString()))
    assert allow == [{"event_set": ["PROCESS_EXEC"], "health_check": False,
                      "capabilities": {"effective": {"any": ["CAP_BPF"]}}}]
    assert deny == [{"pid": [1, 2]}]
    assert ff == [{"event_set": ["PROCESS_KPROBE"], "action": "INCLUDE",
                   "fields": ["process.binary", "KprobeBpfAttr.ProgType"]}]
    F.EventFilter(allow, deny)
    F.FieldFilters(ff)


def test_field_filter_to_dict_keeps_invert():
    ff = events_pb2.FieldFilter(action=events_pb2.EXCLUDE)
    ff.invert_event_set.value = True
    assert field_filter_to_dict(ff)["invert_event_set"] is True


def test_policy_status():
    st = policy_status(PolicyInfo(id=7, name="p", sensors=("generic_kprobe",),
                                  state=PolicyState.DISABLED, kernel_memory_bytes=4096,
                                  stats=ActionCounters(post=3, signal=1)))
    assert st.name == "p" and st.state == sensors_pb2.TP_STATE_DISABLED and not st.enabled
    assert st.stats.action_counters.post == 3 and st.domain == "grpc"


def test_wire_numbers_are_tetragons():
    """Spot checks of the numbers clients depend on (docs: Tetragon api/v1)."""
    r = events_pb2.GetEventsResponse.DESCRIPTOR.fields_by_name
    assert [r[k].number for k in ("process_exec", "process_exit", "process_kprobe",
                                  "process_tracepoint", "process_loader", "process_uprobe",
                                  "process_throttle", "process_lsm", "process_usdt", "test",
                                  "rate_limit_info", "node_name", "time", "cluster_name",
                                  "node_labels")] == [
        1, 5, 9, 10, 11, 12, 27, 28, 29, 40000, 40001, 1000, 1001, 1003, 1004]
    flt = events_pb2.Filter.DESCRIPTOR.fields_by_name
    assert {k: flt[k].number for k in ("binary_regex", "pid_set", "event_set", "labels",
                                        "policy_names", "capabilities", "container_id",
                                        "ancestor_binary_regex", "namespace_regex")} == {
        "binary_regex": 1, "pid_set": 5, "event_set": 6, "labels": 9, "policy_names": 10,
        "capabilities": 11, "container_id": 15, "ancestor_binary_regex": 17,
        "namespace_regex": 19}
    svc = sensors_pb2.DESCRIPTOR.services_by_name["FineGuidanceSensors"]
    assert svc.full_name == "tetragon.FineGuidanceSensors"
    assert svc.methods_by_name["GetEvents"].server_streaming


def test_undecodable_strings_become_valid_utf8():
    """A process name with raw non-UTF-8 bytes must not break the client's decoding."""
    raw = b"/tmp/\xff\xfeevil".decode("utf-8", "surrogateescape")
    ev = {"process_exec": {"process": {"binary": raw, "arguments": "a\udcffb"}},
          "time": "2024-01-01T00:00:00Z"}
    out = response_to_dict(EventEncoder().encode_event(ev))
    assert out["process_exec"]["process"] == {"binary": "/tmp/\ufffd\ufffdevil",
                                              "arguments": "a\ufffdb"}


def test_cli_getevents_file_applies_the_same_filters(tmp_path):
    """`vigil getevents --file` with filter flags: same semantics, no agent, no grpc."""
    import orjson
    from click.testing import CliRunner

    from vigil.cli import cli
    from vigil.events.compact import render
    f = tmp_path / "events.log"
    f.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in S.values()))
    r = CliRunner().invoke(cli, ["getevents", "--file", str(f), "-o", "compact",
                                 "-e", "PROCESS_EXIT,PROCESS_KPROBE", "--process", "curl"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [render(S[n], color=False)
                                     for n in ("exit", "kprobe", "kprobe_sock")]
    r = CliRunner().invoke(cli, ["getevents", "--file", str(f), "-e", "PROCESS_EXIT",
                                 "-F", "process,parent", "--max-events", "1"])
    assert [orjson.loads(x) for x in r.output.splitlines()] == [
        {"process_exit": {"signal": "SIGKILL", "time": "2024-01-01T00:00:06Z"},
         "node_name": NODE, "time": S["exit"]["time"]}]
    r = CliRunner().invoke(cli, ["getevents", "--file", str(f), "-e", "NOPE"])
    assert r.exit_code == 2 and "unknown event type" in r.output


@pytest.mark.parametrize("name", sorted(encoder_samples()))
def test_fast_encoder_writes_the_general_encoders_bytes(name: str) -> None:
    """The generated fast path (vigil.server.fastencode) and the interpreting encoder
    agree byte for byte; the sample shapes the pipeline makes take the fast path."""
    ev = encoder_samples()[name]
    enc = EventEncoder()
    general = enc._message(enc._response, ev)
    assert enc.encode_event(ev, shared=False) == general
    camel = dict(ev, nodeName=ev.get("node_name", "n"))
    camel.pop("node_name", None)
    assert enc.encode_event(camel, shared=False) == enc._message(enc._response, camel)


def _fast_and_general(ev: dict) -> tuple[bytes, bytes, int]:
    enc = EventEncoder()
    fast = enc.encode_event(ev, shared=False)
    return fast, enc._message(enc._response, ev), enc.slow_path


def test_oneof_members_are_written_even_when_zero() -> None:
    """``KprobeArgument{int_arg: 0}`` must reach the client as int_arg 0, not as an
    argument with no member set (proto3 skips zero scalars, but not in a oneof)."""
    ev = {"process_kprobe": {"function_name": "f", "args": [
        {"int_arg": 0}, {"string_arg": ""}, {"size_arg": "0"}, {"int_arg": -100},
        {"long_arg": 0}, {"uint_arg": 7}]}, "time": "2024-01-01T00:00:00Z"}
    fast, general, slow = _fast_and_general(ev)
    ref = json_format.ParseDict(copy.deepcopy(ev), events_pb2.GetEventsResponse())
    assert fast == general == ref.SerializeToString() and slow == 0
    args = response_to_dict(fast)["process_kprobe"]["args"]
    assert args[:3] == [{"int_arg": 0}, {"string_arg": ""}, {"size_arg": "0"}]


def test_fast_path_takes_dict_subclasses() -> None:
    """The pipeline may hand out dict subclasses (shared process dicts): same bytes,
    and no detour through the interpreting encoder."""
    class SharedDict(dict):
        __slots__ = ()

    def sub(v):
        if isinstance(v, dict):
            return SharedDict({k: sub(x) for k, x in v.items()})
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v
    fast_ones = 0
    for name in sorted(S):
        enc = EventEncoder()
        plain = enc.encode_event(S[name], shared=False)
        fast, general, slow = _fast_and_general(sub(S[name]))
        assert fast == general == plain
        assert slow == enc.slow_path, name
        fast_ones += not slow
    assert fast_ones >= 10


def test_fast_path_many_shapes_same_bytes() -> None:
    """Past the per-message limit of generated shapes the fast path walks the dict:
    still the general encoder's bytes, and field-number order whatever the key order."""
    from vigil.server import fastencode
    enc = EventEncoder()
    names = ["int_arg", "string_arg", "size_arg", "long_arg", "uint_arg", "label"]
    n = 0
    for i in range(fastencode._MAX_SHAPES + 20):
        ks = names[i % 6:] + names[:i % 6]
        arg = {k: (f"s{i}" if k in ("string_arg", "label") else i) for k in ks[:1 + i % 3]}
        arg2 = dict(reversed(list(arg.items())))
        for a in (arg, arg2):
            ev = {"process_kprobe": {"args": [a], "policy_name": f"p{i}",
                                     "function_name": "f"}, "node_name": "n"}
            if i % 2:
                ev = dict(reversed(list(ev.items())))
            assert enc.encode_event(ev, shared=False) == enc._message(
                enc._response, ev)
            n += 1
    assert enc.slow_path == 0


@pytest.mark.parametrize("shape", ["exec_exit", "policy"])
def test_benchmark_shapes_take_the_fast_path(shape: str) -> None:
    from vigil.bench.grpc_bench import _events, _policy_events
    evs = _events(20) if shape == "exec_exit" else _policy_events(20)
    enc = EventEncoder()
    for ev in evs:
        ref = json_format.ParseDict(copy.deepcopy(ev), events_pb2.GetEventsResponse())
        assert enc.encode_event(ev) == ref.SerializeToString()
    assert enc.slow_path == 0


def test_fast_varints_and_timestamps_match_the_general_encoder() -> None:
    import random

    from vigil.server.convert import _seconds_nanos
    from vigil.server.fastencode import _varint, timestamp
    rnd = random.Random(4)
    edges = [(1 << k) + d for k in range(64) for d in (-1, 0, 1)]
    for n in [*range(0, 20000, 7), *edges, *(rnd.randrange(1 << 64) for _ in range(5000)),
              -1, -100, -65536, -65537, -(1 << 63)]:
        if n < 1 << 64:
            assert _varint(n) == varint(n), n
    for ns in [0, 1, 16383, 16384, 999_999_999, *(rnd.randrange(10**9) for _ in range(2000))]:
        for digits in (1, 3, 6, 9):
            s = f"2024-03-05T06:07:08.{str(ns).rjust(9, '0')[:digits]}Z"
            assert timestamp(s) == _seconds_nanos(*parse_timestamp(s)), s
            assert timestamp(s) == _seconds_nanos(*parse_timestamp(s)), s  # remembered
    enc = EventEncoder()
    for bad in ("", "1970-01-01T00:00:00", "x"):  # the last-value memo never answers these
        enc.encode_event({"time": "1970-01-01T00:00:00Z"}, shared=False)
        with pytest.raises(EncodeError):
            enc.encode_event({"time": bad}, shared=False)
    for odd in ("2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.+12345678Z"):
        ev = {"time": odd}  # whatever is decided, both encoders decide the same
        assert enc.encode_event(ev, shared=False) == enc._message(enc._response, ev)


@pytest.mark.parametrize("streams", [1, 2])
def test_encode_chunk_fast_loop_falls_back_and_counts(streams: int) -> None:
    """A plain stream's chunk: fast events, a slow-path one and an invalid one (counted
    in encode_errors, not sent); same bytes with and without the event cache."""
    from vigil.server.filters import EventFilter, FieldFilters
    from vigil.server.servicer import FineGuidanceSensorsServicer, ServicerDeps
    srv = FineGuidanceSensorsServicer(ServicerDeps(
        events=None, node_name="n", version="v", policies=lambda: None,  # type: ignore[arg-type]
        health=lambda: (True, "")))
    subs = [srv.subscribers.open("p", 16) for _ in range(streams)]
    camel = {"test": {"arg0": "7"}, "nodeName": "n"}
    bad = {"process_exec": {"process": {"pid": "x"}}}
    batch = [S["exec"], camel, bad, S["exit"]]
    data = srv.encode_chunk(subs[0], EventFilter([], []), FieldFilters([]), [batch], 0)
    msgs, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos + 1:pos + 5], "big")
        msgs.append(data[pos + 5:pos + 5 + n])
        pos += 5 + n
    enc = EventEncoder()
    assert msgs == [enc.encode_event(e, shared=False) for e in (S["exec"], camel, S["exit"])]
    assert srv.encode_errors == 1 and subs[0].delivered == 3
    assert srv.encoder.slow_path >= 2  # camel and bad went to the interpreting encoder
