"""Run directories and the records in them: the only state the study keeps.

Everything a run writes must survive being killed at any instant (preemption, OOM, a node dying), and
everything `status` reads must be cheap enough to scan a thousand runs on a login node. Hence:

* whole-file records are written atomically (temp file in the same directory, fsync, rename): a reader sees
  the old version or the new one, never half of one;
* logs are append-only JSON lines, one ``write`` per record; a crash can leave only the last line partial, so
  readers skip an undecodable final line instead of failing;
* a run's state is derived from which marker files exist (``DONE.json``, ``FAILED.json``,
  ``PREEMPTED.json``), a heartbeat (``RUNNING.json``) and, for SLURM jobs, ONE ``squeue`` call per scan;
* a submissions ledger (``submissions.jsonl``) records what we meant to submit *before* calling sbatch and
  the job ids after, so a submission interrupted in between leaves no job that the next invocation
  cannot see (jobs carry the submission id in their SLURM comment).

No torch here: analysis and the sweep CLI import this on machines without a GPU stack.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Literal, Mapping, Sequence

RUNS_DIR = "runs"
DONE = "DONE.json"
FAILED = "FAILED.json"
PREEMPTED = "PREEMPTED.json"
RUNNING = "RUNNING.json"
METRICS = "metrics.jsonl"
CKPT_DIR = "ckpt"
LEDGER = "submissions.jsonl"
# A heartbeat older than this, for a job we cannot ask the scheduler about, means the process is gone.
# Generous because the trainer beats on each log line and evaluation can take minutes between logs.
STALE_AFTER_S = 900.0
SLUG_MAX = 48
JOB_COMMENT_PREFIX = "loopmdm:"

State = Literal["pending", "running", "done", "failed", "preempted"]
PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------- atomic writes
def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (the directory entry), where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write: Callable[[IO[str]], None]) -> Path:
    """Stream into a temp file beside ``path`` and rename it into place; on any error the temp file goes
    and ``path`` keeps its previous content. Same directory, so the rename never crosses filesystems."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    def write(f: IO[str]) -> None:
        json.dump(obj, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")

    return _atomic_write(path, write)


def atomic_write_yaml(path: PathLike, obj: Any) -> Path:
    import yaml  # imported here: only config writers need it

    return _atomic_write(path, lambda f: yaml.safe_dump(obj, f, sort_keys=False, allow_unicode=True))


def _json_default(o: Any) -> Any:
    """Paths and numpy scalars turn up in summaries; anything else unknown is a bug worth raising on."""
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------- JSON lines
def append_jsonl(path: PathLike, obj: Any) -> None:
    """Append one record as a single ``write`` (O_APPEND), flushed and fsynced.

    If a previous writer died mid-line the file does not end in a newline; we start with one so our record
    is not glued onto the fragment (the fragment then reads as one bad line that readers skip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_jsonl(path: PathLike) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; undecodable lines (a crash's partial last line, or such a fragment
    later followed by appends) are skipped rather than failing the whole read."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def tail_jsonl(path: PathLike, n: int = 1, max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The last ``n`` complete records, reading backwards in blocks: a multi-GB metrics log costs a few
    KB of I/O. Gives up after ``max_bytes`` (a pathological single huge line)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        buf, pos, block = b"", end, 8192
        while pos > 0 and buf.count(b"\n") <= n and end - pos < max_bytes:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            block *= 2
    lines = buf.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    out: list[dict[str, Any]] = []
    for raw in reversed(lines):
        if len(out) == n:
            break
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out[::-1]


def read_json(path: PathLike) -> dict[str, Any] | None:
    """A record file, or None when absent or unreadable (an atomic writer never leaves it partial, but a
    hand-edited or foreign file might be)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError, IsADirectoryError):
        return None


# ------------------------------------------------------------------------------------ run directories
_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")
_HASH_OK = re.compile(r"^[0-9a-f]{12,}$")


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


def _job_context() -> dict[str, Any]:
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
    atomic_write_json(Path(run_dir) / RUNNING, {**_job_context(), **info})


def mark_done(run_dir: PathLike, summary: Mapping[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / DONE, {**_job_context(), "summary": dict(summary)})


def mark_failed(run_dir: PathLike, reason: str, traceback: str | None = None) -> None:
    atomic_write_json(Path(run_dir) / FAILED, {**_job_context(), "reason": reason, "traceback": traceback})


def mark_preempted(run_dir: PathLike, **info: Any) -> None:
    """Written after the preemption checkpoint, just before the process exits to be requeued."""
    atomic_write_json(Path(run_dir) / PREEMPTED, {**_job_context(), **info})


def has_checkpoint(run_dir: PathLike) -> bool:
    """Any complete checkpoint (``ckpt/step_*``; incomplete ones live under temp names until renamed)."""
    try:
        with os.scandir(Path(run_dir) / CKPT_DIR) as it:
            return any(e.name.startswith("step_") and e.is_dir() for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return False


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


def _pid_alive(pid: int) -> bool:
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


_AUTO: Any = object()


def known_jobs(study_dir: PathLike, queue: Queue | None = _AUTO) -> dict[str, KnownJob]:
    """Run hash -> its latest submission, with its queue state when it is in the SLURM queue.

    An intent without a "submitted" record is a submission interrupted around sbatch; its jobs, if any
    exist, are recovered from the queue by their comment (array task i -> i-th key). ``queue`` is a
    `slurm_queue()` snapshot; by default one is taken; None means unknown (no queue_state is filled)."""
    if queue is _AUTO:
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
                    and rec.get("host") == socket.gethostname() and _pid_alive(int(job_id)):
                state = "RUNNING"
            out[key] = KnownJob(key, sid, rec.get("executor", "?"), job_id, rec.get("time", 0.0), state)
    return out


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


def run_status(run_dir: PathLike, *, queue: Queue | None = _AUTO, known: Mapping[str, KnownJob] | None = None,
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
    if queue is _AUTO:
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
    if hb.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return False, f"pid {pid} gone", False
    return True, f"heartbeat {age:.0f} s ago", False


def list_run_dirs(study_dir: PathLike) -> list[Path]:
    try:
        with os.scandir(Path(study_dir) / RUNS_DIR) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def scan_study(study_dir: PathLike, *, queue: Queue | None = _AUTO, stale_after_s: float = STALE_AFTER_S
               ) -> list[RunStatus]:
    """Status of every run directory of a study: one squeue call and one ledger read for all of them."""
    if queue is _AUTO:
        queue = slurm_queue()
    known = {k[:12]: v for k, v in known_jobs(study_dir, queue=queue).items()}
    now = time.time()
    return [run_status(rd, queue=queue, known=known, stale_after_s=stale_after_s, now=now)
            for rd in list_run_dirs(study_dir)]
