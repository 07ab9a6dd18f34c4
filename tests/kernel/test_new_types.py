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
