"""Policy-hook records -> events, through the real Pipeline and PolicyEvents (pure).

Records are packed with the generated ABI layout, as the kernel writes them; the
expected events are written out in full, field order included (it is the JSON order).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from vigil.abi import _generated as abi
from vigil.events.generic import ArgSpec, render_arg
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.policy.plan import HookPlan
from vigil.stream.policy_events import HookRegistry, PolicyEvents, RegisteredHook
from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import ExecFlag, ProcessInfo

BOOT_WALL = 1_700_000_000_000_000_000
NODE = "node1"
_MSG = abi.VG_GENERIC_MSG
_IX = abi.VG_GENERIC_MSG_INDEX
_NARGS = int(abi.GenLimits.GEN_ARGS)


def record(hook_id: int, args: list[bytes], *, op: int = abi.MsgOp.GENERIC_KPROBE,
           ktime: int = 5_123_456_789, pid: int = 100, tid: int = 100, action: int = 1,
           flags: int = 0, ret: int = 0, orig: list[int] | None = None,
           ret_action: int = 0) -> bytes:
    vals: list[Any] = list(_MSG.unpack(bytes(_MSG.size)))
    fields = {"hdr.op": op, "hdr.ktime": ktime, "pid": pid, "tid": tid, "hook_id": hook_id,
              "selector": 0, "action": action, "nargs": len(args), "flags": flags,
              "ret": ret % (1 << 64), "ret_action": ret_action}
    for k, v in fields.items():
        vals[_IX[k]] = v
    tail, off = b"", 0
    for i, a in enumerate(args):
        vals[_IX["arg_off"] + i] = off
        vals[_IX["arg_len"] + i] = len(a)
        vals[_IX["orig_len"] + i] = (orig or [0] * len(args))[i]
        tail += a
        off += len(a)
    head = bytearray(_MSG.pack(*vals))
    struct.pack_into("<I", head, 4, len(head) + len(tail))
    return bytes(head) + tail


def plan(hook_id: int, event: str, **kw: Any) -> HookPlan:
    return HookPlan(hook_id=hook_id, section="spec.kprobes[0]", event=event, opcode=0,
                    attach=(), config=b"", **kw)


def _proc(pid: int, tid: int, ktime: int, binary: str, parent: ProcessInfo | None) -> ProcessInfo:
    return ProcessInfo(exec_id=exec_id(NODE, ktime, pid), pid=pid, tid=tid, ktime=ktime,
                       start_time_ns=BOOT_WALL + ktime, binary=binary, args=("-c", "x y"),
                       cwd="/tmp", flags=ExecFlag.EXECVE, uid=1000, auid=1000,
                       parent_exec_id=parent.exec_id if parent else "",
                       ppid=parent.pid if parent else 0)


@pytest.fixture
def env() -> tuple[Pipeline, HookRegistry, PolicyEvents]:
    pipe = Pipeline(ProcessCache(), EventOptions(node_name=NODE), lambda: BOOT_WALL)
    reg = HookRegistry()
    pe = PolicyEvents(pipe, reg)
    parent = _proc(50, 50, 1_000_000_000, "/bin/sh", None)
    pipe.cache.add(parent)
    pipe.cache.add(_proc(100, 100, 2_000_000_000, "/usr/bin/cat", parent))
    return pipe, reg, pe


PARENT = {"exec_id": exec_id(NODE, 1_000_000_000, 50), "pid": 50, "uid": 1000, "cwd": "/tmp",
          "binary": "/bin/sh", "arguments": '-c "x y"', "flags": "execve",
          "start_time": "2023-11-14T22:13:21Z", "auid": 1000, "tid": 50, "in_init_tree": False}
PROCESS = {"exec_id": exec_id(NODE, 2_000_000_000, 100), "pid": 100, "uid": 1000,
           "cwd": "/tmp", "binary": "/usr/bin/cat", "arguments": '-c "x y"', "flags": "execve",
           "start_time": "2023-11-14T22:13:22Z", "auid": 1000,
           "parent_exec_id": exec_id(NODE, 1_000_000_000, 50), "tid": 100,
           "in_init_tree": False}
# The process of a policy event: as PROCESS plus the cache's reference count (1: the
# process itself, no children), as Tetragon's events carry it (in field order, before tid)
EV_PROCESS = {**{k: v for k, v in PROCESS.items() if k not in ("tid", "in_init_tree")},
              "refcnt": 1, "tid": 100, "in_init_tree": False}
TIME = "2023-11-14T22:13:25.123456789Z"


def test_kprobe_event_all_parts(env: Any) -> None:
    pipe, reg, pe = env
    reg.add([RegisteredHook(plan(7, "process_kprobe", function_name="__x64_sys_openat",
                                 args=(ArgSpec("int", "dirfd"), ArgSpec("string"),
                                       ArgSpec("bytes", "buf")),
                                 return_arg=ArgSpec("int"), message="opened",
                                 tags=("fs", "t2")), "pol", "")])
    rec = record(7, [struct.pack("<q", -100), b"/etc/passwd\0pad", b"abc"],
                 flags=abi.GenFlag.RETURN, ret=-2, orig=[0, 0, 10])
    [ev] = pipe.handle([rec])
    assert ev == {"process_kprobe": {
        "process": EV_PROCESS, "parent": PARENT, "function_name": "__x64_sys_openat",
        "args": [{"int_arg": -100, "label": "dirfd"}, {"string_arg": "/etc/passwd"},
                 {"truncated_bytes_arg": {"bytes_arg": base64.b64encode(b"abc").decode(),
                                          "orig_size": "10"}, "label": "buf"}],
        "return": {"int_arg": -2}, "action": "KPROBE_ACTION_POST", "policy_name": "pol",
        "return_action": "KPROBE_ACTION_POST", "message": "opened", "tags": ["fs", "t2"]},
        "node_name": NODE, "time": TIME}
    # field order is the JSON order (Tetragon's field numbers)
    assert list(ev["process_kprobe"]) == ["process", "parent", "function_name", "args",
                                          "return", "action", "policy_name", "return_action",
                                          "message", "tags"]
    assert list(ev["process_kprobe"]["process"]) == list(EV_PROCESS)
    assert orjson.dumps(ev).startswith(b'{"process_kprobe":{"process":{"exec_id":')
    assert pe.events == {("pol", "kprobe:__x64_sys_openat", "KPROBE_ACTION_POST"): 1}


@pytest.mark.parametrize("action,ret_action,expect", [
    (1, 0, "KPROBE_ACTION_POST"),      # no matchReturnActions: the event's action
    (10, 0, "KPROBE_ACTION_SIGNAL"),
    (1, 3, "KPROBE_ACTION_SIGKILL"),   # matchReturnActions decided
    (10, 1, "KPROBE_ACTION_POST"),
])
def test_kprobe_return_action(env: Any, action: int, ret_action: int, expect: str) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(9, "process_kprobe", function_name="f",
                                 return_arg=ArgSpec("int")), "pol", "")])
    [ev] = pipe.handle([record(9, [], flags=abi.GenFlag.RETURN, ret=-2, action=action,
                               ret_action=ret_action)])
    body = ev["process_kprobe"]
    assert body["return"] == {"int_arg": -2}
    assert body["return_action"] == expect
    assert list(body)[-2:] == ["policy_name", "return_action"]


@pytest.mark.parametrize("action,ret_action,made", [
    (7, 1, [("url", "http://h/entry")]),                             # entry GetUrl only
    (1, 7, [("url", "http://h/return")]),                            # return GetUrl only
    (7, 7, [("url", "http://h/entry"), ("url", "http://h/return")]),  # both
    (1, 1, []),
])
def test_entry_and_return_requests(env: Any, action: int, ret_action: int,
                                   made: list[tuple[str, str]]) -> None:
    """A selector's GetUrl in matchActions and in matchReturnActions are two requests:
    the record's action asks for the entry one, its ret_action for the return one."""
    from vigil.policy.compile_actions import Request
    pipe, reg, pe = env
    got: list[tuple[str, str]] = []
    pe.request = lambda kind, target: got.append((kind, target))
    reg.add([RegisteredHook(plan(11, "process_kprobe", function_name="f",
                                 return_arg=ArgSpec("int"),
                                 requests=(Request(0, "url", "http://h/entry"),
                                           Request(0, "url", "http://h/return", True))),
                            "pol", "")])
    [ev] = pipe.handle([record(11, [], flags=abi.GenFlag.RETURN, ret=0, action=action,
                               ret_action=ret_action)])
    assert ev["process_kprobe"]["return_action"] == abi_name(ret_action)
    assert got == made


