"""``tetragon.FineGuidanceSensors``: the RPCs Vigil serves, on Protocols only.

Served: GetEvents, GetHealth, GetVersion, GetInfo, GetDebug, SetDebug, AddTracingPolicy,
DeleteTracingPolicy, ListTracingPolicies, EnableTracingPolicy, DisableTracingPolicy,
ConfigureTracingPolicy (enable/disable and monitor <-> enforce mode), ListSensors,
ListDomains and RuntimeHook; and ``tetragon.EventLogService`` (Get/SetEventLogParams).
EnableSensor, DisableSensor and RemoveSensor answer UNIMPLEMENTED (gRPC's own answer for
a method without a handler): Vigil's sensors are a policy's hooks, managed through the
policy.

GetEvents: each stream gets a :class:`~vigil.server.subscriber.StreamSubscriber` on the
event hub (bounded queue; drops counted, never blocking the reader). Its
:class:`EventStream` (drained by the transport, ``vigil.server.protocol``) filters, trims
(field filters) and encodes events, one ``GetEventsResponse`` per event, hand-encoded
(see ``vigil.server.convert``), and hands back all that is queued as one run of framed
messages. When the queue overflowed, the stream first gets a ``rate_limit_info`` event
carrying the number of events it lost (if the request's filters let that event type
through), so a client can tell a quiet host from a lossy stream.

Handlers take the request message and a :class:`~vigil.server.protocol.Context`; unary
ones return the response message (serialised by :func:`methods`), errors are
:class:`~vigil.server.protocol.RpcError` (``context.abort``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from google.protobuf import any_pb2, json_format, message_factory, wrappers_pb2

from vigil.api.tetragon import eventlogservice_pb2, events_pb2, sensors_pb2, tetragon_pb2
from vigil.errors import BpfError, FeatureNotSupported, PolicyError, PrivilegeError
from vigil.events.encode import rfc3339
from vigil.policy.signing import METADATA_KEY, PolicySignatureError
from vigil.export.jsonl import RateLimitedLog
from vigil.policy.store_api import (PolicyExistsError, PolicyInfo, PolicyMode,
                                    PolicyModeError, PolicyState, PolicyStore)
from vigil.server import control
from vigil.server.control import AgentControl
from vigil.server.convert import (
    FAST_PATH_MISSES,
    EncodeError,
    EventEncoder,
    policy_status,
    request_specs,
)
from vigil.server.filters import EventFilter, FieldFilters, FilterError
from vigil.server.protocol import _PREFIX, Context, Method
from vigil.server.status import StatusCode
from vigil.server.subscriber import StreamSubscriber

log = logging.getLogger(__name__)

SERVICE = "tetragon.FineGuidanceSensors"
Event = dict[str, Any]
# Events taken from a subscriber's queue per chunk sent (bounds latency and memory).
CHUNK_EVENTS = 4096


class EventSource(Protocol):
    """Where GetEvents subscribes (``vigil.stream.hub.EventHub``)."""

    def subscribe(self, sub: Any) -> None: ...

    def unsubscribe(self, sub: Any) -> None: ...


@dataclass
class ServicerDeps:
    """Everything the servicer needs from the agent, as narrow callables."""

    events: EventSource
    node_name: str
    version: str
    policies: Callable[[], PolicyStore | None]
    health: Callable[[], tuple[bool, str]]
    queue_events: int = 32768
    max_subscribers: int = 64
    control: AgentControl = field(default_factory=AgentControl)


class Subscribers:
    """Live GetEvents streams, a cap on their number, and drop totals."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._live: dict[int, StreamSubscriber] = {}
        self._ids = itertools.count(1)
        self.departed_dropped = 0
        self.departed_delivered = 0
        self.total = 0

    def open(self, peer: str, max_events: int) -> StreamSubscriber | None:
        with self._lock:
            if len(self._live) >= self.limit:
                return None
            n = next(self._ids)
            sub = StreamSubscriber(f"getevents-{n}", max_events, peer)
            self._live[n] = sub
            self.total += 1
            return sub

    def remove(self, sub: StreamSubscriber) -> None:
        with self._lock:
            for k, v in list(self._live.items()):
                if v is sub:
                    del self._live[k]
                    self.departed_dropped += sub.dropped
                    self.departed_delivered += sub.delivered

    def count(self) -> int:
        return len(self._live)

    def live(self) -> list[StreamSubscriber]:
        with self._lock:
            return list(self._live.values())

    def close_all(self) -> None:
        for sub in self.live():
            sub.close()  # the streams drain what is queued, then end

    @property
    def dropped(self) -> int:
        """Events dropped for slow clients since start (live and departed)."""
        return self.departed_dropped + sum(s.dropped for s in self.live())


