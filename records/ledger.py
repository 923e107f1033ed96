"""The submissions ledger (``<study>/submissions.jsonl``) and what the SLURM queue says about our jobs.

The ledger records what we meant to submit *before* calling sbatch and the job ids after, so a submission
interrupted in between leaves no job that the next invocation cannot see (jobs carry the submission id in
their SLURM comment); the queue is read with ONE ``squeue`` call per scan.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .io import PathLike, append_jsonl, iter_jsonl

LEDGER = "submissions.jsonl"
JOB_COMMENT_PREFIX = "loopmdm:"


# -------------------------------------------------------------------------------------- the queue
@dataclass(frozen=True)
class QueueEntry:
    job_id: str  # as submitit names it: "123" or "123_4" for array task 4
    state: str  # SLURM state: PENDING, RUNNING, COMPLETING, REQUEUED, ...
    comment: str


Queue = Mapping[str, QueueEntry]


def slurm_queue(timeout_s: float = 20.0) -> dict[str, QueueEntry] | None:
    """Our jobs in the SLURM queue, from ONE squeue call (array tasks expanded), or None when we cannot
    know (no squeue, controller down): callers must then not conclude that a job is gone."""
    exe = shutil.which("squeue")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%k"],
            capture_output=True, text=True, timeout=timeout_s, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    queue: dict[str, QueueEntry] = {}
    for line in out.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3:
            comment = "" if parts[2] == "(null)" else parts[2]
            queue[parts[0]] = QueueEntry(parts[0], parts[1], comment)
    return queue


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not running
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------------- submissions ledger
@dataclass(frozen=True)
class KnownJob:
    """What the ledger knows of a run's latest submission."""

    key: str  # the run hash as given to submit
    submission: str
    executor: str  # slurm | local | debug
    job_id: str | None  # None: sbatch was called but we never heard back (interrupted), or not found
    time: float
    queue_state: str | None = None  # the SLURM state while queued/running; None when not in the queue

    @property
    def queued(self) -> bool:
        return self.queue_state is not None


def new_submission_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def job_comment(submission_id: str) -> str:
    """The SLURM comment each job of a submission carries: how an interrupted submission's jobs are found."""
    return f"{JOB_COMMENT_PREFIX}{submission_id}"


def ledger_intent(study_dir: PathLike, submission_id: str, keys: Sequence[str], executor: str,
                  **info: Any) -> None:
    """Before sbatch: these run hashes (in array-index order) are about to be submitted."""
    append_jsonl(Path(study_dir) / LEDGER, {"event": "intent", "submission": submission_id, "time": time.time(),
                                            "executor": executor, "keys": list(keys), **info})


def ledger_submitted(study_dir: PathLike, submission_id: str, jobs: Mapping[str, str]) -> None:
    """After sbatch returned: run hash -> job id."""
    append_jsonl(Path(study_dir) / LEDGER, {"event": "submitted", "submission": submission_id,
                                            "time": time.time(), "jobs": dict(jobs)})


def ledger_failed(study_dir: PathLike, submission_id: str, error: str) -> None:
    append_jsonl(Path(study_dir) / LEDGER, {"event": "failed", "submission": submission_id,
                                            "time": time.time(), "error": error})


TAKE_SNAPSHOT: Any = object()  # 'take a queue snapshot yourself'


def known_jobs(study_dir: PathLike, queue: Queue | None = TAKE_SNAPSHOT) -> dict[str, KnownJob]:
    """Run hash -> its latest submission, with its queue state when it is in the SLURM queue.

    An intent without a "submitted" record is a submission interrupted around sbatch; its jobs, if any
    exist, are recovered from the queue by their comment (array task i -> i-th key). ``queue`` is a
    `slurm_queue()` snapshot; by default one is taken; None means unknown (no queue_state is filled)."""
    if queue is TAKE_SNAPSHOT:
        queue = slurm_queue()
    intents: dict[str, dict[str, Any]] = {}
    submitted: dict[str, dict[str, str]] = {}
    failed: set[str] = set()
    for rec in iter_jsonl(Path(study_dir) / LEDGER):
        sid = rec.get("submission")
        if rec.get("event") == "intent":
            intents[sid] = rec
        elif rec.get("event") == "submitted":
            submitted.setdefault(sid, {}).update(rec.get("jobs", {}))
        elif rec.get("event") == "failed":
            failed.add(sid)
    by_comment: dict[str, list[QueueEntry]] = {}
    for entry in (queue or {}).values():
        if entry.comment.startswith(JOB_COMMENT_PREFIX):
            by_comment.setdefault(entry.comment[len(JOB_COMMENT_PREFIX):], []).append(entry)

    out: dict[str, KnownJob] = {}
    for sid, rec in sorted(intents.items(), key=lambda kv: kv[1].get("time", 0.0)):
        keys: list[str] = rec.get("keys", [])
        ids = dict(submitted.get(sid, {}))
        if len(ids) < len(keys):  # interrupted: look for its jobs in the queue
            for entry in by_comment.get(sid, []):
                idx = entry.job_id.split("_", 1)[1] if "_" in entry.job_id else "0"
                if idx.isdigit() and int(idx) < len(keys):
                    ids.setdefault(keys[int(idx)], entry.job_id)
        if sid in failed and not ids:
            continue  # sbatch refused it: nothing was queued
        for key in keys:
            job_id = ids.get(key)
            state = None
            if job_id is not None and queue is not None and job_id in queue:
                state = queue[job_id].state
            elif job_id is not None and rec.get("executor") == "local" and job_id.isdigit() \
                    and rec.get("host") == socket.gethostname() and pid_alive(int(job_id)):
                state = "RUNNING"
            out[key] = KnownJob(key, sid, rec.get("executor", "?"), job_id, rec.get("time", 0.0), state)
    return out


