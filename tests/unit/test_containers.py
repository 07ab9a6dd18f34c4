"""Container metadata as pure logic: hook notices, pod blocks, cgroup choice, the hook's
request, and the committed CRI modules."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vigil.api.tetragon import tetragon_pb2
from vigil.containers import cgroups, ocihook
from vigil.containers.model import ContainerMeta, PodMeta, PodSource
from vigil.containers.tracker import (MAX_FIELD, ContainerTracker, HookError,
                                      container_id_of, meta_from_hook, pod_labels)
from vigil.events.encode import process_dict
from vigil.process.model import ProcessInfo

ROOT = Path(__file__).resolve().parents[2]
CID = "9635b269f7a319f11e507ad1bd1768713572f29c8e3bcca57152936f4398776f"
SID = "a3db04ee3f61143cbd477362c8fa44c03795358e3446c70d1d1dc400abbacea3"
CRI_ANN = {"io.kubernetes.cri.container-type": "container",
           "io.kubernetes.cri.container-name": "server",
           "io.kubernetes.cri.sandbox-name": "web-1",
           "io.kubernetes.cri.sandbox-namespace": "shop",
           "io.kubernetes.cri.sandbox-uid": "u-1",
           "io.kubernetes.cri.sandbox-id": SID,
           "io.kubernetes.cri.image-name": "docker.io/library/busybox:1"}


def notice(**kw: Any) -> Any:
    base = dict(containerID=CID, cgroupsPath=f"/kubepods/pod1/{CID}", annotations=CRI_ANN)
    return tetragon_pb2.CreateContainer(**{**base, **kw})


def proc(docker: str = CID[:31], pid: int = 4242, ns_pid: int = 1) -> ProcessInfo:
    return ProcessInfo(exec_id="x", pid=pid, tid=pid, ktime=1, start_time_ns=1_700_000_000_5 * 10**8,
                       binary="/bin/sh", docker=docker, ns_pid=ns_pid)


class FakeCri:
    """Pure-logic stand-in for the CRI client (the e2e tests use real containerd)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def container_image_ref(self, container_id: str) -> str:
        self.calls += 1
        if self.fail:
            raise OSError("connection refused")
        return "sha256:abc"

    def sandbox_labels(self, sandbox_id: str) -> dict[str, str]:
        self.calls += 1
        if self.fail:
            raise OSError("connection refused")
        return {"app": "web", "io.kubernetes.pod.name": "web-1",
                "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": "u-1"}

    def containers(self) -> list[ContainerMeta]:
        return []


def test_meta_from_containerd_annotations() -> None:
    m = meta_from_hook(notice())
    assert (m.id, m.name, m.runtime, m.pod_namespace, m.pod_name, m.pod_uid, m.sandbox_id,
            m.image_name, m.sandbox) == (CID, "server", "containerd", "shop", "web-1", "u-1",
                                         SID, "docker.io/library/busybox:1", False)
    sandbox = meta_from_hook(notice(annotations={**CRI_ANN,
                                                 "io.kubernetes.cri.container-type": "sandbox"}))
    assert sandbox.sandbox


def test_meta_explicit_fields_win_and_podman_is_named() -> None:
    m = meta_from_hook(notice(containerName="n", podName="p", podNamespace="ns"))
    assert (m.name, m.pod_name, m.pod_namespace) == ("n", "p", "ns")
    pm = meta_from_hook(tetragon_pb2.CreateContainer(
        containerID=CID, cgroupsPath=f"/libpod_parent/libpod-{CID}",
        annotations={"io.container.manager": "libpod"}))
    assert pm.runtime == "podman" and not pm.pod_name


def test_meta_id_from_cgroups_path_and_errors() -> None:
    assert meta_from_hook(notice(containerID="short")).id == CID
    with pytest.raises(HookError, match="containerID"):
        meta_from_hook(notice(containerID="short", cgroupsPath="/x"))
    with pytest.raises(HookError, match="annotations"):
        meta_from_hook(notice(annotations={str(i): "" for i in range(5000)}))
    with pytest.raises(HookError, match="io.kubernetes.cri.container-name"):
        meta_from_hook(notice(annotations={**CRI_ANN, "io.kubernetes.cri.container-name":
                                           "x" * (MAX_FIELD + 1)}))
    assert container_id_of(f"system.slice:cri-containerd:{CID}") == CID
    assert container_id_of("/user.slice") == ""


