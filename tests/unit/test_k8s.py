"""Kubernetes client side against the stand-in API server (tests/k8s/standin.py): the
official client's list/watch with resourceVersion, chunked lists, bookmarks, 410 Gone,
401/403, broken and malformed watches; pod metadata and workloads; policy CRs."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from tests.k8s.client import kubeconfig, node, pod, self_signed, wait_for
from tests.k8s.standin import NODES, PODS, TP, TPN, StandinApiServer
from vigil.k8s.agent import K8sConfig, api_client
from vigil.k8s.informer import Informer
from vigil.k8s.nodes import NodeWatcher
from vigil.k8s.pods import PodWatcher, parse_pod, workload_of
from vigil.k8s.policies import PolicyWatcher
from vigil.policy.scope import (PodScope, Selector, describe_selector, image_repo, node_selector,
                                policy_scope, workload_scope)

CID = "a" * 64


@pytest.fixture
def server():
    s = StandinApiServer().start()
    yield s
    s.stop()


@pytest.fixture
def api(server, tmp_path):
    a = api_client(K8sConfig(kubeconfig=str(kubeconfig(tmp_path / "kc", server.url,
                                                       server.token))))
    yield a
    a.close()


def pod_informer(api, watcher, **kw):
    from kubernetes import client
    return Informer("pods", client.CoreV1Api(api).list_pod_for_all_namespaces,
                    watcher.on_sync, watcher.on_event,
                    kwargs={"field_selector": "spec.nodeName=node-a"},
                    backoff=0.05, max_backoff=0.2, **kw)


def run(inf):
    inf.start()
    return inf


def test_list_in_chunks_then_watch_with_bookmarks(server, api):
    for i in range(5):
        server.put(PODS, pod(f"p{i}", labels={"app": "web"}))
    server.put(PODS, pod("elsewhere", node="node-b"))
    w = PodWatcher()
    inf = run(pod_informer(api, w, page=2))
    try:
        wait_for(inf.synced.is_set, what="list")
        assert len(w.pods()) == 5 and w.pod("default", "elsewhere") is None
        assert sum("continue=" in r for r in server.requests) == 2  # 3 chunks of 2
        server.put(PODS, pod("p5", containers=[("c", "nginx:1", f"containerd://{CID}")]))
        wait_for(lambda: w.pod("default", "p5"), what="watched pod")
        assert w.pods()[-1].containers[0].id == CID
        server.delete(PODS, "default", "p0")
        wait_for(lambda: w.pod("default", "p0") is None, what="delete")
        rv = inf.resource_version
        server.put(TP, tp("elsewhere"))  # another resource moves the version on
        wait_for(lambda: int(inf.resource_version) > int(rv), what="a bookmark")
        assert not inf.errors, inf.errors
    finally:
        inf.stop()


def test_410_gone_relists(server, api):
    server.put(PODS, pod("p1"))
    w = PodWatcher()
    inf = run(pod_informer(api, w, watch_timeout=1))
    try:
        wait_for(inf.synced.is_set)
        server.bookmark_interval = 3600  # no bookmark moves the watcher past compaction
        server.compact()
        server.put(PODS, pod("p2"))  # after compaction: only a re-list can show it
        wait_for(lambda: inf.lists >= 2, what="re-list after 410")
        wait_for(lambda: w.pod("default", "p2"))
        assert inf.errors["gone"] >= 1
    finally:
        inf.stop()


@pytest.mark.parametrize("fault,reason", [("token", "unauthorized"), ("path", "forbidden")])
def test_401_403_counted_retried_then_recover(server, api, fault, reason, caplog):
    server.put(PODS, pod("p1"))
    good = server.token
    if fault == "token":
        server.token = "other"
    else:
        server.forbidden.add(PODS)
    w = PodWatcher()
    inf = run(pod_informer(api, w))
    try:
        with caplog.at_level(logging.WARNING, logger="vigil.k8s"):
            wait_for(lambda: inf.errors[reason] >= 3, what=reason)
        assert not inf.synced.is_set()
        assert sum(reason in r.getMessage() for r in caplog.records) == 1  # logged once
        server.token = good
        server.forbidden.clear()
        wait_for(lambda: w.pod("default", "p1"), what="recovery")
    finally:
        inf.stop()


def test_watch_cut_mid_event_and_garbage_resume(server, api):
    w = PodWatcher()
    inf = run(pod_informer(api, w))
    try:
        wait_for(inf.synced.is_set)
        server.cut_next_watch = True
        server.put(PODS, pod("cut"))
        wait_for(lambda: w.pod("default", "cut"), what="the cut event, resent")
        server.garbage_next_watch = True
        server.raw_event(PODS, '{"type": "ADDED", "object": 5}')
        server.put(PODS, pod("after"))
        wait_for(lambda: w.pod("default", "after"), what="events after garbage")
        assert inf.errors["malformed"] >= 2
        assert inf.errors["watch_failed"] + inf.errors["malformed"] >= 3
    finally:
        inf.stop()


def test_malformed_and_oversized_pods_counted(server, api):
    w = PodWatcher()
    inf = run(pod_informer(api, w, max_object_bytes=64 << 10))
    try:
        wait_for(inf.synced.is_set)
        bad = pod("nolabels")
        bad["metadata"]["labels"] = ["not", "a", "map"]
        server.put(PODS, bad)
        server.put(PODS, {"metadata": {"name": "nons", "namespace": ""},
                          "spec": {"nodeName": "node-a"}})
        server.put(PODS, pod("huge", labels={f"k{i}": "v" * 60 for i in range(2000)}))
        server.put(PODS, pod("fine"))
        wait_for(lambda: w.pod("default", "fine"), what="a good pod after bad ones")
        assert w.pod("default", "nolabels").labels == {}
        assert w.errors["malformed_labels"] == 1 and w.errors["malformed"] == 1
        assert inf.errors["oversized"] == 1 and w.pod("default", "huge") is None
    finally:
        inf.stop()


def test_api_server_gone_then_back(server, api, tmp_path):
    w = PodWatcher()
    inf = run(pod_informer(api, w))
    try:
        wait_for(inf.synced.is_set)
        server.stop()
        wait_for(lambda: inf.errors["unreachable"] + inf.errors["watch_failed"] >= 2,
                 what="errors while the server is gone")
        assert inf._thread.is_alive()
    finally:
        inf.stop(timeout=5)
    assert inf._thread is None


def test_labels_bounded():
    errs: Counter[str] = Counter()
    info = parse_pod(pod("p", labels={f"k{i}": "v" for i in range(300)} | {"big": "x" * 2000}),
                     errs)
    assert len(info.meta.labels) == 256 and errs["oversized_labels"] == 45


@pytest.mark.parametrize("meta,labels,want", [
    ({"name": "web-7d9f-x1", "generateName": "web-7d9f-", "ownerReferences": [
        {"kind": "ReplicaSet", "name": "web-7d9f", "controller": True}]},
     {"pod-template-hash": "7d9f"}, ("web", "Deployment")),
    ({"name": "rs-x", "generateName": "rs-", "ownerReferences": [
        {"kind": "ReplicaSet", "name": "rs", "controller": True}]}, {}, ("rs", "ReplicaSet")),
    ({"name": "db-0", "generateName": "db-", "ownerReferences": [
        {"kind": "StatefulSet", "name": "db", "controller": True}]}, {}, ("db", "StatefulSet")),
    ({"name": "b-28000000-x", "generateName": "b-28000000-", "ownerReferences": [
        {"kind": "Job", "name": "backup-28000000", "controller": True}]}, {},
     ("backup", "CronJob")),
    ({"name": "j-x", "generateName": "j-", "ownerReferences": [
        {"kind": "Job", "name": "j", "controller": True}]}, {}, ("j", "Job")),
    ({"name": "x", "generateName": "x-", "ownerReferences": [
        {"kind": "ReplicationController", "name": "rc-1", "controller": True}]},
     {"deploymentconfig": "app"}, ("app", "DeploymentConfig")),
    ({"name": "bare"}, {}, ("bare", "")),
    ({"name": "ds-x", "generateName": "ds-", "ownerReferences": [
        {"kind": "DaemonSet", "name": "ds", "controller": False}]}, {}, ("ds-x", "")),
])
def test_workload_as_tetragon(meta, labels, want):
    assert workload_of(meta, labels) == want


def test_label_selectors():
    sel = Selector.from_spec({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "env", "operator": "NotIn", "values": ["prod"]},
        {"key": "team", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist"}]})
    base = {"app": "web", "tier": "a", "team": "x"}
    assert sel.matches(base)
    assert sel.matches(base | {"env": "dev"})
    assert not sel.matches(base | {"env": "prod"})
    assert not sel.matches(base | {"legacy": "1"})
    assert not sel.matches({**base, "tier": "c"})
    assert not sel.matches({k: v for k, v in base.items() if k != "team"})
    scope = PodScope("", Selector.from_spec({"matchLabels": {
        "k8s:io.kubernetes.pod.namespace": "ns1"}}), None)
    assert scope.matches_pod("ns1", {}) and not scope.matches_pod("ns2", {})
    assert PodScope("ns1").matches_pod("ns1", {}) and not PodScope("ns1").matches_pod("x", {})
    assert image_repo("reg:5000/a/b:1.2@sha256:00") == "reg:5000/a/b"
    c = PodScope(container_selector=Selector.from_spec({"matchLabels": {"name": "app"}}))
    assert c.matches_container("app", "x") and not c.matches_container("side", "x")


def test_policy_scope_of_documents():
    from vigil.policy.loader import load_policy
    nsd = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicyNamespaced\n"
                      "metadata: {name: p, namespace: team}\nspec:\n  tracepoints: []\n")
    assert policy_scope(nsd) == PodScope("team")
    cw = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: p}"
                     "\nspec:\n  podSelector: {matchLabels: {}}\n")
    assert policy_scope(cw) == PodScope("", Selector(), None)
    plain = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                        "metadata: {name: p}\nspec: {}\n")
    assert policy_scope(plain) is None
    host = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       "metadata: {name: p}\nspec:\n  hostSelector: {}\n")
    assert policy_scope(host) == PodScope(pods=False, host=True)  # host processes only
    assert not policy_scope(host).matches_pod("ns", {})
    both = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       "metadata: {name: p}\nspec:\n  hostSelector: {}\n"
                       "  containerSelector: {matchLabels: {name: main}}\n")
    assert policy_scope(both) == PodScope(
        "", None, Selector.from_spec({"matchLabels": {"name": "main"}}), host=True)


class FakeManager:
    """Records add/delete after the real loader's validation (no kernel)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], str] = {}
        self.adds = 0

    verifier: Any = None  # signed-policies mode: checked by the watcher

    def add(self, text: str, *, source: str, signature_checked: bool = False) -> Any:
        assert signature_checked == (self.verifier is not None)
        import yaml

        from vigil.policy.loader import load_policy
        assert source == "k8s"
        load_policy(text, source=source)  # the real validation: PolicyError when invalid
        d = yaml.safe_load(text)
        key = (d["metadata"]["name"], d["metadata"].get("namespace", ""))
        if key in self.docs:
            raise KeyError("exists")
        self.docs[key] = text
        self.adds += 1
        return None

    def delete(self, name: str, namespace: str = "") -> None:
        del self.docs[(name, namespace)]


