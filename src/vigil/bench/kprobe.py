"""Kernel-function hook cost: exec and openat throughput with no BPF, with the base
sensor, and with the base sensor plus a kprobe policy on ``security_file_permission``
whose selector never matches -- once per mechanism this kernel allows (fentry,
kprobe.multi, kprobe). Every figure is a ratio against "no BPF" measured in the same run,
rounds interleaved; absolute numbers under qemu/TCG mean nothing.

Run by the kernel lane inside the 6.12 guest (``python -m vigil.bench kprobe``).
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
TRUE = os.path.realpath("/bin/true")

POLICY = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bench-file-permission
spec:
  kprobes:
  - call: security_file_permission
    syscall: false
    args:
    - index: 0
      type: file
    - index: 1
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/nonexistent/vigil-bench/"]
"""


def _sysloop() -> str:
    out = Path(tempfile.gettempdir()) / "vigil-sysloop"
    if not out.exists():
        subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "tests/progs/sysloop.c")],
                       check=True)
    return str(out)


def exec_rate(n: int) -> float:
    """fork+exec of /bin/true n times from one shell: exec/s."""
    t0 = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do {TRUE}; i=$((i+1)); done"],
                   check=True)
    return n / (time.perf_counter() - t0)


def openat_rate(binary: str, n: int) -> float:
    """openat+close of /etc/hostname n times: calls/s."""
    out = subprocess.run([binary, str(n), "openat", "/etc/hostname"], capture_output=True,
                         text=True, check=True).stdout
    return 1e9 / float(out)


@contextmanager
def _drained(base: Any) -> Iterator[None]:
    """Drain the ring in the background, as the agent would."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            base.ring.drain()
            time.sleep(0.01)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def _mechanisms() -> list[str]:
    from vigil.bpf import features as F
    out = []
    if F.probe("fentry").ok and F.probe("fexit").ok:
        out.append("fentry")
    if F.probe("kprobe_multi").ok:
        out.append("kprobe_multi")
    if F.probe("kprobe").ok:
        out.append("kprobe")
    return out


def main(exec_n: int = 100, openat_n: int = 20_000, rounds: int = 2) -> dict[str, Any]:
    from vigil.daemon.policies import PolicyManager, kernel_view
    from vigil.stream.policy_events import HookRegistry
    from vigil.sensors.base import BaseSensor, BaseSensorConfig
    binary = _sysloop()
    configs = ["none", "base_sensor"] + [f"kprobe_policy_{m}" for m in _mechanisms()]
    runs: dict[str, dict[str, list[float]]] = {c: {"exec": [], "openat": []} for c in configs}
    mechanism: dict[str, str] = {}

    def measure(cfg: str) -> None:
        runs[cfg]["exec"].append(exec_rate(exec_n))
        runs[cfg]["openat"].append(openat_rate(binary, openat_n))
        print(f"# kprobe bench: {cfg}: {runs[cfg]['exec'][-1]:.1f} exec/s, "
              f"{runs[cfg]['openat'][-1]:.0f} openat/s", file=sys.stderr, flush=True)

    for _ in range(rounds):
        measure("none")
        base = BaseSensor(BaseSensorConfig(ring_bytes=8 << 20))
        base.load()
        try:
            with _drained(base):
                measure("base_sensor")
                for cfg in configs[2:]:
                    mode = cfg.removeprefix("kprobe_policy_")
                    view: Callable[[], Any] = functools.partial(kernel_view, mode)
                    mgr = PolicyManager(base, HookRegistry(), view=view)
                    info = mgr.add(POLICY, source="bench")
                    mechanism[cfg] = info.info
                    measure(cfg)
                    mgr.close()
        finally:
            base.close()
    med = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in runs.items()}
    none = med["none"]
    return {
        "kernel": os.uname().release,
        "exec_per_s": {c: round(m["exec"], 1) for c, m in med.items()},
        "openat_per_s": {c: round(m["openat"]) for c, m in med.items()},
        "ratio_vs_none": {c: {"exec": round(m["exec"] / none["exec"], 3),
                              "openat": round(m["openat"] / none["openat"], 3)}
                          for c, m in med.items()},
        "mechanism": mechanism,
        "rounds": rounds, "exec_n": exec_n, "openat_n": openat_n,
    }