def test_pod_labels_drop_the_kubelets() -> None:
    assert pod_labels(FakeCri().sandbox_labels(SID)) == {"app": "web"}
    with pytest.raises(HookError, match="pod labels"):
        pod_labels({str(i): "v" for i in range(1000)})


def test_pod_block_in_tetragon_order() -> None:
    t = ContainerTracker(cri=FakeCri())
    t.on_create_container(notice())
    p = proc()
    pod = t.pod_block(p)
    assert pod == {"namespace": "shop", "name": "web-1",
                   "container": {"id": f"containerd://{CID}", "name": "server",
                                 "image": {"id": "sha256:abc",
                                           "name": "docker.io/library/busybox:1"},
                                 "start_time": "2023-11-14T22:13:20Z", "pid": 1},
                   "pod_labels": {"app": "web"}}
    out = process_dict(p, pod=pod)
    keys = list(out)
    assert keys.index("auid") < keys.index("pod") < keys.index("docker")


def test_no_pod_block_outside_pods() -> None:
    t = ContainerTracker()
    t.on_create_container(notice(annotations={**CRI_ANN,
                                              "io.kubernetes.cri.container-type": "sandbox"}))
    assert t.pod_block(proc()) is None            # the pause container
    assert t.pod_block(proc(docker="")) is None   # a host process
    assert t.pod_block(proc(docker="f" * 31)) is None  # an unknown container


def test_cri_failure_is_counted_and_the_container_kept() -> None:
    t = ContainerTracker(cri=FakeCri(fail=True))
    t.on_create_container(notice())
    assert t.errors == {"cri": 2}
    pod = t.pod_block(proc())
    assert pod is not None and "pod_labels" not in pod and pod["container"]["name"] == "server"


def test_malformed_notice_is_counted_and_raised() -> None:
    t = ContainerTracker()
    with pytest.raises(HookError):
        t.on_create_container(notice(containerID="", cgroupsPath=""))
    assert t.errors == {"hook": 1} and len(t) == 0


class Pods:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def pod(self, namespace: str, name: str) -> PodMeta | None:
        if self.fail:
            raise RuntimeError("watch broken")
        return PodMeta(namespace, name, "u-1", {"app": "api"}, "web", "Deployment")


def test_pod_source_gives_labels_and_workload() -> None:
    assert isinstance(Pods(), PodSource)
    t = ContainerTracker(cri=FakeCri(), pods=Pods())
    t.on_create_container(notice())
    pod = t.pod_block(proc())
    assert pod is not None
    assert (pod["pod_labels"], pod["workload"], pod["workload_kind"]) == (
        {"app": "api"}, "web", "Deployment")
    t.pods = Pods(fail=True)
    pod = t.pod_block(proc())
    assert pod is not None and pod["pod_labels"] == {"app": "web"}
    assert t.errors == {"pod_source": 1}


def test_capacity_bounds_the_registry() -> None:
    t = ContainerTracker(capacity=2)
    for i in range(3):
        t.add(ContainerMeta(id=f"{i:x}" * 64))
    assert len(t) == 2 and t.evicted == 1 and t.get("0" * 31) is None


PROC_CGROUPS_HYBRID = """#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	2	1	1
blkio	7	1	1
memory	4	52	1
devices	5	1	1
freezer	6	1	1
net_cls	0	1	1
perf_event	0	1	1
net_prio	0	1	1
hugetlb	0	1	1
pids	8	1	1
"""


