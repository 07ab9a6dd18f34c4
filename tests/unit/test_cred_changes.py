"""Credential changes after exec (VG_MSG_CREDS) through the real Pipeline (pure): the cache
follows them, later events report them, each change is one event and a record that
changes nothing is none. Records are packed with the generated ABI layouts."""

from __future__ import annotations

import platform
from typing import Any

import pytest

from tests.unit.test_pipeline_process import BOOT_WALL, NODE, _pack, exec_rec, exit_rec
from vigil.abi import _generated as abi
from vigil.events.decode import DecodeError, decode_creds
from vigil.events.encode import cred_change_summary
from vigil.stream.pipeline import EventOptions, Pipeline
from vigil.process.cache import ProcessCache
from vigil.process.execid import exec_id
from vigil.process.model import Credentials, ExecFlag, ProcessInfo

CAP_NET_RAW = 1 << 13
ROOT_CAPS = (1 << 41) - 1
ROOT = dict(cap_permitted=ROOT_CAPS, cap_effective=ROOT_CAPS)


def creds_rec(pid: int, ktime: int, call: abi.CredCall, tid: int | None = None,
              groups: tuple[int, ...] = (), nr: int = 0xFFFFFFFF, **creds: int) -> bytes:
    fields: dict[str, Any] = {
        "hdr.op": abi.MsgOp.CREDS, "hdr.size": abi.VG_CREDS_MSG.size, "hdr.ktime": ktime,
        "pid": pid, "tid": tid or pid, "call": int(call), "ngroups": len(groups),
        "syscall_nr": nr}
    fields.update({f"creds.{k}": v for k, v in creds.items()})
    head = _pack(abi.VG_CREDS_MSG, abi.VG_CREDS_MSG_INDEX, fields)
    vals = list(abi.VG_CREDS_MSG.unpack(bytes(head)))
    g = abi.VG_CREDS_MSG_INDEX["groups"]
    for i, gid in enumerate(groups):
        vals[g + i] = gid
    return abi.VG_CREDS_MSG.pack(*vals)


def exec_as_root(pid: int, ktime: int) -> bytes:
    """An exec record of a root process with every capability."""
    rec = bytearray(exec_rec(pid, 50, ktime, b"/usr/sbin/daemon", [b"daemon"]))
    ix = abi.VG_EXEC_MSG_INDEX
    vals = list(abi.VG_EXEC_MSG.unpack_from(rec))
    vals[ix["creds.cap_permitted"]] = vals[ix["creds.cap_effective"]] = ROOT_CAPS
    abi.VG_EXEC_MSG.pack_into(rec, 0, *vals)
    return bytes(rec)


def make_pipe(**opts: Any) -> Pipeline:
    p = Pipeline(ProcessCache(), EventOptions(node_name=NODE, **opts), lambda: BOOT_WALL)
    shell = ProcessInfo(exec_id=exec_id(NODE, 10, 50), pid=50, tid=50, ktime=10,
                        start_time_ns=BOOT_WALL + 10, binary="/usr/bin/bash",
                        flags=int(ExecFlag.PROCFS))
    p.bootstrap([shell])
    return p


NOBODY = dict(uid=65534, euid=65534, suid=65534, fsuid=65534)


def test_decode() -> None:
    r = decode_creds(creds_rec(7, 99, abi.CredCall.SETGROUPS, tid=8, groups=(4, 27), uid=3))
    assert (r.pid, r.tid, r.call, r.ktime, r.groups, r.ngroups) == (7, 8, "setgroups", 99,
                                                                    (4, 27), 2)
    assert r.creds == Credentials(uid=3)
    with pytest.raises(DecodeError):
        decode_creds(creds_rec(7, 99, abi.CredCall.SETUID)[:40])
    # commit_creds records name the syscall the task was in (x86_64 numbers)
    commit = abi.CredCall.COMMIT
    if platform.machine() == "x86_64":
        assert decode_creds(creds_rec(7, 99, commit, nr=117)).call == "setresuid"
        assert decode_creds(creds_rec(7, 99, commit, nr=272)).call == "unshare"
    assert decode_creds(creds_rec(7, 99, commit)).call == "commit_creds"  # none
    bad = bytearray(creds_rec(7, 99, abi.CredCall.SETUID))
    bad[24:28] = bytes(4)  # call: the u32 after the header, pid and tid
    with pytest.raises(DecodeError):
        decode_creds(bytes(bad))


