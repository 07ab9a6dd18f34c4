"""Flood benchmark: an exec storm from one cgroup at 10x the rate the agent lets through.

``main()`` measures how fast ``workers`` shell loops exec here, starts the agent in this
process with ``--cgroup-rate`` set to a tenth of that (the "sustainable" rate: what the
agent promises to deliver in full for one cgroup), runs the storm in its own cgroup v2
for ``duration_s`` (default 60 s; ``VIGIL_BENCH_FLOOD_SECONDS`` overrides), a quiet
control workload in another, and reports:

* the agent's RSS (start, peak, end) and CPU (seconds and % of one CPU) during the flood;
* loss accounting per reason, and whether it balances exactly: for the storm cgroup,
  execs performed == exec events delivered + execs suppressed by the throttle, and
  exits performed == exit events delivered + exits marked throttled;
* recovery once the storm stops: time until the ring and export queues are empty,
  until THROTTLE_STOP, and until a fresh exec in the storm cgroup is delivered;
* for comparison, the same storm with throttling off (``baseline_s``): what handling
  every event costs the agent, and whether it kept up.

Needs root, cgroup2 and the built BPF objects. The helpers (``Cgroup``, ``in_cgroup``)
are also used by tests/e2e/test_flood.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.stream.throttle import CgroupRate, cgroup2_mount

DEFAULT_SECONDS = 60.0
RATE_FACTOR = 10


# --------------------------------------------------------------------------- workloads

class Cgroup:
    """A child cgroup of the cgroup2 mount, removed (its processes killed) on ``remove``."""

    def __init__(self, name: str, root: str | None = None) -> None:
        root = root or cgroup2_mount()
        if not root:
            raise RuntimeError("no cgroup2 mount (see /proc/self/mounts)")
        self.path = Path(root) / name
        self.path.mkdir()
        self.name = name
        self.id = os.stat(self.path).st_ino  # a cgroup2 id is its directory's inode

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self.procs_file.read_text().split()]
        except OSError:
            return []

    def remove(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.path.exists():
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def in_cgroup(cg: Cgroup, script: str) -> subprocess.Popen[bytes]:
    """Run ``sh -c script`` inside ``cg``: the shell moves itself, then execs the script, so
    every record of the script (its own exec included) comes from ``cg``."""
    inner = f"exec /bin/sh -c {shlex.quote(script)}"
    return subprocess.Popen(["/bin/sh", "-c", f"echo $$ > {cg.procs_file} && {inner}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def exec_storm(binary: str, count: int) -> str:
    """A shell loop running ``binary`` ``count`` times: count forks, execs and exits."""
    return f"i=0; while [ $i -lt {count} ]; do {binary}; i=$((i+1)); done"


def timed_storm(binary: str, seconds: float, counter: str) -> str:
    """A shell loop running ``binary`` for ``seconds``; the count is written to ``counter``.

    Uses only shell builtins besides ``binary`` (the deadline is read from /proc/uptime),
    so the loop's only execs are of ``binary``.
    """
    return ("read up _ < /proc/uptime; end=$(( ${up%.*} + " + str(int(seconds)) + " )); i=0; "
            "while :; do read up _ < /proc/uptime; [ ${up%.*} -ge $end ] && break; "
            f"{binary}; i=$((i+1)); done; echo $i > {counter}")


def private_binary(directory: Path, name: str) -> str:
    """A copy of /bin/true under a unique path, so its events are easy to pick out."""
    path = directory / name
    shutil.copy2(os.path.realpath("/bin/true"), path)
    return str(path)


class Storm:
    """``workers`` parallel timed storms of ``binary`` in one cgroup."""

    def __init__(self, cg: Cgroup, tmp: Path, binary: str, seconds: float,
                 workers: int) -> None:
        self.binary = binary
        self.counters = [tmp / f"{Path(binary).name}.{i}.count" for i in range(workers)]
        self.t0 = time.monotonic()
        self.procs = [in_cgroup(cg, timed_storm(binary, seconds, str(c))) for c in self.counters]
        self.elapsed = 0.0

    def wait(self) -> float:
        for p in self.procs:
            p.wait()
        self.elapsed = time.monotonic() - self.t0
        return self.elapsed

    @property
    def execs(self) -> int:
        return sum(int(c.read_text()) for c in self.counters)

    @property
    def shells(self) -> set[int]:
        return {p.pid for p in self.procs}


def measure_exec_rate(cg: Cgroup, directory: Path, workers: int, seconds: int = 2) -> float:
    """Execs per second ``workers`` shell loops reach here together (before the agent)."""
    storm = Storm(cg, directory, private_binary(directory, "calib-true"), seconds, workers)
    elapsed = storm.wait()
    return storm.execs / elapsed


# --------------------------------------------------------------------------- agent

def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_agent(tmp: Path, rate: CgroupRate | None, *, cache_size: int = 65536,
                queue_events: int = 65536) -> Any:
    """An in-process agent exporting to ``tmp/events.log`` with ``rate`` wired in."""
    from vigil.daemon import agent as agent_mod

    export = agent_mod.ExportConfig(filename=str(tmp / "events.log"), stdout=False,
                                    queue_events=queue_events, max_size_mb=4096)
    cfg = agent_mod.AgentConfig(process_cache_size=cache_size, export=export,
                                cgroup_rate=rate)
    a = agent_mod.Agent(cfg)
    a.start()
    return a


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    return None


def drained(agent: Any) -> bool:
    """Nothing left between the kernel and the export file."""
    ring = agent.sensor.ring
    return ring.pending_bytes() == 0 and all(s.pending() == 0 for s in agent.sinks)


# --------------------------------------------------------------------------- the run

def _count_storm(events_path: Path, shells: set[int]) -> tuple[int, int]:
    """(exec events, exit events) of the storm shells and their children in the export."""
    from vigil.export import reader
    execs = exits = 0
    for ev in reader.read(events_path):
        body = ev.get("process_exec") or ev.get("process_exit")
        if body is None:
            continue
        proc, parent = body.get("process", {}), body.get("parent", {})
        ours = proc.get("pid") in shells or parent.get("pid") in shells
        if not ours or "cgroup.procs" in proc.get("arguments", ""):
            continue  # the launcher's exec, before it joined the cgroup, is not the storm's
        if "process_exec" in ev:
            execs += 1
        else:
            exits += 1
    return execs, exits


class Sampler:
    """Peak RSS of this process (the agent) while a storm runs."""

    def __init__(self) -> None:
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def _kernel_delta(k0: Any, k1: Any) -> dict[str, int]:
    """Kernel drops during the run, "op/REASON" -> count."""
    out = {}
    for (op, reason), n in k1.drops.items():
        if n - k0.drops.get((op, reason), 0):
            out[f"{op}/{reason}"] = n - k0.drops.get((op, reason), 0)
    return out


def _storm_phase(agent: Any, tmp: Path, cg: Cgroup, name: str, seconds: float,
                 workers: int) -> tuple[dict[str, Any], Storm]:
    """Run a storm against ``agent``; agent cost, kernel drops and what reached the export."""
    k0, cpu0 = agent.sensor.counters(), cpu_seconds()
    rss = Sampler()
    storm = Storm(cg, tmp, private_binary(tmp, name), seconds, workers)
    elapsed = storm.wait()
    cpu = cpu_seconds() - cpu0
    drain_s = wait_until(lambda: drained(agent), 120)
    rss.stop()
    execs, exits = _count_storm(Path(agent.cfg.export.filename), storm.shells)
    n = storm.execs
    return {
        "storm": {"workers": workers, "execs": n, "execs_per_s": round(n / elapsed)},
        "agent": {"rss_mb_start": round(rss.start / 2**20, 1),
                  "rss_mb_peak": round(rss.peak / 2**20, 1),
                  "cpu_s": round(cpu, 2), "cpu_pct_of_one_cpu": round(100 * cpu / elapsed, 1)},
        "delivered": {"exec_events": execs, "exit_events": exits},
        "kernel_drops": _kernel_delta(k0, agent.sensor.counters()),
        "export_queue_dropped": {s.name: s.dropped for s in agent.sinks},
        "drain_s": _r(drain_s),
    }, storm


def _flood_phase(agent: Any, tmp: Path, storm_cg: Cgroup, ctl_cg: Cgroup, seconds: float,
                 workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    ctl_bin = private_binary(tmp, "ctl-true")
    ctl = in_cgroup(ctl_cg, f"while :; do {ctl_bin}; /bin/sleep 0.1; done")
    out, storm = _storm_phase(agent, tmp, storm_cg, "storm-true", seconds, workers)
    log(f"storm done: {storm.execs} execs in {storm.elapsed:.1f}s")
    tracker = agent.pipeline.throttle
    t_end = storm.t0 + storm.elapsed
    stop_s = wait_until(lambda: not _throttled(tracker, storm_cg.id), 120)
    probe = in_cgroup(storm_cg, ctl_bin)
    probe.wait()
    first_s = wait_until(lambda: _exec_seen(agent, probe.pid), 60)
    ctl.kill()
    ctl.wait()
    st = tracker.cgroups.get(storm_cg.id)
    dropped, sup_exits = (st.dropped, st.exits_suppressed) if st else (0, 0)
    performed = storm.execs + workers  # + each storm shell's own exec and exit
    execs, exits = out["delivered"]["exec_events"], out["delivered"]["exit_events"]
    out["accounting"] = {
        "exec": {"performed": performed, "delivered": execs, "throttled": dropped,
                 "balanced": performed == execs + dropped},
        "exit": {"performed": performed, "delivered": exits, "throttled_not_exported": sup_exits,
                 "balanced": performed == exits + sup_exits},
        "throttle_episodes": st.starts if st else 0,
    }
    out["recovery_s"] = {
        "pipeline_drained": out.pop("drain_s"),
        "throttle_stop": _r(stop_s),
        "first_event_after_stop": _r(first_s),
        "since_flood_end_total": _r(time.monotonic() - t_end),
    }
    return out


def _baseline_phase(agent: Any, tmp: Path, cg: Cgroup, seconds: float,
                    workers: int) -> dict[str, Any]:
    out, storm = _storm_phase(agent, tmp, cg, "base-true", seconds, workers)
    performed = storm.execs + workers
    out["lossless"] = (out["delivered"]["exec_events"] == performed
                       and out["delivered"]["exit_events"] == performed)
    cpu = out["agent"]["cpu_pct_of_one_cpu"]
    rate = out["storm"]["execs_per_s"]
    out["agent"]["est_capacity_execs_per_cpu_s"] = round(rate / (cpu / 100)) if cpu else None
    return out


def run_flood(duration_s: float, workers: int = 2, rate_factor: float = RATE_FACTOR,
              baseline_s: float = 10.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The throttled flood, then (``baseline_s`` > 0) the same storm without --cgroup-rate:
    what handling all of it would cost the agent."""
    tmp = Path(tempfile.mkdtemp(prefix="vigil-flood-"))
    tag = f"vigil-bench-{os.getpid()}"
    storm_cg, ctl_cg = Cgroup(f"{tag}-storm"), Cgroup(f"{tag}-ctl")
    agent = None
    try:
        raw = measure_exec_rate(storm_cg, tmp, workers)
        budget = max(10, int(raw * 2 / rate_factor))  # exec + exit count against it
        log(f"storm reaches {raw:.0f} execs/s; --cgroup-rate {budget},1s lets "
            f"{budget / 2:.0f} execs/s through: the flood is {rate_factor:g}x that")
        (tmp / "flood").mkdir()
        agent = start_agent(tmp / "flood", CgroupRate(budget, 1.0, 5.0))
        result = _flood_phase(agent, tmp, storm_cg, ctl_cg, duration_s, workers, log)
        result["config"] = {"duration_s": duration_s, "cgroup_rate": f"{budget},1s",
                            "quiet_s": 5.0, "storm_alone_execs_per_s": round(raw),
                            "rate_factor": rate_factor, "cpus": os.cpu_count()}
        agent.stop()
        agent = None
        if baseline_s > 0:
            (tmp / "baseline").mkdir()
            agent = start_agent(tmp / "baseline", None)
            result["unthrottled_baseline"] = _baseline_phase(agent, tmp, storm_cg, baseline_s,
                                                             workers)
        return result
    finally:
        if agent is not None:
            agent.stop()
        storm_cg.remove()
        ctl_cg.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _throttled(tracker: Any, cgroup_id: int) -> bool:
    st = tracker.cgroups.get(cgroup_id)
    return bool(st and st.throttled)


def _exec_seen(agent: Any, pid: int) -> bool:
    from vigil.export import reader
    if not drained(agent):
        return False
    return any(ev.get("process_exec", {}).get("process", {}).get("pid") == pid
               for ev in reader.read(agent.cfg.export.filename))


def main(duration_s: float | None = None, workers: int = 2) -> dict[str, Any]:
    """Run the flood benchmark; return (and print) its results as a dict."""
    if duration_s is None:
        duration_s = float(os.environ.get("VIGIL_BENCH_FLOOD_SECONDS", DEFAULT_SECONDS))
    result = run_flood(duration_s, workers)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=None, help="flood seconds (default 60)")
    ap.add_argument("--workers", type=int, default=2, help="parallel storm loops (default 2)")
    args = ap.parse_args()
    main(args.duration, args.workers)