def test_tracked_cgroup_subsystem() -> None:
    assert cgroups.tracked_subsys(PROC_CGROUPS_HYBRID) == 5  # memory is subsystem 4
    no_memory = PROC_CGROUPS_HYBRID.replace("memory\t4", "memory\t0")
    assert cgroups.tracked_subsys(no_memory) == 12           # pids is subsystem 11
    v2 = "\n".join(line.replace(line.split("\t")[1], "0", 1) if "\t" in line else line
                   for line in PROC_CGROUPS_HYBRID.splitlines()[1:])
    assert cgroups.tracked_subsys(v2) == 0


def test_hook_builds_the_request(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "root": {"path": "rootfs"}, "annotations": CRI_ANN,
        "linux": {"cgroupsPath": f"/kubepods/pod1/{CID}"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc",
                    "options": ["nosuid"]}]}))
    state = ocihook.read_state(json.dumps({"ociVersion": "1.0.2", "id": CID, "pid": 7,
                                           "bundle": str(tmp_path)}).encode())
    req = ocihook.create_container_request(state, ocihook.read_config(str(tmp_path)))
    c = req.createContainer
    assert (c.containerID, c.cgroupsPath, c.rootDir) == (CID, f"/kubepods/pod1/{CID}",
                                                        str(tmp_path / "rootfs"))
    assert dict(c.annotations) == CRI_ANN and c.mounts[0].destination == "/proc"
    with pytest.raises(ValueError, match="container id"):
        ocihook.read_state(b"{}")


def test_hook_fails_open_unless_told(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    state = json.dumps({"id": CID, "bundle": str(tmp_path)})
    args = [sys.executable, "-m", "vigil.containers.ocihook", "--agent-address",
            f"unix://{tmp_path}/none.sock", "--timeout", "1"]
    r = subprocess.run(args, input=state, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "not told" in r.stderr
    r = subprocess.run([*args, "--fail-closed"], input=state, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools (test extra) not installed")
def test_cri_modules_are_generated(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_cri_proto.py"), str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    api = ROOT / "src" / "vigil" / "api" / "cri"
    for f in tmp_path.iterdir():
        assert f.read_text() == (api / f.name).read_text(), f"run tools/gen_cri_proto.py: {f.name}"


def test_container_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from vigil.containers.metrics import register
    t = ContainerTracker(cri=FakeCri(fail=True))
    t.on_create_container(notice())
    reg = CollectorRegistry()
    register(reg, "vigil", SimpleNamespace(containers=t))
    text = generate_latest(reg).decode()
    assert "vigil_containers 1.0" in text
    assert "vigil_containers_runtime_hooks_total 1.0" in text
    assert 'vigil_containers_errors_total{kind="cri"} 2.0' in text


def test_a_container_in_use_is_kept() -> None:
    t = ContainerTracker(capacity=2)
    t.add(ContainerMeta(id="a" * 64))
    t.add(ContainerMeta(id="b" * 64))
    assert t.get("a" * 31) is not None   # in use: now the most recent
    t.add(ContainerMeta(id="c" * 64))
    assert t.get("a" * 31) is not None and t.get("b" * 31) is None


def test_pod_block_encodes_as_tetragon_protobuf() -> None:
    """The gRPC stream's bytes for an exec with a pod block are ParseDict's."""
    from google.protobuf import json_format

    from vigil.api.tetragon import events_pb2
    from vigil.server.convert import EventEncoder
    t = ContainerTracker(cri=FakeCri())
    t.on_create_container(notice())
    p = proc()
    ev = {"process_exec": {"process": dict(process_dict(p, pod=t.pod_block(p)))},
          "node_name": "n", "time": "2026-01-01T00:00:00Z"}
    want = json_format.ParseDict(ev, events_pb2.GetEventsResponse())
    assert want.process_exec.process.pod.container.pid.value == 1
    assert want.process_exec.process.pod.pod_labels == {"app": "web"}
    assert EventEncoder().encode_event(ev, shared=False) == want.SerializeToString()


def test_listeners_hear_of_each_container() -> None:
    t = ContainerTracker()
    heard: list[str] = []
    t.listeners.append(lambda m: heard.append(m.id))
    t.listeners.append(lambda m: 1 / 0)
    t.on_create_container(notice())
    assert heard == [CID] and t.errors == {"listener": 1} and t.get(CID) is not None
