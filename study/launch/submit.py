"""Submitting runs through submitit (SLURM, local processes, or in-process debug): job arrays, a code snapshot
per launch, and jobs that resume from their own checkpoints when requeued (see `study.launch.preempt` for
how preemption cooperates with submitit)."""


from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

import records

log = logging.getLogger(__name__)

SNAPSHOT_PACKAGES = ("model", "records", "study", "analysis")
ENV_SNAPSHOT = "LOOPMDM_SNAPSHOT"
ENV_LAUNCH_CWD = "LOOPMDM_LAUNCH_CWD"


from .preempt import DIST_ENV_KEYS, ENV_GRACE, PREEMPT, global_rank, init_dist_env_from_slurm, install_preemption_flag
from .resources import ResourceSpec

# --------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One run to submit: ``fn(*args, **kwargs)`` must be picklable by reference (a module-level function)
    and must resume from its own newest checkpoint when started again."""

    key: str  # the run hash: the ledger and status know the job by it
    name: str
    fn: Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # when given, PREEMPTED.json is written there on requeue
    resources: ResourceSpec | None = None  # overrides submit()'s for this job


class ResumableRun(Checkpointable):
    """What the scheduler actually runs: sets up the process (working directory, distributed env,
    preemption flag) and calls the job function. On preemption or timeout submitit calls `checkpoint`,
    which resubmits this same object: the function resumes from its own checkpoints, nothing else."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 run_dir: str | None = None, requeue: bool = True) -> None:
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.run_dir = run_dir
        self.requeue = requeue
        self._started = 0.0  # when this attempt began: a PREEMPTED.json older than that is a previous one's

    def __call__(self) -> Any:
        self._started = time.time()
        cwd = os.environ.get(ENV_LAUNCH_CWD)
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # the setup cd'ed into the snapshot only so that it is imported first
        if os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local"):
            # sbatch exports the submitting shell's environment: a MASTER_PORT (or RANK) left there by a
            # process that had initialised torch.distributed itself would be reused here and collide
            for key in DIST_ENV_KEYS:
                os.environ.pop(key, None)
        init_dist_env_from_slurm()
        # in-process (debug) a Ctrl-C at the terminal checkpoints too, as a local run does
        flag = install_preemption_flag(interactive=os.environ.get("SUBMITIT_EXECUTOR") is None)
        try:
            return self.fn(*self.args, **self.kwargs)
        finally:
            if os.environ.get("SUBMITIT_EXECUTOR") is None:  # in-process (debug): restore the caller's handlers
                flag.uninstall()

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        marker = Path(self.run_dir) / records.PREEMPTED if self.run_dir else None
        if marker is not None and global_rank() == 0:
            with contextlib.suppress(OSError):  # keep the trainer's own marker from this attempt if it wrote one
                if not marker.exists() or marker.stat().st_mtime < self._started:
                    records.mark_preempted(self.run_dir, signals=list(PREEMPT.signals), by="submitit")
        if not self.requeue:
            return None  # submitit then ends the job ("checkpoint function returned None")
        return DelayedSubmission(self)


@dataclass
class Submitted:
    key: str
    name: str
    job: submitit.Job
    submission: str
    executor: str

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)


# ------------------------------------------------------------------------------------------ snapshot
def project_root() -> Path:
    """The directory holding the importable packages (this file is study/launch/submit.py)."""
    return Path(__file__).resolve().parents[2]


def _snapshot_files(root: Path, packages: Sequence[str]) -> Iterator[Path]:
    for pkg in packages:
        base = root / pkg
        if not (base / "__init__.py").is_file():
            continue
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and "__pycache__" not in rel.parts and not p.name.endswith((".pyc", ".pyo")) \
                    and not any(part.startswith(".") for part in rel.parts):
                yield p


def make_snapshot(study_dir: str | os.PathLike, packages: Sequence[str] = SNAPSHOT_PACKAGES,
                  root: Path | None = None) -> Path:
    """Copy the packages into ``study_dir/<records.SNAPSHOTS_DIR>/<hash of their content>/`` (reused when identical).
    Built under a temp name and renamed, so a snapshot directory is always complete."""
    root = (root or project_root()).resolve()
    files = list(_snapshot_files(root, packages))
    if not files:
        raise FileNotFoundError(f"none of {packages} is a package under {root}")
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    digest = h.hexdigest()[:16]
    snaps = Path(study_dir).resolve() / records.SNAPSHOTS_DIR
    dest = snaps / digest
    if dest.is_dir():
        return dest
    tmp = snaps / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        target = tmp / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    records.atomic_write_json(tmp / "SNAPSHOT.json", {"source": str(root), "time": time.time(),
                                                    "packages": list(packages), **_git_info(root)})
    try:
        os.rename(tmp, dest)
    except OSError:  # a concurrent launch made the same snapshot first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _git_info(root: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"git_commit": commit, "git_dirty": dirty}
    except (subprocess.SubprocessError, OSError):
        return {}


def _setup_lines(snapshot: Path | None, res: ResourceSpec) -> list[str]:
    lines = [f"export {ENV_LAUNCH_CWD}={shlex.quote(os.getcwd())}",
             f"export {ENV_GRACE}={max(5, res.signal_delay_s // 2)}"]
    if snapshot is not None:
        q = shlex.quote(str(snapshot))
        lines += [f"export {ENV_SNAPSHOT}={q}",
                  f"export PYTHONPATH={q}${{PYTHONPATH:+:$PYTHONPATH}}",
                  f"cd {q}"]
    return lines


