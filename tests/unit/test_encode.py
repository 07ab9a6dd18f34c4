"""Unit tests for vigil.events.encode (pure, unprivileged)."""

from __future__ import annotations

import orjson
import pytest

from vigil.events.encode import (
    CAP_NAMES,
    cap_list,
    credentials_dict,
    dumps,
    exec_event,
    exit_event,
    exit_signal_status,
    flags_string,
    join_arguments,
    namespaces_dict,
    process_dict,
    process_view,
    rfc3339,
    securebits_list,
)
from vigil.process.execid import exec_id, parse_exec_id
from vigil.process.model import Credentials, ExecFlag, Namespaces, ProcessInfo

# Verbatim from Tetragon's testdata/events.json line 3.
STARWARS_EXEC = (
    '{"process_exec":{"process":{"exec_id":"Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjY5Nzc0MzQyMzEzOjY4OTIw",'
    '"pid":68920,"uid":0,"cwd":"/","binary":"/starwars-docker","arguments":"--port 80 --host 0.0.0.0",'
    '"flags":"execve rootcwd clone","start_time":"2022-10-18T03:16:22.225265555Z","auid":4294967295,'
    '"pod":{"namespace":"default","name":"deathstar-6f87496b94-gjf74","container":{"id":"containerd://2405407a0f206e11c6d30d0bc48e873a80c461e0c668f71ca0f6b026781e9edc",'
    '"name":"deathstar","image":{"id":"docker.io/cilium/starwars@sha256:f92c8cd25372bac56f55111469fe9862bf682385a4227645f5af155eee7f58d9",'
    '"name":"docker.io/cilium/starwars:latest"},"start_time":"2022-10-18T03:16:22Z","pid":1},'
    '"pod_labels":{"app.kubernetes.io/name":"deathstar","class":"deathstar","org":"empire","pod-template-hash":"6f87496b94"}},'
    '"docker":"2405407a0f206e11c6d30d0bc48e873",'
    '"parent_exec_id":"Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjYwNDYyNTU3ODQyOjY4NTc4","refcnt":1},'
    '"parent":{"exec_id":"Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjYwNDYyNTU3ODQyOjY4NTc4",'
    '"pid":68578,"uid":0,"cwd":"/run/containerd/io.containerd.runtime.v2.task/k8s.io/68325b587fbab5dcfbdaec96741648f39a98dfb1232c79b112fc68570700cbeb",'
    '"binary":"/usr/bin/containerd-shim-runc-v2",'
    '"arguments":"-namespace k8s.io -id 68325b587fbab5dcfbdaec96741648f39a98dfb1232c79b112fc68570700cbeb -address /run/containerd/containerd.sock",'
    '"flags":"execve clone","start_time":"2022-10-18T03:16:12.913480243Z","auid":4294967295,'
    '"parent_exec_id":"Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjYwNDU1ODU2NzY4OjY4NTcx","refcnt":4}},'
    '"node_name":"my-node","time":"2022-10-18T03:16:22.225264791Z"}'
)
GKE_NODE = "gke-michi-22038-default-pool-43730fab-l8zr"


def _starwars_process() -> ProcessInfo:
    return ProcessInfo(
        exec_id=exec_id(GKE_NODE, 13669774342313, 68920),
        pid=68920,
        tid=68920,
        ktime=13669774342313,
        start_time_ns=1666062982225265555,
        binary="/starwars-docker",
        args=("--port", "80", "--host", "0.0.0.0"),
        cwd="/",
        flags=ExecFlag.EXECVE | ExecFlag.ROOTCWD | ExecFlag.CLONE,
        uid=0,
        auid=4294967295,
        parent_exec_id=exec_id(GKE_NODE, 13660462557842, 68578),
        ppid=68578,
        docker="2405407a0f206e11c6d30d0bc48e873",
        refcnt=1,
    )


def _shim_process() -> ProcessInfo:
    shim_id = "68325b587fbab5dcfbdaec96741648f39a98dfb1232c79b112fc68570700cbeb"
    return ProcessInfo(
        exec_id=exec_id(GKE_NODE, 13660462557842, 68578),
        pid=68578,
        tid=68578,
        ktime=13660462557842,
        start_time_ns=1666062972913480243,
        binary="/usr/bin/containerd-shim-runc-v2",
        args=("-namespace", "k8s.io", "-id", shim_id, "-address", "/run/containerd/containerd.sock"),
        cwd="/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + shim_id,
        flags=ExecFlag.EXECVE | ExecFlag.CLONE,
        auid=4294967295,
        parent_exec_id=exec_id(GKE_NODE, 13660455856768, 68571),
        refcnt=4,
    )


