"""An in-memory :class:`~vigil.policy.store_api.PolicyStore`.

TEMPORARY default: until the tracing-policy engine is wired into the agent,
``Agent.policies`` is a ``StaticPolicyStore`` so the policy RPCs and ``vigil
tracingpolicy`` work end to end. It checks only that a document is a Tetragon
TracingPolicy with a name; it loads nothing into the kernel. Tests use it as a fake
(``fail_add`` makes ``add`` raise what a real engine could).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from typing import Any

import yaml

from vigil.errors import PolicyError
from vigil.policy.store_api import (PolicyExistsError, PolicyInfo, PolicyMode, PolicyModeError,
                                    PolicyState)

API_VERSION = "cilium.io/v1alpha1"
KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
_HOOKS = {"kprobes": "generic_kprobe", "tracepoints": "generic_tracepoint",
          "uprobes": "generic_uprobe", "lsmhooks": "generic_lsm", "usdts": "generic_usdt",
          "fentries": "generic_fentry"}


def parse_policy(yaml_text: str) -> dict[str, Any]:
    """The minimal checks: one YAML mapping, TracingPolicy kind, metadata.name, spec."""
    try:
        docs = [d for d in yaml.safe_load_all(yaml_text) if d is not None]
    except yaml.YAMLError as err:
        raise PolicyError(f"invalid YAML: {err}", [str(err)]) from err
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise PolicyError("expected exactly one YAML object (a TracingPolicy)")
    doc = docs[0]
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") not in KINDS:
        problems.append(f"kind: must be one of {', '.join(KINDS)}, got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        problems.append("metadata.name: required")
    elif doc.get("kind") == "TracingPolicyNamespaced" and not meta.get("namespace"):
        problems.append("metadata.namespace: required for TracingPolicyNamespaced")
    if not isinstance(doc.get("spec", {}), dict):
        problems.append("spec: must be an object")
    if problems:
        raise PolicyError("invalid tracing policy: " + "; ".join(problems), problems)
    return doc


class StaticPolicyStore:
    """Thread-safe in-memory policy list (see the module docstring)."""

    def __init__(self, fail_add: Exception | None = None) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._policies: dict[tuple[str, str], PolicyInfo] = {}
        self.yaml: dict[tuple[str, str], str] = {}
        self.fail_add = fail_add

    def add(self, yaml_text: str, *, source: str, signature: bytes | str | None = None
            ) -> PolicyInfo:
        if self.fail_add is not None:
            raise self.fail_add
        doc = parse_policy(yaml_text)
        meta = doc["metadata"]
        ns = str(meta.get("namespace", "")) if doc["kind"] == "TracingPolicyNamespaced" else ""
        key = (ns, str(meta["name"]))
        spec = doc.get("spec") or {}
        sensors = tuple(sorted({s for k, s in _HOOKS.items() if spec.get(k)}))
        with self._lock:
            if key in self._policies:
                raise PolicyExistsError(key[1], ns)
            info = PolicyInfo(id=next(self._ids), name=key[1], namespace=ns, sensors=sensors,
                              state=PolicyState.ENABLED, mode=PolicyMode.ENFORCE,
                              domain=source, info="in-memory (not loaded: no policy engine)")
            self._policies[key] = info
            self.yaml[key] = yaml_text
        return info

    def delete(self, name: str, namespace: str = "") -> None:
        with self._lock:
            del self._policies[(namespace, name)]
            self.yaml.pop((namespace, name), None)

    def _set_state(self, name: str, namespace: str, state: PolicyState) -> None:
        with self._lock:
            key = (namespace, name)
            self._policies[key] = replace(self._policies[key], state=state)

    def enable(self, name: str, namespace: str = "") -> None:
        self._set_state(name, namespace, PolicyState.ENABLED)

    def disable(self, name: str, namespace: str = "") -> None:
        self._set_state(name, namespace, PolicyState.DISABLED)

    def list(self) -> list[PolicyInfo]:
        with self._lock:
            return list(self._policies.values())

    def set_mode(self, name: str, namespace: str, mode: PolicyMode) -> None:
        if mode not in (PolicyMode.ENFORCE, PolicyMode.MONITOR):
            raise PolicyModeError(f"mode {PolicyMode(mode).name} cannot be set")
        with self._lock:
            key = (namespace, name)
            if self._policies[key].mode == PolicyMode.MONITOR_ONLY:
                if mode == PolicyMode.ENFORCE:
                    raise PolicyModeError(f"tracing policy {name} is monitor_only")
                return
            self._policies[key] = replace(self._policies[key], mode=mode)
