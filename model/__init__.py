"""LoopMDM: a masked diffusion LM whose mid block is looped. Pure PyTorch, no I/O.

    from model import LoopMDM, ModelConfig, masked_diffusion_loss, validation_nll, sample, flops
"""

from . import flops
from .config import ConfigError, ModelConfig
from .diffusion import NLLEstimate, SampleResult, Schedule, masked_diffusion_loss, sample, validation_nll
from .loops import loop_distribution, train_loops
from .transformer import LoopMDM, LoopStats

__all__ = ["ConfigError", "LoopMDM", "LoopStats", "ModelConfig", "NLLEstimate", "SampleResult", "Schedule",
           "flops", "loop_distribution", "masked_diffusion_loss", "sample", "train_loops", "validation_nll"]
