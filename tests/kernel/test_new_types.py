"""Argument types and selectors of Tetragon's examples, with the real BPF objects:
``linux_binprm`` on a raw tracepoint (runs everywhere raw tracepoints do), and on kernel
functions ``nop``, ``net_device``, ``user_namespace``, ``perf_event``,
``matchCapabilities`` ``isNamespaceCapability`` and ``matchCapabilityChanges`` (these need
kprobes or BPF trampolines: on the hardened host they skip with the probe's reason,
inside the kernel lane they must run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.lane import need
from tests.kernel.test_policies import Env, _body

PY = sys.executable


def _policy(name: str, spec: str) -> str:
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
            f"metadata:\n  name: {name}\nspec:\n{spec}")


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@pytest.fixture
def kfuncs() -> None:
    from vigil.bpf import features as F
    if not (F.probe("kprobe").ok or F.probe("fentry").ok):
        need("kprobe")  # skips with the reason (or fails in the lane)


@pytest.fixture
def marker() -> Iterator[Path]:
    exe = Path("/tmp") / f"vnt-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", exe)
    try:
        yield exe
    finally:
        exe.unlink()


def test_raw_tracepoint_linux_binprm_is_the_executed_file(env: Env, marker: Path) -> None:
    """rawtp.yaml: raw sched_process_exec, argument 2 (struct linux_binprm *) -> the
    executed file's path, as a kprobe's linux_binprm argument."""
    pol = _policy("vnt-rawtp-binprm", f"""  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 2
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 2
        operator: Postfix
        values: ["/{marker.name}"]
""")
    procs: list[subprocess.Popen[bytes]] = []
    with env.policy(pol) as info:
        assert "raw_tracepoint sched_process_exec" in info.info
        evs = env.run(lambda: (procs.append(subprocess.Popen([str(marker)])), procs[0].wait(),
                               subprocess.run(["/bin/true"])))
    assert len(evs) == 1
    body = _body(evs[0])
    assert (body["subsys"], body["event"]) == ("sched", "sched_process_exec")
    assert body["process"]["pid"] == procs[0].pid
    assert body["args"] == [{"linux_binprm_arg": {"path": str(marker)}}]


# ---- capability selectors (any hook kind: here syscall hooks on tracepoints) ----------

def _openat(name: str, target: Path, caps: str) -> str:
    return _policy(name, f"""  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{target}"]
{caps}
""")


@pytest.fixture
def target() -> Iterator[Path]:
    d = Path("/tmp") / f"vnt-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    f = d / "t"
    f.write_text("x")
    f.chmod(0o644)
    try:
        yield f
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_match_capability_changes_against_the_caps_at_exec(env: Env, target: Path) -> None:
    """fd_install_cap_changes.yaml's selector: a process that started as root opens the
    file (no change: no event), drops CAP_SYS_ADMIN with setuid (a change of a listed
    capability: one event), opens it again (the change was reported: the current
    capabilities are the reference now, no event)."""
    pol = _openat("vnt-capchanges", target, """      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN", "CAP_NET_RAW"]""")
    code = (f"import os\nopen({str(target)!r}).close()\nos.setresuid(65534, 65534, 65534)\n"
            f"open({str(target)!r}).close()\nopen({str(target)!r}).close()\n")
    notin = _openat("vnt-capchanges-notin", target, """      matchCapabilityChanges:
      - type: Effective
        operator: NotIn
        values: ["CAP_SYS_ADMIN"]""")
    procs: list[subprocess.Popen[bytes]] = []

    def trigger() -> None:
        procs.append(subprocess.Popen([PY, "-c", code]))
        procs[-1].wait()
        assert procs[-1].returncode == 0
    with env.policy(pol):
        evs = env.run(trigger)
    assert [(_body(e)["process"]["pid"], _body(e)["args"]) for e in evs] == [
        (procs[0].pid, [{"string_arg": str(target)}])]
    # NotIn: a change only of other capabilities; losing CAP_SYS_ADMIN is not one
    with env.policy(notin):
        evs = env.run(trigger)
    assert evs == []


def test_is_namespace_capability_only_outside_the_host_user_namespace(
        env: Env, target: Path) -> None:
    """fd_install_caps.yaml's selector: root of the host (in the host's user namespace)
    does not match; root of a new user namespace (its capabilities are namespace ones)
    does."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    pol = _openat("vnt-nscaps", target, """      matchCapabilities:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: ["CAP_CHOWN", "CAP_NET_RAW"]""")
    runs: list[subprocess.CompletedProcess[bytes]] = []

    def trigger() -> None:
        runs.append(subprocess.run(["cat", str(target)], capture_output=True))
        runs.append(subprocess.run(["unshare", "-Ur", "cat", str(target)],
                                   capture_output=True))
    with env.policy(pol):
        evs = env.run(trigger)
    if runs[1].returncode != 0:
        pytest.skip(f"unshare -Ur failed: {runs[1].stderr.decode().strip()}")
    assert len(evs) == 1
    assert _body(evs[0])["process"]["binary"].endswith("/cat")
    assert _body(evs[0])["process"]["arguments"] == str(target)
