"""Policy-hook records -> process_kprobe / process_tracepoint / process_uprobe events. Pure.

``HookRegistry`` maps the hook id carried in every record to its plan and policy; the
policy manager fills it (under its lock) and the reader thread reads it. A record of a
hook that was just removed is counted (``unknown_hook``) and dropped.

Hot path: a record is unpacked with one ``struct`` call; what every event of a hook
shares (argument renderers, names, the metrics key) is prepared once, when the hook is
registered (``CompiledHook``); process dicts are the cache's shared ones.
"""

from __future__ import annotations

import re
import struct
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigil.abi import _generated as abi
from vigil.abi._generated import GenFlag, MsgOp
from vigil.events import encode
from vigil.events.encode import rfc3339
from vigil.events.decode import DecodeError, partial_layout
from vigil.events.generic import ACTION_NAMES, Renderer, arg_renderer
from vigil.stream.pipeline import Pipeline
from vigil.policy.plan import HookPlan
from vigil.process.model import ProcessInfo

Event = dict[str, Any]

_MSG = abi.VG_GENERIC_MSG
_HEAD = _MSG.size
_IX = abi.VG_GENERIC_MSG_INDEX


def _leading_fields(st: struct.Struct, count: int) -> struct.Struct:
    """The layout of the first ``count`` fields of ``st`` (a packed, "<" layout)."""
    fmt, fields = st.format[0], 0
    for n, code in re.findall(r"(\d*)([a-zA-Z?])", st.format[1:]):
        if fields == count:
            break
        if code != "x":
            fields += 1 if code in "sp" else int(n or 1)
        fmt += n + code
    if fields != count or fmt[0] != "<":
        raise ValueError(f"no layout of the first {count} fields of {st.format}")
    return struct.Struct(fmt)


_KTIME, _PID, _TID, _HOOK = _IX["hdr.ktime"], _IX["pid"], _IX["tid"], _IX["hook_id"]
_ACTION, _NARGS, _FLAGS, _RET = _IX["action"], _IX["nargs"], _IX["flags"], _IX["ret"]
_OFF, _LEN, _ORIG = _IX["arg_off"], _IX["arg_len"], _IX["orig_len"]
_LEN_OF, _ORIG_OF = _LEN - _OFF, _ORIG - _OFF  # from an argument's offset to its length
_MAX_ARGS = int(abi.GenLimits.GEN_ARGS)
# Most records need the fields up to the arguments' original lengths only: unpacking
# just those is cheaper; the fields after them are unpacked when the flags or the hook
# need them (_TAIL_FLAGS, CompiledHook.functions).
_FRONT = _leading_fields(_MSG, _ORIG + _MAX_ARGS)
_RETURN = int(GenFlag.RETURN)
_RET_STR = int(GenFlag.RET_STR)
_RET_OFF, _RET_LEN = _IX["ret_off"], _IX["ret_len"]
_FUNC = _IX["func"]
_SEL = _IX["selector"]
_KSTACK, _USTACK = int(GenFlag.KSTACK), int(GenFlag.USTACK)
_KS_OFF, _KS_LEN = _IX["kstack_off"], _IX["kstack_len"]
_US_OFF, _US_LEN = _IX["ustack_off"], _IX["ustack_len"]
_REQUESTS = {int(abi.Action.GETURL), int(abi.Action.DNSLOOKUP)}
# byte offset of the record's ret_action (past the fields _FRONT unpacks)
_RET_ACTION_AT = next(off for name, off, *_ in abi.LAYOUTS["vg_generic_msg"][1]
                      if name == "ret_action")
_IMA = int(GenFlag.IMA)
_RARE_FLAGS = _KSTACK | _USTACK | _IMA
_TAIL_FLAGS = _RARE_FLAGS | _RET_STR
_IMA_OFF, _IMA_LEN = _IX["ima_off"], _IX["ima_len"]
_CHUNKS = int(GenFlag.CHUNKS)
_DATA = abi.VG_DATA_MSG
_DIX = abi.VG_DATA_MSG_INDEX
_NARGS_AT = next(off for name, off, *_ in abi.LAYOUTS["vg_generic_msg"][1] if name == "nargs")
# flags that take a record off the fast path (PolicyEvents.handle): a return value,
# maxData chunks, stack traces, an IMA hash, a string return value
_SLOW_FLAGS = _TAIL_FLAGS | _RETURN | _CHUNKS


