"""Loading a trained run for inference: its resolved config, a complete checkpoint, its weights, and the same
fixed validation sequences the trainer evaluated on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import records
from model import LoopMDM
from study.plan.trained import find_checkpoint, run_config
from study.weights import EMA, load_weights, weights_file

from .request import EvalError


# ------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A run's resolved config and its weights at one checkpoint, ready for inference (eval mode)."""

    run_dir: Path
    cfg: Any  # study.config.RunConfig
    run_hash: str
    model: LoopMDM
    ckpt: Path
    step: int
    ckpt_meta: dict
    weights: str  # 'ema' or 'model': which file was loaded
    device: torch.device

    @property
    def tokenizer(self):
        from study.data import get_tokenizer

        return get_tokenizer(self.cfg.data.tokenizer)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as exc:
        raise EvalError("device", f"{device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError("device", f"{device!r} asked for but no CUDA device is visible; use device=cpu")
    return dev


def load_run(run_dir: str | Path, ckpt: str | int | None = "latest", device: str | torch.device | None = "auto",
             prefer_ema: bool = True) -> LoadedRun:
    """Build the run's model and load a checkpoint's weights (EMA weights when the run kept them, as the
    trainer's own evaluation does)."""
    run_dir = Path(run_dir)
    cfg, run_hash, path, _, weights = checkpoint_identity(run_dir, ckpt, prefer_ema)
    dev = resolve_device(device)
    model = LoopMDM(cfg.model)
    meta = load_weights(path, model, prefer_ema=prefer_ema)
    model.to(dev).eval()
    return LoadedRun(run_dir=run_dir, cfg=cfg, run_hash=run_hash, model=model, ckpt=path, step=int(meta["step"]),
                     ckpt_meta=meta, weights=weights, device=dev)


def checkpoint_identity(run_dir: str | Path, ckpt: str | int | None = "latest", prefer_ema: bool = True):
    """(cfg, run_hash, ckpt path, ckpt meta, weights) without loading any weights: enough to tell whether an
    evaluation is already on disk."""
    cfg, run_hash = run_config(run_dir)
    path = find_checkpoint(run_dir, ckpt)
    meta = records.ckpt_meta(path)
    weights = "ema" if weights_file(path, prefer_ema) == EMA else "model"
    return cfg, run_hash, path, meta, weights


def short_hash(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ------------------------------------------------------------------------------------------ eval set
def eval_tokens(cfg, n_seqs: int | None = None) -> torch.Tensor:
    """The run's fixed validation sequences, through the trainer's own data path (same cache, same windows)."""
    from study import data

    if cfg.kind != "pretrain":
        raise EvalError("run", f"a {cfg.kind} run has no held-out token set; scan its pretrained parent "
                               f"(init_from={cfg.init_from}) or evaluate it on tasks with study.eval --tasks")
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else data.default_cache_dir()
    td = data.prepare_tokens(cfg.data.corpus, cfg.data.tokenizer, cache, val_fraction=cfg.data.val_fraction,
                             max_tokens=cfg.data.max_tokens, val_split=cfg.data.val_split)
    return data.eval_batches(td.val, n_seqs or cfg.eval.n_seqs, cfg.data.seq_len, cfg.data.align)
