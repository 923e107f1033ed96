"""Fine-tuning configs: a ``kind: sft`` RunConfig derived from a pretrained run — the one derivation, used by
a sweep's ``finetune:`` stage and by ``python -m study.sft`` alike.

The fine-tuned model must be the parent's network exactly (same ModelConfig, tokenizer, and the parent's
weights through ``init_from``), so those are copied from the parent's resolved config rather than retyped;
what changes is the data (question/answer pairs, question never masked, loss on the answer only), the
optimisation and the budget. The trainer does the rest (``kind == 'sft'``).

    cfg = sft_config("results/demo/runs/d128-...", "gsm8k-synth:easy", steps=300, optim={"lr": 1e-3})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import records
from model.config import ConfigError
from study.plan import config as config_mod
from study.plan.trained import find_checkpoint, run_config


def sft_raw(parent: Mapping[str, Any], corpus: str, init_from: str, sections: Mapping[str, Any] = {},
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The fine-tuning run's config dict from its parent's: ``sections`` replace keys of whole sections
    (``optim={"lr": 1e-4}``; ``budget`` is replaced whole), then ``key=value`` overrides. The model may not
    change, except that a longer ``data.seq_len`` raises ``model.max_seq_len`` with it (RoPE tables are not
    weights, so the parent still loads). SFT runs have no held-out token set: one eval point."""
    if "model" in sections:
        raise ConfigError("model", "a fine-tuning run keeps its parent's network; change the parent instead")
    raw = config_mod.copy_tree(dict(parent))
    raw.pop("meta", None)
    parent_model = config_mod.copy_tree(raw["model"])
    raw.update(kind="sft", init_from=str(init_from))
    raw["data"] = {**raw["data"], "corpus": corpus}
    raw["eval"] = {**raw["eval"], "points": 1}
    raw["budget"] = {}
    for key, value in sections.items():
        if key == "budget":
            raw["budget"] = dict(value)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    raw = config_mod.apply_overrides(raw, list(overrides))
    raw["model"]["max_seq_len"] = max(raw["model"]["max_seq_len"], raw["data"]["seq_len"])
    if {k: v for k, v in raw["model"].items() if k != "max_seq_len"} != \
            {k: v for k, v in parent_model.items() if k != "max_seq_len"}:
        raise ConfigError("model", "a fine-tuning run keeps its parent's network; change the parent instead")
    if not raw["budget"]:
        raise ConfigError("budget", "give the fine-tuning length, e.g. budget: {steps: 500} (or --steps N)")
    return raw


def sft_config(parent: str | Path, corpus: str, steps: int | None = None, seq_len: int | None = None,
               overrides: Sequence[str] = (), **sections: Any) -> config_mod.RunConfig:
    """The SFT RunConfig for fine-tuning the run directory ``parent`` on ``corpus`` (a GSM8K-style jsonl,
    ``gsm8k-synth[:DIFFICULTY[:N]]`` or ``hf:openai/gsm8k:main``)."""
    parent = Path(parent).resolve()
    pcfg, _ = run_config(parent)
    find_checkpoint(parent)  # fail now, not after the job was queued, if there are no weights yet
    sections = dict(sections)
    if steps is not None:
        sections["budget"] = {"steps": steps}
    elif "budget" not in sections and any(str(o).startswith("budget.") for o in overrides):
        sections["budget"] = {}
    if seq_len is not None:
        sections["data"] = {**sections.get("data", {}), "seq_len": seq_len}
    return config_mod.from_dict(sft_raw(pcfg.to_dict(), corpus, str(parent), sections, overrides))


def study_relative_parent(parent_run_dir: Path) -> str:
    """How a sweep names a fine-tuning run's parent: relative to the study (``runs/<slug>-<hash>``), so the
    child's identity does not depend on where the study lives."""
    return str(Path(records.RUNS_DIR) / Path(parent_run_dir).name)
