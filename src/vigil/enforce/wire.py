"""What the agent and its decider process say to each other. Pure.

Both sockets are SOCK_SEQPACKET pairs (one message = one JSON document):
- control (both ways): requests ``{"op": "add" | "remove" | "stats" | "ping", ...}``,
  each answered by ``{"ok": bool, ...}``; the decider speaks first: ``{"op": "ready"}``;
- reports (decider -> agent, never waited on: when the agent is slow the decider drops
  and counts): a list of decisions that post an event, and watchdog answers.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vigil.policy.plan import CapMatch, FanotifyHook, FanSelector, NsMatch, StrMatch

MAX_MESSAGE = 1 << 20


def hook_to_wire(h: FanotifyHook) -> dict[str, Any]:
    d = asdict(h)
    d.pop("workloads")  # the decider gets their filter ids (add_request's workloads)
    return d


def hook_from_wire(d: dict[str, Any]) -> FanotifyHook:
    sels = []
    for s in d["selectors"]:
        sels.append(FanSelector(
            paths=tuple(StrMatch(m["op"], tuple(m["values"])) for m in s["paths"]),
            binary=StrMatch(s["binary"]["op"], tuple(s["binary"]["values"])) if s["binary"] else None,
            pids=tuple(s["pids"]), pids_negate=s["pids_negate"],
            namespaces=tuple(NsMatch(n["ns"], n["negate"], tuple(n["values"]))
                             for n in s["namespaces"]),
            caps=tuple(CapMatch(c["field"], c["negate"], c["mask"]) for c in s["caps"]),
            action=s["action"], post=s["post"], deny_errno=s["deny_errno"], signal=s["signal"]))
    return FanotifyHook(hook_id=d["hook_id"], section=d["section"], hook=d["hook"],
                        selectors=tuple(sels), arg=d["arg"], arg_label=d["arg_label"],
                        message=d["message"], tags=tuple(d["tags"]), mechanism=d["mechanism"],
                        enforcement=d["enforcement"])


def add_request(name: str, hooks: tuple[FanotifyHook, ...], scope: tuple[str, ...],
                monitor: bool, workloads: dict[str, Any] | None = None) -> dict[str, Any]:
    """``workloads``: the pod filter ids the decider checks (sent with the map's fd)."""
    return {"op": "add", "name": name, "hooks": [hook_to_wire(h) for h in hooks],
            "scope": list(scope), "monitor": monitor, "workloads": workloads}
