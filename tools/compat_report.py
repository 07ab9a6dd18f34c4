#!/usr/bin/env python3
"""Render the kernel lane's results (build/kernel-lane/results) as Markdown: the
compatibility table of Tetragon's example policies per kernel, and the benchmark ratios.

usage: tools/compat_report.py [RESULTS_DIR]   (prints to stdout; docs/kernels.md quotes it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _kernels(res: Path) -> list[tuple[str, dict]]:
    out = []
    for f in sorted(res.glob("compat-*.json")):
        doc = json.loads(f.read_text())
        out.append((doc["kernel"], {c["example"]: c for c in doc["cases"]}))
    return out


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    status = c["status"]
    if status == "pass":
        return f"pass: {c.get('mechanism', '')}"
    if status == "loads":
        return f"loads: {c['detail'].lstrip(': ')}"
    return f"{status}: {c.get('detail', '')}"


def compat_table(res: Path) -> str:
    kernels = _kernels(res)
    if not kernels:
        return "(no compat-*.json in the results: run `make test-kernels`)\n"
    examples: list[str] = []
    notes: dict[str, str] = {}
    for _k, cases in kernels:
        examples += [e for e in cases if e not in examples]
        notes.update({e: c.get("note", "") for e, c in cases.items() if c.get("note")})
    examples.sort()
    lines = ["| example (our equivalent) | " + " | ".join(k for k, _ in kernels) + " |",
             "|---|" + "---|" * len(kernels)]
    for e in examples:
        name = e + (f" ({notes[e]})" if notes.get(e) else "")
        lines.append(f"| {name} | " + " | ".join(_cell(c.get(e)).replace("|", "\\|")
                                                   for _k, c in kernels) + " |")
    counts = []
    for k, cases in kernels:
        n: dict[str, int] = {}
        for c in cases.values():
            n[c["status"]] = n.get(c["status"], 0) + 1
        counts.append(f"- {k}: {len(cases)} examples: " +
                      ", ".join(f"{v} {s}" for s, v in sorted(n.items())))
    return "\n".join(counts) + "\n\n" + "\n".join(lines) + "\n"


def bench_table(res: Path) -> str:
    out = []
    for f in sorted(res.glob("bench-*.json")):
        try:
            doc = json.loads(f.read_text())["kprobe"]
        except (ValueError, KeyError):
            continue
        out += [f"Kernel {doc['kernel']} (ratios against no BPF, same boot; "
                f"{doc['rounds']} interleaved rounds, medians):", "",
                "| configuration | exec/s | ratio | openat/s | ratio | mechanism |",
                "|---|---|---|---|---|---|"]
        for cfg, r in doc["ratio_vs_none"].items():
            out.append(f"| {cfg} | {doc['exec_per_s'][cfg]} | {r['exec']} | "
                       f"{doc['openat_per_s'][cfg]} | {r['openat']} | "
                       f"{doc['mechanism'].get(cfg, '')} |")
        out.append("")
    return "\n".join(out) + "\n" if out else "(no bench-*.json in the results)\n"


def main(argv: list[str]) -> int:
    res = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "build/kernel-lane/results"
    sys.stdout.write("### Tetragon example policies\n\n" + compat_table(res))
    sys.stdout.write("\n### Benchmark\n\n" + bench_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
