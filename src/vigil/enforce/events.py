"""Decider reports -> Tetragon ``process_lsm`` events. Pure (no ctypes, no kernel).

A report is built into an event after a short settle delay, so that the base sensor's
exec record of the reporting process has been through the pipeline: a program that
opens a protected file right after its exec is reported as itself, not as its parent.
The process instance that made the request is the one that started before the decision
(``ktime`` <= the decision's boot-clock time): for an exec that went through after the
decision, that is the instance seen when the report arrived.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from vigil.events import encode
from vigil.events.generic import ACTION_NAMES
from vigil.policy.plan import FanotifyHook

Event = dict[str, Any]


@dataclass(frozen=True)
class HookRef:
    hook: FanotifyHook
    policy: str
    namespace: str = ""


class LsmEvents:
    """Builds process_lsm events with process and parent from the pipeline's cache."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.hooks: dict[int, HookRef] = {}
        self.events = Counter[tuple[str, str, str]]()   # (policy, hook label, action)
        self.monitor = Counter[tuple[str, str]]()       # (policy, action) only reported
        self.unknown_hook = 0
        self.missing_process = 0
        self.stale_process = 0

    def arrived(self, report: dict[str, Any]) -> Any:
        """The process instance current when the report arrived (kept for ``build``)."""
        cache = getattr(self.pipeline, "cache", None)
        return cache.current(report["pid"]) if cache is not None else None

    def build(self, report: dict[str, Any], seen: Any = None) -> Event | None:
        ref = self.hooks.get(report["h"])
        if ref is None:
            self.unknown_hook += 1
            return None
        h = ref.hook
        action = ACTION_NAMES.get(report["a"], "KPROBE_ACTION_UNKNOWN")
        body: Event = {}
        proc, parent = self._process(report, seen)
        body["process"] = proc
        if parent is not None:
            body["parent"] = parent
        body["function_name"] = h.hook
        body["policy_name"] = ref.policy
        if h.message:
            body["message"] = h.message
        if h.arg:
            key = "linux_binprm_arg" if h.arg == "linux_binprm" else "file_arg"
            arg: dict[str, Any] = {key: {"path": report["path"] or "/"}}
            if report.get("perm"):
                arg[key]["permission"] = report["perm"]
            if h.arg_label:
                arg["label"] = h.arg_label
            body["args"] = [arg]
        body["action"] = action
        if h.tags:
            body["tags"] = list(h.tags)
        self.events[(ref.policy, h.hook_label, action)] += 1
        if report.get("m") and report["a"] != 1:
            self.monitor[(ref.policy, action)] += 1
        opts = getattr(self.pipeline, "opts", None)
        boot_wall = self.pipeline._boot_wall_ns() if hasattr(self.pipeline, "_boot_wall_ns") else 0
        return {"process_lsm": body, "node_name": getattr(opts, "node_name", ""),
                "time": encode.rfc3339(boot_wall + int(report["k"]))}

    def _process(self, report: dict[str, Any], seen: Any) -> tuple[Event, Event | None]:
        pid, k = int(report["pid"]), int(report["k"])
        cache = getattr(self.pipeline, "cache", None)
        p = cache.current(pid) if cache is not None else None
        if p is not None and p.ktime > k:        # exec'd after the decision
            p = seen if seen is not None and seen.ktime <= k else None
            if p is None:
                self.stale_process += 1
        if p is None:
            if cache is not None:
                self.missing_process += 1
            out: Event = {"pid": pid, "tid": pid}
            if report.get("bin"):
                out["binary"] = report["bin"]
            return out, None
        # with the cache's reference count, as in every policy event (Tetragon's copy)
        proc = encode.process_view(self.pipeline.process_json(p), p.tid, p.refcnt)
        parent = cache.get(p.parent_exec_id) if cache is not None and p.parent_exec_id else None
        return proc, self.pipeline.process_json(parent) if parent is not None else None
