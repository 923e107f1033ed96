"""What every command line shares: the argument parser's manners, the exit codes, which exceptions are a user's
input (one line, exit 2) rather than a bug (a traceback), and where results go by default."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import records
from analysis.util import DefaultsFormatter
from model.config import ConfigError

EXIT_BAD_INPUT = 2
ENV_RESULTS = "LOOPMDM_RESULTS"
#: the exit codes every command line shares (README, "Exit codes"); 3 is study.launch.preempt.EXIT_STOPPED
EXIT_CODES = ("exit codes: 0 done; 1 some runs or evaluations failed (the others finished); 2 bad input, "
              "nothing written or submitted; 3 stopped by a signal after checkpointing (run the same command again)")


class Parser(argparse.ArgumentParser):
    """argparse with every option's default shown once in --help, and usage errors as one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        kwargs.setdefault("epilog", EXIT_CODES)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def input_errors() -> tuple[type[Exception], ...]:
    """What a user's input or a run's state can raise, as opposed to bugs (tracebacks). Every input error is a
    ConfigError; RunError is added only once the trainer is loaded, so planning never imports torch."""
    trainer = sys.modules.get("study.train.distributed")
    return (ConfigError, records.Locked) + ((trainer.RunError,) if trainer is not None else ())


def say_error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT


def check_writable(path: Path, field: str, fix: str, kind: str | None = "dir") -> None:
    """A target this command will write into, checked before anything is: one line naming the option."""
    why = records.unwritable(path, kind)
    if why is not None:
        raise ConfigError(field, f"cannot write {path}: {why}; {fix}")


def check_sbatch(field: str, also: str = "") -> None:
    """SLURM was asked for: refused at once (by a dry run too) where it cannot be submitted to."""
    if shutil.which("sbatch") is None:
        raise ConfigError(field, "slurm was asked for but `sbatch` is not on PATH on this machine; run where SLURM is "
                                 f"installed, or use --executor local{also}")


def results_root(root: Path | None) -> Path:
    return Path(root or os.environ.get(ENV_RESULTS) or "results")
