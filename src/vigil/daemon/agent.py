"""The agent: ordered start-up steps, one reader thread, reverse teardown.

start: the named steps of ``vigil.daemon.startup.STEPS`` (privileges, BTF, mounts, base
sensor, policy engine, exporters, servers, /proc scan, policies, reader ...), in order.
stop:  stop reader -> detach and close BPF -> drain and close exporters.

The reader thread is the only writer of the process cache. It drains the ring in
batches, turns records into events (``vigil.stream.pipeline``) and offers each batch to every
sink; sinks never block it (they drop and count).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.containers.options import ContainersConfig
from vigil.errors import PrivilegeError
from vigil.export.jsonl import RotatingFileWriter
from vigil.export.ratelimit import rate_limit_export
from vigil.export.sink import JsonlExporter, QueueSink, StdoutExporter
from vigil.stream.hub import EventHub
from vigil.stream.pipeline import EventOptions, Pipeline, measure_boot_wall_ns
from vigil.process import procfs
from vigil.process.cache import ProcessCache
from vigil.process.model import Namespaces
from vigil.metrics.config import MetricsConfig
from vigil.server.config import ServerConfig
from vigil.stream.throttle import CgroupRate

log = logging.getLogger("vigil.agent")

# Records the reader decodes per batch, and the exporters' backlog (queued events) above
# which it lets them catch up before decoding more (_let_exporters_catch_up).
READ_BATCH = 1024
EXPORT_BACKLOG = 2048
LOCAL_SINKS = ("jsonl", "stdout")


@dataclass(frozen=True)
class ExportConfig:
    filename: str = ""                # --export-filename ("" = no file)
    max_size_mb: float = 10
    max_backups: int = 5
    compress: bool = False
    perm: int = 0o600
    stdout: bool | None = None        # None: on when no export file is set
    stdout_format: str = "json"       # json | compact
    queue_events: int = 65536         # per exporter; overflow is dropped and counted
    integrity_key_file: str = ""      # --export-integrity-key-file ("" = no hash chain)


@dataclass(frozen=True)
class AgentConfig:
    node_name: str = ""
    procfs: str = "/proc"
    process_cache_size: int = 65536
    enable_process_cred: bool = False
    # --process-cred-changes: events (follow and export) | follow (cache only) | off
    process_cred_changes: str = "events"
    enable_process_ns: bool = False
    enable_ancestors: bool = False
    rb_size_total: int = 0            # 0: rb_size per CPU (vigil.sensors.base.ring_size)
    rb_size: int = 0
    max_args: int = 16128
    poll_interval: float = 0.05       # max latency of a quiet ring
    export: ExportConfig = field(default_factory=ExportConfig)
    # container runtimes: CRI endpoint (vigil.containers)
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    # gRPC API; off unless addresses are given (`vigil agent` defaults to the unix socket)
    server: ServerConfig = field(default_factory=lambda: ServerConfig(addresses=()))
    cgroup_rate: CgroupRate | None = None  # --cgroup-rate (None: off)
    export_rate_limit: int = -1            # --export-rate-limit, events/minute (-1: unlimited)
    metrics: MetricsConfig | None = None   # --metrics-server and friends (None: off)
    tracing_policies: tuple[str, ...] = ()  # --tracing-policy FILE (repeatable)
    tracing_policy_dir: str = ""            # --tracing-policy-dir DIR
    enforce: Any = None                     # vigil.enforce.service.EnforceConfig (None: defaults)
    kprobe_mode: str = "auto"               # --kprobe-mode: auto | kprobe | kprobe_multi | fentry
    export_filters: Any = None              # vigil.server.exportfilters.ExportFilterConfig (None: all)
    health_address: str = ""                # --health-server-address ("" : no health server)
    health_interval: float = 10.0           # --health-server-interval, seconds
    health_explicit: bool = True            # False: the default address, busy -> log, go on
    keep_sensors_on_exit: bool = False      # --keep-sensors-on-exit: pin BPF links on exit
    keep_root: str = ""                     # where kept links are pinned ("" : vigil.bpf.keep's)
    redaction_filters: str = ""             # --redaction-filters (vigil.events.redact)
    remote_export: Any = None               # vigil.cli.export_options.ExportOptions
    policy_signing_key: str = ""            # --policy-signing-key: load only signed policies
    self_protection: bool = True            # --self-protection: the built-in policy + file watch
    protected_files: tuple[str, ...] = ()   # more files whose writes self-protection reports
    k8s: Any = None                         # vigil.k8s.agent.K8sConfig (--enable-k8s-api; None: off)


def default_node_name() -> str:
    """Tetragon's rule: $HUBBLE_NODE_NAME, else $NODE_NAME, else the hostname."""
    return os.environ.get("HUBBLE_NODE_NAME") or os.environ.get("NODE_NAME") or socket.gethostname()