def _abort(context: Context, code: StatusCode, msg: str) -> NoReturn:
    context.abort(code, msg)
    raise AssertionError("unreachable")  # context.abort raises


def _policy_error(err: Exception, what: str) -> tuple[StatusCode, str]:
    """Map a PolicyStore exception to a gRPC status (see vigil.policy.store_api)."""
    if isinstance(err, PolicySignatureError):
        # the caller is not authorised to load this content: PERMISSION_DENIED (not
        # FAILED_PRECONDITION, which says "this kernel cannot", and not INVALID_ARGUMENT:
        # the policy itself may be perfectly valid)
        return StatusCode.PERMISSION_DENIED, str(err)
    if isinstance(err, PolicyError):
        diag = "\n".join(str(d) for d in err.diagnostics if str(d) not in str(err))
        return StatusCode.INVALID_ARGUMENT, f"{err}\n{diag}".strip()
    if isinstance(err, PolicyExistsError):
        return StatusCode.ALREADY_EXISTS, str(err)
    if isinstance(err, KeyError):
        return StatusCode.NOT_FOUND, f"tracing policy {what} not found"
    if isinstance(err, PolicyModeError):
        return StatusCode.FAILED_PRECONDITION, str(err)
    if isinstance(err, FeatureNotSupported):  # a valid policy this kernel cannot load
        return StatusCode.FAILED_PRECONDITION, str(err)
    if isinstance(err, (BpfError, PrivilegeError)):
        return StatusCode.FAILED_PRECONDITION, f"cannot load {what}: {err}"
    if isinstance(err, ValueError):
        return StatusCode.INVALID_ARGUMENT, str(err)
    return StatusCode.INTERNAL, f"{what}: {type(err).__name__}: {err}"


_POLICY_ERRORS = (PolicySignatureError, PolicyError, PolicyExistsError, PolicyModeError, KeyError, FeatureNotSupported, BpfError,
                  PrivilegeError, ValueError, OSError)