def test_drop_is_followed_by_later_events_and_the_exit() -> None:
    pipe = make_pipe(process_cred=True)
    [ex] = pipe.handle([exec_as_root(60, 100)])
    assert ex["process_exec"]["process"]["uid"] == 0
    [ch] = pipe.handle([creds_rec(60, 150, abi.CredCall.SETRESUID, **NOBODY)])
    body = ch["process_kprobe"]
    # as Tetragon's commit_creds event: the process before, the new credentials in args[0]
    assert body["process"]["uid"] == 0
    assert body["process"]["process_credentials"]["euid"] == 0
    assert body["process"]["refcnt"] == 1 and body["process"]["tid"] == 60
    assert body["parent"]["pid"] == 50
    assert body["function_name"] == "commit_creds"
    new = body["args"][0]["process_credentials_arg"]
    assert new["uid"] == new["euid"] == 65534 and new["gid"] == 0 and new["caps"] == {}
    assert body["args"][1:] == [{"string_arg": "setresuid", "label": "syscall"}]
    assert body["policy_name"] == "process-credentials-changed"
    assert body["action"] == "KPROBE_ACTION_POST"
    assert body["message"] == ("setresuid: uid 0->65534 euid 0->65534 suid 0->65534 "
                               "fsuid 0->65534 -permitted:all -effective:all")
    assert body["tags"] == ["credentials"]
    assert ch["time"].endswith(".000000150Z") and ch["node_name"] == NODE
    # the other threads repeat the call (glibc setxid): nothing changes, nothing is sent
    assert pipe.handle([creds_rec(60, 151, abi.CredCall.SETRESUID, tid=61, **NOBODY)]) == []
    assert (pipe.cred_changes, pipe.cred_unchanged) == (1, 1)
    [xt] = pipe.handle([exit_rec(60, 200)])
    proc = xt["process_exit"]["process"]
    assert proc["uid"] == 65534 and proc["process_credentials"]["fsuid"] == 65534
    assert proc["cap"] == {}


def test_fork_after_a_change_inherits_it() -> None:
    from tests.unit.test_pipeline_process import clone_rec
    pipe = make_pipe()
    pipe.handle([exec_as_root(60, 100), creds_rec(60, 150, abi.CredCall.SETUID, **NOBODY),
                 clone_rec(70, 60, 160)])
    [xt] = pipe.handle([exit_rec(70, 170)])
    assert xt["process_exit"]["process"]["uid"] == 65534


def test_capability_raised_is_tagged() -> None:
    pipe = make_pipe(process_cred=True)
    dropped = dict(cap_permitted=ROOT_CAPS, cap_effective=ROOT_CAPS & ~CAP_NET_RAW)
    pipe.handle([exec_as_root(60, 100)])
    [d] = pipe.handle([creds_rec(60, 110, abi.CredCall.CAPSET, **dropped)])
    assert d["process_kprobe"]["message"] == "capset: -effective:CAP_NET_RAW"
    assert d["process_kprobe"]["tags"] == ["credentials"]
    [r] = pipe.handle([creds_rec(60, 120, abi.CredCall.CAPSET, cap_inheritable=CAP_NET_RAW,
                                 **ROOT)])
    body = r["process_kprobe"]
    assert body["message"] == "capset: +effective:CAP_NET_RAW +inheritable:CAP_NET_RAW"
    assert body["tags"] == ["credentials", "privileges_raised"]
    assert "CAP_NET_RAW" not in body["process"]["cap"]["effective"]
    assert body["args"][0]["process_credentials_arg"]["caps"]["inheritable"] == ["CAP_NET_RAW"]


