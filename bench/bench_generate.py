"""Batched generation of prompts of unequal lengths (left padding kept out of attention) vs one prompt at a
time, through the lm-eval model's generate_until. A benchmark: it times both and checks they agree.

    python bench/bench_generate.py --run RUN_DIR [--n 32 --batch 16 --gen 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.data import format_prompt, gsm8k_synth  # noqa: E402
from study.evaluate import load_run  # noqa: E402
from study.evaluate.lm_eval_model import LoopMDMLM  # noqa: E402


class Req:
    def __init__(self, context: str):
        self.args = (context, {"until": ["Question:"], "do_sample": False})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--n", type=int, default=32, help="prompts (generated GSM8K-format test problems)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gen", type=int, default=64)
    ns = ap.parse_args()
    lm = LoopMDMLM(loaded=load_run(ns.run, device="cpu"), gen_length=ns.gen, block_length=16, batch_size=ns.batch)
    reqs = [Req(format_prompt(p["question"])) for p in gsm8k_synth.generate(ns.n, seed=1, difficulty="mixed", split="test")]
    lengths = sorted(len(lm.tok.encode(r.args[0])) for r in reqs)
    times, outs = {}, {}
    for bs in (ns.batch, 1, ns.batch):  # batched timed twice (first and last) so warm-up does not favour it
        lm.batch_size = bs
        t0 = time.perf_counter()
        outs[bs] = lm.generate_until(reqs)
        times.setdefault(bs, []).append(time.perf_counter() - t0)
    batched, single = min(times[ns.batch]), times[1][0]
    print(f"{ns.n} prompts of {lengths[0]}-{lengths[-1]} tokens ({len(set(lengths))} distinct lengths), "
          f"{ns.gen} generated in blocks of 16, greedy")
    print(f"batch {ns.batch}: {batched:.1f} s; one at a time: {single:.1f} s; speed-up {single / batched:.2f}x; "
          f"identical outputs: {outs[ns.batch] == outs[1]}")


if __name__ == "__main__":
    main()
