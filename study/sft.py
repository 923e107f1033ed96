"""Fine-tuning configs: a ``kind: sft`` RunConfig derived from a pretrained run.

The fine-tuned model must be the parent's network exactly (same ModelConfig, tokenizer, and the parent's
weights through ``init_from``), so those are copied from the parent's resolved config rather than retyped;
what changes is the data (question/answer pairs, question never masked, loss on the answer only), the
optimisation and the budget. The trainer does the rest (``study.train``: ``kind == 'sft'``).

    cfg = sft_config("results/demo/runs/d128-...", "gsm8k-synth:easy", steps=300, optim={"lr": 1e-3})
    study.train.train(cfg, out_dir)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from study import config as config_mod
from study.evaluate import EvalError, find_checkpoint, run_config


def sft_config(parent: str | Path, corpus: str, steps: int | None = None, seq_len: int | None = None,
               **sections: Any) -> config_mod.RunConfig:
    """The SFT RunConfig for fine-tuning ``parent`` on ``corpus`` (a GSM8K-style jsonl,
    ``gsm8k-synth[:DIFFICULTY[:N]]`` or ``hf:openai/gsm8k:main``).

    ``sections`` override whole-config sections key by key (``optim={"lr": 1e-4}``, ``batch={...}``,
    ``system={...}``, ``seed=1``); ``model`` may not change. ``seq_len`` defaults to the parent's; a longer
    one raises the model's max_seq_len with it (RoPE tables are not weights, so the parent still loads)."""
    parent = Path(parent).resolve()
    pcfg, _ = run_config(parent)
    find_checkpoint(parent)  # fail now, not after the job was queued, if there are no weights yet
    if "model" in sections:
        raise EvalError("model", "an SFT run keeps its parent's network; change the parent instead")
    raw = pcfg.to_dict()
    raw.pop("meta", None)
    raw["kind"] = "sft"
    raw["init_from"] = str(parent)
    raw["data"] = {**raw["data"], "corpus": corpus}
    if seq_len is not None:
        raw["data"]["seq_len"] = seq_len
        raw["model"]["max_seq_len"] = max(raw["model"]["max_seq_len"], seq_len)
    if steps is None and "budget" not in sections:
        raise EvalError("steps", "give the fine-tuning length: steps=N or budget={'tokens': ...}")
    if steps is not None:
        raw["budget"] = {"steps": steps}
    raw["eval"] = {**raw["eval"], "points": 1}  # SFT runs have no held-out token set; tasks evaluate them
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    if "budget" in sections:
        raw["budget"] = dict(sections["budget"])
    return config_mod.from_dict(raw)
