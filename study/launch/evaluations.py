"""Evaluation jobs, the one place they are submitted: ``study.eval --executor slurm|debug`` (one job per run) and
a spec's ``evaluate:`` stages (one job per (stage, run), waiting on the run's training job); and the stages run
here, one after another, when a sweep is local.

Evaluation jobs keep their logs and their own ledger in ``records.eval_jobs_dir`` (the study's ledger tracks
training runs by hash). A stage's job leaves a done marker (``records.eval_marker``: what the evaluation
returned), so a re-submitted sweep never evaluates a (stage, run) twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import records
from study.evaluate.dispatch import evaluate_run
from study.evaluate.request import EvalRequest
from study.evaluate.task_scores import describe
from study.plan.spec import EvalStage, PlannedRun, Spec
from study.plan.trained import run_config

from .resources import ResourceSpec
from .submit import Job, Submitted, after_ok, submit
from .training import queued_jobs


def _submit(jobs: list[Job], resources: ResourceSpec, where: Path, check_cluster: bool = False) -> list[Submitted]:
    folder = records.eval_jobs_dir(where)
    return submit(jobs, resources, folder, study_dir=folder, check_cluster=check_cluster) if jobs else []


# ------------------------------------------------------------------------------ study.eval targets
def submit_for_runs(runs: Sequence[Path], req: EvalRequest, target: str | Path,
                    resources: ResourceSpec) -> list[Submitted]:
    """One job per run (``study.eval --executor slurm|debug``), its logs under the target it was given."""
    jobs = []
    for rd in runs:
        _, run_hash = run_config(rd)
        jobs.append(Job(key=f"eval-{run_hash[:16]}", name=f"eval-{rd.name}", fn=evaluate_run,
                        kwargs={"run_dir": str(Path(rd).resolve()), "req": req}))
    return _submit(jobs, resources, Path(target).resolve())


# ------------------------------------------------------------------------------ a spec's stages
def stage_key(stage: EvalStage, run: PlannedRun) -> str:
    return f"eval-{run.hash[:12]}-{stage.key}"


def evaluate_point(run_dir: str, req: EvalRequest, marker: str) -> dict[str, Any]:
    """The evaluation job of one (stage, run): `study.evaluate.dispatch.evaluate_run`, then its done marker."""
    res = evaluate_run(run_dir, req)
    records.atomic_write_json(Path(marker), {
        "time": time.time(), "run": Path(run_dir).name, "tasks": [r.get("eval_hash") for r in res.get("tasks", [])],
        "attention": (res.get("attention") or {}).get("attention_hash"), "scan": bool(res.get("scan"))})
    return res


def run_stages_locally(study_dir: Path, spec: Spec, runs: list[PlannedRun], quiet: bool = False) -> int:
    """The spec's ``evaluate:`` stages, here, on every selected run that finished training and was not
    evaluated by that stage yet."""
    todo = [(st, r) for st in spec.evaluate for r in runs
            if st.selects(r) and records.done_summary(r.run_dir(study_dir)) is not None
            and not records.eval_marker(study_dir, stage_key(st, r)).is_file()]
    failed = 0
    for i, (stage, r) in enumerate(todo, 1):
        rd = r.run_dir(study_dir)
        print(f"[eval {i}/{len(todo)}] {r.slug}: {' '.join(stage.args)}", flush=True)
        t0 = time.time()
        try:
            res = evaluate_point(str(rd), stage.request, str(records.eval_marker(study_dir, stage_key(stage, r))))
        except Exception as exc:  # noqa: BLE001 - one failed evaluation must not stop the others
            failed += 1
            print(f"    failed: {exc}", file=sys.stderr, flush=True)
            continue
        for rec in res.get("tasks", []):
            if not quiet:
                print("    " + describe(rd, rec, "already done" if rec.get("cached") else "done"), flush=True)
        print(f"    {time.time() - t0:.0f} s", flush=True)
    return 1 if failed else 0


def submit_stages(study_dir: Path, spec: Spec, runs: list[PlannedRun], resources: ResourceSpec) -> list[Submitted]:
    """The ``evaluate:`` stages as SLURM jobs: a run that finished gets its job now, a queued one a job that
    waits for it (afterok). One job per (stage, run): a re-submitted sweep skips those that are queued or
    done (their marker), and resubmits those that failed."""
    folder = records.eval_jobs_dir(study_dir)
    known_eval = records.known_jobs(folder) if (folder / records.LEDGER).is_file() else {}
    known_train = queued_jobs(study_dir)
    jobs = []
    for stage in spec.evaluate:
        for r in runs:
            if not stage.selects(r):
                continue
            key = stage_key(stage, r)
            marker = records.eval_marker(study_dir, key)
            if marker.is_file() or (key in known_eval and known_eval[key].queued):
                continue
            res = resources
            if records.done_summary(r.run_dir(study_dir)) is None:
                if r.hash[:12] not in known_train:
                    continue  # neither done nor queued: it failed; `--retry` resubmits it and its evaluation
                res = after_ok(res, known_train[r.hash[:12]])
            jobs.append(Job(key=key, name=f"eval-{r.slug}", fn=evaluate_point, resources=res, kwargs={
                "run_dir": str(r.run_dir(study_dir).resolve()), "req": stage.request, "marker": str(marker.resolve())}))
    return _submit(jobs, resources, study_dir, check_cluster=True)
