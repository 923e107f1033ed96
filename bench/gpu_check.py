"""One GPU check, one call (issue #22): how fast the paper backbone trains, what each throughput change buys,
whether bf16 agrees with fp32, and whether every evaluation path runs on the device.

    python bench/gpu_check.py --json gpu_check.json      # one GPU, <= 6 minutes, installs nothing
    python bench/gpu_check.py --small                    # CPU, tiny shapes: the test suite runs this

It needs the project's own dependencies (torch, DeepSpeed, tokenizers) and nothing else: the data are made up
on the spot (a word-level tokenizer with the paper's vocabulary sizes and a text of its words), so the shapes are
the paper's (LM1B: vocabulary 30,522, L = 128, micro-batch 256; OWT: 50,258, L = 1024, micro-batch 16) with no
corpus or hub access. lm-eval is used when installed, else that path is reported as skipped.

Sections, the cheap correctness checks first; each is skipped (and said so) once the time budget (--budget-s)
is spent:
  1. bf16 and fp32 runs: a small model trained through the harness (study.train.train) in both precisions;
     their logged losses and validation NLL compared (tolerance 2%);
  2. eval paths on the bf16 run: validation during training, the loop scan at fixed S and under adaptive
     exit, the attention statistic, sampling, infilling and the lm-eval model, each checked for finite
     results and for device memory it allocated (it ran on the device);
then per shape (LM1B, OWT):
  3. bare steps (forward + backward + AdamW, no harness; bench/steps.py) of the looped model (S = 6), the
     same-size MDM and the deeper MDM (the looped one unrolled): with every change, and for the looped model
     with each change undone in turn (rows head, vocabulary padding, no host syncs, fused AdamW, compile), and
     with all of them undone, interleaved round by round: each change's gain is a ratio measured here;
  4. the micro-batch: bare looped steps (eager) at several sizes; the fastest that the spec's global batch
     allows on its GPUs is the one to put in the spec;
  5. the harness on the same models (looped at a fixed S = 6, so it does what the bare step does) against
     the bare step; the looped model also with the engine as before (bf16 ZeRO-0: gradients summed in bf16,
     unfused AdamW) and with all of #22 undone. OWT's global batch is cut to 4 micro-batches here (512 would
     take ~2 s a step); checkpoints and evaluations are skipped (outside the timed windows anyway); the
     spec's estimate.mfu is read off these runs.

MFU is the model's FLOPs under the ``exact`` convention (the output head at every position, the real
vocabulary) over the datasheet peak; ``executed`` is what the device ran instead (the head on the masked rows
only, the padded vocabulary), for comparison. Output: one table on stdout and JSON (--json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import ModelConfig, flops  # noqa: E402
from steps import BEFORE, BareStep, Variant, interleaved, step_row  # noqa: E402
from study.train.perf import measured_matmul_flops, peak_flops  # noqa: E402

CHANGES = ("rows head", "vocab padding", "no host syncs", "fused AdamW", "compile")


@dataclass(frozen=True)
class Shape:
    name: str
    spec: str  # the paper spec this shape is taken from (its micro-batch advice is for it)
    seq_len: int
    micro: int
    vocab: int
    global_batch: int  # the harness's, here (the spec's may be larger: see the module docstring)
    micro_sweep: tuple[int, ...]


@dataclass(frozen=True)
class Size:
    """The backbone (the paper's 12 x 768, layers 1-2 looped) and how long each measurement runs."""

    d_model: int
    n_heads: int
    layers: tuple[int, int, int]
    loops: int
    iters: int
    warmup: int
    rounds: int
    harness_steps: int
    log_every: int
    small_d: int  # the model of the eval-path and bf16/fp32 sections
    small_steps: int
    corpus_words: int


FULL = Size(768, 12, (1, 2, 9), 6, iters=6, warmup=2, rounds=2, harness_steps=15, log_every=5, small_d=256,
            small_steps=40, corpus_words=200_000)
SMALL = Size(32, 4, (1, 1, 1), 2, iters=1, warmup=1, rounds=1, harness_steps=4, log_every=2, small_d=32, small_steps=4,
             corpus_words=20_000)
LM1B, OWT = "sweeps/paper_isoflop_lm1b.yaml", "sweeps/paper_isoflop_owt.yaml"
SHAPES = (Shape("LM1B", LM1B, 128, 256, 30522, 512, (16, 32, 64, 128, 256)),
          Shape("OWT", OWT, 1024, 16, 50258, 64, (4, 8, 16, 32, 64)))
SMALL_SHAPES = (Shape("LM1B", LM1B, 16, 4, 300, 8, (2, 4)), Shape("OWT", OWT, 32, 2, 500, 4, (1, 2)))
ROOT = Path(__file__).resolve().parents[1]


def families(cfg: ModelConfig, loops: int) -> dict[str, tuple[ModelConfig, int]]:
    return {f"looped S={loops}": (cfg, loops), "same-size": (cfg.non_looped(), 1),
            f"deeper ({cfg.unrolled(loops).n_layers_physical} layers)": (cfg.unrolled(loops), 1)}


# -- data made up on the spot -----------------------------------------------------------------------------------
def word_tokenizer(folder: Path, vocab: int) -> Path:
    """A word-level tokenizer.json of exactly ``vocab`` ids: [UNK], [SEP] (end of text), [MASK], w0, w1, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = folder / f"words{vocab}.json"
    if not path.exists():
        words = ["[UNK]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab - 3)]
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.save(str(path))
    return path


def word_corpus(folder: Path, vocab: int, n_words: int, seed: int = 0) -> Path:
    """Zipf-distributed words in short lines: something a model can learn a little of in a few steps. Written
    once per vocabulary, so every run of the check shares one token cache."""
    path = folder / f"corpus{vocab}.txt"
    if not path.exists():
        rng = np.random.default_rng(seed)
        ids = (rng.zipf(1.3, n_words) - 1) % (vocab - 3)
        lines = [" ".join(f"w{i}" for i in ids[j:j + 12]) for j in range(0, n_words, 12)]
        path.write_text("\n".join(lines) + "\n")
    return path


# -- the harness ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def patched(obj, **attrs):
    old = {k: getattr(obj, k) for k in attrs}
    for k, v in attrs.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


@contextlib.contextmanager
def harness_as(variant: str, timing_only: bool = True):
    """The harness with parts of #22 undone, for the ratios (timings only: nothing here changes a run's
    numbers on disk). 'engine before': DeepSpeed bf16 at ZeRO-0 (its unfused wrapper, gradients summed in
    bf16) and unfused AdamW. 'before #22': that, the head over every position, and two host syncs per
    micro-step. ``timing_only`` skips checkpoints and evaluations: they are outside the timed windows anyway,
    and a 12 x 768 checkpoint (or compiling the evaluation's graphs) costs seconds of the lease."""
    import model.diffusion as D
    import study.train.checkpointing as K
    import study.train.engine as E
    import study.train.evaluation as V
    import study.train.trainer as T

    with contextlib.ExitStack() as stack:
        if timing_only:
            stack.enter_context(patched(K.Checkpointer, should_save=lambda self, step, last: False))
            stack.enter_context(patched(V.Evaluator, evaluate=lambda self, *a, **k: None))
        if variant in ("engine before", "before #22"):
            real_cfg, real_adamw = E.deepspeed_config, E.adamw

            def old_config(cfg, micro, accum):
                ds = {k: v for k, v in real_cfg(cfg, micro, accum).items() if k not in ("data_types", "communication_data_type")}
                return ds | {"zero_optimization": {"stage": cfg.system.zero_stage}}

            stack.enter_context(patched(E, deepspeed_config=old_config,
                                        adamw=lambda params, optim, device: real_adamw(params, optim, torch.device("cpu"))))
        if variant == "before #22":
            real_loss = T.masked_diffusion_loss

            def sync(device):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            def blocking(t, device):  # a copy from pageable memory: the host waits for the device first
                sync(device)
                return t.to(device)

            def old_loss(model, x, *a, **k):  # and .item() of the mask fraction after the forward
                out = real_loss(model, x, *a, full_head=True, **k)
                sync(x.device)
                return out

            stack.enter_context(patched(T, masked_diffusion_loss=old_loss, to_device=blocking))
            stack.enter_context(patched(D, to_device=blocking))
        yield


def harness_cfg(mcfg: ModelConfig, shape: Shape, size: Size, work: Path, device: str, precision: str = "bf16",
                compile: bool = True, steps: int | None = None, global_batch: int | None = None, lr: float = 3e-4):
    from study.plan import config as C

    # every step at S = s_max (what the bare step does); the word tokenizer's [MASK] is id 2
    model = mcfg.to_dict() | {"loop_dist": "fixed", "mask_token_id": 2}
    tok = word_tokenizer(work, shape.vocab)
    corpus = word_corpus(work, shape.vocab, size.corpus_words)
    return C.from_dict({
        "model": model, "precision": precision,
        "data": {"corpus": str(corpus), "tokenizer": str(tok), "seq_len": shape.seq_len, "cache_dir": str(work / "cache")},
        "optim": {"lr": lr, "warmup_steps": 5}, "batch": {"global_batch": global_batch or shape.global_batch,
                                                          "micro_batch": shape.micro},
        "budget": {"steps": steps or size.harness_steps},
        "eval": {"points": 1, "n_seqs": 4, "n_draws": 2, "batch_size": 4, "loops": [1], "exit_thresholds": [0.05]},
        "system": {"device": device, "zero_stage": 1, "compile": compile, "log_every": size.log_every,
                   "ckpt_every": 10**9, "tf32": False}})  # fp32 is strict fp32 (bf16 vs fp32 compares numerics)


def harness_run(cfg, run_dir: Path, variant: str = "all changes", timing_only: bool = True) -> dict:
    """study.train.train on a fresh run dir; tokens/s and MFU of the logged windows after the first."""
    import records
    from study.train import train

    with harness_as(variant, timing_only):
        train(cfg, run_dir, quiet=True)
    rows = records.read_jsonl(run_dir / records.METRICS)
    timed = rows[1:] or rows
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "mfu": statistics.median(r["mfu"] for r in timed), "losses": [r["loss"] for r in rows]}