def _tetragon_process(d: dict, tid: int) -> dict:
    """Example process minus pod/refcnt, plus the fields newer Tetragon always sets."""
    out = {k: v for k, v in d.items() if k not in ("pod", "refcnt")}
    out["tid"] = tid
    out["in_init_tree"] = False
    return out


# --------------------------------------------------------------------------- rfc3339

@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1666062982225265555, "2022-10-18T03:16:22.225265555Z"),
        (1666062982000000000, "2022-10-18T03:16:22Z"),
        (1666062982120000000, "2022-10-18T03:16:22.120Z"),
        (1666062982273546000, "2022-10-18T03:16:22.273546Z"),
        (1666062982000001000, "2022-10-18T03:16:22.000001Z"),
        (1666062982000000001, "2022-10-18T03:16:22.000000001Z"),
        (1721999263178407128, "2024-07-26T13:07:43.178407128Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_rfc3339(ns: int, text: str) -> None:
    assert rfc3339(ns) == text


# --------------------------------------------------------------------------- exec_id

def test_exec_id_examples_decode() -> None:
    assert parse_exec_id(
        "Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjY1ODIyNjI0ODU2OjY4Nzkw"
    ) == (GKE_NODE, 13665822624856, 68790)
    assert parse_exec_id("OjEzMTg4MTQwNDUwODkwOjgyMDIz") == ("", 13188140450890, 82023)
    assert exec_id("", 13188140450890, 82023) == "OjEzMTg4MTQwNDUwODkwOjgyMDIz"
    starwars = orjson.loads(STARWARS_EXEC)["process_exec"]["process"]["exec_id"]
    assert parse_exec_id(starwars) == (GKE_NODE, 13669774342313, 68920)


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((), ""),
        (("a",), "a"),
        (("--port", "80", "--host", "0.0.0.0"), "--port 80 --host 0.0.0.0"),
        (("-c", "echo hi"), '-c "echo hi"'),
        (("echo hi", "x"), ' "echo hi" x'),          # first arg with a space: leading space
        (("echo hi",), ' "echo hi"'),
        (("a b", "c d"), ' "a b" "c d"'),
        (("a", ""), "a "),                            # later empty arg: trailing space
        (("a", "", "b"), "a  b"),
        (("", "b"), "b"),                             # leading empty args vanish
        (("", "", ""), ""),
        (("say \"hi there\"",), ' "say "hi there""'),  # no escaping of inner quotes
        (('x"y', "back\\slash"), 'x"y back\\slash'),
        (("a\tb",), "a\tb"),                          # only U+0020 triggers quoting
        (("héllo", "wörld 1", "日本"), 'héllo "wörld 1" 日本'),
        (("\ufffd\ufffd",), "\ufffd\ufffd"),          # decoder's replacement chars pass through
    ],
)
def test_join_arguments(args: tuple[str, ...], text: str) -> None:
    assert join_arguments(args) == text


# --------------------------------------------------------------------------- flags

def test_flags_string() -> None:
    assert flags_string(0x1 | 0x1000 | 0x4000) == "execve rootcwd clone"
    assert flags_string(0x4) == "procFS"
    assert flags_string(0x1 | 0x4000) == "execve clone"
    assert flags_string(0) == ""
    assert flags_string(0x2 | 0x20) == ""  # bits without a name are dropped
    # fixed print order, not bit order: errorCgroupID (0x200000) before errorCgroupSubsysCgrp (0x40000)
    assert flags_string(0x200000 | 0x40000 | 0x2000000) == "errorCgroupID errorCgroupSubsysCgrp inInitTree"


# --------------------------------------------------------------------------- process

def test_process_dict_matches_starwars_example() -> None:
    example = orjson.loads(STARWARS_EXEC)["process_exec"]
    got = process_dict(_starwars_process())
    want = _tetragon_process(example["process"], 68920)
    assert got == want
    assert list(got) == list(want)  # field order
    parent = process_dict(_shim_process())
    assert list(parent.items()) == list(_tetragon_process(example["parent"], 68578).items())


