"""Benchmark (not a test): ``analysis.report`` over a synthetic study of ~1,000 runs with 1,000 bootstrap
resamples. Target: < 60 s on 2 CPU cores.

    OMP_NUM_THREADS=1 python bench/bench_report.py [--runs 1000] [--bootstrap 1000] [--keep DIR]

Prints the wall time of the whole report (collect + fits + claims + figures + writing) and its parts.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import run_report  # noqa: E402
from analysis.synthetic import SyntheticSpec, write_study  # noqa: E402


def spec_for(n_runs: int) -> SyntheticSpec:
    """3 runs (MDM, LoopMDM, deeper MDM) per comparison group; groups = budgets x sizes x seeds."""
    budgets = (1e15, 3e15, 1e16, 3e16, 1e17, 3e17, 1e18)
    factors = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    seeds = max(1, math.ceil(n_runs / (3 * len(budgets) * len(factors))))
    return SyntheticSpec(study="bench", budgets=budgets, size_factors=factors, seeds=tuple(range(seeds)),
                         partial=3, no_evals=3, failed=2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--keep", default=None, help="write the study here and keep it")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_report_"))
    if root.exists() and a.keep:
        shutil.rmtree(root)
    t = time.perf_counter()
    write_study(root, spec_for(a.runs))
    n = sum(1 for _ in (root / "runs").iterdir())
    print(f"wrote {n} synthetic runs in {time.perf_counter() - t:.1f} s (not timed below)")
    t = time.perf_counter()
    res = run_report(root, n_boot=a.bootstrap)
    wall = time.perf_counter() - t
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())
    print(f"analysis.report: {n} runs, {a.bootstrap} bootstrap resamples: {wall:.1f} s wall ({parts}); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    for c in res.claims:
        print(f"  {c.verdict:>14}  {c.key}: {c.measured} [{c.ci_low}, {c.ci_high}]")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