# -- sections --------------------------------------------------------------------------------------------
class Check:
    def __init__(self, ns: argparse.Namespace):
        self.small = ns.small
        if ns.small:
            torch.set_num_threads(1)  # tiny ops: more threads only spin against each other (and other jobs)
        self.device = torch.device("cpu" if ns.small else ns.device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.size, self.shapes = (SMALL, SMALL_SHAPES) if ns.small else (FULL, SHAPES)
        self.compile = not ns.no_compile and not ns.small
        self.deadline = time.perf_counter() + ns.budget_s
        self.json_path = ns.json
        self.runs: dict[str, tuple[Path, dict]] = {}  # precision -> (run dir, harness metrics)
        self.peak = peak_flops(self.device, self.dtype)
        self.out: dict = {"device": self.device_name(), "torch": torch.__version__, "dtype": str(self.dtype),
                          "peak_flops": self.peak, "peak_source": "datasheet" if self.device.type == "cuda" else
                          "measured matmul", "budget_s": ns.budget_s, "small": ns.small, "sections": {},
                          "skipped": []}
        try:
            import deepspeed

            self.out["deepspeed"] = deepspeed.__version__
        except ImportError:
            self.out["deepspeed"] = None
        if self.device.type == "cuda":
            self.out["matmul_tflops_measured"] = measured_matmul_flops("cuda", torch.bfloat16, n=8192) / 1e12
            torch._dynamo.config.cache_size_limit = 64  # many models and shapes in one process

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def section(self, name: str, fn, need_s: float) -> None:
        if self.left() < need_s:
            self.out["skipped"].append(f"{name}: {self.left():.0f} s left of the budget, needs ~{need_s:.0f} s")
            print(f"== {name}: skipped (time budget)", flush=True)
            return
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            self.out["sections"][name] = fn() | {"seconds": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - report and carry on: one broken section must not hide the rest
            import traceback

            self.out["sections"][name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:],
                                          "seconds": time.perf_counter() - t0}
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
        if self.json_path:
            self.json_path.write_text(json.dumps(self.out, indent=1, default=str))

    def small_model(self, shape: Shape) -> ModelConfig:
        d = self.size.small_d
        return ModelConfig(vocab_size=shape.vocab, d_model=d, n_heads=max(1, d // 64), n_head_layers=1,
                           n_mid_layers=1, n_tail_layers=1, s_max=self.size.loops, max_seq_len=shape.seq_len)

    def backbone(self, shape: Shape) -> ModelConfig:
        s = self.size
        return ModelConfig(vocab_size=shape.vocab, d_model=s.d_model, n_heads=s.n_heads, n_head_layers=s.layers[0],
                           n_mid_layers=s.layers[1], n_tail_layers=s.layers[2], s_max=12 if not self.small else 3,
                           max_seq_len=shape.seq_len)

    # 1 + 2: a small run in bf16 and fp32 through the harness (kept: the eval paths run on the bf16 one)
    def precision_runs(self, work: Path) -> dict:
        shape = self.shapes[0]
        mcfg = self.small_model(shape).replace(pad_vocab=128)
        for precision in ("bf16", "fp32"):
            cfg = harness_cfg(mcfg, shape, self.size, work, self.device.type, precision, compile=False,
                              steps=self.size.small_steps, global_batch=2 * shape.micro, lr=1e-3)
            run = work / f"small-{precision}"
            self.runs[precision] = (run, harness_run(cfg, run, timing_only=False))
        return {p: {"tokens_per_s": m["tokens_per_s"], "mfu": m["mfu"]} for p, (_, m) in self.runs.items()}

    def bf16_vs_fp32(self) -> dict:
        import records

        a, b = (self.runs[p][1]["losses"] for p in ("bf16", "fp32"))
        rel = [abs(x - y) / abs(y) for x, y in zip(a, b)]
        nll = {p: [r["nll"] for r in records.read_jsonl(self.runs[p][0] / records.EVALS) if r["exit_threshold"] is None]
               for p in ("bf16", "fp32")}
        nll_rel = [abs(x - y) / abs(y) for x, y in zip(nll["bf16"], nll["fp32"])]
        ok = max(rel) < 0.02 and max(nll_rel) < 0.02
        return {"loss_bf16": a, "loss_fp32": b, "max_rel_loss_diff": max(rel), "nll_bf16": nll["bf16"],
                "nll_fp32": nll["fp32"], "max_rel_nll_diff": max(nll_rel), "tolerance": 0.02, "agree": ok}

    def eval_paths(self, run: Path) -> dict:
        """Each path on the bf16 run's final weights; 'ran on the device' = device memory was allocated."""
        import records
        from model.diffusion import infill, sample
        from study.evaluate.attention import attention_stats
        from study.evaluate.loading import load_run
        from study.evaluate.loop_scan import loop_scan

        dev = str(self.device)
        loaded = load_run(run, device=dev)
        prompt = torch.randint(3, loaded.cfg.model.vocab_size, (2, 8))
        puzzle = torch.randint(3, loaded.cfg.model.vocab_size, (2, 16))
        puzzle[:, ::3] = loaded.cfg.model.mask_id
        trained_on = json.loads((run / records.SYSTEM).read_text())["device"]
        paths = {  # the first ran during training: its device is the run's (system.json)
            f"validation during training (evals.jsonl, trained on {trained_on})":
                lambda: [r["nll"] for r in records.read_jsonl(run / records.EVALS)],
            "loop scan, fixed S and adaptive exit": lambda: [r["nll"] for r in loop_scan(run, loops=[1, 2, 4], exit_thresholds=[0.05], device=dev)],
            "attention statistic": lambda: [r["masked_to_masked"] for r in attention_stats(run, ts=[0.5], loops=2, n_seqs=2, device=dev, force=True)["rows"]],
            "sampling (low confidence, adaptive exit)": lambda: sample(loaded.model, prompt.to(dev), 8, 4, loops=2, exit_threshold=0.05).tokens.float().tolist(),
            "sampling (ancestral)": lambda: sample(loaded.model, prompt.to(dev), 8, 4, remasking="ancestral", loops=2).tokens.float().tolist(),
            "infilling (random order)": lambda: infill(loaded.model, puzzle.to(dev), 4, order="random", loops=2).float().tolist(),
            "lm-eval model (loglikelihood, generate_until)": lambda: self.lm_eval_path(loaded),
        }
        out = {}
        for name, fn in paths.items():
            if self.device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            try:
                values = fn()
            except ImportError as exc:
                out[name] = {"ok": None, "note": f"skipped: {exc}"}
                continue
            flat = list(_flatten(values))
            if name.startswith("validation during training"):
                on_device = trained_on.startswith(self.device.type)
            else:  # the path allocated device memory beyond the weights already there
                on_device = self.device.type != "cuda" or torch.cuda.max_memory_allocated() > before
            out[name] = {"ok": bool(flat) and all(math.isfinite(v) for v in flat) and on_device,
                         "on_device": on_device, "n_values": len(flat)}
        return out

    def lm_eval_path(self, loaded) -> list[float]:
        from study.evaluate.lm_eval_model import LoopMDMLM  # ImportError without lm-eval: reported as skipped

        class Req:
            def __init__(self, *args):
                self.args = args

        lm = LoopMDMLM(loaded=loaded, loops=2, mc_num=2, gen_length=8, steps=4, batch_size=2)
        ll = lm.loglikelihood([Req("w1 w2 w3", " w4"), Req("w5", " w6 w7")])
        gen = lm.generate_until([Req("w1 w2", {"until": ["[SEP]"], "max_gen_toks": 8})])
        return [v for v, _ in ll] + [float(len(gen))]

    # 3: bare steps
    def bare(self, shape: Shape) -> dict:
        s, cfg = self.size, self.backbone(shape)
        every = Variant(compile=self.compile)
        looped_variants = [every] + [every.without(c) for c in CHANGES if c != "compile" or self.compile] + [BEFORE]
        if self.device.type != "cuda":
            looped_variants = [v for v in looped_variants if v.name != "- fused AdamW"]  # CUDA only
        rows, timers = [], {}
        for fam, (fcfg, loops) in families(cfg, s.loops).items():
            bare = BareStep(fcfg, self.device, self.dtype)
            for v in (looped_variants if fam.startswith("looped") else [every, BEFORE]):
                timers[(fam, v.name)] = (lambda b=bare, v=v, L=loops: b.time(v, L, shape.micro, shape.seq_len, s.iters, s.warmup))
                rows.append((fam, v, fcfg, loops))
        # a cheap last-resort cut: the budget leaves at least one round of everything
        med = interleaved(timers, s.rounds, deadline=self.deadline - 120 if not self.small else None)
        out = []
        for fam, v, fcfg, loops in rows:
            out.append({"family": fam, "variant": v.name, **asdict(v),
                        **step_row(fcfg, loops, shape.micro, shape.seq_len, med[(fam, v.name)], self.peak, v=v)})
        for r in out:  # each change's gain: time with it undone / time with every change
            base = next(x for x in out if x["family"] == r["family"] and x["variant"] == every.name)
            r["time_vs_all"] = r["step_s"] / base["step_s"]
        return {"shape": asdict(shape), "rows": out}

    # 5: the harness
    def harness(self, shape: Shape, work: Path, bare: dict | None) -> dict:
        s, cfg = self.size, self.backbone(shape)
        out = []
        for fam, (fcfg, loops) in families(cfg, s.loops).items():
            variants = ["all changes", "engine before", "before #22"] if fam.startswith("looped") else ["all changes"]
            for variant in variants:
                if self.left() < 45 and not self.small:
                    out.append({"family": fam, "variant": variant, "skipped": "time budget"})
                    continue
                mcfg = fcfg.replace(s_max=loops, pad_vocab=1 if variant == "before #22" else 128)
                hcfg = harness_cfg(mcfg, shape, s, work, self.device.type, "bf16" if self.device.type == "cuda" else "fp32",
                                   compile=self.compile and variant != "before #22")  # bf16 on a CPU is slow
                name = f"{shape.name}-{fam.split()[0]}-{variant.replace(' ', '_').replace('#', '')}"
                h = harness_run(hcfg, work / name, variant)
                row = {"family": fam, "variant": variant, "tokens_per_s": h["tokens_per_s"], "mfu": h["mfu"],
                       "global_batch": hcfg.batch.global_batch, "grad_accum": hcfg.batch.global_batch // shape.micro}
                if bare is not None and variant == "all changes":
                    b = next(x for x in bare["rows"] if x["family"] == fam and x["variant"] == "all changes")
                    row["bare_tokens_per_s"] = b["tokens_per_s"]
                    row["harness_vs_bare"] = h["tokens_per_s"] / b["tokens_per_s"]
                out.append(row)
        for r in out:
            base = next((x for x in out if x["family"] == r["family"] and x["variant"] == "all changes" and "mfu" in x), None)
            if base is not None and "tokens_per_s" in r:
                r["time_vs_all"] = base["tokens_per_s"] / r["tokens_per_s"]
        return {"shape": asdict(shape), "rows": out}

    # 4: the micro-batch
    def micro_batch(self, shape: Shape) -> dict:
        """The fastest micro-batch per rank among those the spec's global batch allows on its GPUs."""
        import yaml

        spec = yaml.safe_load((ROOT / shape.spec).read_text())
        res = spec.get("resources", {})
        per_rank = spec["base"]["batch"]["global_batch"] // (res.get("gpus_per_node", 1) * res.get("nodes", 1))
        s, cfg = self.size, self.backbone(shape)
        bare = BareStep(cfg, self.device, self.dtype)
        v = Variant(name="all changes, eager", compile=False)
        med = interleaved({m: (lambda m=m: bare.time(v, s.loops, m, shape.seq_len, s.iters, s.warmup))
                          for m in shape.micro_sweep}, 1)
        rows = [{"micro_batch": m, **step_row(cfg, s.loops, m, shape.seq_len, t, self.peak, v=v)} for m, t in med.items()]
        allowed = [r for r in rows if per_rank % r["micro_batch"] == 0]
        pick = max(allowed, key=lambda r: r["tokens_per_s"])["micro_batch"] if allowed else None
        return {"rows": rows, "recommended_micro_batch": pick, "per_rank": per_rank,
                "rule": f"the most tokens/s (eager looped step) among micro-batches dividing the {per_rank} "
                        f"sequences per rank of {shape.spec} (global batch / GPUs)"}

    def run(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
            work = Path(tmp)
            self.section("bf16 and fp32 runs", lambda: self.precision_runs(work), need_s=40)
            if len(self.runs) == 2:
                self.section("bf16 vs fp32", self.bf16_vs_fp32, need_s=1)
                self.section("eval paths on the device", lambda: self.eval_paths(self.runs["bf16"][0]), need_s=30)
            for shape in self.shapes:
                self.section(f"bare {shape.name}", lambda sh=shape: self.bare(sh), need_s=60)
                self.section(f"micro-batch {shape.name}", lambda sh=shape: self.micro_batch(sh), need_s=15)
                bare = self.out["sections"].get(f"bare {shape.name}")
                self.section(f"harness {shape.name}", lambda sh=shape, b=bare: self.harness(sh, work, b if b and "rows" in b else None),
                             need_s=45)
                if self.device.type == "cuda":
                    torch._dynamo.reset()  # the next shape compiles its own graphs
        self.out["advice"] = advice(self.out)
        return self.out


def _flatten(values):
    for v in values if isinstance(values, (list, tuple)) else [values]:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        elif v is not None:
            yield float(v)


def advice(out: dict) -> dict:
    """What to write in the paper specs, from this run's measurements (None where a section did not run)."""
    res = {}
    for name, spec in (("LM1B", LM1B), ("OWT", OWT)):
        mb = out["sections"].get(f"micro-batch {name}", {})
        h = out["sections"].get(f"harness {name}", {})
        mfus = [r["mfu"] for r in h.get("rows", []) if r.get("variant") == "all changes" and "mfu" in r]
        res[spec] = {"batch.micro_batch": mb.get("recommended_micro_batch"),
                     "estimate.mfu": math.floor(100 * min(mfus)) / 100 if mfus else None,
                     "why": "micro-batch: " + mb.get("rule", "not measured") + "; mfu: the lowest harness MFU (exact) "
                            "of looped / same-size / deeper, rounded down"}
    return res


def table(out: dict) -> str:
    lines = [f"device {out['device']}, torch {out['torch']}, DeepSpeed {out['deepspeed']}, {out['dtype']}, peak "
             f"{out['peak_flops'] / 1e12:.4g} TFLOP/s ({out['peak_source']})"
             + (f", 8192^3 bf16 matmul {out['matmul_tflops_measured']:.0f} TFLOP/s" if "matmul_tflops_measured" in out else "")]
    hdr = f"{'section':14s} {'family':22s} {'variant':16s} {'ms/step':>9s} {'tok/s':>10s} {'MFU':>6s} {'exec':>6s} {'x all':>6s} {'vs bare':>8s}"
    lines.append(hdr)
    for name, sec in out["sections"].items():
        if "rows" in sec and name.startswith(("bare", "harness")):
            for r in sec["rows"]:
                if "skipped" in r:
                    lines.append(f"{name:14s} {r['family']:22s} {r['variant']:16s} skipped ({r['skipped']})")
                    continue
                ms = f"{1000 * r['step_s']:9.1f}" if "step_s" in r else " " * 9
                ex = f"{100 * r['executed_util']:5.1f}%" if "executed_util" in r else " " * 6
                vb = f"{r['harness_vs_bare']:8.3f}" if "harness_vs_bare" in r else ""
                lines.append(f"{name:14s} {r['family']:22s} {r['variant']:16s} {ms} {r['tokens_per_s']:10.0f} "
                             f"{100 * r['mfu']:5.1f}% {ex} {r.get('time_vs_all', float('nan')):6.3f} {vb}")
        elif "rows" in sec:
            for r in sec["rows"]:
                lines.append(f"{name:14s} micro-batch {r['micro_batch']:<10d} {'':16s} {1000 * r['step_s']:9.1f} "
                             f"{r['tokens_per_s']:10.0f} {100 * r['mfu']:5.1f}%")
        elif "error" in sec:
            lines.append(f"{name}: FAILED {sec['error']}")
        elif name == "bf16 vs fp32":
            lines.append(f"bf16 vs fp32: losses within {100 * sec['max_rel_loss_diff']:.2f}%, validation NLL within "
                         f"{100 * sec['max_rel_nll_diff']:.2f}% (tolerance {100 * sec['tolerance']:.0f}%): "
                         f"{'agree' if sec['agree'] else 'DISAGREE'}")
        elif name == "eval paths on the device":
            for path, r in sec.items():
                if isinstance(r, dict):
                    verdict = {True: "ok", False: "FAILED", None: r.get("note", "")}[r["ok"]]
                    lines.append(f"eval path: {path}: {verdict}")
    lines += [f"skipped: {s}" for s in out["skipped"]]
    for spec, a in out.get("advice", {}).items():
        lines.append(f"set in {spec}: batch.micro_batch: {a['batch.micro_batch']}, estimate.mfu: {a['estimate.mfu']}")
    lines.append("'x all': time per step relative to every change on (>1: the change undone costs that much); "
                 "'vs bare': harness tokens/s / bare tokens/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes on the CPU (the test suite's run)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"),
                    help="write the results here too, after each section (default: %(default)s)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="start no section after this many seconds")
    ap.add_argument("--no-compile", action="store_true", help="leave system.compile out (it is on by default on CUDA)")
    ns = ap.parse_args(argv)
    if not ns.small and ns.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device is visible: run with --small (CPU) or on a GPU machine")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Check(ns).run()
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=1, default=str))
    print(table(out), flush=True)
    return out


if __name__ == "__main__":
    main()
