"""LoopMDM: a masked diffusion LM whose mid block is looped. Pure PyTorch, no I/O.

    from model import LoopMDM, ModelConfig, masked_diffusion_loss, validation_nll, sample, flops

``model.config``, ``model.flops`` and ``model.loops`` import without torch (a sweep plans 10,000 runs with
them in a second); the network and the diffusion math load torch on first use.
"""

import importlib

from . import flops
from .config import ConfigError, ModelConfig
from .loops import loop_distribution, train_loops

_LAZY = {"LoopMDM": "transformer", "LoopStats": "transformer", "NLLEstimate": "diffusion",
         "SampleResult": "diffusion", "Schedule": "diffusion", "masked_diffusion_loss": "diffusion",
         "sample": "diffusion", "validation_nll": "diffusion"}

__all__ = ["ConfigError", "LoopMDM", "LoopStats", "ModelConfig", "NLLEstimate", "SampleResult", "Schedule",
           "flops", "loop_distribution", "masked_diffusion_loss", "sample", "train_loops", "validation_nll"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
