"""Does a re-run reproduce a study? ``python -m analysis.compare STUDY_A STUDY_B [--z 2]``.

Matches runs by their identity hash (the run directory's suffix), then every final validation point by
(inference loops, exit threshold) — the study's positive control (its `control/` study) included —, and checks |NLL_a - NLL_b| against the two points' Monte-Carlo standard
errors combined (z = 2 by default). The same code on the same machine reproduces a run bit for bit; on other
hardware or library versions float reductions differ, and this says whether the difference stays inside the
error the report already states. Exit status 0 when every shared point agrees, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import records

from .util import DefaultsFormatter


def final_points(study_dir: Path) -> dict[tuple, dict]:
    out = {}
    control = records.control_dir(study_dir)
    studies = [(study_dir, "")] + ([(control, f"{records.CONTROL_DIR}/")] if (control / records.RUNS_DIR).is_dir() else [])
    for d, prefix in studies:
        for run_dir in records.list_run_dirs(d):
            for row in records.read_evals(run_dir).rows:
                if row.get("is_final") and not row.get("scan"):
                    key = (records.run_key(run_dir), row["eval_loops"], row.get("exit_threshold"))
                    out[key] = row | {"run": prefix + run_dir.name}
    return out


def compare(a_dir: Path, b_dir: Path, z: float = 2.0) -> tuple[list[dict], list[str]]:
    a, b = final_points(a_dir), final_points(b_dir)
    rows = []
    for key in sorted(set(a) & set(b), key=str):
        ra, rb = a[key], b[key]
        se = math.hypot(ra.get("nll_se") or 0.0, rb.get("nll_se") or 0.0)
        diff = rb["nll"] - ra["nll"]
        rows.append({"run": ra["run"], "eval_loops": key[1], "exit_threshold": key[2], "nll_a": ra["nll"],
                     "nll_b": rb["nll"], "diff": diff, "se": se,
                     "agrees": abs(diff) <= z * se if se > 0 else diff == 0})
    only = [f"only in {a_dir}: {len(set(a) - set(b))} points", f"only in {b_dir}: {len(set(b) - set(a))} points"]
    return rows, only


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.splitlines()[0],
                                 formatter_class=DefaultsFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--z", type=float, default=2.0, help="agreement: |difference| <= z * combined MC s.e.")
    ap.add_argument("--summary", action="store_true", help="print only the one-line verdict (and the points that differ)")
    ns = ap.parse_args(argv)
    for d in (ns.a, ns.b):
        if not (d / records.RUNS_DIR).is_dir():
            print(f"error: {d} is not a study directory (no runs/)", file=sys.stderr)
            return 2
    rows, only = compare(ns.a, ns.b, ns.z)
    if not rows:
        print("error: the two studies share no finished run (compare runs of the same configs)", file=sys.stderr)
        return 2
    for r in rows:
        if ns.summary and r["agrees"]:
            continue
        thr = "" if r["exit_threshold"] is None else f" eps={r['exit_threshold']}"
        if r["diff"] == 0:
            what = "identical"
        else:
            z = f" = {r['diff'] / r['se']:+.2f} s.e." if r["se"] > 0 else ""
            what = f"diff {r['diff']:+.2e}{z} ({'within' if r['agrees'] else 'OUTSIDE'} {ns.z:g} s.e.)"
        print(f"{r['run']:44s} S={r['eval_loops']}{thr:10s} {r['nll_a']:.5f} vs {r['nll_b']:.5f}  {what}")
    bad = sum(not r["agrees"] for r in rows)
    exact = sum(r["diff"] == 0 for r in rows)
    verdict = "reproduces" if not bad else "does NOT reproduce"
    print(f"{verdict}: {len(rows)} shared final points, {len(rows) - bad} within {ns.z:g} MC s.e. ({exact} bit-identical), "
          f"{bad} outside; " + "; ".join(only))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
