"""fanotify decisions: the LSM hook's selectors, evaluated in user space. Pure.

A ``Subject`` answers questions about the task behind a permission event (its binary,
namespaces, capabilities, cgroup), each lazily and at most once, so a decision costs only
the lookups its selectors need; path filters are checked first (no syscall at all).

Semantics follow Tetragon's: selectors are OR-ed, the first that matches decides;
filters inside a selector are AND-ed; values of one filter are OR-ed, negated operators
AND their negations. A matching selector posts an event unless it says NoPost; Override
refuses the operation with its errno; Sigkill/Signal signal the process. In monitor
mode nothing is refused or signalled, the event still says what would have happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vigil.policy.plan import FanotifyHook, FanSelector, StrMatch


class Subject(Protocol):
    pid: int

    def binary(self) -> str: ...

    def namespace(self, name: str) -> int | None: ...

    def caps(self, field: str) -> int | None: ...

    def cgroup(self) -> str | None: ...

    def listed(self, filter_id: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Workloads:
    """Pod scoping of a policy's fanotify hooks, decided on the task's cgroup as the
    kernel's policy filter does (bpf/include/vigil/policyfilter.bpf.h): ``policy`` and
    each selector's filter id (0: none), the ids in ``host`` also take host processes,
    i.e. tasks whose cgroup is not listed under ``host_id`` (every pod's cgroups)."""

    policy: int = 0
    selectors: dict[int, dict[int, int]] | None = None   # hook id -> selector -> filter id
    host: frozenset[int] = frozenset()
    host_id: int = 0

    def allows(self, filter_id: int, subj: Subject) -> bool:
        """Is the task in the workloads of ``filter_id`` (0: every task)?"""
        if not filter_id or subj.listed(filter_id):
            return True
        return filter_id in self.host and bool(self.host_id) and not subj.listed(self.host_id)

    def selector(self, hook_id: int, si: int) -> int:
        return (self.selectors or {}).get(hook_id, {}).get(si, 0)


@dataclass(frozen=True, slots=True)
class Decision:
    selector: int
    action: int          # vg_action of the event (POST, OVERRIDE, SIGKILL, SIGNAL)
    post: bool
    deny_errno: int      # 0: allow (always 0 in monitor mode)
    signal: int          # 0: none (always 0 in monitor mode)
    monitor: bool = False


def str_match(m: StrMatch, s: str) -> bool:
    op = m.op
    if op in ("Equal", "NotEqual"):
        hit = s in m.values
    elif op in ("Prefix", "NotPrefix"):
        hit = any(s.startswith(v) for v in m.values)
    else:
        hit = any(s.endswith(v) for v in m.values)
    return not hit if op.startswith("Not") else hit


def paths_ok(sel: FanSelector, path: str) -> bool:
    return all(str_match(m, path) for m in sel.paths)


def subject_ok(sel: FanSelector, subj: Subject) -> bool:
    if sel.pids and (subj.pid in sel.pids) == sel.pids_negate:
        return False
    if sel.binary is not None and not str_match(sel.binary, subj.binary()):
        return False
    for ns in sel.namespaces:
        inum = subj.namespace(ns.ns)
        if inum is None or (inum in ns.values) == ns.negate:
            return False
    for cap in sel.caps:
        have = subj.caps(cap.field)
        if have is None or bool(have & cap.mask) == cap.negate:
            return False
    return True


def in_scope(scope: Sequence[str], subj: Subject) -> bool:
    """Is the task in one of the scope's cgroups (or below)? An empty scope is the host."""
    if not scope:
        return True
    cg = subj.cgroup()
    if cg is None:
        return False
    return any(cg == s or cg.startswith(s.rstrip("/") + "/") or s == "/" for s in scope)


def decide(hook: FanotifyHook, path: str, subj: Subject, *, scope: Sequence[str] = (),
           monitor: bool = False, workloads: Workloads | None = None) -> Decision | None:
    """The decision for one event, or None when no selector matches (allow, no event)."""
    wl = workloads or Workloads()
    if not hook.selectors:
        return Decision(0, 1, True, 0, 0, monitor) if (
            in_scope(scope, subj) and wl.allows(wl.policy, subj)) else None
    candidates = [i for i, s in enumerate(hook.selectors) if paths_ok(s, path)]
    if not candidates or not in_scope(scope, subj) or not wl.allows(wl.policy, subj):
        return None
    for i in candidates:
        sel = hook.selectors[i]
        if subject_ok(sel, subj) and wl.allows(wl.selector(hook.hook_id, i), subj):
            if monitor:
                return Decision(i, sel.action, sel.post, 0, 0, True)
            return Decision(i, sel.action, sel.post, sel.deny_errno, sel.signal)
    return None


def path_decides_nothing(hook: FanotifyHook, path: str) -> bool:
    """True when no selector can match ``path`` whoever opens it: the kernel may stop
    asking about this file (an ignore mark) without changing any decision or event."""
    return bool(hook.selectors) and not any(paths_ok(s, path) for s in hook.selectors)


def parse_cgroup(text: str, controller: str = "") -> str | None:
    """The cgroup v2 path ("0::/a/b") from /proc/PID/cgroup, or with ``controller`` the
    path in that v1 controller's hierarchy ("4:memory:/a/b")."""
    for line in text.splitlines():
        if not controller and line.startswith("0::"):
            return line[3:].strip() or "/"
        parts = line.split(":", 2)
        if controller and len(parts) == 3 and controller in parts[1].split(","):
            return parts[2].strip() or "/"
    return None


def workloads_from_wire(d: dict[str, Any] | None) -> Workloads | None:
    """The ``workloads`` of an add request (vigil.enforce.service)."""
    if not d:
        return None
    return Workloads(policy=int(d.get("policy") or 0),
                     selectors={int(h): {int(si): int(sid) for si, sid in ps}
                                for h, ps in (d.get("selectors") or {}).items()},
                     host=frozenset(int(i) for i in d.get("host") or ()),
                     host_id=int(d.get("host_id") or 0))


def parse_caps(status: str) -> dict[str, int]:
    """CapEff/CapInh/CapPrm from /proc/PID/status."""
    out = {}
    for line in status.splitlines():
        key, _, val = line.partition(":")
        if key in ("CapEff", "CapInh", "CapPrm"):
            out[key] = int(val.strip(), 16)
    return out


def parse_fdinfo_mnt_id(fdinfo: str) -> int | None:
    """The ``mnt_id`` of /proc/PID/fdinfo/FD."""
    for line in fdinfo.splitlines():
        key, _, val = line.partition(":")
        if key == "mnt_id":
            try:
                return int(val.strip())
            except ValueError:
                return None
    return None


def mountinfo_ids(mountinfo: str) -> set[int]:
    """The mount IDs (first field) of /proc/PID/mountinfo."""
    out = set()
    for line in mountinfo.splitlines():
        head = line.split(" ", 1)[0]
        if head.isdigit():
            out.add(int(head))
    return out


def mode_string(mode: int) -> str:
    """``ls``-style permission string, as Tetragon's ``permission`` field."""
    kinds = {0o140000: "s", 0o120000: "l", 0o100000: "-", 0o060000: "b", 0o040000: "d",
             0o020000: "c", 0o010000: "p"}
    out = [kinds.get(mode & 0o170000, "?")]
    for shift, special, ch in ((6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")):
        bits = mode >> shift & 7
        out.append("r" if bits & 4 else "-")
        out.append("w" if bits & 2 else "-")
        x = bits & 1
        if mode & special:
            out.append(ch if x else ch.upper())
        else:
            out.append("x" if x else "-")
    return "".join(out)
