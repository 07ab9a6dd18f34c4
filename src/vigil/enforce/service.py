"""The agent's side of enforcement: the decider process, cgroup socket programs, events.

``Enforcement.load(plan)`` makes a policy's EnforcePlan live: its fanotify hooks go to
the decider (started on first use, supervised, restarted with every policy if it dies or
stops answering), its socket rules become cgroup programs. Decisions never wait on the
agent: the decider's reports arrive on a socket it never blocks on; a thread here turns
them into process_lsm events after a short settle delay and hands them to the hub
through a bounded queue (overflow is dropped and counted).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vigil.enforce import wire
from vigil.enforce.events import HookRef, LsmEvents
from vigil.errors import FeatureNotSupported
from vigil.policy.plan import PolicyPlan

log = logging.getLogger("vigil.enforce")


@dataclass(frozen=True)
class EnforceConfig:
    decision_timeout: float = 0.5  # --fanotify-decision-timeout: then the watchdog answers
    fail_closed: bool = False      # --enforcement-fail-closed: the watchdog denies
    settle: float = 0.25           # events wait this long for the pipeline to see the exec
    queue_events: int = 16384      # reports waiting to become events; more are dropped
    supervise_interval: float = 1.0
    stall_kill: float = 5.0        # a decider silent this long is killed and restarted
    start_timeout: float = 30.0
    debug_delay: float = 0.0       # tests only: every decision takes this long
    rt_priority: int = 1           # SCHED_FIFO priority of the decider (0: normal CFS)


class DeciderError(RuntimeError):
    pass


class DeciderProcess:
    """One ``python -m vigil.enforce.decider``, its control and report sockets."""

    def __init__(self, cfg: EnforceConfig, on_reports: Callable[[list[dict[str, Any]]], None]) -> None:
        self.cfg = cfg
        self._on_reports = on_reports
        self._lock = threading.Lock()
        ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        rep, rep_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (rep, rep_child):
            try:  # room for bursts of reports; root may exceed rmem_max
                s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
                s.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE
            except OSError:
                pass
        cmd = [sys.executable, "-m", "vigil.enforce.decider", "--ctl-fd", str(ctl_child.fileno()),
               "--reports-fd", str(rep_child.fileno()), "--deadline", str(cfg.decision_timeout),
               "--log-level", logging.getLevelName(log.getEffectiveLevel())]
        if cfg.fail_closed:
            cmd.append("--fail-closed")
        if cfg.rt_priority:
            cmd += ["--rt-priority", str(cfg.rt_priority)]
        if cfg.debug_delay:
            cmd += ["--debug-delay", str(cfg.debug_delay)]
        self.proc = subprocess.Popen(cmd, pass_fds=(ctl_child.fileno(), rep_child.fileno()),
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        ctl_child.close()
        rep_child.close()
        self.ctl, self.rep = ctl, rep
        self.pid = self.proc.pid
        ctl.settimeout(cfg.start_timeout)
        try:
            hello = orjson.loads(ctl.recv(wire.MAX_MESSAGE) or b"{}")
        except (OSError, ValueError) as err:
            self.kill()
            raise DeciderError(f"the decider did not start: {err}") from err
        if hello.get("op") != "ready":
            self.kill()
            raise DeciderError("the decider did not start (see its log above)")
        self._reader = threading.Thread(target=self._read_reports, name="vigil-enforce-reports",
                                        daemon=True)
        self._reader.start()

    def request(self, req: dict[str, Any], timeout: float = 30.0,
                fds: tuple[int, ...] = ()) -> dict[str, Any]:
        """Send ``req`` (with ``fds`` passed along, SCM_RIGHTS) and wait for the answer."""
        with self._lock:
            self.ctl.settimeout(timeout)
            try:
                if fds:
                    socket.send_fds(self.ctl, [orjson.dumps(req)], list(fds))
                else:
                    self.ctl.send(orjson.dumps(req))
                raw = self.ctl.recv(wire.MAX_MESSAGE)
            except OSError as err:
                raise DeciderError(f"decider: {req.get('op')}: {err}") from err
        if not raw:
            raise DeciderError("the decider exited")
        return dict(orjson.loads(raw))

    def _read_reports(self) -> None:
        while True:
            try:
                raw = self.rep.recv(wire.MAX_MESSAGE)
            except OSError:
                return
            if not raw:
                return
            try:
                self._on_reports(orjson.loads(raw))
            except Exception:  # a bad report never stops the reader
                log.exception("bad decider report")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the kernel closes its groups and allows every waiter."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close_sockets()

    def stop(self, timeout: float = 5.0) -> None:
        self.ctl.close()  # the decider exits when its control socket closes
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.close_sockets()

    def close_sockets(self) -> None:
        for s in (self.ctl, self.rep):
            try:
                s.close()
            except OSError:
                pass


def _workloads(hooks: Any, pf: Any) -> dict[str, Any] | None:
    """What the decider needs to check a task's pods (None: no hook is scoped): the
    policy's filter id, each selector's, which of them take host processes, the filter
    id of every pod's cgroups, and where the tracked cgroup hierarchy is mounted (the
    task's cgroup there, stat'ed, is the id the kernel map is keyed by)."""
    if pf is None:
        return None
    filt, policy_id, sel_ids = pf
    sels = {str(h.hook_id): [list(p) for p in sel_ids.get(h.hook_id, ())] for h in hooks}
    if not policy_id and not any(sels.values()):
        return None
    from vigil.k8s.cgroups import hierarchy_root
    ids = {policy_id} | {sid for ps in sels.values() for _si, sid in ps}
    return {"policy": policy_id, "selectors": sels, "host_id": filt.host_id,
            "host": sorted(i for i in ids if i and filt.is_host(i)),
            "controller": filt.controller, "root": hierarchy_root(filt.controller)}


@dataclass
class Loaded:
    """A policy's live enforcement (what ``Enforcement.unload`` undoes)."""

    name: str
    fanotify: bool = False
    sock: Any = None   # vigil.sensors.sockguard.LoadedSock
    marks: list[str] = field(default_factory=list)