def tp(name: str, ns: str = "", spec: dict | None = None) -> dict:
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicyNamespaced" if ns else "TracingPolicy", "metadata": meta,
            "spec": spec or {"tracepoints": [{"subsystem": "syscalls",
                                              "event": "sys_enter_getppid"}]}}


def test_policy_crs_loaded_changed_deleted_relisted(server, api):
    from kubernetes import client
    mgr = FakeManager()
    custom = client.CustomObjectsApi(api)
    tpw, tpnw = PolicyWatcher(mgr, "TracingPolicy"), PolicyWatcher(mgr, "TracingPolicyNamespaced")
    server.put(TP, tp("one"))
    infs = [Informer(plural, custom.list_cluster_custom_object, w.on_sync, w.on_event,
                     kwargs={"group": "cilium.io", "version": "v1alpha1", "plural": plural},
                     backoff=0.05, watch_timeout=1)
            for plural, w in (("tracingpolicies", tpw), ("tracingpoliciesnamespaced", tpnw))]
    for i in infs:
        i.start()
    try:
        wait_for(lambda: ("one", "") in mgr.docs, what="listed policy")
        server.put(TPN, tp("scoped", "team"))
        wait_for(lambda: ("scoped", "team") in mgr.docs, what="namespaced policy")
        server.put(TP, tp("bad", spec={"refuse-me": 1}))
        server.put(TP, tp("notaspec", spec="a string"))
        server.put(TP, {"apiVersion": "cilium.io/v1alpha1", "kind": "TracingPolicy",
                        "metadata": {"name": "huge"},
                        "spec": {"lists": [{"name": f"l{i}", "values": ["/x" * 100] * 100}
                                           for i in range(60)]}})
        server.put(TP, tp("two"))
        wait_for(lambda: ("two", "") in mgr.docs, what="a policy after refused ones")
        assert tpw.errors["refused"] == 2 and tpw.errors["oversized"] == 1
        adds = mgr.adds
        obj = tp("one")
        obj["metadata"]["labels"] = {"x": "y"}  # same spec: same generation
        server.put(TP, obj)
        server.put(TP, tp("one", spec={"tracepoints": [{"subsystem": "syscalls",
                                                        "event": "sys_enter_getpid"}]}))
        wait_for(lambda: "sys_enter_getpid" in mgr.docs.get(("one", ""), ""), what="update")
        assert mgr.adds == adds + 1
        server.delete(TPN, "team", "scoped")
        wait_for(lambda: ("scoped", "team") not in mgr.docs, what="delete")
        server.bookmark_interval = 3600
        server.compact()
        server.delete(TP, "", "two")  # missed by the watch: the re-list removes it
        wait_for(lambda: ("two", "") not in mgr.docs, what="re-list reconcile")
    finally:
        for i in infs:
            i.stop()
    tpw.close()
    assert ("one", "") not in mgr.docs


