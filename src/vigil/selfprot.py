"""The built-in ``vigil-self-protection`` policy: attempts on the agent itself. No
ctypes, no BPF: it renders YAML and reads ``/proc/PID/fdinfo``.

An attacker on the host may try to silence the agent: signal it, ptrace it, read or
write its memory, detach or rewrite its BPF programs, maps and links, or change its
binaries, configuration and policies. This module renders the part that a tracing
policy expresses (signals, ptrace, process memory, pidfds, bpf()) as an ordinary
TracingPolicy with the agent's pids written in, so it loads, lists, disables and
deletes like any other policy; and refines its bpf() events in user space (which
object an id or fd names: only Vigil's own are reported). File writes are watched by
``vigil.daemon.selfprot`` with fanotify, which a tracing policy cannot express here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

POLICY_NAME = "vigil-self-protection"

# bpf(2) commands (include/uapi/linux/bpf.h enum bpf_cmd)
BPF_CMDS = {
    0: "BPF_MAP_CREATE", 1: "BPF_MAP_LOOKUP_ELEM", 2: "BPF_MAP_UPDATE_ELEM",
    3: "BPF_MAP_DELETE_ELEM", 4: "BPF_MAP_GET_NEXT_KEY", 5: "BPF_PROG_LOAD", 6: "BPF_OBJ_PIN",
    7: "BPF_OBJ_GET", 8: "BPF_PROG_ATTACH", 9: "BPF_PROG_DETACH", 10: "BPF_PROG_TEST_RUN",
    11: "BPF_PROG_GET_NEXT_ID", 12: "BPF_MAP_GET_NEXT_ID", 13: "BPF_PROG_GET_FD_BY_ID",
    14: "BPF_MAP_GET_FD_BY_ID", 15: "BPF_OBJ_GET_INFO_BY_FD", 16: "BPF_PROG_QUERY",
    19: "BPF_BTF_GET_FD_BY_ID", 28: "BPF_LINK_CREATE", 29: "BPF_LINK_UPDATE",
    30: "BPF_LINK_GET_FD_BY_ID", 31: "BPF_LINK_GET_NEXT_ID", 34: "BPF_LINK_DETACH",
}
# commands that name an object by id at offset 0 of bpf_attr -> the kind of object
BY_ID = {13: "prog", 14: "map", 30: "link"}
# commands that name an object by fd -> (offset of the fd in bpf_attr, kind)
BY_FD = {9: (4, "prog"), 29: (0, "link"), 34: (0, "link")}
# Commands the policy watches in the kernel: every way to get hold of an existing
# object by id (the first step of any change to it), and the detach/replace commands
# (which need an fd: inherited, passed over a socket, or got by id first).
WATCHED_BPF_CMDS = (*sorted(BY_ID), *sorted(BY_FD))

# syscall tracepoints whose target pid is a field of the format: (event, message,
# [(format field index, label, type)]); the first argument is the target pid
_PID_HOOKS: tuple[tuple[str, str, list[tuple[int, str, str]]], ...] = (
    ("sys_enter_kill", "signal sent to the Vigil agent",
     [(5, "target_pid", "int"), (6, "signal", "int")]),
    ("sys_enter_tgkill", "signal sent to a thread of the Vigil agent",
     [(5, "target_pid", "int"), (6, "target_tid", "int"), (7, "signal", "int")]),
    ("sys_enter_rt_sigqueueinfo", "queued signal sent to the Vigil agent",
     [(5, "target_pid", "int"), (6, "signal", "int")]),
    ("sys_enter_ptrace", "ptrace aimed at the Vigil agent",
     [(6, "target_pid", "int"), (5, "request", "int64")]),
    ("sys_enter_process_vm_readv", "read of the Vigil agent's memory",
     [(5, "target_pid", "int")]),
    ("sys_enter_process_vm_writev", "write to the Vigil agent's memory",
     [(5, "target_pid", "int")]),
    ("sys_enter_pidfd_open", "pidfd opened on the Vigil agent (for signals, "
     "pidfd_getfd or process_madvise)", [(5, "target_pid", "int")]),
)


def render_policy(protected: Iterable[int]) -> str:
    """The policy's YAML for the agent's processes ``protected`` (the agent, its
    helpers): events for calls aimed at them by any other process."""
    pids = sorted({int(p) for p in protected if p})
    if not pids:
        raise ValueError("self-protection needs the agent's pid")
    pid_values = "[" + ", ".join(f'"{p}"' for p in pids) + "]"
    not_us = ("      matchPIDs:\n      - operator: NotIn\n        followForks: false\n"
              f"        values: [{', '.join(str(p) for p in pids)}]\n")
    out = ["apiVersion: cilium.io/v1alpha1", "kind: TracingPolicy", "metadata:",
           f"  name: {POLICY_NAME}", "spec:", "  tracepoints:"]
    for event, message, args in _PID_HOOKS:
        out += ["  - subsystem: syscalls", f"    event: {event}", f'    message: "{message}"',
                "    args:"]
        for index, label, typ in args:
            out += [f"    - index: {index}", f"      type: {typ}", f"      label: {label}"]
        out += ["    selectors:", "    - matchArgs:", "      - index: 0",
                "        operator: InMap", f"        values: {pid_values}"]
        out.append(not_us.rstrip("\n"))
    # every signal the kernel generates for the agent, whatever the call (kill of a
    # process group or of -1, pidfd_send_signal, a tty): sent by another process, not
    # SIGCHLD (the agent's own children exiting)
    out += ["  - subsystem: signal", "    event: signal_generate",
            '    message: "signal generated for the Vigil agent"', "    args:",
            "    - index: 8", "      type: int", "      label: target_pid",
            "    - index: 4", "      type: int", "      label: signal",
            "    - index: 10", "      type: int", "      label: result",
            "    selectors:", "    - matchArgs:", "      - index: 0",
            "        operator: InMap", f"        values: {pid_values}",
            "      - index: 1", "        operator: NotEqual", '        values: ["17"]',
            not_us.rstrip("\n")]
    cmds = "[" + ", ".join(f'"{c}"' for c in WATCHED_BPF_CMDS) + "]"
    out += ["  - subsystem: syscalls", "    event: sys_enter_bpf",
            '    message: "bpf() on the Vigil agent\'s programs, maps or links"',
            "    args:",
            "    - index: 5", "      type: int", "      label: cmd",
            "    - index: 6", "      type: char_buf", "      sizeArgIndex: 8",
            "      label: attr",
            "    - index: 7", "      type: uint32", "      label: size",
            "    selectors:", "    - matchArgs:", "      - index: 0",
            "        operator: InMap", f"        values: {cmds}", not_us.rstrip("\n")]
    return "\n".join(out) + "\n"


def read_bpf_ids(pid: int, procfs: str = "/proc") -> set[tuple[str, int]]:
    """The BPF objects process ``pid`` holds fds of: {("prog"|"map"|"link", id)}."""
    ids: set[tuple[str, int]] = set()
    d = f"{procfs}/{pid}/fdinfo"
    try:
        names = os.listdir(d)
    except OSError:
        return ids
    for n in names:
        ids |= _fdinfo_ids(f"{d}/{n}")
    return ids


def _fdinfo_ids(path: str) -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode("ascii", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, _sep, value = line.partition(":")
        if key in ("prog_id", "map_id", "link_id"):
            try:
                out.add((key[:-3], int(value.strip())))
            except ValueError:
                pass
    return out


class BpfRefiner:
    """Turns the policy's raw sys_enter_bpf events into ones that name the object, and
    drops those about objects that are not Vigil's. ``owners()`` gives the pids whose
    fds make up Vigil's objects (the agent, its helpers); they are read again when an
    id is not known (objects come and go with policies)."""

    # a listing of every object (bpftool prog list) names each id once: the agent's fds
    # are read again only for ids above those already checked (ids only grow: an object
    # made after a read has a higher id than any that existed then), or when the last
    # read is older than this
    REFRESH = 2.0

    def __init__(self, owners: Callable[[], Iterable[int]], procfs: str = "/proc",
                 clock: Callable[[], float] | None = None) -> None:
        import time
        self._owners = owners
        self._procfs = procfs
        self._clock = clock or time.monotonic
        self._ids: set[tuple[str, int]] = set()
        self._checked: dict[str, int] = {}
        self._read_at = float("-inf")
        self.dropped = 0
        self.reads = 0

    def vigil_object(self, kind: str, obj_id: int) -> bool:
        if (kind, obj_id) in self._ids:
            return True
        now = self._clock()
        stale = now - self._read_at >= self.REFRESH
        if obj_id <= self._checked.get(kind, -1) and not stale:
            return False
        ids: set[tuple[str, int]] = set()
        for pid in self._owners():
            ids |= read_bpf_ids(pid, self._procfs)
        self._ids = ids
        self._read_at = now
        self.reads += 1
        if stale:  # an id named earlier may not have existed: forget how far we checked
            self._checked.clear()
        self._checked[kind] = max(self._checked.get(kind, -1), obj_id)
        return (kind, obj_id) in ids

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        body = event.get("process_tracepoint")
        if body is None or body.get("event") != "sys_enter_bpf":
            return event
        args = body.get("args") or []
        try:
            cmd = int(args[0]["int_arg"])
            raw = _arg_bytes(args[1])
        except (IndexError, KeyError, TypeError, ValueError):
            return event
        new: list[dict[str, Any]] = [{"int_arg": cmd, "label": "cmd"},
                                     {"string_arg": BPF_CMDS.get(cmd, str(cmd)),
                                      "label": "cmd_name"}]
        if cmd in BY_ID:
            kind = BY_ID[cmd]
            if len(raw) < 4:
                return event
            obj_id = struct.unpack_from("<I", raw)[0]
            if not self.vigil_object(kind, obj_id):
                self.dropped += 1
                return None
            new.append({"uint_arg": obj_id, "label": f"{kind}_id"})
        elif cmd in BY_FD:
            off, kind = BY_FD[cmd]
            if len(raw) < off + 4:
                return event
            fd = struct.unpack_from("<I", raw, off)[0]
            pid = int((body.get("process") or {}).get("pid") or 0)
            held = _fdinfo_ids(f"{self._procfs}/{pid}/fdinfo/{fd}")
            objs = [i for k, i in held if k == kind]
            if objs and not self.vigil_object(kind, objs[0]):
                self.dropped += 1
                return None
            new.append({"int_arg": fd, "label": f"{kind}_fd"})
            if objs:
                new.append({"uint_arg": objs[0], "label": f"{kind}_id"})
        body["args"] = new
        return event


def _arg_bytes(arg: dict[str, Any]) -> bytes:
    import base64
    b64 = arg.get("bytes_arg")
    if b64 is None and "truncated_bytes_arg" in arg:
        b64 = arg["truncated_bytes_arg"]["bytes_arg"]
    return base64.b64decode(b64 or "")
