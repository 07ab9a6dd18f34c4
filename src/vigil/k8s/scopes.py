"""Which cgroups each pod-scoped policy covers, kept in step with the node's pods.

``register(plan)`` (called by the policy manager while it loads a scoped policy) gives
the policy a filter id and writes its current cgroups (``register_scope``: the same for
one selector's ``matchWorkloads``); pod changes and a periodic
resolve (``interval``: containers start after their pod is seen, and their cgroups appear
only then) recompute every policy's set and write the difference to the kernel
(``vigil.sensors.policyfilter.PolicyFilter``). A pod that stops matching, or goes away,
leaves the policy's set on the next pass.

Until a new container's cgroup is written, the policy does not run in it: the window is
the time from the container's start to the pod update that names its id (or the next
periodic pass), and the policy never runs outside its pods meanwhile. A host process
is a task whose cgroup is in no pod: the set of every pod's cgroups (``filter.host_id``)
is kept the same way, so in that window a new container's processes count as host
processes for selectors with ``hostSelector: {}``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from vigil.k8s.cgroups import CgroupIndex
from vigil.policy.scope import PodScope

log = logging.getLogger("vigil.k8s.scopes")


class ScopeManager:
    def __init__(self, pf: Any, pods: Any, cgroup_root: str, interval: float = 1.0) -> None:
        self.filter = pf          # vigil.sensors.policyfilter.PolicyFilter
        self.pods = pods          # vigil.k8s.pods.PodWatcher
        self.cgroup_root = cgroup_root
        self.interval = interval
        self.passes = 0
        self.unresolved = 0       # started containers of matching pods without a cgroup
        self._scopes: dict[int, Any] = {}  # filter id -> vigil.policy.scope.PodScope
        self._next = 1
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pods.listeners.append(self._wake.set)

    def register(self, plan: Any) -> int:
        return self.register_scope(plan.scope)

    def register_scope(self, scope: Any) -> int:
        """A filter id for ``scope`` (a policy's, or one selector's matchWorkloads), its
        current cgroups written. A scope with host processes (hostSelector {}) also makes
        sure the filter has the set of every pod's cgroups: a host process is a task in
        none of them."""
        if getattr(scope, "host", False) and not self.filter.host_id:
            self.filter.host_id = self._register(PodScope())
        pid = self._register(scope)
        if getattr(scope, "host", False):
            self.filter.mark_host(pid)
        return pid

    def _register(self, scope: Any) -> int:
        with self._lock:
            pid = self._next
            self._next += 1
            self._scopes[pid] = scope
        self.filter.set(pid, self._cgroups(scope, CgroupIndex(self.cgroup_root).walk()))
        return pid

    def release(self, pid: int) -> None:
        with self._lock:
            self._scopes.pop(pid, None)
            host_id = self.filter.host_id
            last_host = bool(host_id) and not any(
                getattr(s, "host", False) for s in self._scopes.values())
            if last_host:
                self._scopes.pop(host_id, None)
        self.filter.release(pid)
        if last_host:  # no scope takes host processes any more: drop every pod's set
            self.filter.host_id = 0
            self.filter.release(host_id)

    def refresh(self) -> None:
        """One pass: every scoped policy's cgroups from the pods and cgroups now."""
        with self._lock:
            scopes = dict(self._scopes)
        if not scopes:
            return
        index = CgroupIndex(self.cgroup_root).walk()
        self.unresolved = 0
        for pid, scope in scopes.items():
            self.filter.set(pid, self._cgroups(scope, index))
        self.passes += 1

    def _cgroups(self, scope: Any, index: CgroupIndex) -> set[int]:
        out: set[int] = set()
        for info in self.pods.pods():
            m = info.meta
            if not scope.matches_pod(m.namespace, m.labels):
                continue
            for c in info.containers:
                if not c.id or not scope.matches_container(c.name, c.image):
                    continue
                found = index.cgroups(c.id)
                if not found:
                    self.unresolved += 1
                out |= found
        return out

    # -- thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-k8s-scopes",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 - keep scoping alive, say why
                log.warning("pod scoping pass failed: %s", err)
