"""Training one run: the loop (`trainer`), the DeepSpeed engine and its numerics (`engine`), checkpoints and
resume (`checkpointing`), validation during training (`evaluation`), progress and the metrics log (`metrics`),
the distributed set-up (`distributed`) and the peak FLOP/s that MFU is measured against (`perf`)."""

from .distributed import Diverged, ForeignRunDir, RunError
from .trainer import Trainer, train

__all__ = ["Diverged", "ForeignRunDir", "RunError", "Trainer", "train"]