class FineGuidanceSensorsServicer:
    """The served RPCs. Method names are the proto's; see the module docstring."""

    def __init__(self, deps: ServicerDeps, encoder: EventEncoder | None = None) -> None:
        self.deps = deps
        self._encoder: EventEncoder | None = encoder  # made when first needed (``encoder``)
        self._encoder_lock = threading.Lock()
        self.subscribers = Subscribers(deps.max_subscribers)
        self.encode_errors = 0
        self.runtime_hooks = 0
        # who records the containers RuntimeHook announces (vigil.containers)
        self.on_create_container: Callable[[Any], Any] | None = None
        self._droplog = RateLimitedLog(log)

    # -- events ----------------------------------------------------------------------

    @property
    def encoder(self) -> EventEncoder:
        """The event encoder, made when first needed: its tables and generated code
        (~3.5 MB) are only worth holding once somebody streams events."""
        enc = self._encoder
        if enc is None:
            with self._encoder_lock:
                if self._encoder is None:
                    self._encoder = EventEncoder()
                enc = self._encoder
        return enc

    def GetEvents(self, request: events_pb2.GetEventsRequest,
                  context: Context) -> EventStream:
        """Called on the server's event loop: must not block."""
        try:
            allow, deny, fields = request_specs(request)
            flt, trim = EventFilter(allow, deny), FieldFilters(fields)
        except FilterError as err:
            _abort(context, StatusCode.INVALID_ARGUMENT, f"invalid filter: {err}")
        sub = self.subscribers.open(context.peer(), self.deps.queue_events)
        if sub is None:
            _abort(context, StatusCode.RESOURCE_EXHAUSTED,
                   f"too many GetEvents streams (limit {self.deps.max_subscribers})")
        self.deps.events.subscribe(sub)
        log.info("GetEvents %s from %s", sub.name, sub.peer)
        return EventStream(self, sub, flt, trim)

    def _end_stream(self, sub: StreamSubscriber) -> None:
        self.deps.events.unsubscribe(sub)
        sub.close(discard=True)  # undelivered events count as dropped
        self.subscribers.remove(sub)
        log.info("GetEvents %s ended: %d delivered, %d dropped", sub.name, sub.delivered,
                 sub.dropped)

    def encode_chunk(self, sub: StreamSubscriber, flt: EventFilter, trim: FieldFilters,
                     batches: list[list[Event]], lost: int) -> bytes:
        """The framed ``GetEventsResponse`` messages of ``batches`` that pass the filter,
        after a drop notice when ``lost``."""
        encode = self.encoder.encode_event
        prefix = _PREFIX.pack
        parts: list[bytes] = []
        if lost:
            self._droplog(logging.WARNING, "GetEvents %s (%s) too slow: %d events "
                          "dropped (queue of %d full)", sub.name, sub.peer, lost,
                          sub.max_events)
            notice = self._drop_notice(lost)
            if flt.matches(notice):
                data = encode(trim.apply(notice), shared=False)
                parts += (prefix(0, len(data)), data)
        match = None if flt.passthrough else flt.matches
        apply = trim.apply if trim else None
        # the event cache only pays when another stream may encode the same events
        many = self.subscribers.count() > 1
        n = 0
        if match is None and apply is None and not many:  # the plain stream: no detours
            fast, misses = self.encoder.fast, FAST_PATH_MISSES
            append = parts.append
            for batch in batches:
                for ev in batch:
                    try:
                        data = fast(ev)
                    except misses:
                        try:
                            data = encode(ev, shared=False)  # counts slow_path
                        except EncodeError as err:
                            self.encode_errors += 1
                            self._droplog(logging.ERROR, "cannot encode event: %s", err)
                            continue
                    append(prefix(0, len(data)))
                    append(data)
                    n += 1
            sub.delivered += n
            return b"".join(parts)
        for batch in batches:
            for ev in batch:
                if match is not None and not match(ev):
                    continue
                out = ev if apply is None else apply(ev)
                try:
                    data = encode(out, shared=many and out is ev)
                except EncodeError as err:
                    self.encode_errors += 1
                    self._droplog(logging.ERROR, "cannot encode event: %s", err)
                    continue
                parts.append(prefix(0, len(data)))
                parts.append(data)
                n += 1
        sub.delivered += n
        return b"".join(parts)

    def _drop_notice(self, lost: int) -> Event:
        ev: Event = {"rate_limit_info": {"number_of_dropped_process_events": str(lost)}}
        if self.deps.node_name:
            ev["node_name"] = self.deps.node_name
        ev["time"] = rfc3339(time.time_ns())
        return ev

    # -- status ----------------------------------------------------------------------

    def GetHealth(self, request: tetragon_pb2.GetHealthStatusRequest,
                  context: Context) -> tetragon_pb2.GetHealthStatusResponse:
        ok, details = self.deps.health()
        return tetragon_pb2.GetHealthStatusResponse(health_status=[tetragon_pb2.HealthStatus(
            event=tetragon_pb2.HEALTH_STATUS_TYPE_STATUS,
            status=tetragon_pb2.HEALTH_STATUS_RUNNING if ok else tetragon_pb2.HEALTH_STATUS_ERROR,
            details=details)])

    def GetVersion(self, request: sensors_pb2.GetVersionRequest,
                   context: Context) -> sensors_pb2.GetVersionResponse:
        return sensors_pb2.GetVersionResponse(version=self.deps.version)

    def GetInfo(self, request: sensors_pb2.GetInfoRequest,
                context: Context) -> sensors_pb2.GetInfoResponse:
        """Version, name, feature probes (Tetragon's names where they map), the agent's
        settings (StringValue in Any) and the build (the Python version stands in for
        Go's)."""
        ctl = self.deps.control
        resp = sensors_pb2.GetInfoResponse(version=self.deps.version, name=ctl.name)
        try:
            probes = ctl.probes()
        except Exception as err:  # noqa: BLE001 - a probe that cannot run must not fail GetInfo
            log.warning("GetInfo: feature probes failed: %s", err)
            probes = []
        for name, ok in probes:
            resp.probes.add(Name=name, Enabled=wrappers_pb2.BoolValue(value=ok))
        for key, value in sorted(ctl.conf().items()):
            val = any_pb2.Any()
            val.Pack(wrappers_pb2.StringValue(value=str(value)))
            resp.conf.add(key=key, value=val)
        b = ctl.build
        resp.build.go_version = b.get("python_version", "")
        resp.build.commit = b.get("commit", "")
        resp.build.time = b.get("time", "")
        resp.build.modified = b.get("modified", "")
        return resp

    # -- debug -----------------------------------------------------------------------

    def GetDebug(self, request: sensors_pb2.GetDebugRequest,
                 context: Context) -> sensors_pb2.GetDebugResponse:
        if request.flag == sensors_pb2.CONFIG_FLAG_LOG_LEVEL:
            return sensors_pb2.GetDebugResponse(flag=request.flag,
                                                level=control.get_log_level())  # type: ignore[arg-type]  # enum number
        if request.flag == sensors_pb2.CONFIG_FLAG_DUMP_PROCESS_CACHE:
            return self._dump_processes(request, context)
        _abort(context, StatusCode.INVALID_ARGUMENT, f"unknown debug flag {request.flag}")

    def _dump_processes(self, request: sensors_pb2.GetDebugRequest,
                        context: Context) -> sensors_pb2.GetDebugResponse:
        """The process cache, at most PROCESS_DUMP_CAP entries (oldest first); the
        trailer ``vigil-process-cache-total`` gives the count before the cap."""
        snap = self.deps.control.processes
        if snap is None:
            _abort(context, StatusCode.UNAVAILABLE, "this agent has no process cache")
        entries = snap()
        if request.dump.skip_zero_refcnt:
            entries = [e for e in entries if e.refcnt > 0]
        total = len(entries)
        resp = sensors_pb2.GetDebugResponse(flag=request.flag)
        out = resp.processes.processes
        for e in entries[:control.PROCESS_DUMP_CAP]:
            item = out.add()
            json_format.ParseDict(e.process, item.process, ignore_unknown_fields=True)
            item.refcnt.value = max(0, e.refcnt)
        if total > control.PROCESS_DUMP_CAP:
            log.info("GetDebug: process cache dump capped at %d of %d entries",
                     control.PROCESS_DUMP_CAP, total)
        resp.processes.SetInParent()
        context.set_trailing_metadata([("vigil-process-cache-total", str(total)),
                                       ("vigil-process-cache-cap",
                                        str(control.PROCESS_DUMP_CAP))])
        return resp

    def SetDebug(self, request: sensors_pb2.SetDebugRequest,
                 context: Context) -> sensors_pb2.SetDebugResponse:
        if request.flag != sensors_pb2.CONFIG_FLAG_LOG_LEVEL:
            _abort(context, StatusCode.INVALID_ARGUMENT,
                   f"debug flag {sensors_pb2.ConfigFlag.Name(request.flag)} cannot be set"
                   if request.flag in sensors_pb2.ConfigFlag.values()
                   else f"unknown debug flag {request.flag}")
        try:
            level = control.set_log_level(request.level)
        except ValueError as err:
            _abort(context, StatusCode.INVALID_ARGUMENT, str(err))
        log.warning("log level of the vigil loggers set to %s over gRPC (%s)",
                    sensors_pb2.LogLevel.Name(level), context.peer())
        return sensors_pb2.SetDebugResponse(flag=request.flag, level=level)  # type: ignore[arg-type]  # enum number

    # -- sensors, domains, runtime hook ----------------------------------------------

    def ListSensors(self, request: sensors_pb2.ListSensorsRequest,
                    context: Context) -> sensors_pb2.ListSensorsResponse:
        """The base sensor, then each policy's sensors (collection: the policy)."""
        resp = sensors_pb2.ListSensorsResponse()
        resp.sensors.add(name="__base__", enabled=True, collection="base")
        store = self.deps.policies()
        for p in (store.list() if store is not None else []):
            coll = f"{p.namespace}/{p.name}" if p.namespace else p.name
            for sensor in p.sensors:
                resp.sensors.add(name=sensor, enabled=p.state == PolicyState.ENABLED,
                                 collection=coll)
        return resp

    def ListDomains(self, request: sensors_pb2.ListDomainsRequest,
                    context: Context) -> sensors_pb2.ListDomainsResponse:
        """Where policies come from: files at start-up (static), this API (grpc) and,
        with ``--enable-k8s-api``, TracingPolicy resources (k8s)."""
        return sensors_pb2.ListDomainsResponse(domains=self.deps.control.domains())

    def RuntimeHook(self, request: tetragon_pb2.RuntimeHookRequest,
                    context: Context) -> tetragon_pb2.RuntimeHookResponse:
        """A container runtime's CreateContainer notice, sent before the container starts:
        handed to ``on_create_container`` (vigil.containers records the container), and
        answered once recorded, so the container's first exec finds it."""
        if request.WhichOneof("event") != "createContainer":
            _abort(context, StatusCode.INVALID_ARGUMENT,
                   "RuntimeHook needs a createContainer event")
        c = request.createContainer
        self.runtime_hooks += 1
        log.info("RuntimeHook CreateContainer: id=%s name=%s pod=%s/%s cgroups=%s image=%s",
                 c.containerID, c.containerName, c.podNamespace, c.podName, c.cgroupsPath,
                 c.containerImage)
        if self.on_create_container is not None:
            try:
                self.on_create_container(c)
            except ValueError as err:
                _abort(context, StatusCode.INVALID_ARGUMENT, str(err))
        return tetragon_pb2.RuntimeHookResponse()

    # -- policies --------------------------------------------------------------------

    def _store(self, context: Context) -> PolicyStore:
        store = self.deps.policies()
        if store is None:
            _abort(context, StatusCode.UNAVAILABLE,
                   "this agent has no tracing-policy engine")
        return store

    def _call(self, context: Context, what: str,
              fn: Callable[[PolicyStore], Any]) -> Any:
        store = self._store(context)
        try:
            return fn(store)
        except _POLICY_ERRORS as err:
            code, msg = _policy_error(err, what)
        if code == StatusCode.INTERNAL:
            log.error("policy RPC failed: %s", msg)
        elif code == StatusCode.PERMISSION_DENIED:  # worth an operator's attention
            log.warning("%s refused (%s): %s", what, context.peer(), msg)
        _abort(context, code, msg)

    def _find(self, context: Context, name: str, namespace: str,
              domain: str) -> PolicyInfo:
        """The policy the request names, in the request's domain (default "grpc")."""
        what = f"{namespace}/{name}" if namespace else name
        if not name:
            _abort(context, StatusCode.INVALID_ARGUMENT, "a policy name is required")
        domain = domain or "grpc"
        for p in self._call(context, what, lambda s: s.list()):
            if p.name == name and p.namespace == namespace:
                if p.domain != domain:
                    _abort(context, StatusCode.NOT_FOUND,
                           f"tracing policy {what} not found in domain {domain!r} "
                           f"(it is in domain {p.domain!r})")
                return p
        _abort(context, StatusCode.NOT_FOUND, f"tracing policy {what} not found")

    def AddTracingPolicy(self, request: sensors_pb2.AddTracingPolicyRequest,
                         context: Context) -> sensors_pb2.AddTracingPolicyResponse:
        domain = request.domain or "grpc"
        if domain != "grpc":
            _abort(context, StatusCode.INVALID_ARGUMENT,
                   f"policies can only be added to the 'grpc' domain, not {domain!r}")
        # signed-policies mode: the detached signature travels as request metadata, since
        # Tetragon's AddTracingPolicyRequest has only yaml and domain
        sig = dict(context.invocation_metadata()).get(METADATA_KEY)
        kw = {} if sig is None else {"signature": sig}
        info = self._call(context, "policy",
                          lambda s: s.add(request.yaml, source="grpc", **kw))
        log.info("tracing policy %s added over gRPC (%s)", info.name, context.peer())
        return sensors_pb2.AddTracingPolicyResponse()

    def DeleteTracingPolicy(self, request: sensors_pb2.DeleteTracingPolicyRequest,
                            context: Context
                            ) -> sensors_pb2.DeleteTracingPolicyResponse:
        p = self._find(context, request.name, request.namespace, request.domain)
        self._call(context, p.name, lambda s: s.delete(p.name, p.namespace))
        log.info("tracing policy %s deleted over gRPC (%s)", p.name, context.peer())
        return sensors_pb2.DeleteTracingPolicyResponse()

    def ListTracingPolicies(self, request: sensors_pb2.ListTracingPoliciesRequest,
                            context: Context
                            ) -> sensors_pb2.ListTracingPoliciesResponse:
        policies = self._call(context, "policies", lambda s: s.list())
        return sensors_pb2.ListTracingPoliciesResponse(policies=[
            policy_status(p) for p in policies
            if not request.domain or p.domain == request.domain])

    def _set_enabled(self, context: Context, name: str, namespace: str,
                     domain: str, enable: bool) -> None:
        p = self._find(context, name, namespace, domain)
        if enable:
            self._call(context, p.name, lambda s: s.enable(p.name, p.namespace))
        else:
            self._call(context, p.name, lambda s: s.disable(p.name, p.namespace))
        log.info("tracing policy %s %s over gRPC", p.name, "enabled" if enable else "disabled")

    def EnableTracingPolicy(self, request: sensors_pb2.EnableTracingPolicyRequest,
                            context: Context
                            ) -> sensors_pb2.EnableTracingPolicyResponse:
        self._set_enabled(context, request.name, request.namespace, request.domain, True)
        return sensors_pb2.EnableTracingPolicyResponse()

    def DisableTracingPolicy(self, request: sensors_pb2.DisableTracingPolicyRequest,
                             context: Context
                             ) -> sensors_pb2.DisableTracingPolicyResponse:
        self._set_enabled(context, request.name, request.namespace, request.domain, False)
        return sensors_pb2.DisableTracingPolicyResponse()

    def ConfigureTracingPolicy(self, request: sensors_pb2.ConfigureTracingPolicyRequest,
                               context: Context
                               ) -> sensors_pb2.ConfigureTracingPolicyResponse:
        """Enable/disable first, then the mode (not atomic, as in Tetragon)."""
        if request.HasField("enable"):
            self._set_enabled(context, request.name, request.namespace, request.domain,
                              request.enable)
        if request.HasField("mode"):
            p = self._find(context, request.name, request.namespace, request.domain)
            try:
                mode = PolicyMode(request.mode)
            except ValueError:
                _abort(context, StatusCode.INVALID_ARGUMENT,
                       f"unknown policy mode {request.mode}")
            self._call(context, p.name, lambda s: s.set_mode(p.name, p.namespace, mode))
            log.info("tracing policy %s mode set to %s over gRPC (%s)", p.name,
                     mode.name.lower(), context.peer())
        return sensors_pb2.ConfigureTracingPolicyResponse()

    # -- stats -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        live = self.subscribers.live()
        return {
            "subscribers": [s.stats() for s in live],
            "streams_total": self.subscribers.total,
            "dropped": self.subscribers.dropped,
            "delivered": self.subscribers.departed_delivered + sum(s.delivered for s in live),
            "encode_errors": self.encode_errors,
            "runtime_hooks": self.runtime_hooks,
            "encoder": self._encoder.stats() if self._encoder is not None else {},
        }