def abi_name(action: int) -> str:
    from vigil.events.generic import ACTION_NAMES
    return ACTION_NAMES[action]


def test_kprobe_minimal_no_return_flag_and_other_thread(env: Any) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(8, "process_kprobe", function_name="f",
                                 return_arg=ArgSpec("int")), "pol", "")])
    [ev] = pipe.handle([record(8, [], tid=101, action=9, ret=5)])
    assert ev == {"process_kprobe": {
        "process": {**EV_PROCESS, "tid": 101}, "parent": PARENT, "function_name": "f",
        "action": "KPROBE_ACTION_NOPOST", "policy_name": "pol"},
        "node_name": NODE, "time": TIME}
    # the cached process dict itself is never changed by a per-thread event
    [ev2] = pipe.handle([record(8, [])])
    assert ev2["process_kprobe"]["process"] == EV_PROCESS
    assert "refcnt" not in pipe.cache.current(100).encoded


def test_tracepoint_event(env: Any) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(9, "process_tracepoint", subsys="syscalls",
                                 event_name="sys_enter_openat",
                                 args=(ArgSpec("uint"), ArgSpec("long"), ArgSpec("size"))),
                            "tp", "")])
    [ev] = pipe.handle([record(9, [struct.pack("<q", -1), struct.pack("<q", -1),
                                   struct.pack("<q", -1)],
                               op=abi.MsgOp.GENERIC_TRACEPOINT, ktime=5_000_000_000)])
    assert ev == {"process_tracepoint": {
        "process": EV_PROCESS, "parent": PARENT, "subsys": "syscalls", "event": "sys_enter_openat",
        "args": [{"uint_arg": 4294967295}, {"long_arg": "-1"},
                 {"size_arg": "18446744073709551615"}],
        "policy_name": "tp", "action": "KPROBE_ACTION_POST"},
        "node_name": NODE, "time": "2023-11-14T22:13:25Z"}


