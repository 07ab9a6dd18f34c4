"""Real container runtimes for tests: a private containerd (driven through its CRI API as
the kubelet drives it) and podman, both with state under a temporary directory, runc as
the OCI runtime, and the OCI hook ``vigil-oci-hook`` configured as a createRuntime hook.

Images are built here: a busybox-static root filesystem packed as an OCI image (nothing
is pulled). Everything started is torn down: containers, sandboxes, shims, mounts and
the cgroups runc made.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
IMAGE = "docker.io/library/vigil-busybox:test"
APPLETS = ("sh", "sleep", "cat", "true", "echo", "id", "ls", "ps")
HOOK = str(Path(sys.executable).with_name("vigil-oci-hook"))


def missing_tools() -> list[str]:
    need = ["containerd", "containerd-shim-runc-v2", "ctr", "runc", "podman", BUSYBOX]
    return [t for t in need if shutil.which(t) is None and not os.path.exists(t)]


# -- image ---------------------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def _layer() -> tuple[bytes, str]:
    """A gzipped tar of a busybox root filesystem, and the diff id of its plain tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
        for a in APPLETS:
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "busybox", 0
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mtime = len(passwd), 0
        tar.addfile(info, io.BytesIO(passwd))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def build_image(out: Path, name: str = IMAGE) -> Path:
    """Write an OCI image layout tar (``ctr images import``/``podman load`` read it)."""
    blobs: dict[str, bytes] = {}
    layer, diff_id = _layer()
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  **_blob(blobs, layer)}
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"],
                         "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    man_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(blobs, json.dumps(manifest).encode()),
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}
    index = {"schemaVersion": 2, "manifests": [man_desc]}
    with tarfile.open(out, "w") as tar:
        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    return out


# -- cleanup helpers -----------------------------------------------------------------