class RecordingFilter:
    def __init__(self) -> None:
        self.sets: dict[int, set[int]] = {}
        self.host_id = 0
        self.hosts: set[int] = set()

    def mark_host(self, pid: int) -> None:
        self.hosts.add(pid)

    def set(self, pid: int, cgids: Any) -> None:
        self.sets[pid] = set(cgids)

    def release(self, pid: int) -> None:
        self.sets.pop(pid, None)


def test_scopes_follow_pods_and_cgroups(tmp_path):
    """Container ids -> cgroup dirs (runtime naming, nested children) -> per-policy sets."""
    from types import SimpleNamespace

    from vigil.k8s.scopes import ScopeManager
    a, b, late = "a" * 64, "b" * 64, "c" * 64
    (tmp_path / "kubepods" / f"cri-containerd-{a}.scope" / "nested").mkdir(parents=True)
    (tmp_path / "machine" / f"libpod-{b}").mkdir(parents=True)
    ino = lambda p: (tmp_path / p).stat().st_ino  # noqa: E731
    w = PodWatcher()
    w.on_sync([pod("web", ns="team", labels={"app": "web"},
                   containers=[("app", "nginx:1", f"containerd://{a}"),
                               ("side", "envoy:2", "")]),
               pod("db", ns="team", labels={"app": "db"},
                   containers=[("db", "postgres:16", f"cri-o://{b}")])])
    pf = RecordingFilter()
    sm = ScopeManager(pf, w, str(tmp_path))
    web = sm.register(SimpleNamespace(scope=PodScope("team", Selector.from_spec(
        {"matchLabels": {"app": "web"}}), None)))
    every = sm.register(SimpleNamespace(scope=PodScope("", Selector(), None)))
    only_db = sm.register(SimpleNamespace(scope=PodScope("", None, Selector.from_spec(
        {"matchExpressions": [{"key": "repo", "operator": "In", "values": ["postgres"]}]}))))
    cg_a = {ino(f"kubepods/cri-containerd-{a}.scope"),
            ino(f"kubepods/cri-containerd-{a}.scope/nested")}
    assert pf.sets[web] == cg_a
    assert pf.sets[every] == cg_a | {ino(f"machine/libpod-{b}")}
    assert pf.sets[only_db] == {ino(f"machine/libpod-{b}")}
    # a container starting later, a pod relabelled, a pod gone
    (tmp_path / "kubepods" / late).mkdir()
    w.on_event("MODIFIED", pod("web", ns="team", labels={"app": "web"},
                               containers=[("app", "nginx:1", f"containerd://{a}"),
                                           ("side", "envoy:2", f"containerd://{late}")]))
    w.on_event("MODIFIED", pod("db", ns="team", labels={"app": "web"},
                               containers=[("db", "postgres:16", f"cri-o://{b}")]))
    sm.refresh()
    assert pf.sets[web] == cg_a | {ino(f"kubepods/{late}"), ino(f"machine/libpod-{b}")}
    w.on_event("DELETED", pod("db", ns="team"))
    sm.refresh()
    assert pf.sets[only_db] == set()
    sm.release(web)
    assert web not in pf.sets
    # hostSelector {}: the scope is marked as taking host processes, and the filter gets
    # the set of every pod's cgroups (a host process is in none), dropped with the last
    host_only = sm.register_scope(PodScope(pods=False, host=True))
    assert pf.sets[host_only] == set() and pf.hosts == {host_only}
    assert pf.host_id and pf.sets[pf.host_id] == pf.sets[every]
    all_pods = pf.host_id
    sm.release(host_only)
    assert pf.host_id == 0 and all_pods not in pf.sets and all_pods not in sm._scopes


