"""The built-in self-protection policy (rendered, valid, compiled by the ordinary
compiler's rules) and the refinement of its bpf() events. Pure: no root."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from vigil.policy.loader import load_policy
from vigil.selfprot import BY_FD, BY_ID, POLICY_NAME, BpfRefiner, read_bpf_ids, render_policy


def test_rendered_policy_is_a_valid_tracing_policy() -> None:
    text = render_policy([4242, 77])
    pol = load_policy(text, source="builtin")
    assert pol.metadata.name == POLICY_NAME
    events = [(t.subsystem, t.event) for t in pol.spec.tracepoints]
    assert ("syscalls", "sys_enter_kill") in events
    assert ("syscalls", "sys_enter_ptrace") in events
    assert ("signal", "signal_generate") in events
    assert ("syscalls", "sys_enter_bpf") in events
    for tp in pol.spec.tracepoints:
        (sel,) = tp.selectors
        # the agent's own calls are left out in the kernel
        (mp,) = sel.match_pids
        assert mp.operator.value == "NotIn"
        assert sorted(int(v) for v in mp.values) == [77, 4242]
        if tp.event != "sys_enter_bpf":  # the target pid is one of the agent's
            assert sorted(sel.match_args[0].values) == ["4242", "77"]


def test_render_needs_a_pid() -> None:
    with pytest.raises(ValueError):
        render_policy([])


def _fdinfo(root: Path, pid: int, fds: dict[int, str]) -> None:
    d = root / str(pid) / "fdinfo"
    d.mkdir(parents=True)
    for fd, text in fds.items():
        (d / str(fd)).write_text(text)


def _bpf_event(pid: int, cmd: int, attr: bytes) -> dict[str, Any]:
    return {"process_tracepoint": {
        "process": {"pid": pid}, "subsys": "syscalls", "event": "sys_enter_bpf",
        "args": [{"int_arg": cmd, "label": "cmd"},
                 {"bytes_arg": base64.b64encode(attr).decode(), "label": "attr"},
                 {"uint_arg": len(attr), "label": "size"}],
        "policy_name": POLICY_NAME}}


def test_refiner_keeps_only_vigil_objects(tmp_path: Path) -> None:
    _fdinfo(tmp_path, 10, {3: "pos:\t0\nlink_id:\t55\n", 4: "prog_id:\t9\n", 5: "map_id:\t12\n"})
    _fdinfo(tmp_path, 20, {7: "link_id:\t56\n", 8: "link_id:\t99\n"})  # the caller's
    r = BpfRefiner(lambda: [10], str(tmp_path))
    link_cmd = next(c for c, k in BY_ID.items() if k == "link")
    ev = r(_bpf_event(20, link_cmd, struct.pack("<I", 55) + bytes(12)))
    assert ev is not None
    args = ev["process_tracepoint"]["args"]
    assert {"string_arg": "BPF_LINK_GET_FD_BY_ID", "label": "cmd_name"} in args
    assert {"uint_arg": 55, "label": "link_id"} in args
    assert r(_bpf_event(20, link_cmd, struct.pack("<I", 56) + bytes(12))) is None
    prog_cmd = next(c for c, k in BY_ID.items() if k == "prog")
    assert r(_bpf_event(20, prog_cmd, struct.pack("<I", 9))) is not None
    assert r(_bpf_event(20, prog_cmd, struct.pack("<I", 55))) is None  # a link id, not a prog
    # by fd: LINK_DETACH of the caller's fd 7 (link 56, not Vigil's) is dropped; of an
    # fd that cannot be resolved any more it is kept
    detach = next(c for c, (off, k) in BY_FD.items() if k == "link" and c == 34)
    assert r(_bpf_event(20, detach, struct.pack("<I", 7))) is None
    kept = r(_bpf_event(20, detach, struct.pack("<I", 42)))
    assert kept is not None and {"int_arg": 42, "label": "link_fd"} in \
        kept["process_tracepoint"]["args"]
    assert r.dropped == 3


def test_refiner_reads_the_agent_fds_again_only_for_new_ids(tmp_path: Path) -> None:
    _fdinfo(tmp_path, 10, {3: "link_id:\t55\n"})
    now = [0.0]
    r = BpfRefiner(lambda: [10], str(tmp_path), clock=lambda: now[0])
    for i in range(1, 50):  # a listing of everything: ids below the highest checked
        r.vigil_object("link", 100 - i)
    assert r.reads == 1
    (tmp_path / "10" / "fdinfo" / "4").write_text("link_id:\t120\n")  # a new object
    assert r.vigil_object("link", 120) and r.reads == 2
    now[0] += r.REFRESH
    r.vigil_object("link", 50)
    assert r.reads == 3


def test_read_bpf_ids_of_a_missing_process(tmp_path: Path) -> None:
    assert read_bpf_ids(12345, str(tmp_path)) == set()
