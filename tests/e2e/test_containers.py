"""Containers end to end: a private containerd driven through its CRI API as the kubelet
drives it, and podman, with vigil-oci-hook as their createRuntime hook; the real agent's
exec events of processes in the containers carry ``process.pod`` and ``docker``."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import runtimes as rt
from tests.e2e.agentproc import AgentProcess

pytestmark = pytest.mark.skipif(bool(rt.missing_tools()),
                                reason=f"container tools missing: {rt.missing_tools()}")

LABELS = {"app": "web", "tier": "front", "app.kubernetes.io/name": "vigil-test"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("containers")
    image = rt.build_image(tmp / "image.tar")
    agent_sock = tmp / "vigil.sock"  # AgentProcess serves here
    with rt.containerd(tmp, agent_sock) as ctrd:
        ctrd.import_image(image)
        # exec events of processes in containers only (the host is busy with others)
        with AgentProcess(tmp, "--cri-endpoint", f"unix://{ctrd.sock}",
                          "--self-protection=false", "--export-file-max-size-mb", "1000",
                          "--export-allowlist",
                          '{"event_set":["PROCESS_EXEC"],"container_id":["."]}') as agent:
            assert agent.socket == agent_sock
            yield {"tmp": tmp, "image": image, "containerd": ctrd, "agent": agent}
            ctrd.remove_pods()
        cgroup_parent = ctrd.cgroup_parent
    assert not rt.cgroups_left(cgroup_parent), "containerd's pods left cgroups"
    assert str(tmp) not in Path("/proc/self/mountinfo").read_text(), "mounts left"
    assert not rt.pids_with_arg(str(tmp)), "processes left"


def runc_init(ev: dict[str, Any]) -> bool:
    """runc's own exec of itself ("runc init", from a sealed memfd copy or /proc/self/exe)
    into the new container's cgroup: it precedes every OCI hook, by construction."""
    p = ev["process"]
    return p.get("arguments") == "init" and (p["binary"].startswith("/dev/fd/")
                                             or p["binary"] == "/proc/self/exe"
                                             or p["binary"].endswith("/runc"))


def execs_in(agent: AgentProcess, cid: str, count: int = 1, timeout: float = 20,
             with_runc: bool = False) -> list[dict[str, Any]]:
    """Exec events in container ``cid`` (runc's own init exec left out unless asked)."""
    def match(e: dict[str, Any]) -> bool:
        return ("process_exec" in e and e["process_exec"]["process"].get("docker") == cid[:31]
                and (with_runc or not runc_init(e["process_exec"])))
    return [e["process_exec"] for e in agent.wait_for(match, count=count, timeout=timeout)]


def test_cri_pod_container_exec_has_pod_block(env: dict[str, Any]) -> None:
    ctrd, agent = env["containerd"], env["agent"]
    sid, cfg = ctrd.run_pod("web-7d4b9c-x2x8q", "shop", LABELS)
    cid = ctrd.run_container(sid, cfg, "server",
                             ["/bin/sh", "-c", "/bin/true; exec /bin/sleep 60"])
    status = ctrd.cri.rt.ContainerStatus(
        ctrd.pb.ContainerStatusRequest(container_id=cid), timeout=10).status
    evs = execs_in(agent, cid, count=3)
    assert len(evs) >= 3, [e["process"]["binary"] for e in evs]
    first = evs[0]["process"]
    assert first["binary"] == "/bin/sh"
    pod = first["pod"]
    print("first exec of the container:", first)
    assert pod["namespace"] == "shop" and pod["name"] == "web-7d4b9c-x2x8q"
    c = pod["container"]
    assert c["id"] == f"containerd://{cid}"
    assert c["name"] == "server"
    assert c["image"] == {"id": status.image_ref, "name": rt.IMAGE}
    assert c["pid"] == 1  # the container's init, in its own pid namespace
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["start_time"])
    assert pod["pod_labels"] == LABELS  # the kubelet's io.kubernetes.pod.* are not labels
    assert "workload" not in pod  # no Kubernetes API: no owner references
    assert list(first).index("pod") < list(first).index("docker")
    # every exec in the container has the block (the same container, later pids)
    for e in evs:
        assert e["process"]["pod"]["container"]["id"] == c["id"], e
    assert {e["process"]["binary"] for e in evs} >= {"/bin/sh", "/bin/true", "/bin/sleep"}
    # an exec into the running container (kubectl exec): same pod, another pid
    r = ctrd.exec_sync(cid, ["/bin/id", "-u"])
    assert r.exit_code == 0 and r.stdout.strip() == b"0"
    ids = agent.wait_for(lambda e: "process_exec" in e
                         and e["process_exec"]["process"]["binary"] == "/bin/id"
                         and e["process_exec"]["process"].get("docker") == cid[:31])
    assert ids, "no exec event of ExecSync"
    p = ids[0]["process_exec"]["process"]
    assert p["pod"]["container"]["name"] == "server" and p["pod"]["container"]["pid"] > 1
    # the sandbox (pause) container's processes carry docker but no pod, as Tetragon
    sandbox = execs_in(agent, sid, count=1)
    assert sandbox and "pod" not in sandbox[0]["process"]


