"""A checkpoint's weights as safetensors: written by the trainer, read by fine-tuning and evaluation alike, so
neither needs DeepSpeed (nor the other's code) to get at a model."""

from __future__ import annotations

from pathlib import Path

import torch

import records

MODEL = "model.safetensors"
EMA = "ema.safetensors"


def weights_file(ckpt: str | Path, prefer_ema: bool = True) -> str:
    """Which file `load_weights` reads: the EMA weights when the run kept them (as its own evaluation did)."""
    return EMA if prefer_ema and (Path(ckpt) / EMA).is_file() else MODEL


def save_weights(ckpt: str | Path, state: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(Path(ckpt) / MODEL))
    if ema is not None:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in ema.items()}, str(Path(ckpt) / EMA))


def load_weights(ckpt: str | Path, model: torch.nn.Module, prefer_ema: bool = True) -> dict:
    """Load a checkpoint's weights into ``model``; returns the checkpoint's meta.json."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    meta = records.ckpt_meta(ckpt)
    model.load_state_dict(load_file(str(ckpt / weights_file(ckpt, prefer_ema))))
    return meta