def test_exec_event_matches_starwars_example() -> None:
    example = orjson.loads(STARWARS_EXEC)
    event = exec_event(
        process_dict(_starwars_process()), process_dict(_shim_process()), None,
        "my-node", 1666062982225264791,
    )
    want = {
        "process_exec": {
            "process": _tetragon_process(example["process_exec"]["process"], 68920),
            "parent": _tetragon_process(example["process_exec"]["parent"], 68578),
        },
        "node_name": "my-node",
        "time": "2022-10-18T03:16:22.225264791Z",
    }
    assert event == want
    assert orjson.loads(dumps(event)) == want
    assert list(event) == ["process_exec", "node_name", "time"]


def test_process_dict_wrappers_always_present_and_no_refcnt_of_exec() -> None:
    p = ProcessInfo(exec_id="", pid=0, tid=0, ktime=0, start_time_ns=0, binary="", refcnt=7)
    assert list(process_dict(p).items()) == [
        ("pid", 0), ("uid", 0), ("start_time", "1970-01-01T00:00:00Z"),
        ("auid", 4294967295), ("tid", 0), ("in_init_tree", False),
    ]


def test_process_dict_in_init_tree_true() -> None:
    p = ProcessInfo(exec_id="x", pid=1, tid=1, ktime=1, start_time_ns=0, binary="/sbin/init",
                    in_init_tree=True)
    assert process_dict(p)["in_init_tree"] is True


def test_process_dict_cred_and_ns_field_order() -> None:
    creds = Credentials(
        uid=1000, gid=1000, euid=0, egid=0, suid=0, sgid=0, fsuid=0, fsgid=0,
        securebits=0x11 | 0x100,  # NoRoot + KeepCaps + an unknown bit
        cap_permitted=(1 << 0) | (1 << 1) | (1 << 21),
        cap_effective=1 << 21,
        cap_inheritable=0,
    )
    host = Namespaces(uts=1, ipc=2, mnt=3, pid=4, pid_for_children=4, net=6,
                      time=7, time_for_children=7, cgroup=9, user=10)
    own = Namespaces(uts=1, ipc=2, mnt=33, pid=4, pid_for_children=4, net=66,
                     time=7, time_for_children=7, cgroup=9, user=10)
    p = ProcessInfo(exec_id="e", pid=5, tid=5, ktime=1, start_time_ns=0, binary="/bin/su",
                    parent_exec_id="pe", creds=creds, ns=own)
    d = process_dict(p, cred=True, ns=True, host_ns=host)
    assert list(d) == [
        "exec_id", "pid", "uid", "binary", "start_time", "auid", "parent_exec_id",
        "cap", "ns", "tid", "process_credentials", "in_init_tree",
    ]
    assert d["cap"] == {"permitted": ["CAP_CHOWN", "DAC_OVERRIDE", "CAP_SYS_ADMIN"],
                        "effective": ["CAP_SYS_ADMIN"]}
    assert d["process_credentials"] == {
        "uid": 1000, "gid": 1000, "euid": 0, "egid": 0, "suid": 0, "sgid": 0,
        "fsuid": 0, "fsgid": 0, "securebits": ["SecBitNoRoot", "SecBitKeepCaps"],
    }
    assert d["ns"]["mnt"] == {"inum": 33}
    assert d["ns"]["uts"] == {"inum": 1, "is_host": True}
    assert list(d["ns"]) == ["uts", "ipc", "mnt", "pid", "pid_for_children", "net",
                             "time", "time_for_children", "cgroup", "user"]


def test_process_dict_cred_without_any_caps_is_empty_message() -> None:
    p = ProcessInfo(exec_id="e", pid=5, tid=5, ktime=1, start_time_ns=0, binary="/bin/true")
    d = process_dict(p, cred=True)
    assert d["cap"] == {}
    assert d["process_credentials"] == {
        "uid": 0, "gid": 0, "euid": 0, "egid": 0, "suid": 0, "sgid": 0, "fsuid": 0, "fsgid": 0,
    }
    assert "ns" not in d


# --------------------------------------------------------------------------- caps / creds / ns

def test_cap_table() -> None:
    assert len(CAP_NAMES) == 41
    assert CAP_NAMES[1] == "DAC_OVERRIDE"
    assert CAP_NAMES[21] == "CAP_SYS_ADMIN"
    assert CAP_NAMES[38:] == ("CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE")
    full = cap_list((1 << 41) - 1)
    assert full == list(CAP_NAMES)
    assert cap_list(0) == []
    assert cap_list((1 << 40) | (1 << 45) | (1 << 63)) == ["CAP_CHECKPOINT_RESTORE", 45, 63]
    assert cap_list(0b1010) == ["DAC_OVERRIDE", "CAP_FOWNER"]


