"""Submitting runs through submitit (SLURM, local processes, or in-process debug), with job arrays, a code
snapshot per launch, and preemption that checkpoints at a step boundary before requeueing.

What submitit does with signals (read from ``submitit/core/job_environment.py`` and ``core/submission.py``,
submitit 1.5):

* ``process_job`` (the entry point inside the job) installs its handlers *before* calling our function:
  the preemption signal (``JobEnvironment.USR_SIG``: SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says
  otherwise) -> ``SignalHandler.checkpoint_and_try_requeue``; SIGTERM and SIGCONT -> ``bypass`` (logged and
  otherwise ignored).
* ``checkpoint_and_try_requeue`` runs inside the signal handler, i.e. between two arbitrary bytecodes of
  the training step. On global rank 0 it calls ``function.checkpoint(*args)`` when the callable has one
  (``helpers.Checkpointable``), pickles the returned ``DelayedSubmission`` over the job's submitted pickle,
  requeues (SLURM: ``scontrol requeue <job id>``; local: exit code 144, which the local controller reruns)
  and ``sys.exit(-1)``. Other ranks return and carry on. Wall time >= min(80 %, limit - 10 min) of
  ``timeout_min`` counts as a timeout and uses up one of ``max_num_timeout`` requeues; anything earlier is
  a preemption and requeues for free.
* SLURM sends SIGUSR2 ``signal_delay_s`` before the time limit (``#SBATCH --signal=USR2@N`` to the job's
  steps). ``SlurmJob._interrupt()`` fakes a preemption with ``scancel --signal`` SIGTERM, then SIGUSR2.
  A real preemption under ``PreemptMode=REQUEUE`` sends SIGTERM (SIGKILL after the grace time) and SLURM
  requeues the job itself; ``scancel`` sends SIGTERM too, and then the job must *not* come back.

Left alone, submitit would therefore stop a DeepSpeed step half-way (possibly inside a collective on
other ranks) and lose everything since the last periodic checkpoint. Our cooperation:

1. `ResumableRun.__call__` (so: after submitit installed its handlers) calls `install_preemption_flag()`,
   which puts a handler on the preemption signal and on SIGTERM that only records the signal and sets
   the module-level `PREEMPT` flag; submitit's handlers are kept to be called later.
2. The training loop polls ``PREEMPT.should_stop()`` at each step boundary (an OR across ranks, so every
   rank stops at the same step), saves a checkpoint, writes PREEMPTED.json, then calls
   ``PREEMPT.exit_for_requeue()``. If the preemption signal came, that calls submitit's saved handler:
   ``ResumableRun.checkpoint()`` returns a ``DelayedSubmission`` of itself (the trainer resumes from its
   own newest checkpoint at every start, so requeue = rerun), submitit requeues and exits. If only SIGTERM
   came (SLURM preemption or scancel), it waits a few seconds for a following SIGUSR2 (``_interrupt`` sends
   both), else exits without requeueing: SLURM requeues a preempted job by itself, a cancelled one stays
   cancelled. Ranks other than 0 wait to be stopped by rank 0's requeue instead of exiting first (an early
   non-zero exit could make srun kill rank 0 before it requeued).
3. A watchdog: if the loop does not reach a step boundary within ``grace_s`` of the signal (stuck in a long
   evaluation), SIGALRM hands over to submitit's handler as if we had never intervened: an immediate
   requeue, resuming from the newest complete checkpoint.

Seen on SLURM 22.05 (tests/test_launch_slurm.py exercises both paths for real): a requeued job waits
``cred_expire`` (AuthInfo, default 120 s) before it may start again; ``scancel --signal`` on a running array
task while other tasks of that array are still pending fails with "Job can not be altered now" (the signal
is delivered anyway, and scancel retries for ~20 s), and ``--signal TERM`` there kills the task, so
``SlurmJob._interrupt()`` is only reliable on arrays without pending tasks. A SIGTERM to a step marks it
cancelled and srun kills it after KillWait: that (or the preemption GraceTime) is all the time a bare
SIGTERM leaves for the checkpoint. With a time limit of 10 min or less submitit counts every preemption
as a timeout (threshold min(0.8 * limit, limit - 10 min)), which only spends ``max_timeouts``.

Code snapshot: `submit` copies the importable packages (model/, study/, analysis/) into
``study_dir/.snapshots/<content hash>/`` and the job's shell setup puts that first on PYTHONPATH and
``cd``s into it (``python -m`` puts the working directory ahead of PYTHONPATH), so queued and requeued jobs
keep running the code they were launched with, whatever happens to the repository meanwhile.
`ResumableRun` then returns to the submitting directory so relative paths behave. The debug executor runs
in-process and therefore uses the live code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from study import store

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "slurm", "local", "debug")
SNAPSHOT_PACKAGES = ("model", "study", "analysis")
ENV_SNAPSHOT = "LOOPMDM_SNAPSHOT"
ENV_LAUNCH_CWD = "LOOPMDM_LAUNCH_CWD"
ENV_GRACE = "LOOPMDM_PREEMPT_GRACE_S"


# ---------------------------------------------------------------------------------------- resources
class ResourceError(ValueError):
    """A resources setting that cannot work; the message names the field and the fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"resources.{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ResourceSpec:
    """What a run asks of the scheduler. One job array is submitted per distinct ResourceSpec."""

    executor: str = "auto"  # auto = slurm where `sbatch` is on PATH, else local
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0  # also the number of tasks (processes) per node
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 60
    array_parallelism: int = 256
    requeue: bool = True  # on preemption/timeout: requeue (True) or checkpoint and stop (False)
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: time to checkpoint
    max_timeouts: int = 20  # requeues after hitting the time limit before giving up
    additional: Mapping[str, Any] = field(default_factory=dict)  # extra sbatch flags, e.g. {"exclusive": True}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ResourceSpec":
        """From a sweep spec's ``resources:`` block; unknown keys are errors, not silently dropped."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ResourceError(unknown[0], f"unknown setting; valid ones are {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["additional"] = dict(self.additional)
        return d

    def resolved_executor(self) -> str:
        if self.executor == "auto":
            return "slurm" if shutil.which("sbatch") else "local"
        return self.executor

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU (DeepSpeed's layout); one process on a CPU-only node."""
        return max(1, self.gpus_per_node)

    def validate(self, check_cluster: bool = False) -> "ResourceSpec":
        """Raise ResourceError for settings that cannot work. ``check_cluster`` also asks ``sinfo`` whether
        the partition exists (slurm only), so a typo fails at plan time instead of at sbatch."""
        if self.executor not in EXECUTORS:
            raise ResourceError("executor", f"{self.executor!r} is not one of {', '.join(EXECUTORS)}")

        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ResourceError(name, f"{getattr(self, name)!r}: {msg}")

        need(isinstance(self.nodes, int) and self.nodes >= 1, "nodes", "must be an integer >= 1 (1 for one node)")
        need(isinstance(self.gpus_per_node, int) and self.gpus_per_node >= 0, "gpus_per_node",
             "must be an integer >= 0 (0 for CPU-only)")
        need(self.cpus_per_task is None or (isinstance(self.cpus_per_task, int) and self.cpus_per_task >= 1),
             "cpus_per_task", "must be an integer >= 1, or left out for the cluster default")
        need(self.mem_gb is None or (isinstance(self.mem_gb, (int, float)) and self.mem_gb > 0), "mem_gb",
             "must be > 0 GB, or left out for the cluster default")
        need(isinstance(self.time_min, int) and self.time_min >= 1, "time_min",
             "must be an integer number of minutes >= 1")
        need(isinstance(self.array_parallelism, int) and self.array_parallelism >= 1, "array_parallelism",
             "must be an integer >= 1 (how many array tasks may run at once)")
        need(isinstance(self.signal_delay_s, int) and 0 <= self.signal_delay_s < self.time_min * 60,
             "signal_delay_s", f"must be >= 0 and shorter than time_min ({self.time_min * 60} s), or the "
             "checkpoint signal arrives before the run starts")
        need(isinstance(self.max_timeouts, int) and self.max_timeouts >= 0, "max_timeouts", "must be >= 0")
        need(isinstance(self.additional, Mapping) and all(isinstance(k, str) for k in self.additional),
             "additional", "must be a mapping of sbatch flag names (without --) to values")
        ex = self.resolved_executor()
        if ex == "local" and self.nodes != 1:
            raise ResourceError("nodes", f"{self.nodes}: the local executor runs on one node; set nodes: 1 "
                                "or executor: slurm")
        if ex == "slurm" and check_cluster:
            parts = slurm_partitions()
            if parts is not None and self.partition is not None and self.partition not in parts:
                raise ResourceError("partition", f"{self.partition!r} does not exist on this cluster; available: "
                                    f"{', '.join(parts) or '(none)'}")
        return self