def _fast_layout(nargs: int) -> struct.Struct:
    """The fields the fast path reads of a record with ``nargs`` arguments, in this order:
    ktime, pid, tid, hook_id, action, flags, then the arguments' offsets, lengths and
    original lengths (``nargs`` of each)."""
    return partial_layout("vg_generic_msg", [
        "hdr.ktime", "pid", "tid", "hook_id", "action", "flags",
        *(f"{name}[{i}]" for name in ("arg_off", "arg_len", "orig_len")
          for i in range(nargs))])


# unpack_from of _fast_layout(n), by the record's argument count n
_FAST = tuple(_fast_layout(n).unpack_from for n in range(_MAX_ARGS + 1))
_F_KTIME, _F_PID, _F_TID, _F_HOOK, _F_ACTION, _F_FLAGS = range(6)
_F_ARGS = 6  # where the arguments' offsets start
# maxData chunks waiting for their record: (tid, hook, ktime) entries kept at most
_PENDING_MAX = 64
# copies of process dicts for policy events (the calling thread's "tid", the cache's
# "refcnt"), cleared when full
_VIEW_CACHE_MAX = 4096


@dataclass(frozen=True)
class RegisteredHook:
    plan: HookPlan
    policy: str
    namespace: str


class CompiledHook:
    """What every event of one registered hook shares, prepared when it is registered."""

    __slots__ = ("reg", "event", "slots", "ret", "body", "function_name", "policy",
                 "message", "tags", "metric_keys", "functions", "ndata", "nargs",
                 "requests", "ret_requests", "kprobe", "fast_nargs", "fast_slots")

    def __init__(self, reg: RegisteredHook) -> None:
        plan = reg.plan
        self.reg = reg
        self.event = plan.event
        # (renderer, index of the argument's offset in the unpacked record), per argument
        # (arguments of type nop are in the record, empty, and in no event: as Tetragon)
        self.slots: tuple[tuple[Renderer, int], ...] = tuple(
            (arg_renderer(a), _OFF + i) for i, a in enumerate(plan.args[:_MAX_ARGS])
            if a.out != "nop")
        self.nargs = len(plan.args[:_MAX_ARGS])
        self.ret = arg_renderer(plan.return_arg) if plan.return_arg is not None else None
        self.body: BodyBuilder = _BODIES.get(plan.event, _uprobe_body)
        # PolicyEvents.handle builds the body of a kprobe without `data` arguments itself
        # (as _kprobe_body does): the most common event
        self.kprobe = self.body is _kprobe_body and not plan.ndata
        self.function_name = plan.function_name
        self.policy = reg.policy
        self.message = plan.message
        self.tags = plan.tags
        # vg_action value -> (policy, hook, action name), the key of PolicyEvents.events
        self.metric_keys: dict[int, tuple[str, str, str]] = {}
        # list hooks: the record's func -> function name; hooks with `data`: how many
        # of the rendered arguments go to the event's data
        self.functions = dict(plan.functions)
        self.ndata = plan.ndata
        # selector -> (kind, target) of its GetUrl / DnsLookup: in matchActions (the
        # record's action), in matchReturnActions (its ret_action)
        self.requests = {r.selector: (r.kind, r.target) for r in plan.requests
                         if not r.ret}
        self.ret_requests = {r.selector: (r.kind, r.target) for r in plan.requests
                             if r.ret}
        # the fast path of PolicyEvents.handle takes records of this hook that have this
        # many arguments (-1: none, a list hook or one with `data` arguments); per rendered
        # argument: (renderer, index of its offset, of its length, of its original length
        # in the values _FAST[fast_nargs] unpacks)
        n = self.nargs
        self.fast_nargs = -1 if self.functions or self.ndata else n
        self.fast_slots: tuple[tuple[Renderer, int, int, int], ...] = tuple(
            (render, _F_ARGS + i - _OFF, _F_ARGS + n + i - _OFF, _F_ARGS + 2 * n + i - _OFF)
            for render, i in self.slots)

    def metric_key(self, action: int) -> tuple[str, str, str]:
        key = (self.policy, self.reg.plan.hook_label,
               ACTION_NAMES.get(action, "KPROBE_ACTION_UNKNOWN"))
        self.metric_keys[action] = key
        return key


class HookRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[int, RegisteredHook] = {}
        self._compiled: dict[int, CompiledHook] = {}

    def add(self, hooks: list[RegisteredHook]) -> None:
        compiled = [CompiledHook(h) for h in hooks]
        with self._lock:
            for h, c in zip(hooks, compiled):
                self._hooks[h.plan.hook_id] = h
                self._compiled[h.plan.hook_id] = c

    def remove(self, hook_ids: list[int]) -> None:
        with self._lock:
            for i in hook_ids:
                self._hooks.pop(i, None)
                self._compiled.pop(i, None)

    def get(self, hook_id: int) -> RegisteredHook | None:
        return self._hooks.get(hook_id)

    @property
    def compiled(self) -> Callable[[int], CompiledHook | None]:
        """hook id -> its CompiledHook (a dict lookup, for the reader thread)."""
        return self._compiled.get


class PolicyEvents:
    """Builds policy events with process and parent from the pipeline's cache."""

    def __init__(self, pipeline: Pipeline, registry: HookRegistry) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.unknown_hook = 0
        self.missing_process = 0
        # (policy, hook, action) -> events (a dict: faster than Counter)
        self.events: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        # (exec_id, tid, refcnt) -> the process dict policy events carry
        self._views: dict[tuple[str, int, int], encode.SharedDict] = {}
        self._hook = registry.compiled
        self._cache = pipeline.cache
        self._node_name = pipeline.opts.node_name
        # the last policy event's process resolution: (cache generation, pid, tid, process
        # view, parent, parent's dict); the next event of the same thread reuses it while
        # the cache has not changed (runs of events of one thread are the common case)
        self._last: tuple[int, int, int, encode.SharedDict, ProcessInfo,
                          dict[str, Any]] | None = None
        # a process's credentials changed: its views carry the old ones
        pipeline.process_changed.append(self._forget_views)
        # policy name -> a function that completes or drops that policy's events (the
        # built-in self-protection policy names the BPF object a bpf() call is about)
        self.refine: dict[str, Callable[[Event], Event | None]] = {}
        # GetUrl / DnsLookup: (kind, target) -> None, never blocking (vigil.actions_net)
        self.request: Callable[[str, str], object] | None = None
        self.symbolizer: Any = None  # vigil.events.stacks.Symbolizer, made when first needed
        for op in (MsgOp.GENERIC_KPROBE, MsgOp.GENERIC_TRACEPOINT, MsgOp.GENERIC_UPROBE,
                   MsgOp.GENERIC_LSM, MsgOp.GENERIC_USDT):
            pipeline.add_handler(op, self.handle)
        # maxData: (tid, hook, ktime) -> [(argument, offset, bytes)], sent before the record
        self._pending: OrderedDict[tuple[int, int, int], list[tuple[int, int, bytes]]] = \
            OrderedDict()
        pipeline.add_handler(MsgOp.DATA, self.handle_data)
        from vigil.loader_events import BuildIds
        self.build_ids = BuildIds()
        pipeline.add_handler(MsgOp.LOADER, self.handle_loader)

    def handle_data(self, rec: bytes) -> Event | None:
        """A VG_MSG_DATA record: bytes of a maxData buffer, kept for its record."""
        if len(rec) < _DATA.size:
            raise DecodeError(f"data record of {len(rec)} bytes < {_DATA.size}")
        d = _DATA.unpack_from(rec)
        key = (d[_DIX["tid"]], d[_DIX["hook_id"]], d[_DIX["hdr.ktime"]])
        chunks = self._pending.get(key)
        if chunks is None:
            if len(self._pending) >= _PENDING_MAX:  # records that never came
                self._pending.popitem(last=False)
            chunks = self._pending[key] = []
        n = d[_DIX["len"]]
        chunks.append((d[_DIX["arg"]], d[_DIX["off"]], rec[_DATA.size:_DATA.size + n]))
        return None

    def _forget_views(self, _p: ProcessInfo | None = None) -> None:
        self._views.clear()
        self._last = None

    def handle(self, rec: bytes) -> Event | None:
        """A policy-hook record -> its event (None: dropped). The common record (a hook
        without list functions or `data`, all its arguments in the record, no return
        value, stack or hash) takes a path of its own; every other goes to ``_handle_any``,
        which builds the same event for it."""
        size = len(rec)
        if size < _HEAD or (nargs := rec[_NARGS_AT]) > _MAX_ARGS:
            return self._handle_any(rec)
        v = _FAST[nargs](rec)
        hook = self._hook(v[_F_HOOK])
        action = v[_F_ACTION]
        if (hook is None or hook.fast_nargs != nargs or v[_F_FLAGS] & _SLOW_FLAGS
                or action in _REQUESTS):
            return self._handle_any(rec)
        args = []
        for render, o, ln, orig in hook.fast_slots:
            start = _HEAD + v[o]
            end = start + v[ln]
            if end > size:
                return self._handle_any(rec)  # raises the DecodeError that names it
            args.append(render(rec[start:end], v[orig]))
        key = hook.metric_keys.get(action) or hook.metric_key(action)
        self.events[key] += 1
        cache = self._cache
        pid, tid = v[_F_PID], v[_F_TID]
        last = self._last
        proc: dict[str, Any]
        if (last is not None and last[0] == cache.generation and last[1] == pid
                and last[2] == tid and last[4].encoded is last[5]):
            cache.hits += 2  # as current_and_parent counts a process and its parent
            proc, parent = last[3], last[5]
        else:
            p, pp = cache.current_and_parent(pid)
            parent = None
            if p is None:
                self.missing_process += 1
                proc = {"pid": pid, "tid": tid}
            else:
                proc = self._views.get((p.exec_id, tid, p.refcnt)) or self._view(p, tid)
                if pp is not None:
                    parent = (pp.encoded if pp.encoded is not None
                              else self.pipeline.process_json(pp))
                    self._last = (cache.generation, pid, tid, proc, pp, parent)
        if hook.kprobe:  # _kprobe_body without a return value, written out here
            if parent is None:
                body: dict[str, Any] = {"process": proc, "function_name": hook.function_name}
            else:
                body = {"process": proc, "parent": parent, "function_name": hook.function_name}
            if args:
                body["args"] = args
            body["action"] = key[2]
            body["policy_name"] = hook.policy
            if hook.message:
                body["message"] = hook.message
            if hook.tags:
                body["tags"] = list(hook.tags)
        else:
            body = hook.body(hook, proc, parent, args, None, key[2])
        ev = {hook.event: body,
              "node_name": self._node_name,
              "time": rfc3339(self.pipeline.boot_wall + v[_F_KTIME])}
        if self.refine:
            refine = self.refine.get(hook.policy)
            if refine is not None:
                return refine(ev)
        return ev

    def _handle_any(self, rec: bytes) -> Event | None:
        """Any policy-hook record (``handle`` takes the common ones itself)."""
        if len(rec) < _HEAD:
            raise DecodeError(f"generic record of {len(rec)} bytes < {_HEAD}")
        v = _FRONT.unpack_from(rec)
        hook = self._hook(v[_HOOK])
        if hook is None:
            self.unknown_hook += 1
            return None
        flags = v[_FLAGS]
        if flags & _TAIL_FLAGS or hook.functions:
            v = _MSG.unpack_from(rec)
        slots = hook.slots
        if v[_NARGS] != hook.nargs:  # the record has fewer arguments, or more (checked only)
            slots = _check_extra_args(rec, v, slots, hook.nargs)
        chunks = (self._pending.pop((v[_TID], v[_HOOK], v[_KTIME]), None)
                  if flags & _CHUNKS else None)
        args = []
        size = len(rec)
        for render, i in slots:
            start = _HEAD + v[i]
            end = start + v[i + _LEN_OF]
            if end > size:
                raise DecodeError(f"argument {i - _OFF} beyond the record")
            if chunks:
                raw = _with_chunks(rec[start:end], [c for c in chunks if c[0] == i - _OFF])
                args.append(render(raw, v[i + _ORIG_OF]))
            else:
                args.append(render(rec[start:end], v[i + _ORIG_OF]))
        ret = None
        if flags & _RETURN and hook.ret is not None:
            if flags & _RET_STR:  # a string return value, in the tail
                start = _HEAD + v[_RET_OFF]
                ret = hook.ret(rec[start:start + v[_RET_LEN]], v[_RET_LEN])
            else:
                ret = hook.ret((v[_RET] & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"), 0)
        action = v[_ACTION]
        key = hook.metric_keys.get(action) or hook.metric_key(action)
        self.events[key] += 1
        # the process and its parent, as the cache's shared dicts
        p, parent = self._cache.current_and_parent(v[_PID])
        if p is None:
            self.missing_process += 1
            proc: dict[str, Any] = {"pid": v[_PID], "tid": v[_TID]}
        else:
            # the calling thread and the cache's reference count, as Tetragon reports them
            proc = self._views.get((p.exec_id, v[_TID], p.refcnt)) or self._view(p, v[_TID])
            if parent is not None:
                parent = (parent.encoded if parent.encoded is not None
                          else self.pipeline.process_json(parent))
        # parent: its JSON dict from here on (None with p)
        data = None
        if hook.ndata:
            args, data = args[:len(args) - hook.ndata], args[len(args) - hook.ndata:]
        body = hook.body(hook, proc, parent, args, ret, key[2])  # type: ignore[arg-type]
        if "return_action" in body:
            # the selector's matchReturnActions decided it; without them Tetragon's
            # return probe leaves the entry's action in place
            ra = rec[_RET_ACTION_AT]
            body["return_action"] = (ACTION_NAMES.get(ra, "KPROBE_ACTION_UNKNOWN")
                                     if ra else key[2])
        if hook.functions or data:
            # the function id is in the record's tail, unpacked only for list hooks
            _list_and_data(hook, body, v[_FUNC] if hook.functions else 0, data)
        if flags & _RARE_FLAGS:
            self._stacks_and_ima(body, rec, v)
        if action in _REQUESTS and self.request is not None:
            req = hook.requests.get(v[_SEL])
            if req is not None:
                self.request(*req)
        if hook.ret_requests and rec[_RET_ACTION_AT] in _REQUESTS and \
                self.request is not None:
            req = hook.ret_requests.get(v[_SEL])
            if req is not None:
                self.request(*req)
        ev = {hook.event: body,
              "node_name": self._node_name,
              "time": rfc3339(self.pipeline.boot_wall + v[_KTIME])}
        if self.refine:
            refine = self.refine.get(hook.policy)
            if refine is not None:
                return refine(ev)
        return ev

    def _stacks_and_ima(self, body: dict[str, Any], rec: bytes, v: tuple[Any, ...]) -> None:
        """What few records carry: stack traces, an IMA hash."""
        if v[_FLAGS] & (_KSTACK | _USTACK):
            self._stacks(body, rec, v)
        if v[_FLAGS] & _IMA:
            from vigil.events.stacks import ima_hash
            start = _HEAD + v[_IMA_OFF]
            if start + v[_IMA_LEN] > len(rec):
                raise DecodeError("ima hash beyond the record")
            body["ima_hash"] = ima_hash(rec[start:start + v[_IMA_LEN]])

    def _stacks(self, body: dict[str, Any], rec: bytes, v: tuple[Any, ...]) -> None:
        """kernel_stack_trace / user_stack_trace from the record's return addresses."""
        if self.symbolizer is None:
            from vigil.events.stacks import Symbolizer
            self.symbolizer = Symbolizer()
        for flag, off, ln, key in ((_KSTACK, _KS_OFF, _KS_LEN, "kernel_stack_trace"),
                                   (_USTACK, _US_OFF, _US_LEN, "user_stack_trace")):
            if not v[_FLAGS] & flag:
                continue
            start, end = _HEAD + v[off], _HEAD + v[off] + (v[ln] & ~7)
            if end > len(rec):
                raise DecodeError("stack trace beyond the record")
            raw = rec[start:end]
            addrs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
            if flag == _KSTACK:
                body[key] = self.symbolizer.kernel(addrs)
            else:
                body[key] = self.symbolizer.user(v[_PID], addrs)

    def handle_loader(self, rec: bytes) -> Event | None:
        """A file mapped executable (spec.loader) -> process_loader with its build id."""
        from vigil import loader_events
        r = loader_events.parse(rec)
        hook = self._hook(r["hook_id"])
        if hook is None:
            self.unknown_hook += 1
            return None
        key = hook.metric_keys.get(1) or hook.metric_key(1)
        self.events[key] += 1
        pipe = self.pipeline
        p, pp = self._cache.current_and_parent(r["pid"])
        parent: dict[str, Any] | None = None
        if p is None:
            self.missing_process += 1
            proc: dict[str, Any] = {"pid": r["pid"], "tid": r["tid"]}
        else:
            proc = self._views.get((p.exec_id, r["tid"], p.refcnt)) or self._view(p, r["tid"])
            if pp is not None:
                parent = pp.encoded if pp.encoded is not None else pipe.process_json(pp)
        bid = self.build_ids.get(r["pid"], r["path"], r["dev"], r["ino"], r["size"])
        return {"process_loader": loader_events.body(proc, parent, r["path"], bid),
                "node_name": self._node_name,
                "time": encode.rfc3339(pipe.boot_wall + r["ktime"])}

    def _view(self, p: ProcessInfo, tid: int) -> encode.SharedDict:
        """The process dict with the calling thread's tid and the process's refcnt, shared
        by the events that have both the same."""
        if len(self._views) >= _VIEW_CACHE_MAX:
            self._forget_views()
        proc = p.encoded if p.encoded is not None else self.pipeline.process_json(p)
        view = self._views[(p.exec_id, tid, p.refcnt)] = encode.process_view(proc, tid, p.refcnt)
        return view


def _list_and_data(hook: CompiledHook, body: dict[str, Any], func: int,
                   data: list[dict[str, Any]] | None) -> None:
    """A list hook's event names the function that fired; ``data`` goes last (Tetragon's
    field order)."""
    if hook.functions:
        body["function_name"] = hook.functions.get(func, hook.function_name)
    if data:
        body["data"] = data


def _with_chunks(first: bytes, chunks: list[tuple[int, int, bytes]]) -> bytes:
    """A maxData buffer: its first bytes (in the record) and the chunks that continue it
    without a gap (a chunk lost on the way ends it: it renders truncated)."""
    out = bytearray(first)
    for _arg, off, data in sorted(chunks, key=lambda c: c[1]):
        if off != len(out):
            break
        out += data
    return bytes(out)


def _check_extra_args(rec: bytes, v: tuple[int, ...], slots: tuple[tuple[Renderer, int], ...],
                      nargs: int) -> tuple[tuple[Renderer, int], ...]:
    """The slots to render when the record's argument count is not the hook's (``nargs``):
    those of its first arguments; arguments the hook does not render must still lie in
    the record."""
    n = min(v[_NARGS], _MAX_ARGS)
    for i in range(_OFF + nargs, _OFF + n):
        if _HEAD + v[i] + v[i + _LEN_OF] > len(rec):
            raise DecodeError(f"argument {i - _OFF} beyond the record")
    return tuple(s for s in slots if s[1] < _OFF + n)


# ---- bodies, in each message's field order ------------------------------------------

BodyBuilder = Callable[[CompiledHook, dict[str, Any], "dict[str, Any] | None",
                        list[dict[str, Any]], "dict[str, Any] | None", str], dict[str, Any]]


def _kprobe_body(h: CompiledHook, proc: dict[str, Any], parent: dict[str, Any] | None,
                 args: list[dict[str, Any]], ret: dict[str, Any] | None,
                 action: str) -> dict[str, Any]:
    if parent is None:
        body: dict[str, Any] = {"process": proc, "function_name": h.function_name}
    else:
        body = {"process": proc, "parent": parent, "function_name": h.function_name}
    if args:
        body["args"] = args
    if ret is not None:
        body["return"] = ret
    body["action"] = action
    body["policy_name"] = h.policy
    if ret is not None:
        # Tetragon merges a return probe's event into its entry's and reports the return
        # probe's action as return_action (PolicyEvents.handle sets it from the record)
        body["return_action"] = action
    if h.message:
        body["message"] = h.message
    if h.tags:
        body["tags"] = list(h.tags)
    return body


def _lsm_body(h: CompiledHook, proc: dict[str, Any], parent: dict[str, Any] | None,
              args: list[dict[str, Any]], ret: dict[str, Any] | None,
              action: str) -> dict[str, Any]:
    """BPF LSM hooks (ProcessLsm field order)."""
    body: dict[str, Any] = {"process": proc} if parent is None else {"process": proc,
                                                                      "parent": parent}
    body["function_name"] = h.function_name
    body["policy_name"] = h.policy
    if h.message:
        body["message"] = h.message
    if args:
        body["args"] = args
    body["action"] = action
    if h.tags:
        body["tags"] = list(h.tags)
    return body


def _tracepoint_body(h: CompiledHook, proc: dict[str, Any], parent: dict[str, Any] | None,
                     args: list[dict[str, Any]], ret: dict[str, Any] | None,
                     action: str) -> dict[str, Any]:
    plan = h.reg.plan
    body: dict[str, Any] = {"process": proc} if parent is None else {"process": proc,
                                                                      "parent": parent}
    body["subsys"] = plan.subsys
    body["event"] = plan.event_name
    if args:
        body["args"] = args
    body["policy_name"] = h.policy
    body["action"] = action
    if h.message:
        body["message"] = h.message
    if h.tags:
        body["tags"] = list(h.tags)
    return body


def _uprobe_body(h: CompiledHook, proc: dict[str, Any], parent: dict[str, Any] | None,
                 args: list[dict[str, Any]], ret: dict[str, Any] | None,
                 action: str) -> dict[str, Any]:
    plan = h.reg.plan
    body: dict[str, Any] = {"process": proc} if parent is None else {"process": proc,
                                                                      "parent": parent}
    body["path"] = plan.path
    if plan.symbol:
        body["symbol"] = plan.symbol
    body["policy_name"] = h.policy
    if h.message:
        body["message"] = h.message
    if ret is not None:  # ProcessUprobe has no `return`: a return probe's returnArg is the last arg
        args = [*args, ret]
    if args:
        body["args"] = args
    if h.tags:
        body["tags"] = list(h.tags)
    if plan.attach and plan.attach[-1].offset:  # uprobes by offset (uint64: a string)
        body["offset"] = str(plan.attach[-1].offset)
    if plan.attach and plan.attach[-1].ref_ctr_offset:
        body["ref_ctr_offset"] = str(plan.attach[-1].ref_ctr_offset)
    body["action"] = action
    return body


def _usdt_body(h: CompiledHook, proc: dict[str, Any], parent: dict[str, Any] | None,
               args: list[dict[str, Any]], ret: dict[str, Any] | None,
               action: str) -> dict[str, Any]:
    """USDT probes (ProcessUsdt field order); the plan's symbol is "provider:name"."""
    plan = h.reg.plan
    provider, _, name = plan.symbol.partition(":")
    body: dict[str, Any] = {"process": proc}
    if parent is not None:
        body["parent"] = parent
    body["path"] = plan.path
    body["provider"] = provider
    body["name"] = name
    body["policy_name"] = h.policy
    if h.message:
        body["message"] = h.message
    if args:
        body["args"] = args
    if h.tags:
        body["tags"] = list(h.tags)
    body["action"] = action
    return body


_BODIES: dict[str, BodyBuilder] = {
    "process_kprobe": _kprobe_body,
    "process_lsm": _lsm_body,
    "process_tracepoint": _tracepoint_body,
    "process_uprobe": _uprobe_body,
    "process_usdt": _usdt_body,
}
