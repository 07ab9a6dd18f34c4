"""Base sensor and policy benchmarks; every figure is a ratio against a baseline taken
in the same run (runs are interleaved A/B so drift hits both sides).

- exec storm: fork+exec of /bin/true, without vs with the agent: exec/s, ratio, events
  delivered vs expected, agent CPU per event, agent RSS;
- RSS with N live processes in the cache;
- syscall cost: getpid and openat+close loops (C) with no agent, with the base sensor,
  and with an openat policy whose selector does not match: ns per call and ns added;
- pipeline: events/s decoded, enriched and written as JSON lines on one core.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
TRUE = os.path.realpath("/bin/true")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(val.split()[0]) / 1024
    return out


class MemoryCgroup:
    """A memory cgroup of its own for the benchmarked agent, so the memory charged to it
    (the ring buffer's pages, its page cache, kernel allocations on its behalf) is
    reported, not only its RSS. cgroup v2 (``memory.current``) or the v1 memory
    hierarchy (``memory.usage_in_bytes``); ``path`` is None where neither is writable."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        root = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/memory")
        if self.v2 and "memory" not in (root / "cgroup.subtree_control").read_text().split():
            return
        try:
            (root / name).mkdir()
        except OSError:
            return
        self.path = root / name

    def enter(self) -> None:
        """Move the calling process in (a Popen ``preexec_fn``: the child is charged
        from its first allocation)."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def charged_mb(self) -> dict[str, float]:
        """Memory charged now: in all, anonymous, and file pages (page cache, the
        ring buffer's pages count under one or the other depending on the kernel)."""
        if self.path is None:
            return {}
        total = (self.path / ("memory.current" if self.v2 else "memory.usage_in_bytes"))
        stat = dict(ln.split() for ln in (self.path / "memory.stat").read_text().splitlines())
        anon, file = ("anon", "file") if self.v2 else ("rss", "cache")
        return {"charged": int(total.read_text()) / 2**20,
                "anon": int(stat.get(anon, 0)) / 2**20, "file": int(stat.get(file, 0)) / 2**20}

    def remove(self) -> None:
        if self.path is not None:
            for _ in range(50):  # the exited agent leaves the cgroup asynchronously
                try:
                    self.path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            self.path = None


class Agent:
    """`python -m vigil agent` in the background, exporting to a temp file, in a memory
    cgroup of its own where the machine has one."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.export = tmp / "bench-events.log"
        self.cgroup = MemoryCgroup(f"vigil-bench-{os.getpid()}-{time.monotonic_ns()}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vigil", "agent", "--export-filename", str(self.export),
             "--no-export-stdout", "--export-file-max-size-mb", "4000",
             "--server-address", f"unix://{tmp}/bench.sock",
             "--server-info-file", str(tmp / "bench-info.json"), *args],
            stderr=subprocess.PIPE, text=True, preexec_fn=self.cgroup.enter)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "vigil agent started" in line:
                break
        else:
            self.proc.wait()
            self.cgroup.remove()
            raise RuntimeError("agent did not start")
        self.stderr = self.proc.stderr

    def count(self, marker: str) -> int:
        n, needle = 0, b'"arguments":"' + marker.encode() + b'"'
        with open(self.export, "rb") as f:
            for line in f:  # /bin/true's own exec, not the shell that names it
                if line.startswith(b'{"process_exec"') and needle in line:
                    n += 1
        return n

    def memory(self) -> dict[str, float]:
        """The agent's RSS (VmRSS, RssAnon, RssFile, RssShmem) and what its cgroup is
        charged (cgroup_charged, cgroup_anon, cgroup_file), in MB."""
        out = _rss_mb(self.proc.pid)
        out.update({f"cgroup_{k}": v for k, v in self.cgroup.charged_mb().items()})
        return out

    def stop(self) -> None:
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        finally:
            self.cgroup.remove()


def exec_storm(n: int, marker: str) -> float:
    """fork+exec n times from a shell; exec/s."""
    t0 = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", f'i=0; while [ $i -lt {n} ]; do {TRUE} {marker}; i=$((i+1)); done'],
                   check=True)
    return n / (time.perf_counter() - t0)


def bench_exec(n: int = 4000, rounds: int = 3) -> dict[str, Any]:
    base, with_agent = [], []
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    try:
        for r in range(rounds):
            base.append(exec_storm(n, f"warm{r}"))
            agent = Agent(tmp)
            cpu0 = _cpu_seconds(agent.proc.pid)
            marker = f"bench-{r}"
            with_agent.append(exec_storm(n, marker))
            deadline = time.time() + 30
            while agent.count(marker) < n and time.time() < deadline:
                time.sleep(0.2)
            delivered = agent.count(marker)
            cpu = _cpu_seconds(agent.proc.pid) - cpu0
            rss = agent.memory()
            agent.stop()
            agent.export.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, a = sorted(base)[len(base) // 2], sorted(with_agent)[len(with_agent) // 2]
    return {"exec_per_s_without": round(b), "exec_per_s_with": round(a),
            "ratio": round(a / b, 3), "events_expected": n, "events_delivered": delivered,
            "lost": n - delivered, "agent_cpu_us_per_exec_event": round(cpu / max(1, 2 * delivered) * 1e6, 1),
            "agent_rss_mb": {k: round(v, 1) for k, v in rss.items()}}


def bench_rss_live(n: int = 10000) -> dict[str, Any]:
    """Agent RSS with n extra live processes (each in the process cache)."""
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    sleepers = subprocess.Popen(["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do sleep 600 & i=$((i+1)); done; wait"],
                                start_new_session=True)
    try:
        time.sleep(0.5)
        agent = Agent(tmp)
        time.sleep(n / 800 + 3)
        live = len([p for p in os.listdir("/proc") if p.isdigit()])
        rss = agent.memory()
        agent.stop()
    finally:
        os.killpg(sleepers.pid, signal.SIGKILL)
        sleepers.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"live_processes": live, "agent_rss_mb": {k: round(v, 1) for k, v in rss.items()}}


def _sysloop() -> str:
    out = Path(tempfile.gettempdir()) / "vigil-sysloop"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "tests/progs/sysloop.c")], check=True)
    return str(out)


def _loops(binary: str, n: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {"getpid": [], "openat": []}
    for _ in range(3):
        for mode in runs:
            out = subprocess.run([binary, str(n), mode, "/etc/hostname"], capture_output=True,
                                 text=True, check=True).stdout
            runs[mode].append(float(out))
    return {m: sorted(v)[1] for m, v in runs.items()}


NONMATCHING_OPENAT = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bench-openat
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["/nonexistent/vigil-bench/"]
"""


def bench_syscalls(n: int = 2_000_000) -> dict[str, Any]:
    """ns per call: no BPF, base sensor without and with credential tracking (its syscall
    exit tracepoints put every syscall on the kernel's traced path), base + non-matching
    openat policy."""
    from vigil.daemon.policies import PolicyManager
    from vigil.stream.policy_events import HookRegistry
    from vigil.sensors.base import BaseSensor, BaseSensorConfig
    binary = _sysloop()
    none = _loops(binary, n)
    base = BaseSensor(BaseSensorConfig(ring_bytes=8 << 20, track_creds=False))
    base.load()
    try:
        no_creds = _loops(binary, n)
    finally:
        base.close()
    base = BaseSensor(BaseSensorConfig(ring_bytes=8 << 20))
    base.load()
    try:
        with_base = _loops(binary, n)
        mgr = PolicyManager(base, HookRegistry())
        mgr.add(NONMATCHING_OPENAT, source="bench")
        with_policy = _loops(binary, n)
        mgr.close()
    finally:
        base.close()
    return {
        "ns_per_call": {"none": none, "base_sensor_no_creds": no_creds,
                        "base_sensor": with_base, "openat_policy": with_policy},
        "ns_added_by_cred_tracking": {m: round(with_base[m] - no_creds[m], 1) for m in none},
        "ns_added_by_policy": {m: round(with_policy[m] - none[m], 1) for m in none},
        "openat_ratio": round(none["openat"] / with_policy["openat"], 3),
    }


class _JsonPath:
    """The agent's JSON export path: hub -> QueueSink -> JsonlExporter -> RotatingFileWriter,
    driven in the calling thread (one core), writing a real file."""

    def __init__(self, path: Path, integrity: bool = False) -> None:
        from vigil.export.jsonl import RotatingFileWriter
        from vigil.export.sink import JsonlExporter, QueueSink
        from vigil.stream.hub import EventHub
        self.path = path
        chain = None
        if integrity:  # --export-integrity-key-file: a keyed hash chain per line
            from vigil.export.integrity import ChainWriter, KeyRatchet, write_key_file
            key = str(path) + ".key"
            write_key_file(key, 0, os.urandom(32), exclusive=True)
            chain = ChainWriter(KeyRatchet(key))
        self.writer = RotatingFileWriter(path, max_size_mb=1 << 20, max_backups=1,
                                         integrity=chain)
        self.exporter = JsonlExporter(self.writer)
        self.sink = QueueSink("bench", self.exporter, max_events=1 << 20)
        self.hub = EventHub()
        self.hub.subscribe(self.sink)

    def feed(self, batches: list[Any], make: Any) -> float:
        """CPU seconds to publish ``make(batch)`` for every batch and write it out."""
        publish, deliver = self.hub.publish, self.sink.deliver_queued
        t0 = time.process_time()
        for b in batches:
            publish(make(b))
            deliver()
        return time.process_time() - t0

    def close(self) -> dict[str, int]:
        """Close the file; what was written, and every place an event could be lost."""
        self.writer.close()
        with open(self.path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
        self.path.unlink()
        for extra in (".chain", ".key"):
            Path(str(self.path) + extra).unlink(missing_ok=True)
        return {"json_lines": lines, "sink_dropped": self.sink.dropped,
                "encode_errors": self.exporter.encode_errors,
                "write_errors": self.writer.write_errors,
                "lines_dropped": self.writer.lines_dropped}


def _batches(records: list[bytes], size: int = 4096) -> list[list[bytes]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def _with_ktime(rec: bytes, delta: int) -> bytes:
    """``rec`` as if it happened ``delta`` ns later (hdr.ktime, and a clone's start_ktime),
    so a replayed exec is a new process instance."""
    from vigil.abi import _generated as abi
    out = bytearray(rec)
    for st, ix, names in ((abi.VG_MSG_HDR, abi.VG_MSG_HDR_INDEX, ("ktime",)),
                          (abi.VG_CLONE_MSG, abi.VG_CLONE_MSG_INDEX, ("start_ktime",))):
        if names[0] == "start_ktime" and rec[0] != abi.MsgOp.CLONE:
            continue
        v = list(st.unpack_from(out))
        for name in names:
            v[ix[name]] += delta
        st.pack_into(out, 0, *v)
    return bytes(out)


def _pipeline_run(records: list[bytes], expected: int, make_pipe: Any, tmp: Path,
                  rounds: int) -> dict[str, Any]:
    """Best of ``rounds``: records -> Pipeline.handle -> JSON lines on disk; plus, in the
    same run, the JSON path alone on the events already built (the serializer's share)."""
    ref = make_pipe()
    built = [e for b in _batches(records) for e in ref.handle(b)]
    best: dict[str, Any] = {}
    for r in range(rounds):
        pipe = make_pipe()
        out = _JsonPath(tmp / f"pipeline-{r}.log")
        cpu = out.feed(_batches(records), pipe.handle)
        got = out.close()
        json_only = _JsonPath(tmp / f"json-only-{r}.log")
        cpu_json = json_only.feed(_batches(built), lambda b: b)
        json_only.close()
        chained = _JsonPath(tmp / f"json-integrity-{r}.log", integrity=True)
        cpu_chained = chained.feed(_batches(built), lambda b: b)
        chained.close()
        per_event, json_per_event = cpu / max(1, got["json_lines"]), cpu_json / len(built)
        res = {"records": len(records), "events_expected": expected, **got,
               "lost": expected - got["json_lines"],
               "events_per_cpu_second": round(1 / per_event),
               "json_path_only_events_per_cpu_second": round(1 / json_per_event),
               "json_path_share_of_cpu": round(json_per_event / per_event, 3),
               # the same JSON path with --export-integrity-key-file (HMAC chain)
               "json_path_integrity_events_per_cpu_second": round(len(built) / cpu_chained),
               "integrity_us_per_event": round((cpu_chained - cpu_json) / len(built) * 1e6,
                                               2)}
        if not best or res["events_per_cpu_second"] > best["events_per_cpu_second"]:
            best = res
    return best


REDACT_OTHER = ('{"binary_regex":["(?:^|/)mysql$"],'
                '"redact":["(?:--password|-p)[\\\\s=]+(\\\\S+)"]}')
REDACT_EVERY = '{"redact":["(?:--password|-p)[\\\\s=]+(\\\\S+)"]}'


def bench_pipeline(n: int = 200_000, rounds: int = 3) -> dict[str, Any]:
    """Real records through decode + process enrichment + the JSON export path, one core.

    Policy events: openat records of a real policy, replayed ``n`` times. Exec/exit: the
    clone, exec and exit records of real /bin/true runs, replayed with shifted
    timestamps so each replay is a new process instance (pid reuse). Zero loss is
    checked: JSON lines written == events expected.
    """
    from vigil.abi._generated import MsgOp
    from vigil.daemon.policies import PolicyManager
    from vigil.stream.pipeline import EventOptions, Pipeline, measure_boot_wall_ns, tune_gc
    from vigil.stream.policy_events import HookRegistry, PolicyEvents
    from vigil.process import procfs
    from vigil.process.cache import ProcessCache
    from vigil.sensors.base import BaseSensor, BaseSensorConfig
    tune_gc()  # as the agent runs
    bw = measure_boot_wall_ns()
    procs = procfs.scan("/proc", "bench", bw)
    reg = HookRegistry()

    def make_pipe(redaction: str = "") -> Pipeline:
        from vigil.events.redact import redactor_from_flag
        pipe = Pipeline(ProcessCache(), EventOptions(
            node_name="bench", redactor=redactor_from_flag(redaction)), lambda: bw)
        PolicyEvents(pipe, reg)
        pipe.bootstrap(procs)
        return pipe

    base = BaseSensor(BaseSensorConfig(ring_bytes=8 << 20))
    base.load()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    mgr = PolicyManager(base, reg)
    assert base.ring is not None  # loaded
    try:
        mgr.add(NONMATCHING_OPENAT.replace("/nonexistent/vigil-bench/", "/etc/host"), source="bench")
        base.ring.drain()
        for _ in range(50):
            open("/etc/hostname").close()
        children = [subprocess.Popen([TRUE]) for _ in range(200)]
        for c in children:
            c.wait()
        time.sleep(0.2)
        pids = {c.pid for c in children}
        recs = base.ring.drain()
        policy_sample = [r for r in recs if r[0] in (MsgOp.GENERIC_TRACEPOINT, MsgOp.GENERIC_KPROBE)
                         and int.from_bytes(r[16:20], "little") == os.getpid()]
        proc_sample = [r for r in recs if r[0] in (MsgOp.CLONE, MsgOp.EXEC, MsgOp.EXIT)
                       and int.from_bytes(r[16:20], "little") in pids]
        policy_records = (policy_sample * (n // max(1, len(policy_sample)) + 1))[:n]
        replays = max(1, n // 2 // max(1, len(proc_sample)))
        ktimes = [int.from_bytes(r[8:16], "little") for r in proc_sample]
        span = 1 + max(ktimes) - min(ktimes)
        proc_records = [_with_ktime(r, k * span) for k in range(replays) for r in proc_sample]
        execs = sum(1 for r in proc_sample if r[0] == MsgOp.EXEC)
        exits = sum(1 for r in proc_sample if r[0] == MsgOp.EXIT)
        return {
            "policy": _pipeline_run(policy_records, n, make_pipe, tmp, rounds),
            "exec_exit": {"processes": replays * len(pids),
                          **_pipeline_run(proc_records, replays * (execs + exits), make_pipe,
                                          tmp, rounds)},
            # --redaction-filters: one that matches no binary here (the common case: a
            # filter for a few programs), and one for every binary (a regex per exec)
            "exec_exit_redaction_other_binary": _pipeline_run(
                proc_records, replays * (execs + exits),
                lambda: make_pipe(REDACT_OTHER), tmp, rounds),
            "exec_exit_redaction_every_binary": _pipeline_run(
                proc_records, replays * (execs + exits),
                lambda: make_pipe(REDACT_EVERY), tmp, rounds),
        }
    finally:
        mgr.close()
        base.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> dict[str, Any]:
    results = {
        "exec_storm": bench_exec(),
        "syscall_cost": bench_syscalls(),
        "pipeline_json": bench_pipeline(),
        "rss_10k_live_processes": bench_rss_live(),
    }
    return results