def test_securebits() -> None:
    assert securebits_list(0) == []
    assert securebits_list(0xFF) == [
        "SecBitNoRoot", "SecBitNoRootLocked", "SecBitNoSetUidFixup", "SecBitNoSetUidFixupLocked",
        "SecBitKeepCaps", "SecBitKeepCapsLocked", "SecBitNoCapAmbientRaise",
        "SecBitNoCapAmbientRaiseLocked",
    ]
    assert securebits_list(0x300) == []


def test_credentials_full_has_caps_and_user_ns() -> None:
    creds = Credentials(uid=1, cap_effective=1 << 7, user_ns_level=0, user_ns_uid=0,
                        user_ns_gid=0, user_ns_inum=4026531837)
    full = credentials_dict(creds, full=True)
    assert list(full) == ["uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid",
                          "caps", "user_ns"]
    assert full["caps"] == {"effective": ["CAP_SETUID"]}
    assert full["user_ns"] == {"level": 0, "uid": 0, "gid": 0,
                               "ns": {"inum": 4026531837, "is_host": True}}
    nested = credentials_dict(Credentials(user_ns_level=2, user_ns_uid=1000, user_ns_gid=1000,
                                          user_ns_inum=4026532555), full=True)
    assert nested["user_ns"] == {"level": 2, "uid": 1000, "gid": 1000, "ns": {"inum": 4026532555}}


def test_namespaces_without_host_and_without_time_ns() -> None:
    ns = Namespaces(uts=1, ipc=2, mnt=3, pid=4, pid_for_children=4, net=6, cgroup=9, user=10)
    d = namespaces_dict(ns)
    assert list(d) == ["uts", "ipc", "mnt", "pid", "pid_for_children", "net", "cgroup", "user"]
    assert all("is_host" not in v for v in d.values())
    # host without time namespaces: time entries never is_host even if both are 0
    with_time = Namespaces(uts=1, time=0)
    assert "time" not in namespaces_dict(with_time, Namespaces(uts=1))
    d2 = namespaces_dict(Namespaces(time=5, time_for_children=5), Namespaces(time=5, time_for_children=0))
    assert d2["time"] == {"inum": 5, "is_host": True}
    assert d2["time_for_children"] == {"inum": 5}
    assert d2["uts"] == {"is_host": True}  # 0 == 0 outside the time namespaces, as Tetragon


# --------------------------------------------------------------------------- exit

@pytest.mark.parametrize(
    ("code", "signal", "status"),
    [
        (0, "", 0),
        (9, "SIGKILL", 0),
        (15, "SIGTERM", 0),
        (0x80 | 11, "SIGSEGV", 0),   # core dumped
        (6 | 0x80, "SIGABRT", 0),
        (1 << 8, "", 1),
        (127 << 8, "", 127),
        (255 << 8, "", 255),
        (34, "", 0),                 # real-time signal: no name
        (29, "SIGIO", 0),
        (31, "SIGSYS", 0),
    ],
)
def test_exit_signal_status(code: int, signal: str, status: int) -> None:
    assert exit_signal_status(code) == (signal, status)


def test_exit_event_signal() -> None:
    proc, parent = {"exec_id": "a", "pid": 2}, {"exec_id": "b", "pid": 1}
    ev = exit_event(proc, parent, None, exit_code=9, exit_time_ns=1666062982120000000,
                    node_name="n1", time_ns=1666062982120000001)
    assert ev == {
        "process_exit": {"process": proc, "parent": parent, "signal": "SIGKILL",
                         "time": "2022-10-18T03:16:22.120Z"},
        "node_name": "n1",
        "time": "2022-10-18T03:16:22.120000001Z",
    }
    assert list(ev["process_exit"]) == ["process", "parent", "signal", "time"]


def test_exit_event_status_and_ancestors_order() -> None:
    proc, anc = {"pid": 3}, [{"pid": 2}, {"pid": 1}]
    ev = exit_event(proc, None, anc, exit_code=3 << 8, exit_time_ns=0, node_name="",
                    time_ns=1_000_000_000)
    assert list(ev.items()) == [
        ("process_exit", {"process": proc, "status": 3, "time": "1970-01-01T00:00:00Z",
                          "ancestors": anc}),
        ("time", "1970-01-01T00:00:01Z"),
    ]
    assert list(ev["process_exit"]) == ["process", "status", "time", "ancestors"]