def slurm_partitions() -> list[str] | None:
    """Partition names from ``sinfo`` (None when it cannot be asked)."""
    exe = shutil.which("sinfo")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return sorted({p.strip().rstrip("*") for p in out.split() if p.strip()})


# ------------------------------------------------------------------------------ distributed environment
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DIST_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_dist_env_from_slurm() -> dict[str, str]:
    """Export RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT for
    ``torch.distributed``/DeepSpeed, which read these and not SLURM's variables.

    Inside a submitit job (slurm or local): from submitit's job environment (CUDA_VISIBLE_DEVICES is left
    alone: DeepSpeed picks the device by LOCAL_RANK). Under a bare ``srun``: from SLURM's variables. In a
    plain process: a world of one on 127.0.0.1 and a free port, unless a launcher (torchrun) set RANK."""
    keys = DIST_ENV_KEYS
    if os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local"):
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    elif os.environ.get("SLURM_PROCID") and os.environ.get("SLURM_STEP_ID") and "RANK" not in os.environ:
        from submitit.slurm.slurm import SlurmJobEnvironment

        env = SlurmJobEnvironment()
        os.environ.update(
            RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank), WORLD_SIZE=str(env.num_tasks),
            LOCAL_WORLD_SIZE=str(env.num_tasks // max(1, env.num_nodes)), MASTER_ADDR=env.hostnames[0],
            MASTER_PORT=os.environ.get("MASTER_PORT", str(20000 + int(env.raw_job_id) % 40000)))
    elif "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    return {k: os.environ[k] for k in keys if k in os.environ}