class EventStream:
    """One GetEvents stream as the transport drains it (``MessageSource``)."""

    def __init__(self, servicer: FineGuidanceSensorsServicer, sub: StreamSubscriber,
                 flt: EventFilter, trim: FieldFilters) -> None:
        self.servicer = servicer
        self.sub = sub
        self.flt = flt
        self.trim = trim
        self._closed = False

    async def next(self) -> bytes | None:
        loop = asyncio.get_running_loop()
        while True:
            got = self.sub.take_nowait(CHUNK_EVENTS)
            if got is None:
                return None
            batches, lost = got
            if batches or lost:
                data = self.servicer.encode_chunk(self.sub, self.flt, self.trim, batches, lost)
                if data:
                    return data
                continue
            ready = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                loop.call_soon_threadsafe(_resolve, fut)
            if self.sub.on_ready(wake):
                await ready

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.servicer._end_stream(self.sub)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class EventLogServicer:
    """``tetragon.EventLogService``: the export file's rotation parameters at run time.
    ``max_size`` is in MiB (the ``--export-file-max-size-mb`` unit), ``rotation_interval``
    a Go duration ("0s": by size only), ``max_backups`` the rotated files kept."""

    def __init__(self, deps: ServicerDeps) -> None:
        self.deps = deps

    def _log(self, context: Context) -> control.EventLog:
        writer = self.deps.control.event_log()
        if writer is None:
            _abort(context, StatusCode.FAILED_PRECONDITION,
                   "this agent writes no export file (--export-filename is not set)")
        return writer

    def GetEventLogParams(self, request: eventlogservice_pb2.GetEventLogParamsRequest,
                          context: Context) -> eventlogservice_pb2.GetEventLogParamsResponse:
        w = self._log(context)
        return eventlogservice_pb2.GetEventLogParamsResponse(
            max_size=max(1, w.max_bytes // (1 << 20)), max_backups=w.max_backups,
            rotation_interval=control.format_go_duration(w.rotation_interval))

    def SetEventLogParams(self, request: eventlogservice_pb2.SetEventLogParamsRequest,
                          context: Context) -> eventlogservice_pb2.SetEventLogParamsResponse:
        w = self._log(context)
        try:
            interval = (control.parse_go_duration(request.rotation_interval)
                        if request.HasField("rotation_interval") else None)
            w.set_params(
                max_size_mb=request.max_size if request.HasField("max_size") else None,
                rotation_interval=interval,
                max_backups=request.max_backups if request.HasField("max_backups") else None)
        except ValueError as err:
            _abort(context, StatusCode.INVALID_ARGUMENT, str(err))
        log.info("export file rotation set over gRPC (%s): max_size=%d MiB, "
                 "rotation_interval=%s, max_backups=%d", context.peer(),
                 w.max_bytes >> 20, control.format_go_duration(w.rotation_interval),
                 w.max_backups)
        return eventlogservice_pb2.SetEventLogParamsResponse()


def methods(servicer: FineGuidanceSensorsServicer) -> dict[str, Method]:
    """``/tetragon.FineGuidanceSensors/<name>`` and ``/tetragon.EventLogService/<name>``
    -> Method for every served RPC (others are absent: the transport answers
    UNIMPLEMENTED)."""
    out = _service_methods(sensors_pb2.DESCRIPTOR.services_by_name["FineGuidanceSensors"],
                           servicer)
    out.update(_service_methods(
        eventlogservice_pb2.DESCRIPTOR.services_by_name["EventLogService"],
        EventLogServicer(servicer.deps)))
    return out


def _service_methods(svc: Any, servicer: Any) -> dict[str, Method]:
    out = {}
    for m in svc.methods:
        impl = getattr(servicer, m.name, None)
        if impl is None:
            continue
        req = message_factory.GetMessageClass(m.input_type)
        if m.server_streaming:
            out[f"/{svc.full_name}/{m.name}"] = Method(req.FromString, impl, streaming=True)
        else:
            out[f"/{svc.full_name}/{m.name}"] = Method(req.FromString, _serialized(impl))
    return out


def _serialized(impl: Callable[[Any, Context], Any]) -> Callable[[Any, Context], bytes]:
    def call(request: Any, context: Context) -> bytes:
        return impl(request, context).SerializeToString()
    return call
