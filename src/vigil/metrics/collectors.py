"""The agent's metrics, computed at scrape time from the counters the agent keeps anyway.

Nothing here is on the hot path: the kernel counts in ``vg_stats`` (per CPU), the
pipeline, cache, sinks, rate limiters and throttle tracker count in plain ints, and
``AgentCollector.collect()`` reads them all when Prometheus scrapes. Names follow
Tetragon's (``docs/metrics.md``) under a configurable namespace.

``MetricsSources`` is the seam: ``sources_from_agent`` reads a real agent, tests pass
fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vigil.metrics.events import EventMetrics
from vigil.metrics.health import Health

log = logging.getLogger("vigil.metrics")

# vg_drop_reason name -> (label of vigil's bpf_records_dropped_total, errno label of
# Tetragon's bpf_missed_events_total or None when it is not a send failure)
DROP_REASONS = {
    "RINGBUF_FULL": ("ringbuf_full", "EAGAIN"),  # bpf_ringbuf_output() -> -EAGAIN
    "THROTTLED": ("throttled", None),
}


@dataclass(frozen=True)
class KernelView:
    sent: dict[int, int]
    drops: dict[tuple[int, str], int]


@dataclass(frozen=True)
class SinkView:
    name: str
    delivered: int
    dropped: int
    errors: int
    pending: int
    capacity: int


@dataclass
class MetricsSources:
    """Callables the collector reads at scrape time (each may return empty values)."""

    kernel: Callable[[], list[KernelView]] = list
    ring: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)  # pending, size, discarded
    pipeline: Callable[[], Any] = lambda: None     # vigil.stream.pipeline.Pipeline
    policy_events: Callable[[], Any] = lambda: None  # vigil.stream.policy_events.PolicyEvents
    cache: Callable[[], Any] = lambda: None        # vigil.process.cache.ProcessCache
    sinks: Callable[[], list[SinkView]] = list
    ratelimit_dropped: Callable[[], int] = lambda: 0
    subscriber_dropped: Callable[[], int] = lambda: 0  # gRPC GetEvents clients
    maps: Callable[[], dict[str, tuple[int, int]]] = dict
    sweep_errors: Callable[[], int] = lambda: 0
    # network exporters: vigil.export.remote.RemoteSink.view() dicts
    remote: Callable[[], list[dict[str, Any]]] = list
    redacted: Callable[[], int] = lambda: 0  # process records --redaction-filters changed
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class AgentCollector(Collector):
    """Every agent metric except per-event ones (see ``EventMetricsCollector``)."""

    def __init__(self, namespace: str, sources: MetricsSources,
                 health: Health | None = None) -> None:
        self.ns = namespace
        self.src = sources
        self.health = health

    def _n(self, name: str) -> str:
        return f"{self.ns}_{name}"

    def collect(self) -> Iterator[Metric]:
        for section in (self._kernel, self._ring, self._pipeline, self._cache, self._export,
                        self._remote, self._maps, self._status, self._requests):
            try:
                # whole sections, so a failure never leaves a family half-filled
                yield from list(section())
            except Exception as err:  # noqa: BLE001 - a scrape never fails as a whole
                log.warning("metrics section %s failed: %r", section.__name__, err)

    # -- kernel ----------------------------------------------------------------------

    def _kernel(self) -> Iterator[Metric]:
        sent: dict[int, int] = {}
        drops: dict[tuple[int, str], int] = {}
        for k in self.src.kernel():
            for op, n in k.sent.items():
                sent[op] = sent.get(op, 0) + n
            for key, n in k.drops.items():
                drops[key] = drops.get(key, 0) + n
        missed = CounterMetricFamily(
            self._n("bpf_missed_events"), "Records BPF programs failed to send, by opcode "
            "and error (EAGAIN: ring buffer full).", labels=["msg_op", "error"])
        dropped = CounterMetricFamily(
            self._n("bpf_records_dropped"), "Records BPF programs did not deliver, by "
            "opcode and reason (ringbuf_full, throttled).", labels=["msg_op", "reason"])
        read_err = CounterMetricFamily(
            self._n("bpf_read_errors"), "Kernel/user reads that failed while building a "
            "record (the record was still sent, flagged).", labels=["msg_op"])
        sent_m = CounterMetricFamily(
            self._n("bpf_records_sent"), "Records BPF programs put in the ring buffer.",
            labels=["msg_op"])
        for op, n in sorted(sent.items()):
            sent_m.add_metric([str(op)], n)
        for (op, reason), n in sorted(drops.items()):
            if reason == "READ_ERROR":
                read_err.add_metric([str(op)], n)
                continue
            label, errno_name = DROP_REASONS.get(reason, (reason.lower(), None))
            dropped.add_metric([str(op), label], n)
            if errno_name:
                missed.add_metric([str(op), errno_name], n)
        yield from (missed, dropped, read_err, sent_m)
        lost = sum(n for (_op, r), n in drops.items() if r == "RINGBUF_FULL")
        yield CounterMetricFamily(
            self._n("observer_ringbuf_events_lost"),
            "Records lost because the ring buffer was full.", value=lost)
        throttled = sum(n for (_op, r), n in drops.items() if r == "THROTTLED")
        yield CounterMetricFamily(
            self._n("throttled_events"), "Records suppressed in the kernel by "
            "--cgroup-rate.", value=throttled)

    def _ring(self) -> Iterator[Metric]:
        pending, size, _discarded = self.src.ring()
        yield GaugeMetricFamily(self._n("observer_ringbuf_pending_bytes"),
                                "Bytes in the ring buffer not read yet.", value=pending)
        yield GaugeMetricFamily(self._n("observer_ringbuf_capacity_bytes"),
                                "Size of the ring buffer.", value=size)

    # -- pipeline --------------------------------------------------------------------

    def _requests(self) -> Iterator[Metric]:
        """GetUrl / DnsLookup requests (vigil.actions_net.Requester)."""
        req = getattr(self.src.policy_events(), "requester", None)
        if req is None:
            return
        fam = CounterMetricFamily(
            self._n("policy_action_requests"), "GetUrl / DnsLookup requests of policy "
            "actions, by kind (url, dns) and result (ok, error, timeout; dropped_queue_full "
            "and dropped_rate_limited were not made).", labels=["kind", "result"])
        for (kind, result), n in sorted(req.counts.items()):
            fam.add_metric([kind, result], n)
        yield fam

    def _pipeline(self) -> Iterator[Metric]:
        p = self.src.pipeline()
        if p is None:
            return
        _pending, _size, discarded = self.src.ring()
        yield CounterMetricFamily(
            self._n("observer_ringbuf_events_received"),
            "Records read from the ring buffer.", value=sum(p.records.values()))
        yield CounterMetricFamily(
            self._n("observer_ringbuf_errors"), "Records read but not usable: malformed, "
            "unknown opcode, or discarded.",
            value=sum(p.decode_errors.values()) + p.unknown_ops + discarded)
        ops = CounterMetricFamily(self._n("msg_op"), "Records handled, by opcode.",
                                  labels=["msg_op"])
        for op, n in sorted(p.records.items()):
            ops.add_metric([str(op)], n)
        yield ops
        errs = CounterMetricFamily(self._n("handler_errors"), "Records the pipeline could "
                                   "not handle.", labels=["opcode", "error"])
        for op, n in sorted(p.decode_errors.items()):
            errs.add_metric([str(op), "event_handler_failed"], n)
        if p.unknown_ops:
            errs.add_metric(["unknown", "unknown_opcode"], p.unknown_ops)
        yield errs
        pe = self.src.policy_events()
        yield CounterMetricFamily(
            self._n("events_missing_process_info"),
            "Exits of processes the agent never saw (dropped), and policy events of "
            "processes not in the cache (sent with pid and tid only).",
            value=p.missing_process + (pe.missing_process if pe is not None else 0))
        discarded = CounterMetricFamily(
            self._n("records_discarded"), "Records read and understood but turned into "
            "no event: a second exit of one process instance, a record of a policy hook "
            "already removed, a credential change that changed nothing (another thread "
            "repeating it).", labels=["reason"])
        discarded.add_metric(["duplicate_exit"], p.duplicate_exits)
        discarded.add_metric(["credentials_unchanged"], p.cred_unchanged)
        discarded.add_metric(["unknown_hook"], pe.unknown_hook if pe is not None else 0)
        yield discarded
        yield from self._throttle(p.throttle)

    def _throttle(self, t: Any) -> Iterator[Metric]:
        rate = CounterMetricFamily(self._n("cgroup_rate"), "--cgroup-rate throttling "
                                   "transitions.", labels=["type"])
        rate.add_metric(["throttle_start"], t.starts)
        rate.add_metric(["throttle_stop"], t.stops)
        yield rate
        yield CounterMetricFamily(
            self._n("throttle_exit_events_suppressed"), "process_exit events not "
            "exported because their cgroup was throttled.", value=t.exits_suppressed)
        yield GaugeMetricFamily(self._n("throttled_cgroups"),
                                "Cgroups throttled right now.", value=t.throttled_now)

    def _cache(self) -> Iterator[Metric]:
        c = self.src.cache()
        if c is None:
            return
        yield GaugeMetricFamily(self._n("process_cache_size"),
                                "Processes in the cache.", value=len(c))
        yield GaugeMetricFamily(self._n("process_cache_capacity"),
                                "Capacity of the process cache.", value=c.capacity)
        yield CounterMetricFamily(self._n("process_cache_evictions"),
                                  "Exited processes evicted.", value=c.evictions)
        yield CounterMetricFamily(
            self._n("process_cache_early_deletions"), "Live processes evicted because the "
            "cache was full.", value=c.early_evictions)
        miss = CounterMetricFamily(self._n("process_cache_misses"), "Cache lookups that "
                                   "found nothing.", labels=["operation"])
        miss.add_metric(["get"], c.misses)
        yield miss

    # -- export ----------------------------------------------------------------------

    def _export(self) -> Iterator[Metric]:
        sinks = self.src.sinks()
        yield CounterMetricFamily(self._n("events_exported"), "Events handed to exporters.",
                                  value=sum(s.delivered for s in sinks))
        dropped = CounterMetricFamily(self._n("export_events_dropped"), "Events dropped "
                                      "because an exporter's queue was full.",
                                      labels=["exporter"])
        errors = CounterMetricFamily(self._n("export_errors"), "Exporter batches that "
                                     "failed.", labels=["exporter"])
        queued = GaugeMetricFamily(self._n("export_queue_events"), "Events waiting in an "
                                   "exporter's queue.", labels=["exporter"])
        cap = GaugeMetricFamily(self._n("export_queue_capacity"), "Bound of an exporter's "
                                "queue.", labels=["exporter"])
        for s in sinks:
            dropped.add_metric([s.name], s.dropped)
            errors.add_metric([s.name], s.errors)
            queued.add_metric([s.name], s.pending)
            cap.add_metric([s.name], s.capacity)
        yield from (dropped, errors, queued, cap)
        yield CounterMetricFamily(
            self._n("export_ratelimit_events_dropped"),
            "Events dropped by --export-rate-limit.", value=self.src.ratelimit_dropped())
        yield CounterMetricFamily(
            self._n("notify_overflowed_events"), "Events dropped because a GetEvents "
            "client was too slow.", value=self.src.subscriber_dropped())

    def _remote(self) -> Iterator[Metric]:
        views = self.src.remote()
        sent = CounterMetricFamily(self._n("export_remote_events_sent"), "Events a network "
                                   "exporter delivered to its collector.",
                                   labels=["exporter", "destination"])
        dropped = CounterMetricFamily(
            self._n("export_remote_events_dropped"), "Events a network exporter dropped, "
            "by reason: queue_full, tls_verify, tls, connect, timeout, send, rejected, "
            "http_<status>, shutdown.", labels=["exporter", "destination", "reason"])
        failures = CounterMetricFamily(
            self._n("export_remote_failures"), "Failed connections and sends of a network "
            "exporter, by reason (each retried with exponential backoff).",
            labels=["exporter", "destination", "reason"])
        conns = CounterMetricFamily(self._n("export_remote_connections"), "Connections a "
                                    "network exporter made to its collector.",
                                    labels=["exporter", "destination"])
        up = GaugeMetricFamily(self._n("export_remote_connected"), "1 while a network "
                               "exporter is connected to its collector.",
                               labels=["exporter", "destination"])
        for v in views:
            key = [v["exporter"], v["destination"]]
            sent.add_metric(key, v["sent"])
            conns.add_metric(key, v["connections"])
            up.add_metric(key, 1 if v["connected"] else 0)
            for reason, n in sorted(v["dropped"].items()):
                dropped.add_metric([*key, reason], n)
            for reason, n in sorted(v["failures"].items()):
                failures.add_metric([*key, reason], n)
        yield from (sent, dropped, failures, conns, up)
        yield CounterMetricFamily(self._n("redacted_processes"), "Process records whose "
                                  "arguments --redaction-filters changed.",
                                  value=self.src.redacted())

    def _maps(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(self._n("map_entries"), "Entries in a BPF map.",
                                    labels=["map"])
        capacity = GaugeMetricFamily(self._n("map_capacity"), "Capacity of a BPF map.",
                                     labels=["map"])
        for name, (n, cap) in sorted(self.src.maps().items()):
            entries.add_metric([name], n)
            capacity.add_metric([name], cap)
        yield from (entries, capacity)

    def _status(self) -> Iterator[Metric]:
        if self.health is not None:
            yield GaugeMetricFamily(self._n("health_status"), "1 when the pipeline moves "
                                    "(see /healthz), else 0.",
                                    value=1 if self.health.check().ok else 0)
        yield CounterMetricFamily(self._n("throttle_sweep_errors"),
                                  "Failed runs of the THROTTLE_STOP sweep.",
                                  value=self.src.sweep_errors())
        info = GaugeMetricFamily(self._n("build_info"), "Agent build.", labels=["version"])
        info.add_metric([self.src.version], 1)
        yield info


class EventMetricsCollector(Collector):
    """``events_total`` and ``policy_events_total`` from an ``EventMetrics`` subscriber."""

    def __init__(self, namespace: str, events: EventMetrics) -> None:
        self.ns = namespace
        self.events = events

    def collect(self) -> Iterable[Metric]:
        evs, pols = self.events.snapshot()
        m = CounterMetricFamily(f"{self.ns}_events", "Events published, by type and "
                                "(bounded) process labels.", labels=list(self.events.events.labels))
        for key, n in evs:
            m.add_metric(list(key), n)
        p = CounterMetricFamily(f"{self.ns}_policy_events", "Policy events published, by "
                                "policy, hook and action.", labels=["policy", "hook", "action"])
        for key, n in pols:
            p.add_metric(list(key), n)
        return [m, p]
