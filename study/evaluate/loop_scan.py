"""Loop scans: validation NLL of one checkpoint at every fixed S and under adaptive exit, on the run's own
fixed eval sequences and noise draws, so a scan at S=1 reproduces the trainer's S=1 row to the last digit.

Idempotent: rows are appended to the run's ``evals.jsonl`` (``scan: true``) only for settings not already
there for that checkpoint step."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import records
from model import flops, validation_nll
from study.data import given_mask

from .loading import checkpoint_identity, eval_tokens, load_run
from .request import DEFAULT_SCAN_LOOPS, EvalError, check_loops, check_thresholds


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
    evals_path = run_dir / records.EVALS
    have = {_scan_key(r): r for r in records.read_jsonl(evals_path) if r.get("scan")}
    base = {"step": step, "tokens": meta.get("tokens"), **{f"flops_{c}": meta.get(f"flops_{c}") for c in flops.CONVENTIONS}}
    run = tokens = keep = None
    out = []
    for s, eps in [(s, None) for s in loops] + [(cap, e) for e in thresholds]:
        ident = {"step": step, "eval_loops": s, "exit_threshold": eps, "n_draws": n_draws, "n_seqs": n_seqs,
                 "seed": seed, "weights": weights}
        key = _scan_key(ident)
        if key in have:
            out.append(have[key])
            continue
        if run is None:  # only now: a scan already on disk costs no weights and no data
            tokens, keep = eval_tokens(cfg, n_seqs), given_mask(cfg.data)
            run = load_run(run_dir, records.ckpt_step(path), device, prefer_ema=(weights == "ema"))
        est = validation_nll(run.model, tokens, loops=s, n_draws=n_draws, seed=seed,
                             batch_size=batch_size or cfg.eval.batch_size, exit_threshold=eps,
                             keep=keep)
        row = {**base, **ident, **est.to_dict(), **_inference_flops(cfg, est.mean_loops), "is_final": False,
               "scan": True, "run_hash": run_hash}
        records.append_jsonl(evals_path, row)
        have[key] = row
        out.append(row)
        if not quiet:
            what = f"S={s}" if eps is None else f"eps={eps} (cap {s})"
            print(f"[{run_dir.name}] step {step} {what}: nll {est.nats:.4f}+-{est.se_nats:.4f} "
                  f"mean loops {est.mean_loops:.2f}", flush=True)
    return out


def _inference_flops(cfg, loops: float) -> dict[str, float]:
    """One denoising step's FLOPs per token at the loops actually used, under every convention."""
    per = flops.all_conventions(flops.inference_flops_per_token, cfg.model, cfg.data.seq_len, loops)
    return {f"infer_flops_per_token_{c}": v for c, v in per.items()}