def test_uprobe_event(env: Any) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(10, "process_uprobe", path="/usr/lib/libc.so.6",
                                 symbol="malloc", args=(ArgSpec("capability"),),
                                 message="m", tags=("a",)), "up", "")])
    [ev] = pipe.handle([record(10, [struct.pack("<q", 21)], op=abi.MsgOp.GENERIC_UPROBE,
                               ktime=5_120_000_000)])
    assert ev == {"process_uprobe": {
        "process": EV_PROCESS, "parent": PARENT, "path": "/usr/lib/libc.so.6", "symbol": "malloc",
        "policy_name": "up", "message": "m",
        "args": [{"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}}],
        "tags": ["a"], "action": "KPROBE_ACTION_POST"},
        "node_name": NODE, "time": "2023-11-14T22:13:25.120Z"}


def test_lsm_event(env: Any) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(11, "process_lsm", function_name="file_open",
                                 args=(ArgSpec("file", "f"),), message="m", tags=("x",)),
                            "lsm", "")])
    [ev] = pipe.handle([record(11, [b"/etc/shadow"], op=abi.MsgOp.GENERIC_LSM, action=3,
                               ktime=5_123_456_000)])
    assert ev == {"process_lsm": {
        "process": EV_PROCESS, "parent": PARENT, "function_name": "file_open",
        "policy_name": "lsm", "message": "m",
        "args": [{"file_arg": {"path": "/etc/shadow"}, "label": "f"}],
        "action": "KPROBE_ACTION_SIGKILL", "tags": ["x"]},
        "node_name": NODE, "time": "2023-11-14T22:13:25.123456Z"}