# ----------------------------------------------------------------------------------------- preemption
def _preempt_signal() -> signal.Signals:
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class PreemptionFlag(threading.Event):
    """Set when the scheduler asks the job to stop (preemption signal or SIGTERM); polled by the training
    loop at step boundaries. See the module docstring for how it cooperates with submitit."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[str] = []  # names, in arrival order
        self.grace_s: float = 60.0
        self.term_wait_s: float = 3.0
        self._chained: dict[int, Any] = {}  # signal -> the handler we replaced (submitit's)
        self._installed = False

    # -- installation ------------------------------------------------------------------------------
    def install(self, grace_s: float | None = None, interactive: bool = False) -> "PreemptionFlag":
        """Take over the preemption signal and SIGTERM (idempotent); ``interactive`` also Ctrl-C (SIGINT),
        for foreground runs: the first checkpoints and stops, a second one interrupts at once. Only the main
        thread can set signal handlers; elsewhere this is a no-op and the flag is never set."""
        if grace_s is None:
            grace_s = float(os.environ.get(ENV_GRACE, self.grace_s))
        self.grace_s = grace_s
        if self._installed:
            return self
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption flag not installed: not in the main thread")
            return self
        for sig in {_preempt_signal(), signal.SIGTERM} | ({signal.SIGINT} if interactive else set()):
            self._chained[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        self._chained[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
        signal.signal(signal.SIGALRM, self._on_watchdog)
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Give the signals back (so an in-process debug run leaves the caller's handlers as they were)."""
        if not self._installed:
            return
        signal.alarm(0)
        for sig, handler in self._chained.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._chained.clear()
        self._installed = False
        self.signals.clear()
        self.clear()

    # -- signal side -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and "SIGINT" in self.signals:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.signals.append(name)
        if not self.is_set():
            log.warning("caught %s: will checkpoint at the next step boundary", name)
            self.set()
            if self.grace_s > 0 and signum != signal.SIGINT:  # at a terminal, a second Ctrl-C is the watchdog
                signal.alarm(max(1, int(round(self.grace_s))))

    def _on_watchdog(self, signum: int, frame: Any) -> None:
        log.warning("no step boundary within %.0f s of the preemption signal: requeueing now", self.grace_s)
        self._hand_over(frame)

    # -- training-loop side ------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """The flag OR-ed over all ranks (one tiny all-reduce when torch.distributed is up), so every rank
        stops at the same step. Call it at each step boundary on every rank. Once it says True the
        watchdog is off: the caller is checkpointing."""
        stop = self.is_set()
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor([1.0 if stop else 0.0], device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            stop = bool(t.item() > 0)
        if stop:
            if self._installed:
                signal.alarm(0)
            self.set()
        return stop

    def exit_for_requeue(self) -> None:
        """Call after the preemption checkpoint is saved (on every rank). Never returns."""
        if self._installed:
            signal.alarm(0)
        if _global_rank() != 0:
            # rank 0's requeue stops this process; exiting first could get rank 0 killed before it requeues
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(max(30.0, self.grace_s))
            raise SystemExit(1)
        usr = _preempt_signal().name
        deadline = time.monotonic() + self.term_wait_s
        while usr not in self.signals and time.monotonic() < deadline:
            time.sleep(0.1)  # SIGTERM first, the preemption signal right behind: SlurmJob._interrupt
        self._hand_over(None)

    def _hand_over(self, frame: Any) -> None:
        """Do what submitit would have done on its signal: requeue via its handler, or, after a bare SIGTERM
        (SLURM requeues preempted jobs itself; a cancelled job must stay down), just exit."""
        usr = _preempt_signal()
        handler = self._chained.get(usr)
        if usr.name in self.signals and callable(handler):
            handler(usr, frame)  # submitit: checkpoint() -> requeue -> sys.exit; or raises if it cannot
            raise SystemExit(1)  # a handler that returned (not rank 0 by its count): stop anyway
        first = self.signals[0] if self.signals else "SIGTERM"
        raise SystemExit(128 + signal.Signals[first].value)


PREEMPT = PreemptionFlag()


def install_preemption_flag(grace_s: float | None = None, interactive: bool = False) -> PreemptionFlag:
    """The process-wide `PREEMPT` flag, wired to the preemption signal and SIGTERM (and Ctrl-C when
    ``interactive``). `ResumableRun` does this for submitted jobs; a foreground run calls it itself."""
    return PREEMPT.install(grace_s, interactive)


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
        flag = install_preemption_flag()
        try:
            return self.fn(*self.args, **self.kwargs)
        finally:
            if os.environ.get("SUBMITIT_EXECUTOR") is None:  # in-process (debug): restore the caller's handlers
                flag.uninstall()

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        marker = Path(self.run_dir) / store.PREEMPTED if self.run_dir else None
        if marker is not None and _global_rank() == 0:
            with contextlib.suppress(OSError):  # keep the trainer's own marker from this attempt if it wrote one
                if not marker.exists() or marker.stat().st_mtime < self._started:
                    store.mark_preempted(self.run_dir, signals=list(PREEMPT.signals), by="submitit")
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
    """The directory holding the importable packages (this file is study/launch.py)."""
    return Path(__file__).resolve().parents[1]


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
    """Copy the packages into ``study_dir/.snapshots/<hash of their content>/`` (reused when identical).
    Built under a temp name and renamed, so a snapshot directory is always complete."""
    root = (root or project_root()).resolve()
    files = list(_snapshot_files(root, packages))
    if not files:
        raise FileNotFoundError(f"none of {packages} is a package under {root}")
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    digest = h.hexdigest()[:16]
    snaps = Path(study_dir).resolve() / ".snapshots"
    dest = snaps / digest
    if dest.is_dir():
        return dest
    tmp = snaps / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        target = tmp / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    store.atomic_write_json(tmp / "SNAPSHOT.json", {"source": str(root), "time": time.time(),
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
    return store.safe_slug(prefix or names[0])[:40] + (f"+{len(names) - 1}" if len(names) > 1 else "")


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

    base_id = store.new_submission_id()
    out: list[Submitted] = []
    for gi, (res, group) in enumerate(groups.values()):
        sid = base_id if len(groups) == 1 else f"{base_id}-{gi}"
        ex_name = res.resolved_executor()
        name = _group_name([j.name for j in group])
        executor = make_executor(res, folder / sid, name, comment=store.job_comment(sid),
                                 setup=_setup_lines(snap if ex_name != "debug" else None, res))
        store.ledger_intent(study, sid, [j.key for j in group], ex_name, names=[j.name for j in group],
                            host=socket.gethostname(), folder=str(folder / sid),
                            snapshot=str(snap) if snap else None, resources=res.to_dict())
        fns = [ResumableRun(j.fn, j.args, j.kwargs, str(j.run_dir) if j.run_dir else None, res.requeue)
               for j in group]
        try:
            sub_jobs = executor.submit_array(fns) if len(fns) > 1 else [executor.submit(fns[0])]
        except BaseException as e:
            store.ledger_failed(study, sid, f"{type(e).__name__}: {e}")
            raise
        store.ledger_submitted(study, sid, {j.key: str(sj.job_id) for j, sj in zip(group, sub_jobs)})
        out += [Submitted(j.key, j.name, sj, sid, ex_name) for j, sj in zip(group, sub_jobs)]
        log.info("submitted %d job(s) as %s (%s): %s", len(group), sid, ex_name, sub_jobs[0].job_id)
    return out