def check_privileges() -> None:
    """Raise PrivilegeError naming what is missing, before loading libbpf.

    Capabilities decide, not the uid: root with a cleared bounding set cannot load BPF.
    """
    from vigil.bpf.features import privileges  # imports ctypes only, loads nothing
    why = privileges()
    if why:
        raise PrivilegeError(f"{why} (sudo vigil agent)")


def _resident() -> str:
    """This process's resident memory as /proc/self/status reports it (anonymous and
    file-backed; the ring buffer's pages count as file-backed)."""
    try:
        with open("/proc/self/status") as f:
            got = dict(ln.split(":", 1) for ln in f if ln.startswith(("VmRSS", "RssAnon",
                                                                       "RssFile")))
    except OSError:
        return "unknown"
    return ", ".join(f"{k} {v.strip()}" for k, v in got.items())


def check_btf() -> None:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        from vigil.errors import FeatureNotSupported
        raise FeatureNotSupported(
            "BTF", "/sys/kernel/btf/vmlinux is missing; Vigil needs a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y")


# PROC_PID_INIT_INO: the initial pid namespace's inum, the same on every kernel. A /proc
# whose pid 1 is in another pid namespace belongs to a container, not to the host.
INIT_PID_NS_INUM = 0xEFFFFFFC


@dataclass(frozen=True)
class HostNamespaces:
    """The host's namespace inums and where they came from; ``ns`` None: unknown, and
    ``source`` says why."""

    ns: Namespaces | None
    source: str


def _procfs_host_namespaces(proc: str) -> tuple[Namespaces | None, str]:
    """pid 1's namespaces from ``proc`` (None and why when unreadable or not the host's)."""
    vals = []
    for name in Namespaces.__dataclass_fields__:
        path = f"{proc}/1/ns/{name}"
        try:
            vals.append(procfs.parse_ns_link(os.readlink(path)))
        except FileNotFoundError:
            vals.append(0)  # a namespace type this kernel lacks (time before 5.6)
        except OSError as err:
            return None, f"cannot read {path}: {err.strerror}"
    ns = Namespaces(*vals)
    if not ns.pid:
        return None, f"cannot read {proc}/1/ns"
    if ns.pid != INIT_PID_NS_INUM:
        return None, (f"{proc}/1 is not the host's pid 1 (its pid namespace {ns.pid} is not "
                      "the initial one)")
    return ns, f"{proc}/1/ns"


def learn_host_namespaces(proc: str = "/proc") -> HostNamespaces:
    """The host's namespaces (those of pid 1 of the initial pid namespace, what Tetragon's
    ``host_ns`` and ``is_host`` mean): from ``proc``/1/ns when it can be read and is the
    host's; else from the kernel through BPF (root only: nothing is imported or loaded
    otherwise); else unknown. Never the agent's own namespaces: in a container they are
    the container's."""
    ns, why = _procfs_host_namespaces(proc)
    if ns is not None:
        return HostNamespaces(ns, why)
    if os.geteuid() != 0:
        return HostNamespaces(None, f"{why}, and only root may ask the kernel (BPF)")
    try:
        from vigil.bpf.hostns import read_kernel_host_namespaces  # imports libbpf
        kernel = read_kernel_host_namespaces()
    except Exception as err:  # noqa: BLE001 - any failure means "the kernel could not say"
        return HostNamespaces(None, f"{why}, and the kernel could not be asked (BPF): {err}")
    if kernel.pid1 is not None:
        return HostNamespaces(kernel.pid1, "the kernel (BPF task iterator): pid 1's")
    if kernel.init is not None:  # the agent does not descend from pid 1 (a usermode helper)
        return HostNamespaces(kernel.init, "the kernel (BPF task iterator): init_task's")
    return HostNamespaces(None, f"{why}, and the kernel (BPF) found neither pid 1 nor pid 0 "
                          "among the agent's ancestors")


