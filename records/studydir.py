"""The study directory around ``runs/``: the names of the files the stages leave beside the runs — the one
place they are spelled (docs/INTERFACES.md, "Run directory").

    results/STUDY/
      plan.json  spec.yaml        the expanded sweep and the spec as given (study.launch)
      submissions.jsonl           the ledger (records.ledger); .submit.lock while a submission decides
      submitit/  .snapshots/      scheduler logs and pickles; the code a queued job runs
      eval_jobs/                  evaluation jobs: their logs, their ledger, done/<key>.json markers
      tune/                       the tuning stage, a study directory of its own (runs/, its ledger, submitit/)
        tuned_lr.json             the LR chosen per (family, width) and the grid it was chosen from
      runs.parquet                the tidy table (analysis.collect)
      fits.json  report.md  figures/                                   (analysis.report)
"""

from __future__ import annotations

from pathlib import Path

from .io import PathLike

PLAN = "plan.json"
SPEC = "spec.yaml"
SUBMIT_LOCK = ".submit.lock"
SUBMITIT_DIR = "submitit"
SNAPSHOTS_DIR = ".snapshots"
EVAL_JOBS_DIR = "eval_jobs"
EVAL_DONE_DIR = "done"
RUNS_TABLE = "runs.parquet"
FITS = "fits.json"
REPORT = "report.md"
FIGURES_DIR = "figures"
TUNE_DIR = "tune"
TUNED = "tuned_lr.json"
CONTROL_DIR = "control"  # a study's positive control (its spec's control_study), a study directory of its own


def eval_jobs_dir(target: PathLike) -> Path:
    """Where evaluation jobs keep their scheduler logs and their own ledger: beside ``runs/`` of a study, or
    inside the run directory that ``study.eval`` was pointed at (the study's ledger tracks training runs)."""
    return Path(target) / EVAL_JOBS_DIR


def eval_marker(study_dir: PathLike, key: str) -> Path:
    """The done marker of one evaluation stage on one run (what the evaluation returned): a re-submitted
    sweep never evaluates that (stage, run) twice."""
    return eval_jobs_dir(study_dir) / EVAL_DONE_DIR / f"{key}.json"


def tune_dir(study_dir: PathLike) -> Path:
    """The tuning stage's runs live in a study directory of their own inside the study: the grid's tables,
    fits and claims never see them, and every tool that reads a study (status, collect) reads it too."""
    return Path(study_dir) / TUNE_DIR


def control_dir(study_dir: PathLike) -> Path:
    """The study's positive control lives in a study directory of its own inside the study (run there first by
    ``study.sweep`` when the spec names a ``control_study``); the study's report cites what it detected."""
    return Path(study_dir) / CONTROL_DIR


def tuned_path(study_dir: PathLike) -> Path:
    """The record of the chosen LR per tuning key (a study's grid runs name it in their ``meta.lr``)."""
    return tune_dir(study_dir) / TUNED