# -------------------------------------------------------------------------------------------- submit
def make_executor(res: ResourceSpec, folder: Path, name: str, comment: str | None = None,
                  setup: Sequence[str] = ()) -> submitit.Executor:
    ex = res.resolved_executor()
    if ex == "debug":
        return submitit.DebugExecutor(folder)
    if ex == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder, max_num_timeout=res.max_timeouts)
        executor.update_parameters(timeout_min=res.time_min, gpus_per_node=res.gpus_per_node,
                                   tasks_per_node=res.tasks_per_node, signal_delay_s=res.signal_delay_s,
                                   setup=list(setup))
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=res.max_timeouts)
    params: dict[str, Any] = dict(
        job_name=name, partition=res.partition, account=res.account, qos=res.qos, constraint=res.constraint,
        nodes=res.nodes, ntasks_per_node=res.tasks_per_node, cpus_per_task=res.cpus_per_task,
        gpus_per_node=res.gpus_per_node or None, time=res.time_min, signal_delay_s=res.signal_delay_s,
        array_parallelism=res.array_parallelism, setup=list(setup), comment=comment,
        mem=None if res.mem_gb is None else f"{max(1, int(res.mem_gb * 1024))}MB",
        additional_parameters={("requeue" if res.requeue else "no-requeue"): True, **res.additional},
    )
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _group_name(names: Sequence[str]) -> str:
    prefix = os.path.commonprefix(list(names)).strip(" -_.")
    return records.safe_slug(prefix or names[0])[:40] + (f"+{len(names) - 1}" if len(names) > 1 else "")


def submit(jobs: Sequence[Job], resources: ResourceSpec, folder: str | os.PathLike, *,
           study_dir: str | os.PathLike | None = None, snapshot: bool | Path = True,
           check_cluster: bool = False) -> list[Submitted]:
    """Submit jobs, one job array per distinct ResourceSpec (a job's own ``resources`` or ``resources``).

    ``folder``: where submitit keeps pickles and logs (a fresh subfolder per submission, since SLURM job
    ids can restart lower after a controller reset). ``study_dir`` (default: ``folder``'s parent) receives
    the ledger (intent before sbatch, job ids after) and the code snapshot. ``snapshot``: True to snapshot
    the packages, a path to reuse one, False to run the live code."""
    if not jobs:
        return []
    folder = Path(folder).resolve()
    study = Path(study_dir).resolve() if study_dir is not None else folder.parent
    groups: dict[str, tuple[ResourceSpec, list[Job]]] = {}
    for job in jobs:
        res = job.resources or resources
        groups.setdefault(json.dumps(res.to_dict(), sort_keys=True, default=str), (res, []))[1].append(job)
    for res, _ in groups.values():
        res.validate(check_cluster=check_cluster)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("two jobs share a key: each run hash may be submitted once per call")

    snap: Path | None = None
    if any(res.resolved_executor() != "debug" for res, _ in groups.values()):
        if isinstance(snapshot, (str, Path)):
            snap = Path(snapshot).resolve()
        elif snapshot:
            snap = make_snapshot(study)

    base_id = records.new_submission_id()
    out: list[Submitted] = []
    for gi, (res, group) in enumerate(groups.values()):
        sid = base_id if len(groups) == 1 else f"{base_id}-{gi}"
        ex_name = res.resolved_executor()
        name = _group_name([j.name for j in group])
        executor = make_executor(res, folder / sid, name, comment=records.job_comment(sid),
                                 setup=_setup_lines(snap if ex_name != "debug" else None, res))
        records.ledger_intent(study, sid, [j.key for j in group], ex_name, names=[j.name for j in group],
                            host=socket.gethostname(), folder=str(folder / sid),
                            snapshot=str(snap) if snap else None, resources=res.to_dict())
        fns = [ResumableRun(j.fn, j.args, j.kwargs, str(j.run_dir) if j.run_dir else None, res.requeue)
               for j in group]
        try:
            sub_jobs = executor.submit_array(fns) if len(fns) > 1 else [executor.submit(fns[0])]
        except BaseException as e:
            records.ledger_failed(study, sid, f"{type(e).__name__}: {e}")
            raise
        records.ledger_submitted(study, sid, {j.key: str(sj.job_id) for j, sj in zip(group, sub_jobs)})
        out += [Submitted(j.key, j.name, sj, sid, ex_name) for j, sj in zip(group, sub_jobs)]
        log.info("submitted %d job(s) as %s (%s): %s", len(group), sid, ex_name, sub_jobs[0].job_id)
    return out


def after_ok(res: ResourceSpec, job_id: str) -> ResourceSpec:
    """The same resources, starting only once job ``job_id`` finished successfully (SLURM afterok)."""
    return ResourceSpec.from_dict(res.to_dict() | {
        "additional": dict(res.additional) | {"dependency": f"afterok:{job_id}"}})


def wait_for(submitted: Sequence[Submitted]) -> int:
    """Block until the jobs end; 1 if any failed (each failure printed)."""
    bad = 0
    for s in submitted:
        try:
            s.job.result()
        except Exception as exc:  # noqa: BLE001 - reported per job
            bad += 1
            print(f"{s.name}: {exc}", file=sys.stderr)
    return 1 if bad else 0
