"""Tiny trained runs shared by the evaluation tests: a looped model pretrained on generated GSM8K-format text
and its SFT child. Trained once per pytest session (train() returns at once for a finished run dir).

Sized so that training takes well under a minute on 2 shared CPU cores while the fine-tuned model still
learns enough of the answer format to beat chance on the multiple-choice task.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before anything imports `datasets`
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from study.plan import config as C  # noqa: E402

CORPUS = "gsm8k-synth:easy:2000"
PRETRAIN_STEPS = 60
SFT_STEPS = 300
SFT_SEQ_LEN = 208  # the longest easy problem is 204 bytes


def pretrain_cfg(cache: Path, steps: int = PRETRAIN_STEPS) -> C.RunConfig:
    raw = {
        "model": {"d_model": 64, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1,
                  "s_max": 3, "max_seq_len": SFT_SEQ_LEN},
        "data": {"corpus": CORPUS, "tokenizer": "byte", "seq_len": 128, "cache_dir": str(cache)},
        "optim": {"lr": 5e-3, "warmup_steps": 10},
        "batch": {"global_batch": 16},
        "budget": {"steps": steps},
        "eval": {"points": 1, "n_seqs": 8, "n_draws": 2},
        "system": {"log_every": 50, "ckpt_every": 10_000, "num_threads": 1},
    }
    return C.from_dict(raw)


def tiny_runs(base: Path) -> tuple[Path, Path]:
    """(pretrained run dir, SFT run dir) under ``base``, trained if not already there."""
    from study.plan.finetune import sft_config
    from study.train import train

    base.mkdir(parents=True, exist_ok=True)
    cache = base / "cache"
    pre = base / "pretrain"
    train(pretrain_cfg(cache), pre, quiet=True)
    sft = base / "sft"
    cfg = sft_config(pre, CORPUS, steps=SFT_STEPS, seq_len=SFT_SEQ_LEN, optim={"lr": 5e-3, "warmup_steps": 10},
                     system={"num_threads": 1, "ckpt_every": 10_000, "log_every": 50})
    train(cfg, sft, quiet=True)
    return pre, sft
