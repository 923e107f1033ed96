"""What every command line shares: the argument parser's manners, the exit codes, which exceptions are a user's
input (one line, exit 2) rather than a bug (a traceback), and where results go by default."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import records
from model.config import ConfigError

EXIT_BAD_INPUT = 2
ENV_RESULTS = "LOOPMDM_RESULTS"


class Parser(argparse.ArgumentParser):
    """argparse with every option's default shown in --help, and usage errors as one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
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


def results_root(root: Path | None) -> Path:
    return Path(root or os.environ.get(ENV_RESULTS) or "results")