def test_https_with_the_cluster_ca_and_a_wrong_ca(tmp_path):
    """The client verifies the API server's certificate against the kubeconfig's CA."""
    cert, key = self_signed(tmp_path)
    other, _ = self_signed(tmp_path, "other")
    server = StandinApiServer(tls=(cert, key)).start()
    try:
        server.put(PODS, pod("tls-pod"))
        for ca, ok in ((cert, True), (other, False)):
            a = api_client(K8sConfig(kubeconfig=str(kubeconfig(
                tmp_path / f"kc-{ok}", server.url, server.token, ca=ca))))
            w = PodWatcher()
            inf = run(pod_informer(a, w))
            try:
                if ok:
                    wait_for(lambda w=w: w.pod("default", "tls-pod"), what="a pod over HTTPS")
                else:
                    wait_for(lambda inf=inf: inf.errors["tls"] >= 2, what="TLS refusals")
                    assert w.pod("default", "tls-pod") is None and not inf.synced.is_set()
            finally:
                inf.stop()
                a.close()
    finally:
        server.stop()


def test_signed_policy_resources(server, api, tmp_path):
    """In signed-policies mode a TracingPolicy object loads only with a valid signature
    of what the cluster stores, in its vigil.dev/policy-signature annotation: unsigned
    and altered objects are refused and counted; annotating one later loads it."""
    import yaml
    from click.testing import CliRunner
    from kubernetes import client

    from tests.unit.test_policy_signing import keypair
    from vigil.cli import cli
    from vigil.policy import signing

    priv, pub, _raw = keypair(tmp_path)
    mgr = FakeManager()
    mgr.verifier = signing.PolicyVerifier.from_file(str(pub))
    tpw = PolicyWatcher(mgr, "TracingPolicy")
    inf = Informer("tracingpolicies", client.CustomObjectsApi(api).list_cluster_custom_object,
                   tpw.on_sync, tpw.on_event, backoff=0.05, watch_timeout=1,
                   kwargs={"group": "cilium.io", "version": "v1alpha1",
                           "plural": "tracingpolicies"})

    def signed(obj: dict) -> dict:
        """`kubectl get -o yaml | vigil tracingpolicy sign --k8s --key K -`, annotated."""
        r = CliRunner().invoke(cli, ["tracingpolicy", "sign", "--k8s", "--key", str(priv),
                                     "-"], input=yaml.safe_dump(obj))
        assert r.exit_code == 0, r.output
        out = dict(obj, metadata=dict(obj["metadata"]))
        out["metadata"]["annotations"] = {signing.K8S_ANNOTATION: r.output.strip()}
        return out

    inf.start()
    try:
        server.put(TP, tp("unsigned"))
        wait_for(lambda: tpw.errors["unsigned"] == 1, what="an unsigned policy refused")
        server.put(TP, signed(tp("unsigned")))  # annotated afterwards: now it loads
        wait_for(lambda: ("unsigned", "") in mgr.docs, what="the annotated policy")
        good = signed(tp("good"))
        server.put(TP, good)
        wait_for(lambda: ("good", "") in mgr.docs, what="a signed policy")
        # the spec changed under the old signature; a signature replayed on another name
        altered = dict(good, spec={"tracepoints": [{"subsystem": "syscalls",
                                                    "event": "sys_enter_getpid"}]})
        server.put(TP, altered)
        wait_for(lambda: ("good", "") not in mgr.docs and tpw.errors["unsigned"] == 2,
                 what="the altered policy unloaded and refused")
        server.put(TP, dict(good, metadata=dict(good["metadata"], name="replayed")))
        wait_for(lambda: tpw.errors["unsigned"] == 3, what="a replayed signature refused")
        assert ("replayed", "") not in mgr.docs
    finally:
        inf.stop()
    tpw.close()


