"""Pod scoping of a tracing policy: which pods and containers its hooks run in.

A ``TracingPolicyNamespaced`` covers the pods of its namespace; ``spec.podSelector``
narrows a policy to pods whose labels match; ``spec.containerSelector`` to containers
whose ``name`` / ``repo`` (the image without tag or digest) match; ``spec.hostSelector:
{}`` adds host processes (tasks in no pod's cgroup), alone it selects only them. A
scoped policy never runs host-wide: in the kernel its hooks run only for the cgroups of
matching containers, and with hostSelector for the cgroups that are no pod's
(``vigil.sensors.policyfilter``), so with no matching pod and no hostSelector it runs
nowhere.

Label selectors have Kubernetes' meaning (an absent selector matches everything, an empty
one too; In / NotIn / Exists / DoesNotExist, NotIn matching a missing key), evaluated as
Tetragon does: pod labels carry the pod's namespace under
``k8s:io.kubernetes.pod.namespace`` so a cluster-wide policy can select namespaces.

``spec.nodeSelector`` is not a pod scope: it decides whether the policy loads on this
node at all, from the node's labels (``node_selector``; the agent's policy manager
evaluates it, ``vigil.daemon.policies``).

Pure logic: no kernel, no Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"

_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class Selector:
    """A ``metav1.LabelSelector``: every requirement must hold (none: match all)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def from_spec(cls, sel: Any) -> Selector:
        """From ``vigil.policy.spec.LabelSelector`` (or a dict of the YAML form)."""
        if isinstance(sel, Mapping):
            labels = sel.get("matchLabels") or {}
            exprs = [(e.get("key"), e.get("operator"), e.get("values") or ())
                     for e in sel.get("matchExpressions") or ()]
        else:
            labels = sel.match_labels
            exprs = [(e.key, getattr(e.operator, "value", e.operator), e.values)
                     for e in sel.match_expressions]
        reqs = [Requirement(str(k), "In", (str(v),)) for k, v in sorted(labels.items())]
        for key, op, values in exprs:
            if op not in _OPS:
                raise ValueError(f"unknown label selector operator {op!r}")
            reqs.append(Requirement(str(key), str(op), tuple(str(v) for v in values)))
        return cls(tuple(reqs))


@dataclass(frozen=True)
class PodScope:
    """Where a scoped policy runs: ``namespace`` ("" = every namespace), pod and
    container selectors (None = every pod / container); ``pods`` False: no pod at all;
    ``host``: also host processes (``hostSelector: {}``), the tasks in no pod's cgroup."""

    namespace: str = ""
    pod_selector: Selector | None = None
    container_selector: Selector | None = None
    pods: bool = True
    host: bool = False

    def matches_pod(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if not self.pods:
            return False
        if self.namespace and namespace != self.namespace:
            return False
        if self.pod_selector is None:
            return True
        return self.pod_selector.matches({**labels, NAMESPACE_LABEL: namespace})

    def matches_container(self, name: str, image: str) -> bool:
        if self.container_selector is None:
            return True
        return self.container_selector.matches({"name": name, "repo": image_repo(image)})

    def describe(self) -> str:
        parts = [f"namespace {self.namespace}"] if self.namespace else []
        if self.pod_selector is not None:
            parts.append("podSelector")
        if self.container_selector is not None:
            parts.append("containerSelector")
        pods = "pods: " + ", ".join(parts) if parts else "every pod"
        if not self.pods:
            return "host processes (no pod)"
        return f"{pods} and host processes" if self.host else pods


def image_repo(image: str) -> str:
    """``registry/repo:tag@sha256:..`` -> ``registry/repo``."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def _workloads(namespace: str, pod: Any, container: Any, host: Any) -> PodScope | None:
    """Tetragon's workload selection: every selector null selects everything (None);
    otherwise host processes only with ``hostSelector: {}`` (validation allows nothing
    else), pods only when a pod or container selector is given (the other one null
    then matches every pod / container)."""
    if not namespace and pod is None and container is None and host is None:
        return None
    pods = bool(namespace) or pod is not None or container is not None
    return PodScope(namespace,
                    Selector.from_spec(pod) if pod is not None else None,
                    Selector.from_spec(container) if container is not None else None,
                    pods=pods, host=host is not None)


def policy_scope(policy: Any) -> PodScope | None:
    """The scope of a validated policy, or None when it is not pod-scoped."""
    spec = policy.spec
    return _workloads(getattr(policy, "namespace", "") or "",
                      getattr(spec, "pod_selector", None),
                      getattr(spec, "container_selector", None),
                      getattr(spec, "host_selector", None))


def node_selector(policy: Any) -> Selector | None:
    """``spec.nodeSelector`` of a validated policy, or None when it selects every node
    (absent, null or ``{}``: Kubernetes' empty selector matches everything)."""
    sel = getattr(policy.spec, "node_selector", None)
    if sel is None or not (sel.match_labels or sel.match_expressions):
        return None
    return Selector.from_spec(sel)


def describe_selector(sel: Selector) -> str:
    """``a=b, c in (d, e), !f`` (kubectl's label selector syntax)."""
    parts = []
    for r in sel.requirements:
        if r.operator == "Exists":
            parts.append(r.key)
        elif r.operator == "DoesNotExist":
            parts.append(f"!{r.key}")
        elif r.operator == "In" and len(r.values) == 1:
            parts.append(f"{r.key}={r.values[0]}")
        else:
            parts.append(f"{r.key} {r.operator.lower()} ({', '.join(r.values)})")
    return ", ".join(parts)


def workload_scope(wl: Any) -> PodScope | None:
    """A selector's ``matchWorkloads`` (pod, container and host selectors) as a PodScope;
    None when it selects every workload (absent, or every selector null)."""
    if wl is None:
        return None
    return _workloads("", getattr(wl, "pod_selector", None),
                      getattr(wl, "container_selector", None),
                      getattr(wl, "host_selector", None))