def test_every_first_exec_has_metadata(env: dict[str, Any]) -> None:
    """Race check: containers whose processes exec at once; no exec event in any of
    them lacks the pod block (the hook answers before the runtime starts the process)."""
    ctrd, agent = env["containerd"], env["agent"]
    sid, cfg = ctrd.run_pod("burst", "race", {"run": "burst"})
    cids = [ctrd.run_container(sid, cfg, f"c{i}", ["/bin/sh", "-c", "/bin/true; /bin/true"])
            for i in range(5)]
    missing, total, runc = 0, 0, 0
    for cid in cids:
        evs = execs_in(agent, cid, count=3)
        assert [e["process"]["binary"] for e in evs] == ["/bin/sh", "/bin/true", "/bin/true"]
        total += len(evs)
        missing += sum("pod" not in e["process"] for e in evs)
        runc += sum(runc_init(e) for e in execs_in(agent, cid, count=0, with_runc=True))
    print(f"exec events of the workloads of {len(cids)} new containers: {total}, "
          f"without pod: {missing}; runc's own init execs (before any hook): {runc}")
    assert missing == 0
    # the same without the hook (runtime handler runc-nohook): the agent learns of the
    # containers from the CRI at start only, so none of these execs has the block
    sid, cfg = ctrd.run_pod("burst-nohook", "race", {"run": "burst"}, handler="runc-nohook")
    cids = [ctrd.run_container(sid, cfg, f"n{i}", ["/bin/sh", "-c", "/bin/true; /bin/true"])
            for i in range(5)]
    evs = [e for cid in cids for e in execs_in(agent, cid, count=3)]
    without = sum("pod" not in e["process"] for e in evs)
    print(f"without the hook: exec events {len(evs)}, without pod: {without}")
    assert len(evs) == 15 and without == 15
    hooks = (ctrd.hook_log.read_text() if ctrd.hook_log.exists() else "")
    assert "not told" not in hooks, hooks


def test_podman_container_gives_docker(env: dict[str, Any]) -> None:
    agent = env["agent"]
    with rt.podman(env["tmp"], agent.socket) as pm:
        pm.load(env["image"])
        cid = pm.run("vigil-podman-test", "/bin/sh", "-c", "/bin/true; exec /bin/sleep 30")
        assert re.fullmatch(r"[0-9a-f]{64}", cid)
        evs = execs_in(agent, cid, count=2)
        assert [e["process"]["binary"] for e in evs][:2] == ["/bin/sh", "/bin/true"]
        for e in evs:
            assert e["process"]["docker"] == cid[:31]
            assert "pod" not in e["process"]  # no pod: Tetragon reports none either
        assert "container " + cid[:12] in "".join(agent.stderr)  # the hook reached the agent
    assert not [c for c in rt.cgroups_left("libpod_parent")
                if Path(c, f"libpod-{cid}").exists() or Path(c, "conmon").exists()]


def test_malformed_runtime_hook_is_refused_and_logged(env: dict[str, Any]) -> None:
    """A notice naming no container, or with an oversized field, is refused with the
    field named; events keep flowing."""
    import grpc

    from vigil.api.tetragon import tetragon_pb2
    from vigil.containers.ocihook import call_agent
    agent = env["agent"]
    address = f"unix://{agent.socket}"
    bad = [tetragon_pb2.CreateContainer(containerID="not-an-id", cgroupsPath="/x"),
           tetragon_pb2.CreateContainer(containerID="a" * 64, containerName="n" * 5000)]
    for cc in bad:
        with pytest.raises(grpc.RpcError) as err:
            call_agent(address, tetragon_pb2.RuntimeHookRequest(createContainer=cc), 10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "containerName: 5000 bytes > 1024"
    log = "".join(agent.stderr)
    assert "malformed CreateContainer: containerID" in log
    assert "malformed CreateContainer: containerName: 5000 bytes > 1024" in log
    # the pipeline goes on: a new container's exec still comes with its pod
    ctrd = env["containerd"]
    sid, cfg = ctrd.run_pod("after-bad", "shop", {"app": "web"})
    cid = ctrd.run_container(sid, cfg, "c", ["/bin/true"])
    evs = execs_in(agent, cid)
    assert evs and evs[0]["process"]["pod"]["name"] == "after-bad"
