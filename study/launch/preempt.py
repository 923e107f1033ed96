"""The one stop flag: preemption (SLURM), SIGTERM and Ctrl-C all ask the training loop to checkpoint at the
next step boundary and exit; plus the distributed environment a job sets up for itself.

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
2. The training loop polls the stop callable it was given, ``PREEMPT.stop_requested``, at each step boundary
   (and ORs the answer across ranks itself, so every rank stops at the same step; saying yes disarms the
   watchdog below), saves a checkpoint, writes the run's preemption marker, then calls
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

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import submitit


log = logging.getLogger(__name__)

ENV_GRACE = "LOOPMDM_PREEMPT_GRACE_S"
EXIT_STOPPED = 3  # a foreground run or a local sweep stopped on a signal after checkpointing: run it again to resume



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


def global_rank() -> int:
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
    def stop_requested(self) -> bool:
        """The stop callable a training loop polls at each step boundary (`study.train.train`'s ``stop``; the
        loop ORs the answer over ranks itself): whether a stop was asked in this process. Once it says True the
        watchdog is off: the caller is at a step boundary and checkpointing, however long that takes."""
        if not self.is_set():
            return False
        if self._installed:
            signal.alarm(0)
        return True

    def exit_for_requeue(self) -> None:
        """Call after the preemption checkpoint is saved (on every rank). Never returns."""
        if self._installed:
            signal.alarm(0)
        if global_rank() != 0:
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