def test_unknown_process_unknown_hook_and_bad_records_are_counted(env: Any) -> None:
    pipe, reg, pe = env
    reg.add([RegisteredHook(plan(12, "process_kprobe", function_name="f",
                                 args=(ArgSpec("sockaddr"),)), "pol", "")])
    sa = struct.pack("<HH4s12x", 2, 0, bytes([10, 0, 0, 1]))
    evs = pipe.handle([
        record(12, [sa], pid=999, tid=1000),     # process not in the cache
        record(13, []),                          # hook not registered (just removed)
        record(12, [sa])[:40],                   # shorter than the header
        record(12, [sa])[:-4],                   # argument beyond the record
    ])
    assert evs == [{"process_kprobe": {
        "process": {"pid": 999, "tid": 1000}, "function_name": "f",
        "args": [{"sockaddr_arg": {"family": "AF_INET", "addr": "10.0.0.1"}}],
        "action": "KPROBE_ACTION_POST", "policy_name": "pol"},
        "node_name": NODE, "time": TIME}]
    assert pe.missing_process == 1
    assert pe.unknown_hook == 1
    assert pipe.decode_errors[abi.MsgOp.GENERIC_KPROBE] == 2
    reg.remove([12])
    assert pipe.handle([record(12, [sa])]) == []
    assert pe.unknown_hook == 2


_Q = struct.Struct("<q").pack


@pytest.mark.parametrize("spec,raw,orig,expected", [
    (ArgSpec("int"), _Q(-5), 0, {"int_arg": -5}),
    (ArgSpec("int"), b"\xff\xff\xff\xff", 0, {"int_arg": -1}),
    (ArgSpec("int"), _Q(1 << 33), 0, {"int_arg": 0}),
    (ArgSpec("uint", "u"), _Q(-5), 0, {"uint_arg": 4294967291, "label": "u"}),
    (ArgSpec("long"), _Q(-(1 << 40)), 0, {"long_arg": "-1099511627776"}),
    (ArgSpec("size"), _Q(-1), 0, {"size_arg": "18446744073709551615"}),
    (ArgSpec("int"), b"", 0, {"int_arg": 0}),
    (ArgSpec("capability"), _Q(99), 0, {"capability_arg": {"value": 99, "name": "99"}}),
    (ArgSpec("capability"), _Q(-1), 0, {"capability_arg": {"value": -1, "name": "-1"}}),
    (ArgSpec("syscall64"), _Q(257), 0, {"syscall_id": {"id": 257, "abi": "x64"}}),
    (ArgSpec("string"), b"a\xffb\0junk", 0, {"string_arg": "a\ufffdb"}),
    (ArgSpec("string"), b"", 0, {"string_arg": ""}),
    (ArgSpec("file"), b"", 0, {"file_arg": {"path": "/"}}),
    (ArgSpec("file", "l"), b"/x", 0, {"file_arg": {"path": "/x"}, "label": "l"}),
    (ArgSpec("bytes"), b"", 0, {}),
    (ArgSpec("bytes"), b"", 4, {"truncated_bytes_arg": {"bytes_arg": "", "orig_size": "4"}}),
    (ArgSpec("bytes"), b"\x00\x01", 0, {"bytes_arg": "AAE="}),
    (ArgSpec("bytes"), b"\x00\x01", 9, {"truncated_bytes_arg": {"bytes_arg": "AAE=",
                                                                "orig_size": "9"}}),
    (ArgSpec("sockaddr"), struct.pack("<HH16s", 10, 0x5000, bytes(15) + b"\1"), 0,
     {"sockaddr_arg": {"family": "AF_INET6", "addr": "::1", "port": 20480}}),
    (ArgSpec("sockaddr"), b"\1", 0, {"sockaddr_arg": {}}),
    (ArgSpec("kernel_cap_t"), _Q(0x1FF), 0, {"kernel_cap_t_arg": "00000000000001ff"}),
    (ArgSpec("path", "p"), b"/a", 0, {"path_arg": {"path": "/a"}, "label": "p"}),
    (ArgSpec("sock"), b"", 0, {}),
])
def test_render_arg(spec: ArgSpec, raw: bytes, orig: int, expected: dict[str, Any]) -> None:
    assert render_arg(spec, raw, orig) == expected
    # each call gives a new dict: a consumer may not change another event's argument
    assert render_arg(spec, raw, orig) is not render_arg(spec, raw, orig)


