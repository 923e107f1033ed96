"""Fine-tuning configs: a ``kind: sft`` RunConfig derived from a pretrained run.

The fine-tuned model must be the parent's network exactly (same ModelConfig, tokenizer, and the parent's
weights through ``init_from``), so those are copied from the parent's resolved config rather than retyped;
what changes is the data (question/answer pairs, question never masked, loss on the answer only), the
optimisation and the budget. The trainer does the rest (``study.train``: ``kind == 'sft'``).

    cfg = sft_config("results/demo/runs/d128-...", "gsm8k-synth:easy", steps=300, optim={"lr": 1e-3})
    study.train.train(cfg, out_dir)

or from the shell: ``python -m study.sft PARENT_RUN gsm8k-synth:easy --steps 300 optim.lr=1e-3 --out DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from study import config as config_mod
from study.evaluate import EvalError, find_checkpoint, run_config


def sft_config(parent: str | Path, corpus: str, steps: int | None = None, seq_len: int | None = None,
               overrides: list[str] = (), **sections: Any) -> config_mod.RunConfig:
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
    raw = config_mod.apply_overrides(raw, list(overrides))
    if (raw.get("model") or {}) != pcfg.to_dict()["model"] | ({"max_seq_len": raw["model"]["max_seq_len"]}):
        raise EvalError("model", "an SFT run keeps its parent's network; change the parent instead")
    return config_mod.from_dict(raw)


def main(argv: list[str] | None = None) -> int:
    """``python -m study.sft PARENT_RUN CORPUS --steps N [key=value ...] [--out DIR] [--print-config]``"""
    import argparse
    import sys

    from model.config import ConfigError
    from study.data import DataError
    from study.run import default_out, install_stop_flag
    from study.train import RunError, train

    ap = argparse.ArgumentParser(prog="python -m study.sft", description="Fine-tune a pretrained run on "
                                 "question/answer data (question never masked, loss on the answer).")
    ap.add_argument("parent", help="the pretrained run directory")
    ap.add_argument("corpus", help="GSM8K-style jsonl, gsm8k-synth[:DIFFICULTY[:N]] or hf:openai/gsm8k:main")
    ap.add_argument("overrides", nargs="*", help="key=value (optim.lr=1e-4, batch.global_batch=64, ...)")
    ap.add_argument("--steps", type=int, help="fine-tuning steps (or give budget.tokens=... as an override)")
    ap.add_argument("--seq-len", type=int, help="default: the parent's")
    ap.add_argument("--out", type=Path, help="run directory (default results/local/runs/<slug>-<hash>)")
    ap.add_argument("--print-config", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ns = ap.parse_intermixed_args(argv)
    try:
        budget = [o for o in ns.overrides if o.startswith("budget.")]
        extra = {"budget": {}} if budget and ns.steps is None else {}
        cfg = sft_config(ns.parent, ns.corpus, steps=ns.steps, seq_len=ns.seq_len, overrides=ns.overrides, **extra)
        if ns.print_config:
            print(config_mod.dump_yaml(cfg), end="")
            return 0
        out = ns.out or default_out(cfg)
        summary = train(cfg, out, stop=install_stop_flag().is_set, quiet=ns.quiet)
    except (ConfigError, DataError, RunError, EvalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['status']}: {summary['step']} steps; {out}")
    return 0 if summary["status"] == "done" else 3


if __name__ == "__main__":
    raise SystemExit(main())
