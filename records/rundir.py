"""The run directory: its name, its files, its markers and its checkpoints — the one contract between plan,
train, evaluate and analysis (docs/INTERFACES.md, "Run directory").

    runs/<slug>-<hash12>/
      config.yaml      the resolved config (+ meta)       metrics.jsonl / evals.jsonl   append-only logs
                                                          loops.jsonl (looped runs)     loop diagnostics
      ckpt/step_NNNNNNNN/  ... MANIFEST.json (last)        evals/<task>-<hash>.json      task results
      RUNNING.json (heartbeat)  DONE.json | FAILED.json | PREEMPTED.json                  markers
      system.json      how it ran                         tb/                           TensorBoard mirror
      .lock            held (flock) by the live process that trains the run

Nothing else in the project spells these names: everything reads and writes runs through this module (the
study directory around ``runs/``: `records.studydir`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from .io import PathLike, atomic_write_json, read_json, read_records, remove_stray_temp_files, truncate_jsonl

RUNS_DIR = "runs"
CONFIG = "config.yaml"
DONE = "DONE.json"
FAILED = "FAILED.json"
PREEMPTED = "PREEMPTED.json"
RUNNING = "RUNNING.json"
SYSTEM = "system.json"  # how the run was executed (world size, precision, machine): not its identity
METRICS = "metrics.jsonl"
EVALS = "evals.jsonl"
LOOP_DIAG = "loops.jsonl"  # per-loop state diagnostics of looped runs at each eval point (model.diagnostics)
TENSORBOARD_DIR = "tb"  # system.tensorboard: a mirror of the logs (the jsonl files are the record)
WANDB_DIR = "wandb"  # system.wandb: W&B's own files (offline runs, its transaction logs), another mirror
WANDB_RUN_ID = "run_id"  # in WANDB_DIR: the W&B run id, so every restart of the run continues the same W&B run
EVALS_DIR = "evals"
CKPT_DIR = "ckpt"
CKPT_PREFIX = "step_"
CKPT_META = "meta.json"
MANIFEST = "MANIFEST.json"
LOCK = ".lock"
SLUG_MAX = 48
MARKERS = (DONE, FAILED, PREEMPTED, RUNNING)
SEALED_SINCE = "world_size"  # a meta.json key that came with manifests: its checkpoint must have one

_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")
_HASH_OK = re.compile(r"^[0-9a-f]{12,}$")


# ------------------------------------------------------------------------------------------- naming
def safe_slug(s: str, max_len: int = SLUG_MAX) -> str:
    """A name built from spec values that can never act as a path: only [a-z0-9._-], no leading dot or
    dash (no hidden files, no '..', nothing a CLI reads as an option), length-limited, never empty."""
    slug = _SLUG_BAD.sub("-", str(s).lower())
    slug = re.sub(r"-{2,}", "-", slug).lstrip(".-")[:max_len].rstrip(".-")
    return slug or "run"


def run_dir(study_dir: PathLike, slug: str, hash: str) -> Path:
    """``study_dir/runs/<slug>-<hash[:12]>``: a pure function of the run's identity, so a re-run of the sweep
    finds the same directory; the slug only helps humans."""
    h = str(hash).lower()
    if not _HASH_OK.match(h):
        raise ValueError(f"run hash must be at least 12 hex digits, got {hash!r}")
    runs = (Path(study_dir) / RUNS_DIR).resolve()
    path = runs / f"{safe_slug(slug)}-{h[:12]}"
    if path.resolve().parent != runs:  # belt and braces: safe_slug should make this impossible
        raise ValueError(f"run directory {path} escapes {runs}")
    return path


def run_key(run_dir: PathLike) -> str:
    """The 12-hex-digit hash a run directory's name ends with."""
    return Path(run_dir).name.rsplit("-", 1)[-1]


def study_of(run_dir: PathLike) -> Path:
    """The study directory a run directory lives in (``<study>/runs/<run>``)."""
    return Path(run_dir).resolve().parent.parent


def list_run_dirs(study_dir: PathLike) -> list[Path]:
    try:
        with os.scandir(Path(study_dir) / RUNS_DIR) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def task_eval_path(run_dir: PathLike, task: str, eval_hash: str) -> Path:
    return Path(run_dir) / EVALS_DIR / f"{safe_slug(task)}-{eval_hash}.json"


def tensorboard_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR


def wandb_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / WANDB_DIR


def attention_path(run_dir: PathLike, settings_hash: str) -> Path:
    return Path(run_dir) / EVALS_DIR / f"attention-{settings_hash}.json"


