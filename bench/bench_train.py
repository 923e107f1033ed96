"""Training throughput: tokens/s and MFU, looped vs same-size vs deeper MDM, and the harness's overhead.

A benchmark, not a test: it measures speed and prints a table (and JSON with --json). Run on CPU here, and
on a GPU in one call (bf16, flash attention through SDPA):

    python bench/bench_train.py                       # CPU: demo-size models
    python bench/bench_train.py --device cuda --paper # GPU: also the paper's 12 x 768 backbone at L=1024

What it reports, per model:
  - time per step and tokens/s of a bare forward+backward+AdamW step (no harness),
  - achieved FLOP/s under the exact convention and MFU against the measured matmul peak (CPU) or the
    datasheet (known GPUs),
  - time per FLOP of the looped model at S=k relative to the deeper non-looped model of the same depth
    (target: within 5%: looping should cost what the layers it replaces cost),
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
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import LoopMDM, ModelConfig, flops, masked_diffusion_loss  # noqa: E402
from study.train.perf import peak_flops  # noqa: E402


def bare_step_time(cfg: ModelConfig, loops: int, batch: int, seq_len: int, device: torch.device,
                   dtype: torch.dtype, iters: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model = LoopMDM(cfg).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size - 1, (batch, seq_len), device=device)
    gen = torch.Generator().manual_seed(0)

    def step():
        loss, _ = masked_diffusion_loss(model, x, loops=loops, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def harness_overhead(device: torch.device, iters: int) -> dict:
    """The same model and batch through study.train (DeepSpeed, data, logging every 10 steps, one checkpoint)
    vs the bare step; only the steady-state step time is compared (engine start-up excluded)."""
    from study.plan import config as C
    import records
    from study.train import train

    seq_len, batch = 128, 16
    raw = {"model": {"d_model": 128, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1,
                     "s_max": 4, "loop_dist": "fixed"},
           "data": {"corpus": "shakespeare", "tokenizer": "byte", "seq_len": seq_len},
           "batch": {"global_batch": batch}, "budget": {"steps": iters + 10},
           "eval": {"points": 1, "n_seqs": 1, "n_draws": 1},
           "system": {"log_every": 10, "ckpt_every": 10**9, "device": device.type}}
    cfg = C.from_dict(raw)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", quiet=True)
        rows = records.read_jsonl(Path(tmp) / "run" / "metrics.jsonl")
    # tokens/s over the logged windows after the first (which includes start-up and the step-0 eval)
    steady = [r["tokens_per_s"] for r in rows[1:-1]] or [rows[-1]["tokens_per_s"]]
    harness_tps = statistics.median(steady)
    bare = bare_step_time(cfg.model, 4, batch, seq_len, device, torch.float32, iters)
    bare_tps = batch * seq_len / bare
    return {"harness_tokens_per_s": harness_tps, "bare_tokens_per_s": bare_tps,
            "overhead_pct": 100 * (bare_tps / harness_tps - 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper", action="store_true", help="also the 12x768 backbone (layers 1-2 looped)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per variant")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--no-harness", action="store_true")
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
    if ns.paper:
        paper = ModelConfig(vocab_size=50258, d_model=768, n_heads=12, n_head_layers=1, n_mid_layers=2,
                            n_tail_layers=9, s_max=12, max_seq_len=1024)
        setups.append(("paper 12x768", paper, 6, 16 if device.type == "cuda" else 1, 1024))

    results = []
    for name, cfg, k, batch, seq_len in setups:
        variants = [(f"looped S={k}", cfg, k), ("same-size S=1", cfg.non_looped(), 1), (f"deeper (S={k} depth)", cfg.unrolled(k), 1)]
        # interleaved rounds: a variant timed first would also pay for the machine warming up
        times = {v[0]: [] for v in variants}
        for _ in range(ns.rounds):
            for vname, vcfg, loops in variants:
                times[vname].append(bare_step_time(vcfg, loops, batch, seq_len, device, dtype, ns.iters))
        for vname, vcfg, loops in variants:
            t = statistics.median(times[vname])
            f = batch * seq_len * flops.train_flops_per_token(vcfg, seq_len, loops, "exact")
            row = {"setup": name, "variant": vname, "batch": batch, "seq_len": seq_len, "step_s": t,
                   "tokens_per_s": batch * seq_len / t, "tflops": f / t / 1e12, "mfu": f / t / peak,
                   "s_per_pflop": t / f * 1e15}
            results.append(row)
        looped, deeper = results[-3], results[-1]
        looped["time_per_flop_vs_deeper"] = looped["s_per_pflop"] / deeper["s_per_pflop"]
    print(f"{'setup':14s} {'variant':22s} {'step ms':>9s} {'tok/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'t/FLOP vs deeper':>17s}")
    for r in results:
        rel = r.get("time_per_flop_vs_deeper")
        print(f"{r['setup']:14s} {r['variant']:22s} {1000 * r['step_s']:9.1f} {r['tokens_per_s']:10.0f} "
              f"{r['tflops']:8.3f} {100 * r['mfu']:5.1f}% {'' if rel is None else f'{rel:17.3f}'}")
    out = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__, "peak_flops": peak,
           "results": results}
    if not ns.no_harness:
        h = harness_overhead(device, max(ns.iters, 30))
        print(f"harness: {h['harness_tokens_per_s']:.0f} tok/s vs bare {h['bare_tokens_per_s']:.0f} tok/s "
              f"-> overhead {h['overhead_pct']:.1f}%")
        out["harness"] = h
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
