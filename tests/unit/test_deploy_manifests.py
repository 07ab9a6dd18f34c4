"""The DaemonSet manifests and Helm chart: they parse as Kubernetes objects (kubectl
kustomize, offline), ask for capabilities rather than privilege, read-only RBAC limited
to pods and tracing policies, gRPC on a unix socket or TLS, metrics on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "deploy" / "helm" / "vigil"


def objects() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_manifests_render_and_hold_least_privilege() -> None:
    objs = {d["kind"]: d for d in objects()}
    assert set(objs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
    rules = objs["ClusterRole"]["rules"]
    assert rules == [
        {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["cilium.io"], "resources": ["tracingpolicies",
                                                   "tracingpoliciesnamespaced"],
         "verbs": ["get", "list", "watch"]}]
    pod = objs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["serviceAccountName"] == "vigil"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE",
                                              "SYS_RESOURCE", "DAC_READ_SEARCH"}
    args = c["args"]
    assert "--enable-k8s-api" in args and "--procfs=/procRoot" in args
    server = next(a for a in args if a.startswith("--server-address="))
    assert server == "--server-address=unix:///var/run/vigil/vigil.sock"  # no TCP
    assert "--metrics-server=127.0.0.1:2112" in args
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} \
        in c["env"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/procRoot"]["readOnly"] and mounts["/sys/fs/cgroup"]["readOnly"]


def test_helm_chart_values_and_rbac_match_the_manifests() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "vigil"
    assert values["privileged"] is False and "SYS_ADMIN" in values["capabilities"]
    assert values["grpc"]["tcp"]["address"] == "" and values["metrics"]["address"].startswith(
        "127.0.0.1:")
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    body = rbac.split("rules:\n", 1)[1].split("---", 1)[0]
    assert yaml.safe_load(body) == [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["cilium.io"],
         "resources": ["tracingpolicies", "tracingpoliciesnamespaced"],
         "verbs": ["get", "list", "watch"]}]
    ds = (CHART / "templates" / "daemonset.yaml").read_text()
    assert 'fail "grpc.tcp.address needs grpc.tcp.tlsSecret' in ds  # TCP only with TLS


def test_watched_resources_are_tetragons_crds() -> None:
    """The agent watches exactly the resources Tetragon's own CRDs define (read in place,
    beside the repository): group, version, plural, kind and scope; the RBAC grants read
    on those plurals; the CRDs have no status subresource, so nothing is written back."""
    from tests.tetragon_examples import examples_dir
    from vigil.k8s import agent
    crds_dir = examples_dir().parent / "tetragon-crds"
    crds = {}
    for f in ("cilium.io_tracingpolicies.yaml", "cilium.io_tracingpoliciesnamespaced.yaml"):
        (crd,) = [d for d in yaml.safe_load_all((crds_dir / f).read_text()) if d]
        crds[crd["spec"]["names"]["plural"]] = crd
    assert set(crds) == {"tracingpolicies", "tracingpoliciesnamespaced"}
    kinds = {"tracingpolicies": ("TracingPolicy", "Cluster"),
             "tracingpoliciesnamespaced": ("TracingPolicyNamespaced", "Namespaced")}
    for plural, crd in crds.items():
        assert crd["spec"]["group"] == agent.GROUP
        served = [v for v in crd["spec"]["versions"] if v["name"] == agent.VERSION]
        assert served and served[0]["served"], plural
        assert "status" not in served[0].get("subresources", {})
        assert (crd["spec"]["names"]["kind"], crd["spec"]["scope"]) == kinds[plural]
    assert agent.POLICY_RESOURCES == {p: k for p, (k, _scope) in kinds.items()}
    rbac = [d for d in yaml.safe_load_all((KUBE / "rbac.yaml").read_text())
            if d and d["kind"] == "ClusterRole"]
    rules = {g: r for r in rbac[0]["rules"] for g in r["apiGroups"]}
    assert sorted(rules[agent.GROUP]["resources"]) == sorted(crds)
    assert rules[agent.GROUP]["verbs"] == ["get", "list", "watch"]