def test_exit_event_clean_exit_has_neither_signal_nor_status() -> None:
    ev = exit_event({"pid": 3}, {"pid": 1}, [], exit_code=0, exit_time_ns=5,
                    node_name="n", time_ns=5)
    assert list(ev["process_exit"]) == ["process", "parent", "time"]


# --------------------------------------------------------------------------- exec envelope / dumps

def test_exec_event_optional_parts() -> None:
    ev = exec_event({"pid": 1}, None, None, "", 0)
    assert ev == {"process_exec": {"process": {"pid": 1}}, "time": "1970-01-01T00:00:00Z"}
    anc = [{"pid": 1}]
    ev2 = exec_event({"pid": 3}, {"pid": 2}, anc, "node", 0)
    assert list(ev2["process_exec"]) == ["process", "parent", "ancestors"]
    assert ev2["process_exec"]["ancestors"] == anc


def test_dumps_compact_ordered_bytes() -> None:
    ev = exec_event({"exec_id": "x", "pid": 1, "arguments": "é \"q\""}, None, None, "n", 0)
    raw = dumps(ev)
    assert isinstance(raw, bytes)
    assert raw == (
        b'{"process_exec":{"process":{"exec_id":"x","pid":1,"arguments":"\xc3\xa9 \\"q\\""}},'
        b'"node_name":"n","time":"1970-01-01T00:00:00Z"}'
    )
    assert not raw.endswith(b"\n")


def test_shared_process_dict_is_not_mutated() -> None:
    p = process_dict(_starwars_process())
    before = dict(p)
    exec_event(p, None, None, "n", 0)
    exit_event(p, None, None, exit_code=0, exit_time_ns=0, node_name="n", time_ns=0)
    assert p == before


def test_dumps_splices_shared_process_json_byte_for_byte() -> None:
    import enum

    from vigil.events.encode import SharedDict, dumps_all

    class Kind(enum.IntEnum):
        A = 7

    class Label(str):
        def __str__(self) -> str:
            return "not this"

    proc = process_dict(_starwars_process())
    assert isinstance(proc, SharedDict) and isinstance(proc, dict)
    ev = exec_event(proc, proc, [proc], "n", 1666062982225264791)
    ev["extra"] = {"k": Kind.A, "l": Label("this"), "nested": SharedDict(x=[1, Label("y")])}
    plain = orjson.loads(orjson.dumps(ev))  # only builtin types
    assert dumps(ev) == orjson.dumps(plain) == orjson.dumps(ev)
    assert dumps_all([ev, ev]) == [dumps(ev)] * 2
    assert proc.json_fragment() is proc.json_fragment()  # serialized once
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_shared_process_json_is_stored_right_sized() -> None:
    """orjson's output keeps a ~4 KiB buffer; cached per process that was +30 MB RSS at 10k
    processes, so the cache holds a copy of the exact size."""
    import tracemalloc

    from vigil.events.encode import SharedDict

    procs = [SharedDict(process_dict(_starwars_process()), pid=i) for i in range(500)]
    tracemalloc.start()
    try:
        for p in procs:
            p.json_fragment()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(dumps(procs[0]))
    assert used / len(procs) < size + 400, (used / len(procs), size)


def test_process_dict_of_a_fork_child_has_refcnt_1() -> None:
    p = ProcessInfo(exec_id="x", pid=9, tid=9, ktime=1, start_time_ns=0, binary="/bin/sh",
                    flags=1, parent_exec_id="y", forked=True, refcnt=5)
    d = process_dict(p, cred=True)
    assert d["flags"] == "execve" and d["refcnt"] == 1
    assert list(d).index("refcnt") == list(d).index("parent_exec_id") + 1
    assert list(d).index("refcnt") + 1 == list(d).index("cap")


def test_process_view_places_refcnt_and_tid() -> None:
    p = ProcessInfo(exec_id="x", pid=9, tid=9, ktime=1, start_time_ns=0, binary="/bin/sh",
                    flags=1, parent_exec_id="y")
    base = process_dict(p, ns=True)
    v = process_view(base, 10, 3)
    assert v["refcnt"] == 3 and v["tid"] == 10
    keys = list(v)
    assert keys.index("parent_exec_id") + 1 == keys.index("refcnt") == keys.index("ns") - 1
    assert "refcnt" not in base and base["tid"] == 9          # the shared dict is untouched
    assert "refcnt" not in process_view(base, 9, 0)           # 0: omitted, as protojson
    minimal = process_view({"pid": 5, "tid": 5}, 6, 1)
    assert list(minimal.items()) == [("pid", 5), ("refcnt", 1), ("tid", 6)]