def _run(*cmd: str, timeout: float = 60, check: bool = True,
         **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def unmount_under(root: Path) -> None:
    """Unmount everything mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix):
                mounts.append(mp)
    for mp in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30)


def remove_cgroups(name: str, wait: float = 10.0) -> None:
    """rmdir a cgroup (and its children) named ``name`` in every mounted hierarchy,
    retrying for up to ``wait`` seconds while it is busy (exiting processes linger)."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for hier in Path("/sys/fs/cgroup").iterdir():
            top = hier / name.strip("/")
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except OSError:
                    left.append(d)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def cgroups_left(name: str) -> list[str]:
    return [str(h / name.strip("/")) for h in Path("/sys/fs/cgroup").iterdir()
            if (h / name.strip("/")).exists()]


# -- containerd ------------------------------------------------------------------------


def base_spec(agent_socket: Path | None, hook_log: Path) -> dict[str, Any]:
    """containerd's default OCI spec with vigil-oci-hook as a createRuntime hook."""
    spec = json.loads(_run("ctr", "oci", "spec").stdout)
    if agent_socket is not None:
        spec.setdefault("hooks", {})["createRuntime"] = [{
            "path": HOOK,
            "args": ["vigil-oci-hook", "--agent-address", f"unix://{agent_socket}",
                     "--log-file", str(hook_log), "createRuntime"],
            "timeout": 30}]
    return spec


class Containerd:
    """A private containerd: its own root, state, socket and CRI configuration."""

    def __init__(self, tmp: Path, agent_socket: Path | None) -> None:
        self.dir = tmp / "containerd"
        self.dir.mkdir(parents=True)
        self.sock = self.dir / "containerd.sock"
        self.hook_log = self.dir / "hook.log"
        self.cgroup_parent = f"/vigil-test-{uuid.uuid4().hex[:8]}"
        # containerd 1.6 puts shim sockets in /run/containerd/s whatever its config
        self.made_run_dir = not Path("/run/containerd").exists()
        spec = self.dir / "base-spec.json"
        spec.write_text(json.dumps(base_spec(agent_socket, self.hook_log)))
        # runtime handler "runc-nohook": the same runc without the hook (for comparison)
        nohook_spec = self.dir / "base-spec-nohook.json"
        nohook_spec.write_text(json.dumps(base_spec(None, self.hook_log)))
        (self.dir / "cni").mkdir()
        d = self.dir
        (d / "config.toml").write_text(f"""
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  enable_selinux = false
  # no CAP_SYS_RESOURCE here: keep oom_score_adj at or above the current value
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "{spec}"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc')}"
        Root = "{d}/runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-nohook]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "{nohook_spec}"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-nohook.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc')}"
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni"
    conf_dir = "{d}/cni"
""")
        self.log = open(d / "containerd.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("containerd did not start:\n" + self.log_text()[-3000:])
            time.sleep(0.1)
        from vigil.containers.cri import CriClient
        self.cri = CriClient(f"unix://{self.sock}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.cri.version()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.2)
        self.pb = self.cri.pb
        self.sandboxes: list[str] = []

    def log_text(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")

    def ctr(self, *args: str, timeout: float = 120) -> str:
        return _run("ctr", "--address", str(self.sock), "--namespace", "k8s.io", *args,
                    timeout=timeout).stdout

    def import_image(self, tar: Path) -> None:
        self.ctr("images", "import", "--no-unpack", str(tar))

    def run_pod(self, name: str, namespace: str, labels: dict[str, str],
                handler: str = "") -> tuple[str, Any]:
        """RunPodSandbox as the kubelet does (its labels and metadata), host network."""
        pb = self.pb
        uid = str(uuid.uuid4())
        all_labels = {**labels, "io.kubernetes.pod.name": name,
                      "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid}
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace),
            labels=all_labels,
            annotations={"kubernetes.io/config.source": "api"},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_parent}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE,
                                                         pid=pb.CONTAINER))))
        sid = self.cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg,
                                                                runtime_handler=handler),
                                        timeout=120).pod_sandbox_id
        self.sandboxes.append(sid)
        return sid, cfg

    def run_container(self, sid: str, sandbox_cfg: Any, name: str, command: list[str],
                      start: bool = True) -> str:
        pb = self.pb
        md = sandbox_cfg.metadata
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=IMAGE),
            command=command,
            labels={"io.kubernetes.container.name": name, "io.kubernetes.pod.name": md.name,
                    "io.kubernetes.pod.namespace": md.namespace,
                    "io.kubernetes.pod.uid": md.uid},
            annotations={"io.kubernetes.container.restartCount": "0"},
            linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER))))
        cid = self.cri.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_cfg),
            timeout=120).container_id
        if start:
            self.cri.rt.StartContainer(pb.StartContainerRequest(container_id=cid),
                                       timeout=120)
        return cid

    def exec_sync(self, cid: str, cmd: list[str]) -> Any:
        return self.cri.rt.ExecSync(self.pb.ExecSyncRequest(container_id=cid, cmd=cmd,
                                                            timeout=30), timeout=60)

    def remove_pods(self) -> None:
        pb = self.pb
        for sid in self.sandboxes:
            with contextlib.suppress(Exception):
                self.cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid),
                                           timeout=60)
            with contextlib.suppress(Exception):
                self.cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid),
                                             timeout=60)
        self.sandboxes.clear()

    def close(self) -> None:
        if getattr(self, "cri", None) is not None:
            self.remove_pods()
            self.cri.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # shims outlive containerd by design: end those of this containerd
        for pid in pids_with_arg(str(self.sock)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.log.close()
        unmount_under(self.dir)
        remove_cgroups(self.cgroup_parent)
        if self.made_run_dir:
            for d in ("/run/containerd/s", "/run/containerd"):
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def pids_with_arg(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


@contextlib.contextmanager
def containerd(tmp: Path, agent_socket: Path | None) -> Iterator[Containerd]:
    c = Containerd(tmp, agent_socket)
    try:
        yield c
    finally:
        c.close()


# -- podman ------------------------------------------------------------------------------


class Podman:
    """podman with its own storage, run root and hooks dir (cgroupfs manager, runc)."""

    def __init__(self, tmp: Path, agent_socket: Path | None) -> None:
        import tempfile
        self.dir = tmp / "podman"
        (self.dir / "hooks").mkdir(parents=True)
        self.runroot = Path(tempfile.mkdtemp(prefix="vp-"))  # podman: at most 50 chars
        # podman's clean-up process may call runc with its default root
        self.made_runc_root = not Path("/run/runc").exists()
        self.hook_log = self.dir / "hook.log"
        if agent_socket is not None:
            (self.dir / "hooks" / "vigil.json").write_text(json.dumps({
                "version": "1.0.0",
                "hook": {"path": HOOK,
                         "args": ["vigil-oci-hook", "--agent-address",
                                  f"unix://{agent_socket}", "--log-file",
                                  str(self.hook_log), "createRuntime"],
                         "timeout": 30},
                "when": {"always": True},
                "stages": ["createRuntime"]}))
        self.base = ["podman", "--root", str(self.dir / "root"),
                     "--runroot", str(self.runroot), "--tmpdir", str(self.dir / "tmp"),
                     "--cgroup-manager", "cgroupfs", "--runtime", "runc",
                     "--runtime-flag", f"root={self.runroot}/runc",
                     "--events-backend", "file", "--hooks-dir", str(self.dir / "hooks"),
                     "--storage-driver", "overlay"]
        self.containers: list[str] = []

    def __call__(self, *args: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.base, *args, timeout=timeout, check=check)

    def load(self, tar: Path) -> None:
        self("load", "-i", str(tar))

    def run(self, name: str, *cmd: str, detach: bool = True) -> str:
        out = self("run", *(["-d"] if detach else []), "--name", name, "--network", "host",
                   *low_ulimits(), "--pids-limit", "0", IMAGE, *cmd).stdout
        self.containers.append(name)
        return out.strip().splitlines()[-1] if detach else ""

    def close(self) -> None:
        ids = [self("inspect", "--format", "{{.Id}}", n, check=False).stdout.strip()
               for n in self.containers]
        for name in self.containers:
            self("rm", "-f", "-t", "0", name, check=False)
        # podman's clean-up processes (conmon's exit command) outlive `rm`: let them end
        deadline = time.monotonic() + 20
        while pids_with_arg(str(self.dir / "root")) and time.monotonic() < deadline:
            time.sleep(0.1)
        unmount_under(self.dir)
        unmount_under(self.runroot)
        shutil.rmtree(self.runroot, ignore_errors=True)
        # runc removes the container's cgroups; conmon's and the parent stay (if empty)
        for cid in filter(None, ids):
            remove_cgroups(f"libpod_parent/libpod-{cid}")
        remove_cgroups("libpod_parent/conmon")
        for hier in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hier / "libpod_parent").rmdir()
        if self.made_runc_root:
            with contextlib.suppress(OSError):
                os.rmdir("/run/runc")


def low_ulimits() -> list[str]:
    """--ulimit flags below any limit podman's helpers run with: podman's defaults are
    above them, and without CAP_SYS_RESOURCE runc cannot raise a hard limit."""
    import resource
    out = []
    for name, res, want in (("nofile", resource.RLIMIT_NOFILE, 1024),
                            ("nproc", resource.RLIMIT_NPROC, 4096)):
        soft, hard = resource.getrlimit(res)
        v = want if hard == resource.RLIM_INFINITY else min(want, hard)
        out += ["--ulimit", f"{name}={v}:{v}"]
    return out


@contextlib.contextmanager
def podman(tmp: Path, agent_socket: Path | None) -> Iterator[Podman]:
    p = Podman(tmp, agent_socket)
    try:
        yield p
    finally:
        p.close()