def test_record_argument_count_differs_from_the_hook(env: Any) -> None:
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(14, "process_kprobe", function_name="f",
                                 args=(ArgSpec("string"), ArgSpec("int"))), "pol", "")])
    fewer = record(14, [b"/a"])
    more = record(14, [b"/a", _Q(3), b"extra"])
    beyond = bytearray(more)
    arg_off = next(off for name, off, _, _ in abi.LAYOUTS["vg_generic_msg"][1] if name == "arg_off")
    struct.pack_into("<H", beyond, arg_off + 2 * 2, 200)  # the 3rd argument's offset
    [a, b] = pipe.handle([fewer, more])
    assert a["process_kprobe"]["args"] == [{"string_arg": "/a"}]
    assert b["process_kprobe"]["args"] == [{"string_arg": "/a"}, {"int_arg": 3}]
    assert pipe.handle([bytes(beyond)]) == []
    assert pipe.decode_errors[abi.MsgOp.GENERIC_KPROBE] == 1


def test_nop_arguments_are_left_out(env: Any) -> None:
    """A nop argument has its (empty) slot in the record and no place in the event, as
    Tetragon skips it; a record with fewer arguments still renders the ones it has."""
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(15, "process_kprobe", function_name="security_mmap_file",
                                 args=(ArgSpec("file"), ArgSpec("nop"), ArgSpec("uint"))),
                            "pol", "")])
    [ev] = pipe.handle([record(15, [b"/lib/x.so", b"", _Q(4)])])
    assert ev["process_kprobe"]["args"] == [{"file_arg": {"path": "/lib/x.so"}},
                                            {"uint_arg": 4}]
    [ev] = pipe.handle([record(15, [b"/lib/x.so", b""])])
    assert ev["process_kprobe"]["args"] == [{"file_arg": {"path": "/lib/x.so"}}]


def _data(hook_id: int, arg: int, off: int, data: bytes, *, tid: int = 100,
          ktime: int = 5_123_456_789) -> bytes:
    st, ix = abi.VG_DATA_MSG, abi.VG_DATA_MSG_INDEX
    vals: list[Any] = list(st.unpack(bytes(st.size)))
    for k, v in {"hdr.op": abi.MsgOp.DATA, "hdr.size": st.size + len(data), "hdr.ktime": ktime,
                 "tid": tid, "hook_id": hook_id, "off": off, "len": len(data),
                 "arg": arg}.items():
        vals[ix[k]] = v
    return st.pack(*vals) + data


def test_max_data_chunks_are_put_back_in_order(env: Any) -> None:
    """maxData: VG_MSG_DATA records (sent before their record, any order) continue the
    buffer; a missing chunk ends it there (truncated, with the call's size)."""
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(16, "process_kprobe", function_name="__x64_sys_write",
                                 args=(ArgSpec("int"), ArgSpec("bytes"))), "pol", "")])
    first, c1, c2 = b"a" * 4096, b"b" * 4096, b"c" * 10
    recs = [_data(16, 1, 8192, c2), _data(16, 1, 4096, c1),
            record(16, [_Q(1), first], flags=abi.GenFlag.CHUNKS, orig=[0, 8202])]
    [ev] = pipe.handle(recs)
    assert ev["process_kprobe"]["args"][1] == {
        "bytes_arg": base64.b64encode(first + c1 + c2).decode()}
    recs = [_data(16, 1, 8192, c2, ktime=6),
            record(16, [_Q(1), first], flags=abi.GenFlag.CHUNKS, orig=[0, 8202], ktime=6)]
    [ev] = pipe.handle(recs)
    assert ev["process_kprobe"]["args"][1] == {"truncated_bytes_arg": {
        "bytes_arg": base64.b64encode(first).decode(), "orig_size": "8202"}}


