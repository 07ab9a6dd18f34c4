"""TracingPolicy and TracingPolicyNamespaced custom resources -> the policy manager.

Each object is rendered back to YAML and added with source ``k8s`` (domain ``k8s`` in
ListTracingPolicies), exactly as a file or gRPC policy: validated, compiled, loaded; a
refused one is logged and counted, and the others keep loading. A change of
``metadata.generation`` (the spec changed) deletes and adds it again, as Tetragon does;
status-only or label-only updates change nothing. A re-list after a broken watch
reconciles: policies gone from the cluster are deleted, new or changed ones added.

In signed-policies mode (the manager has a verifier) an object loads only with a valid
signature of its canonical JSON in the ``vigil.dev/policy-signature`` annotation
(vigil.policy.signing.k8s_signed_bytes); an unsigned or altered one is refused, counted
(``unsigned``) and logged, and adding the annotation later loads it.

Like Tetragon's agent, Vigil writes nothing back to the objects (the shipped CRDs have
no status subresource): a policy's state and error are in ``vigil tracingpolicy list``
(gRPC ListTracingPolicies), the agent's log and ``vigil_k8s_errors_total``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import yaml

log = logging.getLogger("vigil.k8s.policies")

MAX_POLICY_BYTES = 1 << 20


class PolicyWatcher:
    """Keeps the manager's ``k8s`` policies equal to the cluster's objects of one kind."""

    def __init__(self, manager: Any, kind: str) -> None:
        self.manager = manager
        self.kind = kind
        self.errors: Counter[str] = Counter()
        self.loaded: dict[tuple[str, str], str] = {}  # (name, namespace) -> generation seen
        self._lock = threading.Lock()

    def on_sync(self, items: list[dict[str, Any]]) -> None:
        want: dict[tuple[str, str], dict[str, Any]] = {}
        for obj in items:
            key = _key(obj)
            if key is None:
                self.errors["malformed"] += 1
                continue
            want[key] = obj
        with self._lock:
            for key in [k for k in self.loaded if k not in want]:
                self._delete(key)
            for key, obj in want.items():
                self._apply(key, obj)

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        key = _key(obj)
        if key is None:
            self.errors["malformed"] += 1
            log.warning("%s object without a name ignored", self.kind)
            return
        with self._lock:
            if kind == "DELETED":
                if key in self.loaded:
                    self._delete(key)
            else:
                self._apply(key, obj)

    def close(self) -> None:
        with self._lock:
            for key in list(self.loaded):
                self._delete(key)

    # -- helpers -------------------------------------------------------------------

    def _apply(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        gen = str(meta.get("generation") or meta.get("resourceVersion") or "")
        if self.loaded.get(key) == gen:
            return  # status, labels or annotations changed: the spec did not
        if key in self.loaded:
            self._delete(key)
        text = render(obj, self.kind)
        if len(text) > MAX_POLICY_BYTES:
            self.errors["oversized"] += 1
            log.warning("%s %s: %d bytes, over the %d-byte limit: not loaded", self.kind,
                        _name(key), len(text), MAX_POLICY_BYTES)
            return
        verifier = getattr(self.manager, "verifier", None)
        if verifier is not None:
            from vigil.policy.signing import K8S_ANNOTATION, k8s_signed_bytes
            notes: dict[str, Any] = meta["annotations"] \
                if isinstance(meta.get("annotations"), dict) else {}
            try:
                verifier.check(k8s_signed_bytes(obj), notes.get(K8S_ANNOTATION),
                               f"k8s {self.kind} {_name(key)}")
            except Exception as err:  # noqa: BLE001 - PolicySignatureError: refused
                self.errors["unsigned"] += 1
                log.error("%s", err)
                return
        try:
            info = self.manager.add(text, source="k8s",
                                    signature_checked=verifier is not None)
        except Exception as err:  # noqa: BLE001 - refused: log, count, keep watching
            self.errors["refused"] += 1
            log.error("%s %s not loaded: %s", self.kind, _name(key), err)
            return
        self.loaded[key] = gen
        log.info("%s %s loaded (id %s)", self.kind, _name(key), getattr(info, "id", "?"))

    def _delete(self, key: tuple[str, str]) -> None:
        self.loaded.pop(key, None)
        try:
            self.manager.delete(*key)
            log.info("%s %s deleted", self.kind, _name(key))
        except KeyError:
            pass
        except Exception as err:  # noqa: BLE001
            self.errors["delete_failed"] += 1
            log.warning("%s %s: delete failed: %s", self.kind, _name(key), err)


def render(obj: dict[str, Any], kind: str) -> str:
    """The object as a policy document (what the loader reads from a file)."""
    meta = obj.get("metadata") or {}
    doc_meta = {k: meta[k] for k in ("name", "namespace", "labels", "annotations")
                if meta.get(k)}
    doc = {"apiVersion": obj.get("apiVersion") or "cilium.io/v1alpha1",
           "kind": obj.get("kind") or kind, "metadata": doc_meta, "spec": obj.get("spec")}
    return yaml.safe_dump(doc, sort_keys=False)


def _key(obj: Any) -> tuple[str, str] | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return None
    ns = meta.get("namespace") or ""
    return meta["name"], ns if isinstance(ns, str) else ""


def _name(key: tuple[str, str]) -> str:
    return f"{key[1]}/{key[0]}" if key[1] else key[0]
