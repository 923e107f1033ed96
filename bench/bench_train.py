"""Training throughput: tokens/s and MFU, looped vs same-size vs deeper MDM, the masked-rows head against the
full head, and the harness's overhead.

A benchmark, not a test: it measures speed and prints a table (and JSON with --json). Run on CPU here, and
on a GPU in one call (bf16, flash attention through SDPA):

    python bench/bench_train.py                       # CPU: demo-size models
    python bench/bench_train.py --device cuda --paper # GPU: also the paper's 12 x 768 backbone at L=1024

(bench/gpu_check.py is the one-call GPU check of every throughput change; this is the CPU-sized view.)
What it reports, per model, the steps as the harness runs them by default (rows head, no vocabulary padding,
eager unless --compile; bench/steps.py):
  - time per step and tokens/s of a bare forward+backward+AdamW step (no harness),
  - achieved FLOP/s under the exact convention and MFU against the measured matmul peak (CPU) or the
    datasheet (known GPUs),
  - time per FLOP of the looped model at S=k relative to the deeper non-looped model of the same depth
    (target: within 5%: looping should cost what the layers it replaces cost),
  - the looped model with the output head over every position (before #22): the masked-rows head's speed-up,
and for one model, the full harness (DeepSpeed engine, data, logging, checkpoint cadence) vs the bare
step (target: overhead under 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import ModelConfig  # noqa: E402
from steps import BareStep, Variant, interleaved, step_row  # noqa: E402
from study.train.perf import peak_flops  # noqa: E402

DEFAULTS = Variant("harness defaults", pad_vocab=1, compile=False)  # what a run does unless told otherwise
FULL_HEAD = Variant("full head", full_head=True, pad_vocab=1, compile=False)
COMPILED = Variant("compiled", pad_vocab=1, compile=True)


def bare_step_time(cfg: ModelConfig, loops: int, batch: int, seq_len: int, device: torch.device,
                   dtype: torch.dtype, iters: int, v: Variant = DEFAULTS, clip: float = 0.0) -> float:
    return BareStep(cfg, device, dtype).time(v, loops, batch, seq_len, iters, clip=clip)


def harness_overhead(device: torch.device, iters: int, rounds: int) -> dict:
    """The same model, batch and optimisation (AdamW, clipping at optim.grad_clip) through study.train
    (DeepSpeed engine, data pipeline, per-step bookkeeping, logging every 10 steps, checkpoint at the end)
    vs a bare PyTorch loop, interleaved round by round in this process so that machine drift hits both.
    Harness step time: tokens/s of its logged windows after the first (start-up and the step-0 eval
    excluded; the windows time every step, data and bookkeeping included, logging I/O and evals not)."""
    from study.plan import config as C
    import records
    from study.train import train

    seq_len, batch = 128, 16
    raw = {"model": {"d_model": 128, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1,
                     "s_max": 4, "loop_dist": "fixed"},
           "data": {"corpus": "shakespeare", "tokenizer": "byte", "seq_len": seq_len},
           "batch": {"global_batch": batch}, "budget": {"steps": iters + 10},
           "eval": {"points": 1, "n_seqs": 1, "n_draws": 2},
           "system": {"log_every": 10, "ckpt_every": 10**9, "device": device.type}}
    cfg = C.from_dict(raw)
    harness, bare = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", quiet=True)
            rows = records.read_jsonl(Path(tmp) / "run" / "metrics.jsonl")
        harness.append(statistics.median([r["tokens_per_s"] for r in rows[1:-1]] or [rows[-1]["tokens_per_s"]]))
        t = bare_step_time(cfg.model, 4, batch, seq_len, device, torch.float32, iters, clip=cfg.optim.grad_clip)
        bare.append(batch * seq_len / t)
    ratios = [b / h - 1 for b, h in zip(bare, harness)]
    return {"harness_tokens_per_s": statistics.median(harness), "bare_tokens_per_s": statistics.median(bare),
            "overhead_pct": 100 * statistics.median(ratios), "overhead_pct_per_round": [100 * r for r in ratios]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper", action="store_true", help="also the 12x768 backbone (layers 1-2 looped)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per variant")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--no-harness", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also the looped model with system.compile (torch.compile)")
    ns = ap.parse_args()
    device = torch.device(ns.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = peak_flops(device, dtype)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"{torch.get_num_threads()} threads, dtype {dtype}, peak {peak / 1e12:.3g} TFLOP/s "
          f"({'datasheet' if device.type == 'cuda' else 'measured matmul'})")

    setups = []
    demo = ModelConfig(vocab_size=258, d_model=128, n_heads=4, n_head_layers=1, n_mid_layers=1, n_tail_layers=1,
                       s_max=4, max_seq_len=128)
    setups.append(("demo d128", demo, 4, 16, 128))
    # the same model with GPT-2's vocabulary: where the output head is most of the FLOPs (2 x 128 x 50258 per
    # token against ~2.4M for the layers at S=4), as with the paper's vocabularies at small widths
    setups.append(("demo d128 V=50258", demo.replace(vocab_size=50258), 4, 16, 128))
    if ns.paper:
        paper = ModelConfig(vocab_size=50258, d_model=768, n_heads=12, n_head_layers=1, n_mid_layers=2,
                            n_tail_layers=9, s_max=12, max_seq_len=1024)
        setups.append(("paper 12x768", paper, 6, 16 if device.type == "cuda" else 1, 1024))

    results = []
    for name, cfg, k, batch, seq_len in setups:
        variants = [(f"looped S={k}", cfg, k, DEFAULTS), (f"looped S={k}, full head", cfg, k, FULL_HEAD),
                    ("same-size S=1", cfg.non_looped(), 1, DEFAULTS), (f"deeper (S={k} depth)", cfg.unrolled(k), 1, DEFAULTS)]
        if ns.compile:
            variants.append((f"looped S={k}, compiled", cfg, k, COMPILED))
        steppers = {id(vcfg): BareStep(vcfg, device, dtype) for _, vcfg, _, _ in variants}
        med = interleaved({vname: (lambda c=vcfg, L=loops, v=v: steppers[id(c)].time(v, L, batch, seq_len, ns.iters))
                           for vname, vcfg, loops, v in variants}, ns.rounds)
        for vname, vcfg, loops, v in variants:
            row = step_row(vcfg, loops, batch, seq_len, med[vname], peak, v=v)
            results.append({"setup": name, "variant": vname, "batch": batch, "seq_len": seq_len, **row,
                            "s_per_pflop": 1e3 / row["tflops"]})
        rows = {r["variant"]: r for r in results if r["setup"] == name}
        looped, deeper = rows[f"looped S={k}"], rows[f"deeper (S={k} depth)"]
        looped["time_per_flop_vs_deeper"] = looped["s_per_pflop"] / deeper["s_per_pflop"]
        rows[f"looped S={k}, full head"]["speedup_of_rows_head"] = rows[f"looped S={k}, full head"]["step_s"] / looped["step_s"]
        if ns.compile:
            rows[f"looped S={k}, compiled"]["speedup_vs_eager"] = looped["step_s"] / rows[f"looped S={k}, compiled"]["step_s"]
    print(f"{'setup':18s} {'variant':26s} {'step ms':>9s} {'tok/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'t/FLOP vs deeper':>17s}")
    for r in results:
        rel = r.get("time_per_flop_vs_deeper")
        extra = f"   {r['speedup_vs_eager']:.2f}x vs eager" if "speedup_vs_eager" in r else ""
        if "speedup_of_rows_head" in r:
            extra = f"   rows head {r['speedup_of_rows_head']:.2f}x faster"
        print(f"{r['setup']:18s} {r['variant']:26s} {1000 * r['step_s']:9.1f} {r['tokens_per_s']:10.0f} "
              f"{r['tflops']:8.3f} {100 * r['mfu']:5.1f}% {'' if rel is None else f'{rel:17.3f}'}{extra}")
    out = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__, "peak_flops": peak,
           "results": results}
    if not ns.no_harness:
        h = harness_overhead(device, max(ns.iters, 30), ns.rounds)
        print(f"harness: {h['harness_tokens_per_s']:.0f} tok/s vs bare {h['bare_tokens_per_s']:.0f} tok/s "
              f"-> overhead {h['overhead_pct']:.1f}% (median of {ns.rounds} interleaved rounds: "
              f"{', '.join(f'{p:.1f}%' for p in h['overhead_pct_per_round'])})")
        out["harness"] = h
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
