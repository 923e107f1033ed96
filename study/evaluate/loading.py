"""Loading a trained run for inference: its resolved config, a complete checkpoint, its weights, and the same
fixed validation sequences the trainer evaluated on."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from model import LoopMDM, flops
from model.config import ConfigError
import records
from study.weights import load_weights, weights_file

DEFAULT_SCAN_LOOPS = (1, 2, 4, 6, 8, 12, 16, 24)
DEFAULT_ATTENTION_TS = (0.25, 0.5, 0.75)


class EvalError(ConfigError):
    """An evaluation cannot run as asked; the message starts with the argument to change."""

    @property
    def arg(self) -> str:
        return self.field



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


def run_config(run_dir: str | Path):
    """The RunConfig a run was trained with (its config.yaml), and its identity hash as recorded then.

    The recorded hash wins over a recomputed one: if a default changed since, the run keeps its name."""
    from study.plan.config import from_dict

    run_dir = Path(run_dir)
    raw = records.read_config(run_dir)
    if raw is None:
        what = "does not exist" if not run_dir.exists() else "has no config.yaml (not a run directory)"
        raise EvalError("run", f"{run_dir} {what}; pass a run directory written by study.run / study.sweep")
    cfg = from_dict(raw)
    return cfg, records.recorded_hash(raw) or cfg.hash


def find_checkpoint(run_dir: str | Path, ckpt: str | int | None = "latest") -> Path:
    """A complete checkpoint of the run: the newest ('latest'), or the one at an exact step."""
    run_dir = Path(run_dir)
    found = records.complete_checkpoints(run_dir)
    if not found:
        raise EvalError("run", f"{run_dir} has no complete checkpoint (ckpt/step_*); train it first "
                               f"or wait for its first checkpoint")
    if ckpt is None or str(ckpt) == "latest":
        return found[-1]
    try:
        want = int(ckpt)
    except (TypeError, ValueError):
        raise EvalError("ckpt", f"{ckpt!r} is neither 'latest' nor a step number") from None
    by_step = {records.ckpt_step(p): p for p in found}
    if want not in by_step:
        raise EvalError("ckpt", f"no complete checkpoint at step {want} in {run_dir}; available steps: "
                                f"{sorted(by_step)}")
    return by_step[want]


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
    weights = "ema" if weights_file(path, prefer_ema) == "ema.safetensors" else "model"
    return cfg, run_hash, path, meta, weights


def check_loops(loops: Iterable[int], arg: str = "loops") -> list[int]:
    out = []
    for s in loops:
        try:
            ok = not isinstance(s, bool) and float(s).is_integer() and int(float(s)) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EvalError(arg, f"got {s!r}; every loop count must be an integer >= 1")
        out.append(int(float(s)))
    return out


def check_thresholds(thresholds: Iterable[float], arg: str = "exit_thresholds") -> list[float]:
    out = []
    for eps in thresholds:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise EvalError(arg, f"got {eps!r}; an exit threshold must be a number > 0")
        out.append(float(eps))
    return out


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


def inference_flops(cfg, loops: float) -> dict[str, float]:
    """One denoising step's FLOPs per token at the loops actually used, under every convention."""
    return {f"infer_flops_per_token_{c}": flops.inference_flops_per_token(cfg.model, cfg.data.seq_len, loops, c)
            for c in flops.CONVENTIONS}

