"""The DeepSpeed engine of a run: how the global batch splits into micro-batches, the numerics (bf16 with fp32
master weights *and* fp32 gradient accumulation), the optimizer, and the full weights of a sharded model.

Numerics. DeepSpeed's bf16 mode keeps bf16 weights and activations and fp32 master weights in the optimizer.
How gradients add up over micro-steps depends on the path it picks: with ZeRO-0 it wraps the optimizer in its
unfused fp16/bf16 wrapper and the micro-steps' gradients add up *in bf16* (32 micro-steps lose ~5 bits);
``data_types.grad_accum_dtype: fp32`` is what selects fp32 accumulation, and DeepSpeed implements it from
ZeRO-1 up (ZeRO-1: its BF16_Optimizer, fp32 gradient buffers beside fp32 master weights; ZeRO-2/3: fp32
gradient partitions). So a bf16 run with ``system.zero_stage: 0`` runs as ZeRO-1 (at one rank nothing is
sharded; on several, the optimizer state is — the numbers are the same), and system.json records the stage
that ran. Gradients are reduced across ranks in fp32 too (``communication_data_type``): reducing the fp32
sums in bf16 would round them back to bf16 at the last moment. `tests/test_grad_accum.py` checks that the
gradient after k micro-steps equals the fp32 sum of the k micro-batches' gradients.

AdamW is PyTorch's; on CUDA its fused kernel (one launch for all parameters). DeepSpeed accepts it under
every ZeRO stage as a client optimizer (and then steps it on its own fp32 master copies).
"""

from __future__ import annotations

import torch

from model.config import ConfigError
from study.plan.config import BatchConfig, OptimConfig, RunConfig

from .distributed import full_parameters, quiet_stdout, safe_checkpoint_engine


def split_batch(batch: BatchConfig, world: int) -> tuple[int, int]:
    """(sequences per rank per micro-step, micro-steps per optimizer step) for ``world`` ranks."""
    g, micro = batch.global_batch, batch.micro_batch
    if g % world:
        raise ConfigError("batch.global_batch", f"{g} sequences cannot be split evenly over {world} ranks; "
                          f"choose a multiple of {world}")
    if micro is None:
        return g // world, 1
    if micro < 1 or (g // world) % micro:
        raise ConfigError("batch.micro_batch", f"{micro} sequences per rank x {world} ranks does not divide "
                          f"batch.global_batch={g}; choose a divisor of {g // world} (global batch / ranks)")
    return micro, g // (micro * world)


def zero_stage(cfg: RunConfig) -> int:
    """The ZeRO stage that runs: bf16 needs stage >= 1 for fp32 gradient accumulation (module docstring)."""
    return max(1, cfg.system.zero_stage) if cfg.precision == "bf16" else cfg.system.zero_stage


def deepspeed_config(cfg: RunConfig, micro: int, accum: int) -> dict:
    ds = {
        "train_batch_size": cfg.batch.global_batch,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": zero_stage(cfg)},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    if cfg.precision == "bf16":
        ds["data_types"] = {"grad_accum_dtype": "fp32"}
        ds["communication_data_type"] = "fp32"
    return ds


def adamw(params, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                             weight_decay=optim.weight_decay, fused=device.type == "cuda")


def build_engine(cfg: RunConfig, model: torch.nn.Module, micro: int, accum: int, device: torch.device,
                 quiet: bool):
    """(engine, optimizer) for ``model``; the engine loads checkpoints with ``weights_only=True``."""
    import deepspeed

    opt = adamw(model.parameters(), cfg.optim, device)
    with quiet_stdout(quiet):
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=deepspeed_config(cfg, micro, accum))
    engine.checkpoint_engine = safe_checkpoint_engine()
    return engine, opt


def full_state(module: torch.nn.Module, stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights on every rank (gathered under ZeRO-3), detached copies on the CPU."""
    with full_parameters(module, stage):
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
