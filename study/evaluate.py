"""Evaluating a trained run without lm-eval: loading its weights, loop scans of validation NLL, and the
attention statistic behind "looping promotes attention among masked positions".

Everything reads only the run directory (config.yaml + a complete checkpoint) and the same data path the
trainer uses, so a scan at S=1 reproduces the trainer's own S=1 evaluation row for that step to the last
digit: the fixed eval sequences (`study.data.eval_batches`) and the fixed noise draws of
`model.diffusion.validation_nll` are shared, and differences between loop counts are read on identical noise.

Results are idempotent: scan rows are appended to the run's ``evals.jsonl`` (``scan: true``) only for
settings not already there for that checkpoint step; the attention statistic goes to
``evals/attention-<hash>.json`` keyed by (run hash, step, settings) and is not recomputed when present.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from model import LoopMDM, flops, validation_nll
from model.diffusion import Schedule, forward_mask
from model.config import ConfigError
from study import store

DEFAULT_SCAN_LOOPS = (1, 2, 4, 6, 8, 12, 16, 24)
DEFAULT_ATTENTION_TS = (0.25, 0.5, 0.75)
EVALS_DIR = "evals"


class EvalError(ConfigError):
    """An evaluation cannot run as asked; the message starts with the argument to change."""

    @property
    def arg(self) -> str:
        return self.field


# ------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A run's resolved config and its weights at one checkpoint, ready for inference (eval mode)."""

    run_dir: Path
    cfg: Any  # study.config.RunConfig
    run_hash: str
    model: LoopMDM
    ckpt: Path
    step: int
    ckpt_meta: dict
    weights: str  # 'ema' or 'model': which file was loaded
    device: torch.device

    @property
    def tokenizer(self):
        from study.data import get_tokenizer

        return get_tokenizer(self.cfg.data.tokenizer)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as exc:
        raise EvalError("device", f"{device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError("device", f"{device!r} asked for but no CUDA device is visible; use device=cpu")
    return dev


def run_config(run_dir: str | Path):
    """The RunConfig a run was trained with (its config.yaml), and its identity hash as recorded then.

    The recorded hash wins over a recomputed one: if a default changed since, the run keeps its name."""
    import yaml

    from study.config import from_dict

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else "has no config.yaml (not a run directory)"
        raise EvalError("run", f"{run_dir} {what}; pass a run directory written by study.run / study.sweep")
    raw = yaml.safe_load(path.read_text()) or {}
    cfg = from_dict(raw)
    return cfg, (raw.get("meta") or {}).get("hash") or cfg.hash


def find_checkpoint(run_dir: str | Path, ckpt: str | int | None = "latest") -> Path:
    """A complete checkpoint of the run: the newest ('latest'), or the one at an exact step."""
    from study.train import complete_checkpoints

    run_dir = Path(run_dir)
    found = complete_checkpoints(run_dir)
    if not found:
        raise EvalError("run", f"{run_dir} has no complete checkpoint (ckpt/step_*/meta.json); train it first "
                               f"or wait for its first checkpoint")
    if ckpt is None or str(ckpt) == "latest":
        return found[-1]
    try:
        want = int(ckpt)
    except (TypeError, ValueError):
        raise EvalError("ckpt", f"{ckpt!r} is neither 'latest' nor a step number") from None
    by_step = {int(p.name.split("_")[-1]): p for p in found}
    if want not in by_step:
        raise EvalError("ckpt", f"no complete checkpoint at step {want} in {run_dir}; available steps: "
                                f"{sorted(by_step)}")
    return by_step[want]


def load_run(run_dir: str | Path, ckpt: str | int | None = "latest", device: str | torch.device | None = "auto",
             prefer_ema: bool = True) -> LoadedRun:
    """Build the run's model and load a checkpoint's weights (EMA weights when the run kept them, as the
    trainer's own evaluation does)."""
    from study.train import load_weights

    run_dir = Path(run_dir)
    cfg, run_hash, path, _, weights = checkpoint_identity(run_dir, ckpt, prefer_ema)
    dev = resolve_device(device)
    model = LoopMDM(cfg.model)
    meta = load_weights(path, model, prefer_ema=prefer_ema)
    model.to(dev).eval()
    return LoadedRun(run_dir=run_dir, cfg=cfg, run_hash=run_hash, model=model, ckpt=path, step=int(meta["step"]),
                     ckpt_meta=meta, weights=weights, device=dev)


def checkpoint_identity(run_dir: str | Path, ckpt: str | int | None = "latest", prefer_ema: bool = True):
    """(cfg, run_hash, ckpt path, ckpt meta, weights) without loading any weights: enough to tell whether an
    evaluation is already on disk."""
    cfg, run_hash = run_config(run_dir)
    path = find_checkpoint(run_dir, ckpt)
    meta = json.loads((path / "meta.json").read_text())
    weights = "ema" if prefer_ema and (path / "ema.safetensors").is_file() else "model"
    return cfg, run_hash, path, meta, weights


def check_loops(loops: Iterable[int], arg: str = "loops") -> list[int]:
    out = []
    for s in loops:
        try:
            ok = not isinstance(s, bool) and float(s).is_integer() and int(float(s)) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EvalError(arg, f"got {s!r}; every loop count must be an integer >= 1")
        out.append(int(float(s)))
    return out


def check_thresholds(thresholds: Iterable[float], arg: str = "exit_thresholds") -> list[float]:
    out = []
    for eps in thresholds:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise EvalError(arg, f"got {eps!r}; an exit threshold must be a number > 0")
        out.append(float(eps))
    return out


def short_hash(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ------------------------------------------------------------------------------------------ eval set
def eval_tokens(cfg, n_seqs: int | None = None) -> torch.Tensor:
    """The run's fixed validation sequences, through the trainer's own data path (same cache, same windows)."""
    from study import data

    if cfg.kind != "pretrain":
        raise EvalError("run", f"a {cfg.kind} run has no held-out token set; scan its pretrained parent "
                               f"(init_from={cfg.init_from}) or evaluate it on tasks with study.eval --tasks")
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else data.default_cache_dir()
    td = data.prepare_tokens(cfg.data.corpus, cfg.data.tokenizer, cache, val_fraction=cfg.data.val_fraction,
                             max_tokens=cfg.data.max_tokens)
    return data.eval_batches(td.val, n_seqs or cfg.eval.n_seqs, cfg.data.seq_len)


def inference_flops(cfg, loops: float) -> dict[str, float]:
    """One denoising step's FLOPs per token at the loops actually used, under every convention."""
    return {f"infer_flops_per_token_{c}": flops.inference_flops_per_token(cfg.model, cfg.data.seq_len, loops, c)
            for c in flops.CONVENTIONS}


# ------------------------------------------------------------------------------------------ loop scan
def _scan_key(row: dict) -> tuple:
    thr = row.get("exit_threshold")
    return (row.get("step"), row.get("eval_loops"), None if thr is None else float(thr), row.get("n_draws"),
            row.get("n_seqs"), row.get("seed"), row.get("weights"))


def loop_scan(run_dir: str | Path, loops: Sequence[int] = DEFAULT_SCAN_LOOPS,
              exit_thresholds: Sequence[float] = (), exit_cap: int | None = None, ckpt: str | int = "latest",
              n_draws: int | None = None, n_seqs: int | None = None, seed: int | None = None,
              batch_size: int | None = None, device: str = "auto", quiet: bool = True) -> list[dict]:
    """Validation NLL of one checkpoint at every fixed S in ``loops`` and under each adaptive exit threshold
    (S capped at ``exit_cap``, default the largest S scanned), appended to ``evals.jsonl``.

    Returns the scan rows for that checkpoint in the order asked (already present ones included, not redone).
    Why all on one checkpoint with the run's own eval draws: the claim is about the *shape* of NLL(S) and
    the compute adaptive exit saves, so every point must see the same noise."""
    loops = check_loops(loops)
    thresholds = check_thresholds(exit_thresholds)
    if exit_cap is not None:
        exit_cap = check_loops([exit_cap], "exit_cap")[0]
    if not loops and not thresholds:
        raise EvalError("loops", "nothing to scan: give at least one loop count or exit threshold")
    cfg, run_hash, path, meta, weights = checkpoint_identity(run_dir, ckpt)
    run_dir = Path(run_dir)
    step = int(meta["step"])
    n_draws = n_draws or cfg.eval.n_draws
    n_seqs = n_seqs or cfg.eval.n_seqs
    seed = cfg.eval.seed if seed is None else seed
    cap = exit_cap or max(loops or [cfg.model.s_max])
    evals_path = run_dir / "evals.jsonl"
    have = {_scan_key(r): r for r in store.read_jsonl(evals_path) if r.get("scan")}
    base = {"step": step, "tokens": meta.get("tokens"), **{f"flops_{c}": meta.get(f"flops_{c}") for c in flops.CONVENTIONS}}
    run = tokens = None
    out = []
    for s, eps in [(s, None) for s in loops] + [(cap, e) for e in thresholds]:
        ident = {"step": step, "eval_loops": s, "exit_threshold": eps, "n_draws": n_draws, "n_seqs": n_seqs,
                 "seed": seed, "weights": weights}
        key = _scan_key(ident)
        if key in have:
            out.append(have[key])
            continue
        if run is None:  # only now: a scan already on disk costs no weights and no data
            tokens = eval_tokens(cfg, n_seqs)
            run = load_run(run_dir, path.name.split("_")[-1], device, prefer_ema=(weights == "ema"))
        est = validation_nll(run.model, tokens, loops=s, n_draws=n_draws, seed=seed,
                             batch_size=batch_size or cfg.eval.batch_size, exit_threshold=eps)
        row = {**base, **ident, **est.to_dict(), **inference_flops(cfg, est.mean_loops), "is_final": False,
               "scan": True, "run_hash": run_hash}
        store.append_jsonl(evals_path, row)
        have[key] = row
        out.append(row)
        if not quiet:
            what = f"S={s}" if eps is None else f"eps={eps} (cap {s})"
            print(f"[{run_dir.name}] step {step} {what}: nll {est.nats:.4f}+-{est.se_nats:.4f} "
                  f"mean loops {est.mean_loops:.2f}", flush=True)
    return out


# ------------------------------------------------------------------------------------------ attention
@torch.no_grad()
def attention_stats(run_dir: str | Path, ts: Sequence[float] = DEFAULT_ATTENTION_TS, loops: int | None = None,
                    ckpt: str | int = "latest", n_seqs: int | None = None, seed: int | None = None,
                    batch_size: int = 8, device: str = "auto", force: bool = False) -> dict:
    """Per mid-block layer and loop index: the share of attention mass that masked query positions put on
    masked keys, at noise levels ``ts`` on the run's fixed eval sequences; stored in
    ``evals/attention-<hash>.json``.

    Next to it, ``masked_key_frac`` is the share a query would put on masked keys if it attended uniformly
    (the fraction of keys masked), and ``unmasked_to_masked`` the same share for clean queries: "looping
    promotes attention among masked positions" predicts masked_to_masked rising with the loop index above
    both. A query's attention to itself counts (a masked query is a masked key)."""
    ts = [float(t) for t in ts]
    if not ts or not all(0 < t <= 1 for t in ts):
        raise EvalError("ts", f"got {ts}; noise levels must lie in (0, 1]")
    cfg, run_hash, ckpt_path, meta, weights = checkpoint_identity(run_dir, ckpt)
    step = int(meta["step"])
    loops = check_loops([loops if loops is not None else cfg.model.s_max])[0]
    seed = cfg.eval.seed if seed is None else seed
    n_seqs = n_seqs or cfg.eval.n_seqs
    settings = {"ts": ts, "loops": loops, "n_seqs": n_seqs, "seed": seed, "weights": weights}
    h = short_hash({"run_hash": run_hash, "step": step, **settings})
    path = Path(run_dir) / EVALS_DIR / f"attention-{h}.json"
    if path.is_file() and not force:
        return json.loads(path.read_text())
    tokens = eval_tokens(cfg, n_seqs)
    run = load_run(run_dir, ckpt_path.name.split("_")[-1], device, prefer_ema=(weights == "ema"))
    rows = attention_shares(run.model, tokens, ts, loops, seed, batch_size)
    result = {"run_hash": run_hash, "ckpt_step": step, "attention_hash": h, "settings": settings,
              "rows": rows, "versions": versions(), "device": device_name(run.device)}
    store.atomic_write_json(path, result)
    return result


@torch.no_grad()
def attention_shares(model: LoopMDM, tokens: torch.Tensor, ts: Sequence[float], loops: int, seed: int,
                     batch_size: int = 8) -> list[dict]:
    """The statistic of `attention_stats` for a model in memory: one row per (t, loop, mid layer), averaged
    over heads, sequences and query positions. Masks come from a generator seeded by (seed, t): every
    model and every loop count sees the same masked positions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mask_id, schedule = model.cfg.mask_id, Schedule()
    rows = []
    for ti, t in enumerate(ts):
        acc: dict[tuple[int, int], list[float]] = {}  # per (loop, layer): sums over (batch, head, query)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (ti + 1))
        for start in range(0, tokens.shape[0], batch_size):
            x = tokens[start:start + batch_size]
            tt = torch.full((x.shape[0],), float(t))
            z, masked = forward_mask(x, tt, mask_id, schedule, generator=gen)
            _, maps = model(z.to(device), tt.to(device), loops=loops, return_attention=True)
            mk = masked.to(device).float()  # (B, L)
            key_frac = mk.mean(1, keepdim=True)  # (B, 1): the share uniform attention would give masked keys
            for k, loop_maps in enumerate(maps, start=1):
                for j, probs in enumerate(loop_maps):  # probs (B, H, Lq, Lk)
                    onto_masked = (probs.float() * mk[:, None, None, :]).sum(-1).mean(1)  # (B, Lq), head-mean
                    a = acc.setdefault((k, j), [0.0] * 5)
                    a[0] += (onto_masked * mk).sum().item()
                    a[1] += mk.sum().item()
                    a[2] += (onto_masked * (1 - mk)).sum().item()
                    a[3] += (1 - mk).sum().item()
                    a[4] += (key_frac * mk).sum().item()
        for (k, j), (mm, n_mq, um, n_uq, base) in sorted(acc.items()):
            rows.append({"t": float(t), "loop": k, "layer": j,
                         "masked_to_masked": mm / n_mq if n_mq else None,
                         "unmasked_to_masked": um / n_uq if n_uq else None,
                         "masked_key_frac": base / n_mq if n_mq else None,
                         "n_masked_queries": int(n_mq), "n_unmasked_queries": int(n_uq)})
    model.train(was_training)
    return rows


# ------------------------------------------------------------------------------------------ provenance
def versions() -> dict[str, str | None]:
    import importlib.metadata as md
    import platform

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("lm_eval", "numpy", "datasets", "tokenizers", "deepspeed"):
        try:
            out[dist] = md.version(dist.replace("_", "-"))
        except md.PackageNotFoundError:
            out[dist] = None
    out["git"] = _git_commit()
    return out


def _git_commit() -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return os.environ.get("LOOPMDM_GIT_COMMIT")
    return res.stdout.strip() or None if res.returncode == 0 else os.environ.get("LOOPMDM_GIT_COMMIT")


def device_name(device: torch.device) -> str:
    """What ran the numbers, e.g. 'cuda:NVIDIA H100 80GB HBM3' or 'cpu:AMD EPYC 7B13 (x86_64)'."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model or platform.processor() or 'unknown'} ({platform.machine()})"
