"""`make bench` / `python -m vigil.bench [NAME...]`: run benchmarks, print JSON results.

Names: core (exec storm, syscall cost, pipeline, RSS), grpc, flood, enforce. Default: all
that are present. Each prints its results as JSON, with ratios against a baseline measured
in the same run; the run ends with one table of the headline figures (vigil.bench.table).
"""

from __future__ import annotations

import importlib
import json
import sys
import time

SUITES = ("core", "grpc_bench", "flood", "enforce")


def main(argv: list[str]) -> int:
    from vigil.bench.table import render

    wanted = argv or list(SUITES)
    failed = 0
    results: dict[str, object] = {}
    for name in wanted:
        mod_name = {"grpc": "grpc_bench"}.get(name, name)
        try:
            mod = importlib.import_module(f"vigil.bench.{mod_name}")
        except ModuleNotFoundError:
            print(f"# {name}: not available", file=sys.stderr)
            continue
        t0 = time.monotonic()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            result = mod.main()
        except Exception as err:  # noqa: BLE001 - one failing suite must not hide the others
            failed += 1
            print(f"# {name} failed: {err!r}", file=sys.stderr)
            continue
        results[{"grpc_bench": "grpc"}.get(name, name)] = result
        print(json.dumps({name: result, "seconds": round(time.monotonic() - t0, 1)}, indent=2),
              flush=True)
    table = render(results)
    if table:
        print(f"\n{table}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
