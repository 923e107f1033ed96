"""``python -m study.sft PARENT_RUN CORPUS --steps N [key=value ...]``: fine-tune a pretrained run on
question/answer data (the same derivation a sweep's ``finetune:`` stage uses)."""

from __future__ import annotations

from .common import Parser
from .run import add_train_options, train_command


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.sft", description="Fine-tune a pretrained run on question/answer data "
                "(question never masked, loss on the answer).")
    ap.add_argument("parent", help="the pretrained run directory")
    ap.add_argument("corpus", help="GSM8K-style jsonl, gsm8k-synth[:DIFFICULTY[:N]] or hf:openai/gsm8k:main")
    ap.add_argument("overrides", nargs="*", help="key=value (optim.lr=1e-4, batch.global_batch=64, ...)")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps (or give budget.tokens=... as an override)")
    ap.add_argument("--seq-len", type=int, default=None, help="default: the parent's")
    add_train_options(ap)
    ns = ap.parse_intermixed_args(argv)
    from study.plan.finetune import sft_config

    return train_command(lambda: sft_config(ns.parent, ns.corpus, steps=ns.steps, seq_len=ns.seq_len,
                                            overrides=ns.overrides), ns)
