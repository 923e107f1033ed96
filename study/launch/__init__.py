"""Launching: what a job asks of the scheduler (`resources`), submitting through submitit with a code
snapshot (`submit`), the one stop flag for preemption, SIGTERM and Ctrl-C (`preempt`), training a study's
planned runs locally or on SLURM (`training`), and evaluation jobs, the one place they are submitted
(`evaluations`)."""

from .preempt import EXIT_STOPPED, PREEMPT, PreemptionFlag, init_dist_env_from_slurm, install_preemption_flag
from .resources import EXECUTORS, ResourceError, ResourceSpec, slurm_partitions
from .submit import (Job, ResumableRun, Submitted, after_ok, make_executor, make_snapshot, project_root, submit,
                     wait_for)

__all__ = [n for n in dir() if not n.startswith("_")]