def test_data_arguments_go_last_as_data(env: Any) -> None:
    """A hook's ``data`` entries are its last arguments in the record; the event carries
    them as ``data``, after every other field (a record without list or tail flags)."""
    pipe, reg, _ = env
    reg.add([RegisteredHook(plan(9, "process_kprobe", function_name="f",
                                 args=(ArgSpec("int", "fd"), ArgSpec("int", "ppid")),
                                 ndata=1), "pol", "")])
    [ev] = pipe.handle([record(9, [struct.pack("<q", 3), struct.pack("<q", 50)])])
    body = ev["process_kprobe"]
    assert body["args"] == [{"int_arg": 3, "label": "fd"}]
    assert body["data"] == [{"int_arg": 50, "label": "ppid"}]
    assert list(body) == ["process", "parent", "function_name", "args", "action",
                          "policy_name", "data"]


def _outcome(pipe: Pipeline, pe: PolicyEvents, handle: Any, recs: list[bytes]) -> Any:
    out = []
    for rec in recs:
        try:
            ev = handle(rec)
        except ValueError as e:
            out.append(repr(e))
        else:
            out.append(orjson.dumps(ev) if ev is not None else None)
    return out, dict(pe.events), pe.missing_process, pipe.cache.hits, pipe.cache.misses


def test_common_records_path_builds_what_the_general_path_builds() -> None:
    """``PolicyEvents.handle`` takes the common records itself (and reuses the last
    event's process while the cache is unchanged); every record gives the same event
    bytes and the same counts as the path that takes any record (``_handle_any``)."""
    envs = []
    for _ in range(2):
        pipe = Pipeline(ProcessCache(), EventOptions(node_name=NODE), lambda: BOOT_WALL)
        reg = HookRegistry()
        pe = PolicyEvents(pipe, reg)
        parent = _proc(50, 50, 1_000_000_000, "/bin/sh", None)
        pipe.cache.add(parent)
        pipe.cache.add(_proc(100, 100, 2_000_000_000, "/usr/bin/cat", parent))
        reg.add([RegisteredHook(plan(20, "process_kprobe", function_name="f",
                                     args=(ArgSpec("string", "path"), ArgSpec("nop"),
                                           ArgSpec("int"))), "pol", ""),
                 RegisteredHook(plan(21, "process_tracepoint", subsys="syscalls",
                                     event_name="sys_enter_openat",
                                     args=(ArgSpec("string"),), tags=("t",)), "tp", ""),
                 RegisteredHook(plan(22, "process_kprobe", function_name="g",
                                     return_arg=ArgSpec("int")), "ret", "")])
        envs.append((pipe, pe))
    steps: list[list[bytes]] = [
        [record(20, [b"/etc/a\0", b"", _Q(1)]), record(20, [b"/etc/b\0", b"", _Q(2)]),
         record(20, [b"/etc/a\0", b"", _Q(1)], tid=101),
         record(21, [b"/x\0"], op=abi.MsgOp.GENERIC_TRACEPOINT),
         record(20, [b"/etc/a\0", b"", _Q(1)], pid=999),              # not cached
         record(20, [b"/etc/a\0", b""]),                              # fewer arguments
         record(20, [b"/etc/a\0", b"", _Q(1)])[:-3],                  # beyond the record
         record(22, [], flags=abi.GenFlag.RETURN, ret=-1),            # a return value
         record(20, [b"/etc/a\0", b"", _Q(1)], action=9)],
        # a child of pid 100 is cached: its refcnt (in its events' process) changes
        [record(20, [b"/etc/a\0", b"", _Q(1)]), record(20, [b"/etc/c\0", b"", _Q(3)])],
        # pid 100 exits
        [record(21, [b"/y\0"], op=abi.MsgOp.GENERIC_TRACEPOINT)],
    ]
    (fast_pipe, fast), (any_pipe, every) = envs
    for i, recs in enumerate(steps):
        got = _outcome(fast_pipe, fast, fast.handle, recs)
        assert got == _outcome(any_pipe, every, every._handle_any, recs)
        if i == 0:
            for pipe in (fast_pipe, any_pipe):
                pipe.cache.add(_proc(300, 300, 3_000_000_000, "/bin/true",
                                     pipe.cache.current(100)))
        elif i == 1:
            assert orjson.loads(got[0][0])["process_kprobe"]["process"]["refcnt"] == 2
            for pipe in (fast_pipe, any_pipe):
                pipe.cache.mark_exited(100, BOOT_WALL + 4_000_000_000)
