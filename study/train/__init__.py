"""Training one run: the DeepSpeed trainer (`trainer`), its distributed set-up (`distributed`) and the
peak FLOP/s that MFU is measured against (`perf`)."""

from .distributed import RunError
from .trainer import Diverged, ForeignRunDir, Trainer, train

__all__ = ["Diverged", "ForeignRunDir", "RunError", "Trainer", "train"]
