"""``python -m study.eval TARGET --tasks ... | --scan | --attention | --sudoku``: evaluate trained runs, here or as
one job per run; results already on disk are not recomputed. What the options mean: `study.evaluate.request`."""

from __future__ import annotations

import sys
from pathlib import Path

import records
from study.evaluate.request import add_request_options, add_run_options, request_from_args

from .common import Parser, check_sbatch, check_writable, input_errors, say_error


def parser() -> Parser:
    ap = Parser(prog="python -m study.eval", description="Evaluate trained runs: lm-eval tasks, loop scans of "
                "validation NLL, attention statistics; results already on disk are not recomputed.")
    ap.add_argument("target", help="a run directory, or a study directory (all finished runs)")
    add_request_options(ap)
    add_run_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    from study.evaluate.dispatch import evaluate_run, targets
    from study.evaluate.task_scores import describe

    ns = parser().parse_args(argv)
    failed = 0
    try:
        req = request_from_args(ns)
        runs = targets(ns.target, allow_unfinished=ns.allow_unfinished)
        if ns.executor != "local":
            return _submit(ns, req, runs)
        for rd in runs:
            try:
                res = evaluate_run(rd, req)
            except input_errors() as exc:
                if len(runs) == 1:
                    raise
                print(f"[{rd.name}] skipped: {exc}", file=sys.stderr)
                failed += 1
                continue
            for r in res.get("tasks", []):
                if r.get("cached") and not ns.quiet:
                    print(describe(rd, r, "already done"))
            if res.get("attention") and not ns.quiet:
                print(f"[{rd.name}] attention: {records.attention_path(rd, res['attention']['attention_hash'])}")
    except input_errors() as exc:
        return say_error(exc)
    return 1 if failed else 0


def _submit(ns, req, runs: list[Path]) -> int:
    """One job per run through `study.launch.evaluations` (SLURM, or 'debug': submitit in this process)."""
    from study.evaluate.task_scores import describe
    from study.launch import ResourceSpec, evaluations

    if ns.executor == "slurm":
        check_sbatch("executor")
    check_writable(records.eval_jobs_dir(Path(ns.target)), "target", "the job logs go beside the runs: make it "
                   "writable, or evaluate a writable copy")
    res = ResourceSpec(executor=ns.executor, partition=ns.partition, gpus_per_node=ns.gpus_per_node,
                       cpus_per_task=ns.cpus_per_task, time_min=ns.time_min)
    subs = evaluations.submit_for_runs(runs, req, ns.target, res)
    for sub in subs:
        print(f"submitted {sub.name}: job {sub.job_id} ({sub.executor})")
    if ns.wait or ns.executor == "debug":  # debug jobs run in this process, when asked for their result
        for sub in subs:
            for r in sub.job.result().get("tasks", []):
                print(describe(Path(r["run_dir"]), r, "already done" if r.get("cached") else "done"))
    return 0