def _with_nodes(sel: str) -> Any:
    from vigil.policy.loader import load_policy
    return load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                       f"metadata: {{name: p}}\nspec:\n  nodeSelector: {sel}\n")


def test_node_selector_matcher():
    """spec.nodeSelector: absent, null or {} select every node; else every requirement."""
    from vigil.policy.loader import load_policy
    plain = load_policy("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
                        "metadata: {name: p}\nspec: {}\n")
    assert node_selector(plain) is None
    assert node_selector(_with_nodes("null")) is None
    assert node_selector(_with_nodes("{}")) is None
    assert node_selector(_with_nodes("{matchLabels: {}, matchExpressions: []}")) is None
    sel = node_selector(_with_nodes(
        "{matchLabels: {kubernetes.io/arch: amd64}, matchExpressions: ["
        "{key: pool, operator: In, values: [gpu, tpu]}, {key: canary, operator: Exists},"
        "{key: tainted, operator: DoesNotExist}, {key: zone, operator: NotIn, values: [b]}]}"))
    assert sel is not None
    assert describe_selector(sel) == ("kubernetes.io/arch=amd64, pool in (gpu, tpu), canary, "
                                      "!tainted, zone notin (b)")
    good = {"kubernetes.io/arch": "amd64", "pool": "gpu", "canary": ""}
    assert sel.matches(good)
    assert sel.matches(good | {"zone": "a"})            # NotIn: another value
    assert not sel.matches(good | {"zone": "b"})
    assert not sel.matches(good | {"tainted": "yes"})   # DoesNotExist
    assert not sel.matches({k: v for k, v in good.items() if k != "canary"})  # Exists
    assert not sel.matches(good | {"pool": "cpu"})      # In
    assert not sel.matches(good | {"kubernetes.io/arch": "arm64"})  # matchLabels
    assert not sel.matches({})                          # no labels known: no match
    only_absent = node_selector(_with_nodes(
        "{matchExpressions: [{key: pool, operator: DoesNotExist}]}"))
    assert only_absent is not None and only_absent.matches({})


