"""Sampler throughput at fixed loop counts vs adaptive exit: what "adaptive loops save compute" buys in
wall-clock, next to the loops actually run.

    python bench/bench_sampler.py [--run RUN_DIR] [--loops 1,4,12] [--thresholds 0.05,0.1,0.2]
                                  [--batch 8] [--prompt 64] [--gen 64] [--steps 32] [--repeat 3] [--write]

A random-init model of ``--d-model`` width is always measured (the mechanics and the cost of the exit check
alone); with ``--run`` also that run's checkpoint (prompts: generated GSM8K-format questions), where the
exit rule has real convergence to detect. Prompts are fixed
random tokens; every setting decodes the same prompts with the same seed. ``--write`` puts the table into
bench/README.md under "## sampler" (replacing only that section).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import LoopMDM, ModelConfig, sample  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
HEADING = "## sampler"


def trained_model(ns) -> tuple[LoopMDM, str]:
    from study.evaluate import load_run

    run = load_run(ns.run, device="cpu")
    m = run.cfg.model
    return run.model, (f"trained run `{Path(ns.run).name}` (step {run.step}): d={m.d_model}, layers "
                       f"{m.n_head_layers}+{m.n_mid_layers}xS+{m.n_tail_layers}, trained with S~U{{1..{m.s_max}}}")


def random_model(ns) -> tuple[LoopMDM, str]:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=258, d_model=ns.d_model, n_heads=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=1,
                      s_max=12, max_seq_len=ns.prompt + ns.gen)
    return LoopMDM(cfg).eval(), f"random init: d={ns.d_model}, layers 1+2xS+1"


def make_prompts(ns, model: LoopMDM, real: bool) -> torch.Tensor:
    """Real GSM8K-format questions (their last ``--prompt`` tokens) for a trained run; random bytes otherwise."""
    if real:
        from study.data import gsm8k_synth
        from study.data import format_prompt
        from study.plan.trained import run_config
        from study.data import get_tokenizer

        tok = get_tokenizer(run_config(ns.run)[0].data.tokenizer)
        rows = gsm8k_synth.generate(4 * ns.batch, seed=1, difficulty="mixed", split="test")
        ids = [tok.encode(format_prompt(r["question"])) for r in rows]
        ids = [x[-ns.prompt:] for x in ids if len(x) >= ns.prompt][:ns.batch]
        if len(ids) == ns.batch:
            return torch.tensor(ids, dtype=torch.long)
    vocab = model.cfg.vocab_size
    return torch.randint(0, min(vocab - 2, 256), (ns.batch, ns.prompt), generator=torch.Generator().manual_seed(1))


def bench(model: LoopMDM, prompt: torch.Tensor, ns, loops: int, eps: float | None) -> dict:
    times, res = [], None
    for _ in range(ns.repeat + 1):  # the first call warms up
        t0 = time.perf_counter()
        res = sample(model, prompt, gen_length=ns.gen, steps=ns.steps, loops=loops, exit_threshold=eps,
                     generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - t0)
    wall = statistics.median(times[1:])
    return {"loops": loops, "eps": eps, "wall_s": wall, "tok_s": prompt.shape[0] * ns.gen / wall,
            "mean_loops": res.mean_loops, "nfe": res.nfe}


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["eps"] is None and r["loops"] == max(x["loops"] for x in rows)), rows[0])
    lines = ["| setting | mean loops run | tokens/s | time vs fixed S=%d |" % base["loops"], "|---|---|---|---|"]
    for r in rows:
        name = f"fixed S={r['loops']}" if r["eps"] is None else f"adaptive eps={r['eps']} (cap {r['loops']})"
        lines.append(f"| {name} | {r['mean_loops']:.2f} | {r['tok_s']:.0f} | {r['wall_s'] / base['wall_s']:.2f}x |")
    return "\n".join(lines)


def write_section(text: str) -> None:
    old = README.read_text() if README.is_file() else "# Benchmarks\n"
    if HEADING in old:
        head, _, rest = old.partition(HEADING)
        nxt = rest.find("\n## ")
        old = head.rstrip() + "\n" + (rest[nxt:] if nxt >= 0 else "")
    README.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--loops", default="1,4,12")
    ap.add_argument("--thresholds", default="0.05,0.1,0.2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    ns = ap.parse_args()
    torch.set_num_threads(ns.threads)
    models = [random_model(ns)] + ([trained_model(ns)] if ns.run else [])
    sections = []
    for model, what in models:
        if ns.prompt + ns.gen > model.cfg.max_seq_len:
            sys.exit(f"--prompt + --gen = {ns.prompt + ns.gen} exceeds max_seq_len {model.cfg.max_seq_len} of {what}")
        prompt = make_prompts(ns, model, real=model is not models[0][0])
        loops = [int(x) for x in ns.loops.split(",")]
        rows = [bench(model, prompt, ns, s, None) for s in loops]
        rows += [bench(model, prompt, ns, max(loops), float(e)) for e in ns.thresholds.split(",") if e]
        sections.append(f"Model: {what}.\n\n{table(rows)}")
        print(sections[-1] + "\n", flush=True)
    if ns.write:
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
        cmd = " ".join(["python bench/bench_sampler.py"] + sys.argv[1:])
        write_section(f"{HEADING}\n\n`{cmd}` — `model.diffusion.sample` (low-confidence remasking, argmax), batch "
                      f"{ns.batch}, prompt {ns.prompt} tokens, {ns.gen} generated in {ns.steps} steps; median of "
                      f"{ns.repeat} after a warm-up; {machine}. Adaptive exit stops a sequence's loops once "
                      f"||h_k - h_(k-1)|| / ||h_k|| < eps (cap: the largest fixed S).\n\n" + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