def is_task_eval_file(path: PathLike) -> bool:
    """Task scores in ``evals/`` (attention statistics live there too, under their own prefix)."""
    name = Path(path).name
    return name.endswith(".json") and not name.startswith(("attention-", "."))


# ------------------------------------------------------------------------------------------- config
def read_config(run_dir: PathLike) -> dict[str, Any] | None:
    """config.yaml as a plain mapping (C loader when available: ~10x faster over 1,000 runs), or None when
    absent. Raises ``yaml.YAMLError`` for an unreadable file: the caller says what that means for it."""
    import yaml

    path = Path(run_dir) / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(text, Loader=loader)
    return raw if isinstance(raw, dict) else {}


def recorded_hash(raw: Mapping[str, Any] | None) -> str | None:
    return ((raw or {}).get("meta") or {}).get("hash")


# ------------------------------------------------------------------------------------------ markers
def job_context() -> dict[str, Any]:
    """Who is writing: enough to find the process and its scheduler job later."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job_id, scheduler = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}", "slurm"
    elif env.get("SLURM_JOB_ID"):
        job_id, scheduler = env["SLURM_JOB_ID"], "slurm"
    elif env.get("SUBMITIT_LOCAL_JOB_ID"):
        job_id, scheduler = env["SUBMITIT_LOCAL_JOB_ID"], "local"
    else:
        job_id, scheduler = None, "none"
    return {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
            "job_id": job_id, "scheduler": scheduler}


def heartbeat(run_dir: PathLike, **info: Any) -> None:
    """RUNNING.json: the trainer calls this at start and on every log so `status` can tell a live run from
    a dead one. ``info`` (step, loss, ...) is stored beside the job id, host, pid and time."""
    atomic_write_json(Path(run_dir) / RUNNING, {**job_context(), **info})


def _clear(run_dir: Path, *names: str) -> None:
    for name in names:
        try:
            os.unlink(run_dir / name)
        except FileNotFoundError:
            pass


def mark_done(run_dir: PathLike, summary: Mapping[str, Any]) -> None:
    """DONE.json, then the heartbeat and any earlier preemption/failure marker go: a finished run shows
    one marker (the last preemption's record is kept inside DONE.json, see `last_preemption`), and no temp
    file of a write that a kill -9 interrupted."""
    rd = Path(run_dir)
    extra = {"preempted": read_json(rd / PREEMPTED)} if (rd / PREEMPTED).exists() else {}
    atomic_write_json(rd / DONE, {**job_context(), "summary": dict(summary), **extra})
    _clear(rd, RUNNING, PREEMPTED, FAILED)
    remove_stray_temp_files(rd)


def mark_failed(run_dir: PathLike, reason: str, traceback: str | None = None, **info: Any) -> None:
    rd = Path(run_dir)
    atomic_write_json(rd / FAILED, {**job_context(), "reason": reason, "traceback": traceback, **info})


def mark_preempted(run_dir: PathLike, **info: Any) -> None:
    """Written after the preemption checkpoint, just before the process exits to be requeued. The heartbeat
    stays: its job id is how `status` recognises the requeued attempt waiting in the queue."""
    atomic_write_json(Path(run_dir) / PREEMPTED, {**job_context(), **info})


def last_preemption(run_dir: PathLike) -> dict[str, Any] | None:
    """The newest preemption record: PREEMPTED.json, or, once the run finished, its copy in DONE.json."""
    rd = Path(run_dir)
    return read_json(rd / PREEMPTED) or (read_json(rd / DONE) or {}).get("preempted")


def done_summary(run_dir: PathLike) -> dict[str, Any] | None:
    return (read_json(Path(run_dir) / DONE) or {}).get("summary")


# -------------------------------------------------------------------------------------- checkpoints
def ckpt_name(step: int) -> str:
    return f"{CKPT_PREFIX}{int(step):08d}"


def ckpt_step(path: PathLike) -> int:
    """The step a checkpoint directory holds, from its name (``step_00000123`` -> 123)."""
    name = Path(path).name
    if not name.startswith(CKPT_PREFIX) or not name[len(CKPT_PREFIX):].isdigit():
        raise ValueError(f"{path} is not a checkpoint directory (step_NNNNNNNN)")
    return int(name[len(CKPT_PREFIX):])


def ckpt_root(run_dir: PathLike) -> Path:
    return Path(run_dir) / CKPT_DIR


def ckpt_tmp(run_dir: PathLike, step: int) -> Path:
    """Where a checkpoint is written before it is renamed into place (never read, deleted at start)."""
    return ckpt_root(run_dir) / f".tmp-{ckpt_name(step)}"


def _ckpt_dirs(run_dir: PathLike) -> list[Path]:
    root = ckpt_root(run_dir)
    try:
        found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
                 and p.name[len(CKPT_PREFIX):].isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found, key=ckpt_step)


def complete_checkpoints(run_dir: PathLike) -> list[Path]:
    """Checkpoint dirs that finished writing, oldest first: a dir counts once its manifest exists (or, for
    checkpoints written before manifests, its meta.json). Finished is not intact: see `verify_checkpoint`."""
    return [p for p in _ckpt_dirs(run_dir) if (p / MANIFEST).is_file() or (p / CKPT_META).is_file()]


def latest_checkpoint(run_dir: PathLike) -> Path | None:
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def has_checkpoint(run_dir: PathLike) -> bool:
    """Any checkpoint directory under its final name (cheap: for `status` over a thousand runs)."""
    return bool(_ckpt_dirs(run_dir))


def clean_partial_checkpoints(run_dir: PathLike) -> None:
    """Temp dirs of writes that were killed: never trusted, never reused."""
    root = ckpt_root(run_dir)
    if root.is_dir():
        for junk in root.glob(".tmp-*"):
            shutil.rmtree(junk, ignore_errors=True)


def _files(ckpt: Path) -> Iterator[Path]:
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            yield p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt: PathLike) -> Path:
    """Size and SHA-256 of every file of a checkpoint, written last: the checkpoint's seal."""
    ckpt = Path(ckpt)
    files = {str(p.relative_to(ckpt)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(ckpt)}
    return atomic_write_json(ckpt / MANIFEST, {"files": files, "time": time.time()})


def verify_checkpoint(ckpt: PathLike) -> str | None:
    """None when the checkpoint is intact, else why not (a missing, truncated or altered file). Sizes are
    compared first (cheap: a truncated copy fails without reading it), then every file's SHA-256 (a same-size
    corruption only the hash sees). A checkpoint written before manifests existed is checked for its meta.json
    being readable only; one whose meta.json records the world size was written by a version that seals
    every checkpoint (the two came together), so without its manifest it is incomplete."""
    ckpt = Path(ckpt)
    manifest = read_json(ckpt / MANIFEST)
    if manifest is None:
        if (ckpt / MANIFEST).exists():
            return f"{MANIFEST} is unreadable"
        meta = read_json(ckpt / CKPT_META)
        if meta is None:
            return f"{CKPT_META} is missing or unreadable"
        return f"{MANIFEST} is missing (it is written last: the checkpoint is incomplete)" if SEALED_SINCE in meta else None
    for rel, want in (manifest.get("files") or {}).items():
        p = ckpt / rel
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            return f"{rel} is missing"
        if size != want.get("size"):
            return f"{rel} has {size} bytes, the manifest says {want.get('size')}"
        if _sha256(p) != want.get("sha256"):
            return f"{rel} does not match its SHA-256 in the manifest"
    return None


def ckpt_meta(ckpt: PathLike) -> dict[str, Any]:
    meta = read_json(Path(ckpt) / CKPT_META)
    if meta is None:
        raise ValueError(f"{ckpt}/{CKPT_META} is missing or unreadable")
    return meta


# ------------------------------------------------------------------------------------------ logs
def cut_logs_to_step(run_dir: PathLike, step: int) -> dict[str, int]:
    """Drop the metric and eval records of steps after ``step`` (the checkpoint a run resumes from): the run
    is about to write them again, and every step must appear once. Loop-scan rows (``scan: true``) belong
    to checkpoints and are kept. Returns the rows dropped per file."""
    rd = Path(run_dir)
    keep = lambda r: r.get("scan") or (isinstance(r.get("step"), int) and r["step"] <= step)  # noqa: E731
    return {name: truncate_jsonl(rd / name, keep) for name in (METRICS, EVALS, LOOP_DIAG)}


def read_evals(run_dir: PathLike):
    """The eval log of a run (records and the count of torn lines)."""
    return read_records(Path(run_dir) / EVALS)


def read_loop_diagnostics(run_dir: PathLike):
    """The loop-diagnostics log of a looped run (records and the count of torn lines; empty for other runs)."""
    return read_records(Path(run_dir) / LOOP_DIAG)


def holder_text(info: Mapping[str, Any] | None) -> str:
    """'pid 123 on host (job 45)' from a lock holder's or heartbeat's record."""
    if not info:
        return "another process"
    job = f", job {info['job_id']}" if info.get("job_id") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{job}"