class RecordingManager:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str] | None, str]] = []

    def set_node_labels(self, labels: dict[str, str] | None, about: str = "") -> None:
        self.calls.append((labels, about))


def test_node_watcher_follows_label_changes_only(server, api):
    """The node's labels from list + watch (metadata.name field selector); status-only
    updates change nothing; a missing or deleted node has no labels."""
    from kubernetes import client
    core = client.CoreV1Api(api)
    server.put(NODES, node("node-a", {"pool": "gpu"}, phase="Running"))
    server.put(NODES, node("node-b", {"pool": "cpu"}))
    mgr = RecordingManager()
    w = NodeWatcher(mgr, "node-a")
    inf = run(Informer("nodes", core.list_node, w.on_sync, w.on_event,
                       kwargs={"field_selector": "metadata.name=node-a"}, backoff=0.05))
    try:
        wait_for(lambda: mgr.calls, what="the node listed")
        assert mgr.calls == [({"pool": "gpu"}, "node node-a")]
        server.put(NODES, node("node-a", {"pool": "gpu"}, heartbeat="1"))  # status only
        server.put(NODES, node("node-b", {"pool": "gpu"}))                # another node
        server.put(NODES, node("node-a", {"pool": "gpu", "canary": "yes"}))
        wait_for(lambda: len(mgr.calls) == 2, what="the label change")
        assert mgr.calls[1] == ({"pool": "gpu", "canary": "yes"}, "node node-a")
        assert core.read_node("node-a").metadata.labels == {"pool": "gpu", "canary": "yes"}
        server.delete(NODES, "", "node-a")
        wait_for(lambda: len(mgr.calls) == 3, what="the node deleted")
        assert mgr.calls[2] == ({}, "node node-a") and w.labels == {}
        assert len(mgr.calls) == 3
    finally:
        inf.stop()
    absent = RecordingManager()
    w2 = NodeWatcher(absent, "node-x")
    w2.on_sync([node("node-a", {"pool": "gpu"})])
    assert absent.calls == [({}, "node node-x")] and w2.errors["node_not_found"] == 1
    w2.on_event("MODIFIED", {"metadata": {"name": "node-x", "labels": ["not", "a map"]}})
    assert w2.errors["malformed_labels"] == 1 and len(absent.calls) == 1


