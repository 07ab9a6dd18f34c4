"""What the metrics and the health check read of a running agent, as Protocols: the
``vigil.daemon.agent.Agent`` satisfies them, and so does a test's small stand-in. Every
read happens at scrape or check time, from another thread than the reader's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vigil.process.cache import ProcessCache
    from vigil.stream.hub import EventHub
    from vigil.stream.pipeline import Pipeline


class RingView(Protocol):
    discarded: int

    def pending_bytes(self) -> int: ...


class KernelCountersView(Protocol):
    sent: Mapping[Any, int]
    drops: Mapping[Any, int]


class SensorView(Protocol):
    """The base sensor: every BPF object shares its ``vg_stats`` by fd, so its counters
    include the policy hooks' records."""

    @property
    def ring(self) -> RingView | None: ...
    @property
    def ring_bytes(self) -> int: ...
    @property
    def sweep_errors(self) -> int: ...
    def counters(self) -> KernelCountersView: ...
    def map_usage(self) -> dict[str, Any]: ...


class QueueView(Protocol):
    """An exporter's bounded queue (``vigil.export.sink.QueueSink``)."""

    @property
    def name(self) -> str: ...
    @property
    def delivered(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def max_events(self) -> int: ...
    def pending(self) -> int: ...


class ProbedAgent(Protocol):
    """What the health check reads: the reader thread's liveness and progress, the
    ring's backlog, the exporters' queues."""

    @property
    def reader_heartbeat(self) -> float | None: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def sensor(self) -> SensorView | None: ...
    @property
    def sinks(self) -> Sequence[QueueView]: ...
    def reader_alive(self) -> bool: ...


class ObservedAgent(ProbedAgent, Protocol):
    """What the metrics read besides: the hub (event counts, subscriber drops), the
    process cache, the remote exporters, the redactor, the policy-event handler and the
    gRPC server's counters."""

    @property
    def hub(self) -> EventHub: ...
    @property
    def cache(self) -> ProcessCache: ...
    @property
    def remote_sinks(self) -> Sequence[Any]: ...
    @property
    def redactor(self) -> Any: ...
    @property
    def policy_events(self) -> Any: ...
    @property
    def server(self) -> Any: ...


__all__ = ["KernelCountersView", "ObservedAgent", "ProbedAgent", "QueueView", "RingView",
           "SensorView"]
