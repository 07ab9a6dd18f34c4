"""The one table `make bench` ends with: each headline figure next to its baseline.

A baseline is measured in the same run where one exists (the machine without the agent,
grpcio's own server); where none can exist (events per CPU-second of the agent itself,
its memory) the row compares the figure with the target it is held to, and says so.
Rows whose suite did not run are left out.
"""

from __future__ import annotations

from typing import Any

# Targets for figures that have no same-run baseline.
TARGETS = {"exec_events_per_cpu_s": 60_000, "policy_events_per_cpu_s": 400_000,
           "rss_mb": 64.0}


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, baseline, with Vigil, ratio) rows; a ratio above 1 is better."""
    out: list[tuple[str, str, str, str]] = []
    core, grpc = results.get("core"), results.get("grpc")
    ex = _get(core, "exec_storm")
    if ex:
        out.append(("exec/s, fork+exec storm (baseline: no agent)",
                    f"{ex['exec_per_s_without']:,}", f"{ex['exec_per_s_with']:,}",
                    f"{ex['ratio']:.3f}"))
    ns = _get(core, "syscall_cost", "ns_per_call")
    if ns:
        for call, label in (("getpid", "getpid"), ("openat", "openat+close")):
            base, pol = ns["none"][call], ns["openat_policy"][call]
            out.append((f"ns per {label}, non-matching openat policy (baseline: no agent)",
                        f"{base:.1f}", f"{pol:.1f}", f"{base / pol:.3f}"))
    for shape, key, label in (("exec_exit", "exec_events_per_cpu_s", "exec/exit"),
                              ("policy", "policy_events_per_cpu_s", "policy")):
        v = _get(core, "pipeline_json", shape, "events_per_cpu_second")
        if v:
            t = TARGETS[key]
            out.append((f"{label} events per agent CPU-second (target)", f"{t:,}",
                        f"{v:,}", f"{v / t:.2f}"))
    one, floor = _get(grpc, "transport_one_subscriber"), _get(grpc, "baseline_grpcio_server")
    if one and floor:
        v, b = one["events_per_s_per_subscriber"], floor["msgs_per_s"]
        out.append(("gRPC events/s to one subscriber (baseline: grpcio server)",
                    f"{b:,}", f"{v:,}", f"{v / max(b, 1):.2f}"))
    mem = _get(core, "rss_10k_live_processes", "agent_rss_mb")
    if mem:
        t = TARGETS["rss_mb"]
        out.append(("agent VmRSS MB, 10k live processes (target)", f"{t:g}",
                    f"{mem['VmRSS']:.1f}", f"{t / mem['VmRSS']:.2f}"))
        if "cgroup_charged" in mem:
            out.append(("  memory charged to the agent's cgroup, MB (ring, BPF maps, "
                        "page cache)", "", f"{mem['cgroup_charged']:.1f}", ""))
    return out


def render(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`rows` (empty string when there is nothing to show)."""
    body = rows(results)
    if not body:
        return ""
    lines = ["| measure | baseline | with Vigil | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {b} | {w} | {r} |" for m, b, w, r in body]
    return "\n".join(lines)
