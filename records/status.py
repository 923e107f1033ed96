"""The state of a run, derived from its files (markers, heartbeat) and, for SLURM jobs, the queue: cheap
enough to scan a thousand runs on a login node.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from .io import PathLike, read_json, tail_jsonl
from .ledger import TAKE_SNAPSHOT, KnownJob, Queue, pid_alive, known_jobs, slurm_queue
from .rundir import DONE, FAILED, METRICS, PREEMPTED, RUNNING, has_checkpoint, list_run_dirs, run_key

# A heartbeat older than this, for a job we cannot ask the scheduler about, means the process is gone.
# Generous because the trainer beats on each log line and evaluation can take minutes between logs.
STALE_AFTER_S = 900.0

State = Literal["pending", "running", "done", "failed", "preempted"]


# ------------------------------------------------------------------------------------------ status
@dataclass(frozen=True)
class RunStatus:
    state: State
    step: int | None
    last_loss: float | None
    job_id: str | None
    updated: float | None  # newest mtime among the run's records (epoch seconds)
    run_dir: Path | None = None
    detail: str = ""  # why this state: "heartbeat 12 s ago", "queued (PENDING)", ...

    @property
    def key(self) -> str | None:
        return run_key(self.run_dir) if self.run_dir else None


def run_status(run_dir: PathLike, *, queue: Queue | None = TAKE_SNAPSHOT, known: Mapping[str, KnownJob] | None = None,
               stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> RunStatus:
    """The state of one run, from its files (and the scheduler where it can be asked).

    Order of evidence: DONE wins. Running: the heartbeat's SLURM job is still in the queue (even after
    PREEMPTED.json: that is the requeued attempt waiting), or, with no scheduler to ask, the heartbeat is
    fresh, newer than any marker, and its pid alive if it came from this host; or the ledger (``known``,
    by 12-digit hash) has a job for it still in the queue, so a queued job is never resubmitted. Otherwise
    the newest of FAILED.json / PREEMPTED.json / a dead heartbeat with a checkpoint decides, and a run with
    nothing to resume from is pending. A FAILED.json newer than the heartbeat beats a lingering job."""
    rd = Path(run_dir)
    now = time.time() if now is None else now
    if queue is TAKE_SNAPSHOT:
        queue = slurm_queue()
    mtimes: dict[str, float] = {}
    try:
        with os.scandir(rd) as it:
            for e in it:
                if e.name in (DONE, FAILED, PREEMPTED, RUNNING, METRICS):
                    mtimes[e.name] = e.stat().st_mtime
    except FileNotFoundError:
        return RunStatus("pending", None, None, None, None, rd, "no run directory yet")
    updated = max(mtimes.values(), default=None)

    step, loss = None, None
    if METRICS in mtimes:
        for rec in tail_jsonl(rd / METRICS, 1):
            step, loss = rec.get("step"), rec.get("loss")
    hb = read_json(rd / RUNNING) if RUNNING in mtimes else None
    job_id = (hb or {}).get("job_id")
    if step is None and hb:
        step, loss = hb.get("step"), hb.get("loss")

    def status(state: State, detail: str, jid: str | None = job_id) -> RunStatus:
        return RunStatus(state, step, loss, jid, updated, rd, detail)

    if DONE in mtimes:
        return status("done", "DONE.json")
    failed_t, preempted_t = mtimes.get(FAILED, 0.0), mtimes.get(PREEMPTED, 0.0)
    if hb and mtimes[RUNNING] >= failed_t:
        alive, why, asked_queue = _heartbeat_alive(hb, mtimes[RUNNING], queue, stale_after_s, now)
        # a job the scheduler still holds after PREEMPTED.json is the requeued attempt, not a dead one
        if alive and (asked_queue or mtimes[RUNNING] >= preempted_t):
            return status("running", why)
    kj = (known or {}).get(run_key(rd))
    if kj is not None and kj.queued and kj.time >= failed_t:
        return status("running", f"job {kj.job_id} {kj.queue_state} (ledger)", kj.job_id)
    evidence = []
    if FAILED in mtimes:
        evidence.append((failed_t, "failed", "FAILED.json"))
    if PREEMPTED in mtimes:
        evidence.append((preempted_t, "preempted", "PREEMPTED.json"))
    if hb and has_checkpoint(rd):
        evidence.append((mtimes[RUNNING], "preempted", "process gone, has a checkpoint"))
    if evidence:
        _, state, why = max(evidence)
        return status(state, why)
    return status("pending", "process gone, no checkpoint" if hb else "not started")


def _heartbeat_alive(hb: Mapping[str, Any], mtime: float, queue: Queue | None, stale_after_s: float,
                     now: float) -> tuple[bool, str, bool]:
    """Is the process that wrote this heartbeat still there? -> (alive, why, answered by the scheduler).

    The scheduler's answer beats the clock when we can ask it: a long evaluation is not death, a killed job
    is, and a requeued job waiting in the queue is still ours. Otherwise: the clock, and the pid if the
    heartbeat came from this host."""
    job_id = hb.get("job_id")
    if hb.get("scheduler") == "slurm" and job_id and queue is not None:
        entry = queue.get(str(job_id))
        if entry is None:
            return False, f"job {job_id} left the queue", True
        return True, f"job {job_id} {entry.state}", True
    age = now - mtime
    if age > stale_after_s:
        return False, f"heartbeat {age:.0f} s old", False
    pid = hb.get("pid")
    if hb.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return False, f"pid {pid} gone", False
    return True, f"heartbeat {age:.0f} s ago", False


def scan_study(study_dir: PathLike, *, queue: Queue | None = TAKE_SNAPSHOT, stale_after_s: float = STALE_AFTER_S
               ) -> list[RunStatus]:
    """Status of every run directory of a study: one squeue call and one ledger read for all of them."""
    if queue is TAKE_SNAPSHOT:
        queue = slurm_queue()
    known = {k[:12]: v for k, v in known_jobs(study_dir, queue=queue).items()}
    now = time.time()
    return [run_status(rd, queue=queue, known=known, stale_after_s=stale_after_s, now=now)
            for rd in list_run_dirs(study_dir)]
