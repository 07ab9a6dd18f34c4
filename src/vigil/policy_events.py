"""Policy-hook records -> process_kprobe / process_tracepoint / process_uprobe events. Pure.

``HookRegistry`` maps the hook id carried in every record to its plan and policy; the
policy manager fills it (under its lock) and the reader thread reads it. A record of a
hook that was just removed is counted (``unknown_hook``) and dropped.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from vigil.abi._generated import GenFlag, MsgOp
from vigil.events import encode
from vigil.events.generic import ACTION_NAMES, GenericRecord, decode_generic, render_arg
from vigil.pipeline import Pipeline
from vigil.policy.plan import HookPlan

Event = dict[str, Any]


@dataclass(frozen=True)
class RegisteredHook:
    plan: HookPlan
    policy: str
    namespace: str


class HookRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[int, RegisteredHook] = {}

    def add(self, hooks: list[RegisteredHook]) -> None:
        with self._lock:
            for h in hooks:
                self._hooks[h.plan.hook_id] = h

    def remove(self, hook_ids: list[int]) -> None:
        with self._lock:
            for i in hook_ids:
                self._hooks.pop(i, None)

    def get(self, hook_id: int) -> RegisteredHook | None:
        return self._hooks.get(hook_id)


class PolicyEvents:
    """Builds policy events with process and parent from the pipeline's cache."""

    def __init__(self, pipeline: Pipeline, registry: HookRegistry) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.unknown_hook = 0
        self.missing_process = 0
        self.events = Counter[tuple[str, str, str]]()  # (policy, hook, action)
        for op in (MsgOp.GENERIC_KPROBE, MsgOp.GENERIC_TRACEPOINT, MsgOp.GENERIC_UPROBE,
                   MsgOp.GENERIC_LSM):
            pipeline.add_handler(op, self.handle)

    def handle(self, rec: bytes) -> Event | None:
        r = decode_generic(rec)
        reg = self.registry.get(r.hook_id)
        if reg is None:
            self.unknown_hook += 1
            return None
        plan = reg.plan
        body = self._body(r, reg)
        action = ACTION_NAMES.get(r.action, "KPROBE_ACTION_UNKNOWN")
        self.events[(reg.policy, plan.hook_label, action)] += 1
        time_ns = self.pipeline._boot_wall_ns() + r.ktime
        return {plan.event: body, "node_name": self.pipeline.opts.node_name,
                "time": encode.rfc3339(time_ns)}

    def _process(self, r: GenericRecord) -> tuple[dict[str, Any], dict[str, Any] | None]:
        cache = self.pipeline.cache
        p = cache.current(r.pid)
        if p is None:
            self.missing_process += 1
            return {"pid": r.pid, "tid": r.tid}, None
        proc = self.pipeline.process_json(p)
        if proc.get("tid") != r.tid:
            proc = {**proc, "tid": r.tid}  # the calling thread, as Tetragon reports it
        parent = cache.get(p.parent_exec_id) if p.parent_exec_id else None
        return proc, self.pipeline.process_json(parent) if parent else None

    def _body(self, r: GenericRecord, reg: RegisteredHook) -> dict[str, Any]:
        plan = reg.plan
        proc, parent = self._process(r)
        args = [render_arg(spec, raw, orig) for spec, raw, orig
                in zip(plan.args, r.args, r.orig_len)]
        action = ACTION_NAMES.get(r.action, "KPROBE_ACTION_UNKNOWN")
        body: dict[str, Any] = {"process": proc}
        if parent is not None:
            body["parent"] = parent
        if plan.event == "process_kprobe":
            body["function_name"] = plan.function_name
            if args:
                body["args"] = args
            if plan.return_arg is not None and r.flags & GenFlag.RETURN:
                body["return"] = render_arg(plan.return_arg, r.ret.to_bytes(8, "little", signed=True))
            body["action"] = action
            body["policy_name"] = reg.policy
        elif plan.event == "process_lsm":  # BPF LSM hooks (ProcessLsm field order)
            body["function_name"] = plan.function_name
            body["policy_name"] = reg.policy
            if plan.message:
                body["message"] = plan.message
            if args:
                body["args"] = args
            body["action"] = action
            if plan.tags:
                body["tags"] = list(plan.tags)
            return body
        elif plan.event == "process_tracepoint":
            body["subsys"] = plan.subsys
            body["event"] = plan.event_name
            if args:
                body["args"] = args
            body["policy_name"] = reg.policy
            body["action"] = action
        else:
            body["path"] = plan.path
            if plan.symbol:
                body["symbol"] = plan.symbol
            body["policy_name"] = reg.policy
        if plan.message:
            body["message"] = plan.message
        if plan.event == "process_uprobe":
            # ProcessUprobe has no `return`: a return probe's returnArg is the last arg
            if plan.return_arg is not None and r.flags & GenFlag.RETURN:
                args = [*args, render_arg(plan.return_arg, r.ret.to_bytes(8, "little", signed=True))]
            if args:
                body["args"] = args
        if plan.tags:
            body["tags"] = list(plan.tags)
        if plan.event == "process_uprobe":
            if plan.attach and plan.attach[-1].offset:  # uprobes by offset (uint64: a string)
                body["offset"] = str(plan.attach[-1].offset)
            body["action"] = action
        return body