def test_setgroups_is_a_change_until_the_groups_are_known() -> None:
    pipe = make_pipe()
    pipe.handle([exec_as_root(60, 100)])
    [g] = pipe.handle([creds_rec(60, 110, abi.CredCall.SETGROUPS, groups=(4, 27), **ROOT)])
    assert g["process_kprobe"]["args"][2] == {"string_arg": "4,27", "label": "groups"}
    assert g["process_kprobe"]["message"] == "setgroups: groups ?->4,27"
    assert pipe.handle([creds_rec(60, 111, abi.CredCall.SETGROUPS, groups=(4, 27),
                                  **ROOT)]) == []
    [e] = pipe.handle([creds_rec(60, 112, abi.CredCall.SETGROUPS, **ROOT)])
    assert e["process_kprobe"]["message"] == "setgroups: groups 4,27->-"
    # other calls carry the groups too, but only setgroups changes them
    assert pipe.handle([creds_rec(60, 113, abi.CredCall.SETUID, groups=(9,), **ROOT)]) == []


def test_follow_only_updates_the_cache_without_events() -> None:
    pipe = make_pipe(cred_change_events=False)
    pipe.handle([exec_as_root(60, 100)])
    assert pipe.handle([creds_rec(60, 150, abi.CredCall.SETUID, **NOBODY)]) == []
    assert pipe.cred_changes == 1
    [xt] = pipe.handle([exit_rec(60, 200)])
    assert xt["process_exit"]["process"]["uid"] == 65534


def test_unknown_process_still_reports_the_change() -> None:
    pipe = make_pipe()
    [ch] = pipe.handle([creds_rec(99, 150, abi.CredCall.SETUID, tid=100, **NOBODY)])
    body = ch["process_kprobe"]
    assert body["process"] == {"pid": 99, "tid": 100} and "parent" not in body
    assert body["message"].startswith("setuid: uid=65534 euid=65534")


def test_published_process_dicts_are_never_changed() -> None:
    """Events already out keep the credentials they had: a change builds a new dict."""
    pipe = make_pipe()
    [ex] = pipe.handle([exec_as_root(60, 100)])
    before = ex["process_exec"]["process"]
    pipe.handle([creds_rec(60, 150, abi.CredCall.SETUID, **NOBODY)])
    assert before["uid"] == 0
    assert pipe.process_json(pipe.cache.current(60))["uid"] == 65534
    notified: list[int] = []
    pipe.process_changed.append(lambda p: notified.append(p.pid))
    pipe.handle([creds_rec(60, 160, abi.CredCall.SETGID, gid=5, **NOBODY)])
    assert notified == [60]


def test_summary() -> None:
    old = Credentials(uid=1000, euid=1000, cap_effective=0)
    assert cred_change_summary(old, Credentials(uid=1000, euid=0), None, None) == (
        "euid 1000->0", True)
    assert cred_change_summary(old, Credentials(uid=1000, euid=1000, securebits=16),
                               None, None) == ("securebits 0x0->0x10", False)
    assert cred_change_summary(old, old, (1,), (1,)) == ("", False)
    # unshare(CLONE_NEWUSER), seen by the commit_creds hook
    assert cred_change_summary(Credentials(user_ns_inum=5), Credentials(
        user_ns_inum=9, user_ns_level=1), None, None) == ("user_ns 5->9 (level 0->1)", False)


def test_throttled_change_is_followed_not_exported() -> None:
    """``--cgroup-rate``: a change sent while its cgroup is throttled (marked, never
    dropped in the kernel) updates the cache; like a throttled exit, no event."""
    pipe = make_pipe()
    pipe.handle([exec_as_root(60, 100)])
    rec = bytearray(creds_rec(60, 150, abi.CredCall.SETUID, **NOBODY))
    rec[1] |= int(abi.HdrFlag.THROTTLED)
    assert pipe.handle([bytes(rec)]) == []
    [xt] = pipe.handle([exit_rec(60, 200)])
    assert xt["process_exit"]["process"]["uid"] == 65534
