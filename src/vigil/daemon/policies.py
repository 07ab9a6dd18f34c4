"""Loaded tracing policies: validate -> compile -> load -> register; and the reverse.

Implements ``vigil.policy.store_api.PolicyStore`` for the gRPC server and the start-up
flags (--tracing-policy, --tracing-policy-dir). A policy is rejected whole: if any hook
fails to compile or load, nothing of it stays in the kernel. Thread-safe (one lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.errors import BpfError, FeatureNotSupported, PolicyError
from vigil.policy.compiler import CompileError, KernelView, compile_policy, diagnostic
from vigil.policy.plan import PolicyPlan
from vigil.policy.store_api import PolicyExistsError, PolicyInfo, PolicyMode, PolicyState
from vigil.policy_events import HookRegistry, RegisteredHook
from vigil.sensors.base import BaseSensor
from vigil.sensors.generic import LoadedPolicy, load_policy

log = logging.getLogger("vigil.policies")

_MODES = {"enforce": PolicyMode.ENFORCE, "monitor": PolicyMode.MONITOR,
          "monitor_only": PolicyMode.MONITOR_ONLY}


@dataclass
class _Entry:
    id: int
    plan: PolicyPlan
    domain: str
    loaded: LoadedPolicy | None
    yaml_text: str


def kernel_view() -> KernelView:
    """Probe what this kernel allows (cached by vigil.bpf.features)."""
    from vigil.bpf import features
    from vigil.policy.tracefs import read_format
    return KernelView(kprobes=features.probe("kprobe").ok, fentry=features.probe("fentry").ok,
                      lsm=features.probe("lsm").ok, host_ns=_host_ns(), formats=read_format)


def _host_ns() -> dict[str, int]:
    from vigil.daemon.agent import host_namespaces
    ns = host_namespaces()
    return {k: getattr(ns, k) for k in ns.__dataclass_fields__}


class PolicyManager:
    def __init__(self, base: BaseSensor, registry: HookRegistry,
                 view: Callable[[], KernelView] = kernel_view) -> None:
        self.base = base
        self.registry = registry
        self._view = view
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._next_policy_id = 1
        self._next_hook_id = 1

    # -- PolicyStore -----------------------------------------------------------------

    def add(self, yaml_text: str, *, source: str) -> PolicyInfo:
        from vigil.policy.loader import load_policy as parse
        policy = parse(yaml_text, source=source)
        for w in getattr(policy, "warnings", ()) or ():
            log.warning("%s", w)
        with self._lock:
            key = (policy.metadata.name, getattr(policy.metadata, "namespace", None) or "")
            if key in self._entries:
                raise PolicyExistsError(*key)
            plan = self._compile(policy, source)
            loaded = self._load(plan)
            entry = _Entry(self._next_policy_id, plan, _domain(source), loaded, yaml_text)
            self._next_policy_id += 1
            self._entries[key] = entry
            for note in plan.notes:
                log.info("policy %s: %s", plan.name, note)
            log.info("policy %s loaded: %s", plan.name,
                     "; ".join(f"{h.section} -> {h.mechanism}" for h in plan.hooks) or "no hooks")
            return self._info(entry)

    def add_file(self, path: str | Path) -> PolicyInfo:
        p = Path(path)
        return self.add(p.read_text(), source=str(p))

    def delete(self, name: str, namespace: str = "") -> None:
        with self._lock:
            entry = self._entries.pop((name, namespace))
            self._unload(entry)

    def enable(self, name: str, namespace: str = "") -> None:
        with self._lock:
            entry = self._entries[(name, namespace)]
            if entry.loaded is None:
                entry.loaded = self._load(entry.plan)

    def disable(self, name: str, namespace: str = "") -> None:
        with self._lock:
            self._unload(self._entries[(name, namespace)])

    def list(self) -> list[PolicyInfo]:
        with self._lock:
            return [self._info(e) for e in self._entries.values()]

    def close(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                self._unload(entry)
            self._entries.clear()

    # -- helpers ---------------------------------------------------------------------

    def _compile(self, policy: Any, source: str) -> PolicyPlan:
        try:
            plan = compile_policy(policy, self._view(), hook_id_base=self._next_hook_id)
        except CompileError as err:
            d = diagnostic(err, policy, source)
            raise PolicyError(f"{d}", [d]) from err
        self._next_hook_id += len(plan.hooks) + 1
        return plan

    def _load(self, plan: PolicyPlan) -> LoadedPolicy:
        try:
            loaded = load_policy(plan, self.base)
        except BpfError as err:
            raise FeatureNotSupported(f"policy {plan.name}", str(err)) from err
        self.registry.add([RegisteredHook(h, plan.name, plan.namespace) for h in plan.hooks])
        return loaded

    def _unload(self, entry: _Entry) -> None:
        if entry.loaded is not None:
            entry.loaded.close()
            entry.loaded = None
        self.registry.remove([h.hook_id for h in entry.plan.hooks])

    def _info(self, e: _Entry) -> PolicyInfo:
        sensors = tuple(sorted({f"generic_{h.event.removeprefix('process_')}" for h in e.plan.hooks}))
        return PolicyInfo(
            id=e.id, name=e.plan.name, namespace=e.plan.namespace,
            info="; ".join(h.mechanism for h in e.plan.hooks), sensors=sensors,
            state=PolicyState.ENABLED if e.loaded is not None else PolicyState.DISABLED,
            mode=_MODES.get(e.plan.mode, PolicyMode.UNKNOWN), domain=e.domain)


def _domain(source: str) -> str:
    return source if source in ("grpc", "k8s") else "static"