class Enforcement:
    def __init__(self, cfg: EnforceConfig | None = None, *, pipeline: Any = None,
                 publish: Callable[[list[dict[str, Any]]], None] | None = None,
                 cgroup_root: str | None = None) -> None:
        self.cfg = cfg or EnforceConfig()
        self._pf: Any = None  # vigil.sensors.policyfilter.PolicyFilter, once a policy uses it
        self.publish = publish
        self.events = LsmEvents(pipeline)
        self._cgroup_root = cgroup_root
        self._lock = threading.Lock()
        self._start_lock = threading.RLock()   # one decider at a time, even when restarting
        self._decider: DeciderProcess | None = None
        self._policies: dict[str, dict[str, Any]] = {}   # name -> add request (for restarts)
        self._queue: collections.deque[tuple[float, dict[str, Any], Any]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.dropped = 0
        self.published = 0
        self.restarts = 0
        self.watchdog_answers = 0

    # -- policies --------------------------------------------------------------------

    def load(self, plan: PolicyPlan, base: Any = None, pf: Any = None) -> Loaded:
        """Make ``plan``'s enforcement live. ``pf``: (vigil.sensors.policyfilter
        .PolicyFilter, policy filter id or 0, hook id -> ((selector index, filter id), ...))
        of a pod-scoped policy or one with matchWorkloads (None: neither)."""
        ep = plan.enforce
        loaded = Loaded(plan.name)
        if pf is not None:
            self._pf = pf[0]  # the map the decider looks cgroups up in
        if ep.cgroups:
            root = self.cgroup_root()
            for cg in ep.cgroups:
                if not os.path.isdir(os.path.join(root, cg.lstrip("/"))):
                    raise FeatureNotSupported(f"policy {plan.name}",
                                              f"vigil-cgroups: no cgroup {cg} under {root}")
        try:
            if ep.sock:
                if base is None:
                    raise FeatureNotSupported(f"policy {plan.name}", "socket rules need the "
                                              "base sensor (the agent)")
                from vigil.sensors.sockguard import load_sock_rules
                loaded.sock = load_sock_rules(ep.sock, ep.cgroups, base, self.cgroup_root(),
                                              pf)
            if ep.fanotify:
                req = wire.add_request(plan.name, ep.fanotify, ep.cgroups, ep.monitor,
                                       _workloads(ep.fanotify, pf))
                reply = self._decider_request(req)
                if not reply.get("ok"):
                    raise FeatureNotSupported(f"policy {plan.name}", f"fanotify: {reply.get('error')}")
                loaded.fanotify = True
                loaded.marks = list(reply.get("marks", ()))
                for note in reply.get("notes", ()):
                    log.warning("policy %s: %s", plan.name, note)
                with self._lock:
                    self._policies[plan.name] = req
                    for h in ep.fanotify:
                        self.events.hooks[h.hook_id] = HookRef(h, plan.name, plan.namespace)
        except BaseException:
            self.unload(loaded)
            raise
        return loaded

    def unload(self, loaded: Loaded) -> None:
        if loaded.sock is not None:
            loaded.sock.close()
            loaded.sock = None
        if loaded.fanotify:
            with self._lock:
                req = self._policies.pop(loaded.name, None)
                for h in (req or {}).get("hooks", ()):
                    self.events.hooks.pop(h["hook_id"], None)
            if self._decider is not None and self._decider.alive:
                try:
                    self._decider.request({"op": "remove", "name": loaded.name})
                except Exception as err:  # noqa: BLE001 - a dead decider released it already
                    log.warning("policy %s: decider: %s", loaded.name, err)
            loaded.fanotify = False

    def cgroup_root(self) -> str:
        if self._cgroup_root is None:
            from vigil.stream.throttle import cgroup2_mount
            root = cgroup2_mount()
            if not root:
                raise FeatureNotSupported("enforcement scope", "no cgroup2 mount")
            self._cgroup_root = root
        return self._cgroup_root

    # -- the decider -----------------------------------------------------------------

    def _decider_request(self, req: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        with self._start_lock:
            if self._decider is None or not self._decider.alive:
                self._start_decider()
            d = self._decider
        assert d is not None
        wl = req.get("workloads")
        return d.request(req, timeout, (self._pf.ensure_map(),) if wl else ())

    def _start_decider(self) -> None:
        if self._decider is not None:
            self._decider.kill()
        self._decider = DeciderProcess(self.cfg, self._on_reports)
        log.info("fanotify decider started (pid %d, deadline %.3fs, fail-%s)", self._decider.pid,
                 self.cfg.decision_timeout, "closed" if self.cfg.fail_closed else "open")
        if not self._threads:
            for target, name in ((self._publisher, "vigil-enforce-events"),
                                 (self._supervise, "vigil-enforce-supervisor")):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)

    @property
    def decider_pid(self) -> int | None:
        return self._decider.pid if self._decider is not None and self._decider.alive else None

    def decider_stats(self, reset: bool = False) -> dict[str, Any]:
        if self._decider is None or not self._decider.alive:
            return {}
        return dict(self._decider.request({"op": "stats", "reset": reset}).get("stats", {}))

    def _supervise(self) -> None:
        while not self._stop.wait(self.cfg.supervise_interval):
            d = self._decider
            if d is None:
                continue
            problem = ""
            if not d.alive:
                problem = f"exited with status {d.proc.returncode}"
            else:
                try:
                    d.request({"op": "ping"}, timeout=self.cfg.stall_kill)
                except Exception as err:  # noqa: BLE001 - any failure of the ping is a stall
                    problem = f"not answering ({err})"
            if problem and not self._stop.is_set():
                self._restart(problem)

    def _restart(self, problem: str) -> None:
        with self._start_lock:
            self._restart_locked(problem)

    def _restart_locked(self, problem: str) -> None:
        log.error("fanotify decider %s: killing it (every waiter is released) and restarting "
                  "it with %d policies", problem, len(self._policies))
        self.restarts += 1
        with self._lock:
            policies = list(self._policies.values())
        try:
            self._start_decider()
            for req in policies:
                reply = self._decider_request(req)
                if not reply.get("ok"):
                    log.error("policy %s not enforced after the restart: %s", req["name"],
                              reply.get("error"))
        except Exception as err:  # noqa: BLE001 - the next round tries again
            log.error("decider restart failed: %s", err)

    # -- events ----------------------------------------------------------------------

    def _on_reports(self, items: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for r in items:
            if "w" in r:
                self.watchdog_answers += int(r.get("n", 1))
                log.warning("enforcement watchdog: %s: %s events %s without a decision",
                            r["w"], r.get("n"), r.get("verdict"))
                continue
            if len(self._queue) >= self.cfg.queue_events:
                self.dropped += 1
                continue
            self._queue.append((now, r, self.events.arrived(r)))
        self._wake.set()

    def _publisher(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            self._flush(time.monotonic() - self.cfg.settle)

    def _flush(self, before: float) -> None:
        batch = []
        while self._queue and self._queue[0][0] <= before:
            _t, r, seen = self._queue.popleft()
            ev = self.events.build(r, seen)
            if ev is not None:
                batch.append(ev)
        if batch and self.publish is not None:
            self.publish(batch)
            self.published += len(batch)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        with self._start_lock:
            if self._decider is not None:
                self._decider.stop()
                self._decider = None
        self._flush(float("inf"))

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "dropped": self.dropped, "restarts": self.restarts,
                "watchdog_answers": self.watchdog_answers,
                "unknown_hook": self.events.unknown_hook,
                "missing_process": self.events.missing_process,
                "stale_process": self.events.stale_process,
                "decider_pid": self.decider_pid}
