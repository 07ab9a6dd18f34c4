#!/usr/bin/env python3
"""Render the kernel lane's results (build/kernel-lane/results) as Markdown: the
compatibility table of Tetragon's real example policies (tests/kernel/test_compat.py: one
row per file, its verdict on a kernel with every BPF feature from
tests/tetragon_examples.FULL_PROFILE, then per kernel: pass / loads / refused-kernel /
refused-vigil / refused-host with the reason), and the benchmark ratios.

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


VERDICTS = ("pass", "loads", "refused-kernel", "refused-vigil", "refused-host", "FAIL")


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    status = c["status"]
    if status == "pass":
        return f"pass: {c.get('mechanism', '')}"
    return f"{status}: {c.get('detail', '')}"


def _counts(cases: dict) -> str:
    n: dict[str, int] = {}
    for c in cases.values():
        n[c["status"]] = n.get(c["status"], 0) + 1
    order = [v for v in VERDICTS if v in n] + sorted(set(n) - set(VERDICTS))
    return ", ".join(f"{n[s]} {s}" for s in order)


def _full_profile() -> dict[str, str]:
    """The full-profile verdict of each file (tests/tetragon_examples.FULL_PROFILE)."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        from tests.tetragon_examples import FULL_PROFILE
    except ImportError:
        return {}
    finally:
        sys.path.remove(str(root))
    out = {}
    for name, why in FULL_PROFILE.items():
        if why is None:
            out[name] = "accepted"
        elif why[0] == "vigil":
            out[name] = f"refused-vigil: {why[1]}"
        else:
            out[name] = f"refused (host BTF): {why[1]}"
    return out


def compat_table(res: Path) -> str:
    kernels = _kernels(res)
    if not kernels:
        return "(no compat-*.json in the results: run `make test-kernels`)\n"
    full = _full_profile()
    examples: list[str] = sorted(set(full) | {e for _k, cases in kernels for e in cases})
    notes: dict[str, str] = {}
    for _k, cases in kernels:
        notes.update({e: c.get("note", "") for e, c in cases.items() if c.get("note")})
    lines = ["| file (tetragon-examples/) | full profile | " + " | ".join(k for k, _ in kernels) + " |",
             "|---|---|" + "---|" * len(kernels)]
    for e in examples:
        name = e + (f" ({notes[e]})" if notes.get(e) else "")
        cells = [full.get(e, "-")] + [_cell(c.get(e)) for _k, c in kernels]
        lines.append(f"| {name} | " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    counts = []
    if full:
        kinds = [v.split(":")[0] for v in full.values()]
        counts.append(f"- full profile (every BPF feature, host BTF): {len(full)} files: " +
                      ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)))
    counts += [f"- {k}: {len(cases)} files: {_counts(cases)}" for k, cases in kernels]
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
