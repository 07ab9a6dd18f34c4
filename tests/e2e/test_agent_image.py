"""The agent as a container: the OCI image `make image` builds (Debian packages, no base
image pulled), run with podman as the standalone containerized agent — host PID
namespace, the host's /proc passed as --procfs, tracefs and bpffs mounted in, a set of
capabilities instead of --privileged — reports the host's processes."""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import runtimes as rt

ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAR = ROOT / "build" / "image" / "vigil-image.tar"
# what the agent uses: BPF, perf/tracing, mounts and fanotify (SYS_ADMIN), other
# processes' /proc entries (SYS_PTRACE, DAC_READ_SEARCH), signals (KILL)
CAPS = ("BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "KILL")
MOUNTS = (("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf"))

pytestmark = pytest.mark.skipif(bool(rt.missing_tools()),
                                reason=f"container tools missing: {rt.missing_tools()}")


def _mounted(path: str) -> bool:
    return any(line.split()[4] == path for line in open("/proc/self/mountinfo"))


@contextlib.contextmanager
def host_mounts() -> Iterator[None]:
    """tracefs and bpffs on their usual paths, for the container to bind (mounted here
    when missing, unmounted afterwards)."""
    made = []
    try:
        for fstype, path in MOUNTS:
            if not _mounted(path):
                subprocess.run(["mount", "-t", fstype, fstype, path], check=True, timeout=30)
                made.append(path)
        yield
    finally:
        for path in reversed(made):
            subprocess.run(["umount", path], timeout=30)


@pytest.fixture(scope="module")
def image() -> Path:
    if not IMAGE_TAR.exists():
        subprocess.run([str(ROOT / "tools" / "build-image.sh")], cwd=ROOT, check=True,
                       timeout=1800, capture_output=True)
    return IMAGE_TAR


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_containerized_agent_sees_host_processes(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    name = f"vigil-agent-{uuid.uuid4().hex[:6]}"
    with host_mounts(), rt.podman(tmp_path, None) as pm:
        loaded = pm("load", "-i", str(image), timeout=300).stdout
        ref = re.search(r"Loaded image(?:\(s\))?: (\S+)", loaded)
        assert ref, loaded
        args = ["run", "-d", "--name", name, "--pid", "host", "--network", "host",
                "--cap-drop", "all", *[a for c in CAPS for a in ("--cap-add", c)],
                *rt.low_ulimits(),
                "-v", "/proc:/host/proc:ro", "-v", "/sys/kernel/tracing:/sys/kernel/tracing",
                "-v", "/sys/fs/bpf:/sys/fs/bpf", "-v", f"{out}:/out",
                "-e", f"NODE_NAME={os.uname().nodename}",
                ref.group(1), "agent", "--procfs", "/host/proc",
                "--export-filename", "/out/events.log", "--no-export-stdout",
                "--server-address", "unix:///out/vigil.sock", "--health-server-address", "",
                "--self-protection=false", "--export-file-max-size-mb", "1000"]
        pm(*args)
        pm.containers.append(name)
        deadline = time.monotonic() + 120
        logs = ""
        while "vigil agent started" not in logs:
            logs = pm("logs", name, check=False).stderr + pm("logs", name, check=False).stdout
            state = pm("inspect", "--format", "{{.State.Status}}", name, check=False).stdout
            assert "exited" not in state, logs
            assert time.monotonic() < deadline, logs
            time.sleep(0.5)
        print("containerized agent log:\n" + logs)
        marker = f"vigil-image-{uuid.uuid4().hex[:8]}"
        p = subprocess.run(["/bin/sh", "-c", f"exec /bin/echo {marker}"], capture_output=True,
                           timeout=30)
        assert p.returncode == 0
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = [e for e in events(out / "events.log") if "process_exec" in e
                     and e["process_exec"]["process"]["binary"] == "/bin/echo"
                     and marker in e["process_exec"]["process"].get("arguments", "")]
            time.sleep(0.3)
        assert found, "no exec event of the host process"
        ev = found[0]["process_exec"]
        print("host process seen by the containerized agent:", json.dumps(found[0]))
        assert ev["parent"]["binary"] == "/bin/sh"  # host pids: the parent is known
        assert "docker" not in ev["process"]  # a host process, not a container's
        all_ev = events(out / "events.log")
        print("first events:\n" + "\n".join(json.dumps(e) for e in all_ev[:2]))
        procfs = [e for e in all_ev if "process_exec" in e
                  and "procFS" in e["process_exec"]["process"]["flags"]]
        assert any(e["process_exec"]["process"]["pid"] == 1 for e in procfs), \
            "the /proc scan saw the host's pid 1"
        stop = pm("stop", "-t", "20", name, check=False)
        assert stop.returncode == 0, stop.stderr
        code = pm("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", pm("logs", name, check=False).stderr[-3000:]