_host_ns_cache: dict[str, HostNamespaces] = {}


def cached_host_namespaces(proc: str = "/proc") -> HostNamespaces:
    """``learn_host_namespaces``, learned once per ``proc`` and logged with its source."""
    got = _host_ns_cache.get(proc)
    if got is None:
        got = _host_ns_cache[proc] = learn_host_namespaces(proc)
        if got.ns is not None:
            log.info("host namespaces from %s", got.source)
        else:
            log.warning("host namespaces unknown (is_host is never set, policies using "
                        "host_ns are refused): %s", got.source)
    return got


def host_namespaces(proc: str = "/proc") -> Namespaces | None:
    """The host's namespace inums, which ``is_host`` compares against; None if unknown
    (see ``learn_host_namespaces``)."""
    return cached_host_namespaces(proc).ns


class Agent:
    """One running agent. ``start()``, then ``wait()`` or ``stop()``."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.node_name = cfg.node_name or default_node_name()
        self.cache = ProcessCache(capacity=cfg.process_cache_size)
        self._boot_wall = measure_boot_wall_ns()
        from vigil.events.redact import redactor_from_flag
        self.redactor = redactor_from_flag(cfg.redaction_filters)
        self.pipeline = Pipeline(self.cache, EventOptions(
            redactor=self.redactor,
            node_name=self.node_name,
            process_cred=cfg.enable_process_cred,
            cred_change_events=cfg.process_cred_changes == "events",
            process_ns=cfg.enable_process_ns,
            ancestors=cfg.enable_ancestors,
            host_ns=host_namespaces(cfg.procfs) if cfg.enable_process_ns else None,
        ), lambda: self._boot_wall)
        self.hub = EventHub()
        self.sinks: list[QueueSink] = []
        self.remote_sinks: list[Any] = []  # vigil.export.remote.RemoteSink (also in sinks)
        self._closers: list[Callable[[], Any]] = []
        self.sensor: Any = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self.kernel_dropped = 0
        self.started = threading.Event()
        # The tracing-policy engine (vigil.daemon.policies.PolicyManager) once the base
        # sensor is loaded; the gRPC API and the start-up flags go through it.
        self.policies: Any = None
        self.k8s: Any = None  # vigil.k8s.agent.K8sRuntime with --enable-k8s-api
        self.containers: Any = None  # vigil.containers.tracker.ContainerTable (step containers)
        self._file_watch: Any = None  # self-protection's fanotify watch (daemon.selfprot)
        self.policy_events: Any = None
        self.server: Any = None  # vigil.server.server.GrpcServer once started
        self.health_server: Any = None  # vigil.server.healthserver.HealthServer once started
        self.metrics: Any = None  # vigil.metrics.RunningMetrics once started
        self.mounts: Any = None   # vigil.bpf.mounts.MountReport of the start-up mounts
        self.verifier: Any = None  # vigil.policy.signing.PolicyVerifier (--policy-signing-key)
        self._writers: list[RotatingFileWriter] = []  # the export file's, when one is set
        self.reader_heartbeat: float | None = None  # monotonic; health's progress signal
        self._sink_subs: list[tuple[Any, Callable[[], None]]] = []  # (hub subscriber, closer)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, steps: Collection[str] | None = None) -> None:
        """Run the start-up steps (``vigil.daemon.startup.STEPS``) in order; ``steps``
        names a part of them (a test harness's), which runs with what it needs. Any
        failure stops what was started."""
        from vigil.daemon.startup import STEPS, plan
        todo = plan(STEPS, steps)
        try:
            for step in todo:
                t0 = time.monotonic()
                step.run(self)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("start-up step %s: %.3f s, resident memory now %s", step.name,
                              time.monotonic() - t0, _resident())
        except BaseException:
            self.stop()
            raise
        self.started.set()
        log.info("vigil agent started on node %s: %d processes from /proc",
                 self.node_name, len(self.cache))

    def stop(self) -> None:
        if self.health_server is not None:
            self.health_server.stop()
            self.health_server = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.server is not None:  # first: clients see a clean end of stream
            self.server.stop()
            self.server = None
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if self.cfg.keep_sensors_on_exit and self.sensor is not None and self.started.is_set():
            self._keep_links()
        if self._file_watch is not None:
            self._file_watch.close()
            self._file_watch = None
        if self.k8s is not None:  # stopped first: no CR loads into a closing manager
            self.k8s.stop()
            self.k8s = None
        if self.policy_events is not None and getattr(self.policy_events, "requester", None):
            self.policy_events.requester.stop()
        if self.policies is not None:
            self.policies.close()  # detach every policy program before the base sensor
        if self.sensor is not None:
            self._log_kernel_drops()
            self.sensor.close()
            self.sensor = None
        for sub, stop_reports in self._sink_subs:
            self.hub.unsubscribe(sub)
            stop_reports()  # the last rate_limit_info, into the still-open sink
        self._sink_subs.clear()
        for sink in self.sinks:
            sink.close(timeout=10)
        self.remote_sinks.clear()
        for close in reversed(self._closers):
            close()
        self.sinks.clear()
        self._closers.clear()

    def wait(self) -> None:
        """Run until SIGINT/SIGTERM; SIGHUP reopens the export file."""
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self._stop.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        reopen = threading.Event()
        signal.signal(signal.SIGHUP, lambda *_: reopen.set())
        while not self._stop.wait(0.5):
            self._refresh_self_protection()
            if reopen.is_set():
                reopen.clear()
                for w in self._writers:
                    w.reopen()
        self.stop()

    # -- exporters -------------------------------------------------------------------

    def _start_exporters(self) -> None:
        ex = self.cfg.export
        flt = self.cfg.export_filters
        if flt is not None and flt.active:
            log.info("export filters: %d allow, %d deny, %d field filter(s) (JSON export "
                     "only)", len(flt.allow), len(flt.deny), len(flt.fields))
        if flt is not None and flt.aggregation:
            log.info("export aggregation on (window %gs, buffer %d): events pass through "
                     "unchanged, as Tetragon's aggregator does", flt.aggregation_window,
                     flt.aggregation_buffer)
        self._writers = []
        if ex.filename:
            chain = None
            if ex.integrity_key_file:
                from vigil.export.integrity import ChainWriter, KeyRatchet
                chain = ChainWriter(KeyRatchet(ex.integrity_key_file))
            writer = RotatingFileWriter(ex.filename, max_size_mb=ex.max_size_mb,
                                        max_backups=ex.max_backups, compress=ex.compress,
                                        perm=ex.perm, integrity=chain)
            self._writers.append(writer)
            exporter = JsonlExporter(writer)
            self._add_sink("jsonl", exporter, exporter.close, ex.queue_events)
        stdout = ex.stdout if ex.stdout is not None else not ex.filename
        if stdout:
            if ex.stdout_format == "compact":
                handler, close = _compact_stdout(), (lambda: None)
            else:
                out = StdoutExporter()
                handler, close = out, out.close
            self._add_sink("stdout", handler, close, ex.queue_events)
        self._start_remote_exporters()

    def _start_remote_exporters(self) -> None:
        """--export-syslog-address, --export-otlp-endpoint: network exporters on bounded
        queues (vigil.export.remote), rate limited like the other exporters."""
        rx = self.cfg.remote_export
        if rx is None:
            return
        from vigil.export.remote import RemoteSink
        exporters: list[tuple[Any, int]] = []
        if rx.syslog is not None:
            from vigil.export.syslog import SyslogExporter
            exporters.append((SyslogExporter(rx.syslog), rx.syslog_queue))
        if rx.otlp is not None:
            from vigil.export.otlp import OtlpExporter
            exporters.append((OtlpExporter(rx.otlp, self.node_name), rx.otlp_queue))
        for exporter, queue in exporters:
            sink = RemoteSink(exporter, max_events=queue)
            self._add_sink(exporter.name, exporter, lambda: None, queue, sink=sink)
            self.remote_sinks.append(sink)
            log.info("exporting events to %s (%s)", exporter.destination, exporter.kind)

    # -- policies --------------------------------------------------------------------

    def _start_policy_engine(self) -> None:
        from vigil.daemon.policies import PolicyManager
        from vigil.stream.policy_events import HookRegistry, PolicyEvents
        from vigil.enforce.service import EnforceConfig, Enforcement
        registry = HookRegistry()
        self.policy_events = PolicyEvents(self.pipeline, registry)
        from vigil.actions_net import Requester  # GetUrl / DnsLookup, off the event path
        self.policy_events.requester = Requester()
        self.policy_events.request = self.policy_events.requester.submit
        self.enforcement = Enforcement(self.cfg.enforce or EnforceConfig(),
                                       pipeline=self.pipeline, publish=self.hub.publish)
        from functools import partial

        from vigil.daemon.policies import kernel_view
        self.policies = PolicyManager(self.sensor, registry,
                                      view=partial(kernel_view, self.cfg.kprobe_mode,
                                                   procfs=self.cfg.procfs),
                                      enforcement=self.enforcement)

    def _load_startup_policies(self) -> None:
        """--tracing-policy files, then --tracing-policy-dir; any failure stops start-up."""
        from vigil.policy.loader import policy_files
        files = list(self.cfg.tracing_policies)
        if self.cfg.tracing_policy_dir and os.path.isdir(self.cfg.tracing_policy_dir):
            files += policy_files(self.cfg.tracing_policy_dir)
        for path in files:
            info = self.policies.add_file(path)
            log.info("tracing policy %s %s from %s", info.name,
                     "added (skipped on this node)" if info.state.name == "SKIPPED"
                     else "loaded", path)

    # -- self-protection -------------------------------------------------------------

    def protected_pids(self) -> list[int]:
        """The agent's processes: itself and its fanotify decider when one runs."""
        pids = [os.getpid()]
        decider = getattr(getattr(self, "enforcement", None), "decider_pid", None)
        if decider:
            pids.append(int(decider))
        return pids

    def _start_self_protection(self) -> None:
        """The built-in ``vigil-self-protection`` policy (signals, ptrace, process memory,
        pidfds and bpf() aimed at the agent; listed, disabled and deleted like any
        policy) and the fanotify watch of Vigil's files. Off with --self-protection=false.
        A part this kernel cannot run is logged and left out; the agent still starts."""
        if not self.cfg.self_protection:
            log.info("self-protection off (--self-protection=false)")
            return
        from vigil.selfprot import POLICY_NAME, BpfRefiner, render_policy
        from vigil.errors import VigilError
        self.policy_events.refine[POLICY_NAME] = BpfRefiner(self.protected_pids,
                                                             self.cfg.procfs)
        self._sp_pids = self.protected_pids()
        try:
            self.policies.add(render_policy(self._sp_pids), source="builtin")
            log.info("self-protection: policy %s loaded for pids %s", POLICY_NAME,
                     self._sp_pids)
        except VigilError as err:
            log.error("self-protection: policy %s not loaded: %s", POLICY_NAME, err)
        from vigil.daemon.selfprot import FileWatch, modify_event
        srv = self.cfg.server
        extra = [*self.cfg.tracing_policies, self.cfg.tracing_policy_dir,
                 self.cfg.policy_signing_key, self.cfg.export.integrity_key_file,
                 srv.persist_dir if getattr(srv, "persist_policies", False) else "",
                 *self.cfg.protected_files]
        try:
            self._file_watch = FileWatch(
                extra, self.protected_pids,
                lambda pid, path: modify_event(self.pipeline, pid, path), self.hub.publish)
            log.info("self-protection: watching writes to %d directories and %d files",
                     len(self._file_watch.dirs), len(self._file_watch.files))
        except OSError as err:
            log.error("self-protection: file writes not watched: %s", err)

    def _refresh_self_protection(self) -> None:
        """When the agent has a new helper process (the decider started or restarted),
        load the built-in policy again with the new pids (in place: no gap); a disabled
        one gets the new pids for when it is enabled."""
        if not self.cfg.self_protection or self.policies is None:
            return
        pids = self.protected_pids()
        rendered = getattr(self, "_sp_pids", None)
        # a helper that exited alone changes nothing (its restart brings a new pid, and
        # then the policy is rendered with exactly the live ones)
        if rendered is None or set(pids) <= set(rendered):
            return
        self._sp_pids = pids
        from vigil.selfprot import POLICY_NAME, render_policy
        if not any(i.name == POLICY_NAME and not i.namespace for i in self.policies.list()):
            return  # deleted by the operator: stays deleted
        try:
            self.policies.replace(render_policy(pids), source="builtin")
            log.info("self-protection: policy %s reloaded for pids %s", POLICY_NAME, pids)
        except Exception as err:  # noqa: BLE001 - keep the agent running, say why
            log.error("self-protection: reloading %s: %s", POLICY_NAME, err)

    def _start_server(self) -> None:
        if not self.cfg.server.enabled:
            return
        from vigil.daemon.views import start_grpc
        from vigil.server.listen import AddressInUse
        try:
            self.server = start_grpc(self)
        except AddressInUse as err:
            if self.cfg.server.explicit:
                raise
            log.error("gRPC API disabled: %s; set --server-address to serve elsewhere", err)

    # -- kept sensors and health server -----------------------------------------------

    def _keep_root(self) -> str:
        from vigil.bpf.keep import KEEP_ROOT
        return self.cfg.keep_root or KEEP_ROOT

    def _replace_kept_links(self) -> None:
        """Detach the links a previous agent kept (--keep-sensors-on-exit), now that this
        agent's own sensors and start-up policies are attached."""
        from vigil.bpf.keep import release_kept
        n = release_kept(self._keep_root())
        if n:
            log.info("replaced %d BPF links kept by the previous agent under %s", n,
                     self._keep_root())
        if self.cfg.keep_sensors_on_exit and self._fanotify_active():
            log.warning("keep-sensors-on-exit: fanotify-based enforcement will stop with the "
                        "agent (a fanotify group lives only as long as its process)")

    def _fanotify_active(self) -> bool:
        enforcement = getattr(self, "enforcement", None)
        return enforcement is not None and enforcement.decider_pid is not None

    def _keep_links(self) -> None:
        from vigil.bpf.keep import keep_links
        root = self._keep_root()
        try:
            n = keep_links(root)
        except OSError as err:
            log.error("keep-sensors-on-exit: cannot pin under %s: %s; sensors detach", root,
                      err)
            return
        log.info("keep-sensors-on-exit: %d BPF links pinned under %s; they keep running "
                 "until the next agent starts", n, root)
        if self._fanotify_active():
            log.warning("keep-sensors-on-exit: fanotify-based enforcement stops now: a "
                        "fanotify group dies with its process; its rules are not enforced "
                        "until the next agent starts")

    def _start_health_server(self) -> None:
        if not self.cfg.health_address:
            return
        from vigil.daemon.views import health_check
        from vigil.server.healthserver import HealthServer
        from vigil.errors import ConfigError
        server = HealthServer(self.cfg.health_address, self.cfg.health_interval,
                              health_check(self))
        try:
            server.start()
        except ConfigError as err:
            if self.cfg.health_explicit:
                raise
            log.error("health server disabled: %s; set --health-server-address to serve "
                      "elsewhere", err)
            server.stop()
            return
        self.health_server = server

    def _add_sink(self, name: str, handler: Callable[[list[dict[str, Any]]], None],
                  close: Callable[[], Any], queue_events: int,
                  sink: QueueSink | None = None) -> None:
        if sink is None:
            sink = QueueSink(name, handler, max_events=queue_events)
        sink.start()
        self.sinks.append(sink)
        from vigil.server.exportfilters import filter_export
        sub, stop_reports = rate_limit_export(sink, self.cfg.export_rate_limit, self.node_name)
        sub = filter_export(sub, self.cfg.export_filters)  # filtered before rate limiting
        self.hub.subscribe(sub)
        self._sink_subs.append((sub, stop_reports))
        self._closers.append(close)

    def _offer(self, events: list[dict[str, Any]]) -> None:
        self.hub.publish(events)

    # -- reader ----------------------------------------------------------------------

    def _read_loop(self) -> None:
        ring = self.sensor.ring
        next_housekeeping = time.monotonic() + 1.0
        local = [s for s in self.sinks if s.name in LOCAL_SINKS]
        while not self._stop.is_set():
            self.reader_heartbeat = time.monotonic()
            ring.wait(self.cfg.poll_interval)
            while True:
                recs = ring.drain(max_records=READ_BATCH)
                if not recs:
                    break
                self._offer(self.pipeline.handle(recs))
                if local:
                    self._let_exporters_catch_up(ring, local)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + 1.0
                self.cache.gc()
                self._log_kernel_drops()
        # final drain: what the kernel sent before detach still gets out
        self._offer(self.pipeline.handle(ring.drain()))

    def _let_exporters_catch_up(self, ring: Any, sinks: list[QueueSink]) -> None:
        """While a local exporter (file, stdout) has more than EXPORT_BACKLOG events
        queued and the ring is less than half full, give it the CPU for a few
        milliseconds instead of decoding more. The backlog then waits in the ring, in its
        compact kernel form, rather than as event dicts (~1 KB each) in the agent, whose
        memory the allocator keeps once grown. Never while the ring fills up (reading wins
        there, so nothing is lost to this), and at most 50 ms per batch."""
        half = ring.size // 2
        deadline = time.monotonic() + 0.05
        while (max(s.pending() for s in sinks) > EXPORT_BACKLOG
               and ring.pending_bytes() < half and not self._stop.is_set()
               and time.monotonic() < deadline):
            time.sleep(0.002)

    def _log_kernel_drops(self) -> None:
        drops = self.sensor.counters().drops
        total = sum(n for (_op, reason), n in drops.items() if reason == "RINGBUF_FULL")
        if total > self.kernel_dropped:
            log.warning("%d events lost in the kernel (ring buffer full) since start",
                        total)
            self.kernel_dropped = total

    # -- status ----------------------------------------------------------------------

    def reader_alive(self) -> bool:
        """Is the reader thread running (health's first question)?"""
        reader = self._reader
        return reader is not None and reader.is_alive()

    @property
    def export_writers(self) -> list[RotatingFileWriter]:
        """The export file's writer (GetEventLogParams, SIGHUP), when one is set."""
        return self._writers

    def stats(self) -> dict[str, Any]:
        """Counters for tests, logs and (later) metrics."""
        k = self.sensor.counters() if self.sensor else None
        return {
            "kernel_sent": dict(k.sent) if k else {},
            "kernel_dropped": dict(k.drops) if k else {},
            "records": dict(self.pipeline.records),
            "decode_errors": dict(self.pipeline.decode_errors),
            "missing_process": self.pipeline.missing_process,
            "duplicate_exits": self.pipeline.duplicate_exits,
            "cred_changes": self.pipeline.cred_changes,
            "cred_unchanged": self.pipeline.cred_unchanged,
            "creds_tracking": self.sensor.creds_tracking if self.sensor else "off",
            "cache_size": len(self.cache),
            "sinks": {s.name: {"delivered": s.delivered, "dropped": s.dropped}
                      for s in self.sinks},
            "remote": [s.view() for s in self.remote_sinks],
            "redacted": self.redactor.redacted if self.redactor else 0,
            "grpc": self.server.stats() if self.server is not None else {},
            "throttle": {"starts": self.pipeline.throttle.starts,
                         "stops": self.pipeline.throttle.stops,
                         "dropped": self.pipeline.throttle.dropped,
                         "exits_suppressed": self.pipeline.throttle.exits_suppressed},
        }


def _compact_stdout() -> Callable[[list[dict[str, Any]]], None]:
    from vigil.events.compact import render
    color = sys.stdout.isatty()

    def handler(events: list[dict[str, Any]]) -> None:
        lines = [line for ev in events if (line := render(ev, color=color))]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
    return handler


def run(cfg: AgentConfig) -> None:
    agent = Agent(cfg)

    def _early_stop(signum: int, _frame: object) -> None:
        log.info("signal %s during start-up: stopping once started",
                 signal.Signals(signum).name)
        agent._stop.set()
    # a SIGTERM racing the end of start-up still stops cleanly (pins kept, exporters
    # drained) instead of killing the process; wait() installs the lasting handlers
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)
    agent.start()
    agent.wait()


__all__ = ["Agent", "AgentConfig", "ExportConfig", "run", "Path"]