def test_match_workloads_compiles_to_selector_scopes():
    """matchWorkloads (an object, as in Tetragon's CRD) -> one PodScope per selector that
    has one; null selectors in it select every workload; hostSelector {} adds host
    processes, alone it selects only them."""
    from vigil.policy.compiler import KernelView, compile_policy
    from vigil.policy.loader import load_policy

    def doc(wl: str) -> Any:
        return load_policy(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: p}\n"
            "spec:\n  tracepoints:\n  - {subsystem: syscalls, event: sys_enter_getppid,\n"
            f"     selectors: [{{matchPIDs: [{{operator: In, values: [1]}}]}}, {wl}]}}\n")
    view = KernelView(formats=lambda s, e: __import__("vigil.policy.tracefs", fromlist=["x"])
                      .stand_in_format(s, e))
    plan = compile_policy(doc("{matchWorkloads: {podSelector: {matchLabels: {app: web}},"
                              " containerSelector: {matchLabels: {name: main}}}}"), view)
    (hook,) = plan.hooks
    assert hook.workloads == ((1, PodScope("", Selector.from_spec({"matchLabels": {"app": "web"}}),
                                           Selector.from_spec({"matchLabels": {"name": "main"}}))),)
    assert any("selectors[1].matchWorkloads" in n for n in plan.notes)
    assert plan.scope is None  # the policy itself is not pod-scoped
    assert compile_policy(doc("{matchWorkloads: {}}"), view).hooks[0].workloads == ()
    assert workload_scope(None) is None
    (host,) = compile_policy(doc("{matchWorkloads: {hostSelector: {}}}"), view).hooks
    assert host.workloads == ((1, PodScope(pods=False, host=True)),)
    both = compile_policy(doc("{matchWorkloads: {podSelector: {matchLabels: {app: web}},"
                              " hostSelector: {}}}"), view)
    assert both.hooks[0].workloads == ((1, PodScope(
        "", Selector.from_spec({"matchLabels": {"app": "web"}}), None, host=True)),)
    assert any("pods: podSelector and host processes" in n for n in both.notes)
    from vigil.errors import PolicyError
    with pytest.raises(PolicyError) as bad:  # the CRD allows only null or {}
        doc("{matchWorkloads: {hostSelector: {matchLabels: {a: b}}}}")
    assert "hostSelector can only be null" in str(bad.value.diagnostics)


def test_policy_filter_config_carries_the_host_bits(tmp_path):
    """struct vg_pf_cfg of a hook: the policy's and each selector's filter id, and for
    those taking host processes their bit in host_mask with the id of every pod's set."""
    import struct

    from vigil.abi._generated import VG_PF_CFG
    from vigil.sensors.policyfilter import PolicyFilter
    (tmp_path / "cgroups").write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
                                      "cpuset\t0\t1\t1\nmemory\t0\t1\t1\n")
    pf = PolicyFilter(str(tmp_path))
    assert (pf.subsys, pf.controller) == (-1, "")  # cgroup v2
    fmt = struct.Struct("<Ii5III")
    assert fmt.size == VG_PF_CFG.size
    assert fmt.unpack(pf.config(0)) == (0, -1, 0, 0, 0, 0, 0, 0, 0)
    pf.host_id = 9
    pf.mark_host(4)
    pf.mark_host(6)
    assert fmt.unpack(pf.config(6, [(1, 4), (3, 5)])) == (6, -1, 0, 4, 0, 5, 0, 9,
                                                        1 << 1 | 1 << 5)
    assert fmt.unpack(pf.config(0, [(3, 5)])) == (0, -1, 0, 0, 0, 5, 0, 0, 0)
    pf.release(4)
    assert not pf.is_host(4) and pf.is_host(6)
