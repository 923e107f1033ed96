"""The attention statistic behind "looping promotes attention among masked positions", stored in
``evals/attention-<hash>.json`` keyed by (run hash, step, settings) and not recomputed when present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from model import LoopMDM
from model.diffusion import Schedule, forward_mask
import records


from .loading import checkpoint_identity, eval_tokens, load_run, short_hash
from .provenance import device_name, versions
from .request import DEFAULT_ATTENTION_TS, EvalError, check_loops


# ------------------------------------------------------------------------------------------ attention
ATTENTION_FORMAT = 2  # 2: rows carry per-sequence shares (confidence intervals over sequences)

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
    h = short_hash({"run_hash": run_hash, "step": step, **settings, "format": ATTENTION_FORMAT})
    path = records.attention_path(run_dir, h)
    if path.is_file() and not force:
        return json.loads(path.read_text())
    tokens = eval_tokens(cfg, n_seqs)
    run = load_run(run_dir, records.ckpt_step(ckpt_path), device, prefer_ema=(weights == "ema"))
    rows = attention_shares(run.model, tokens, ts, loops, seed, batch_size)
    result = {"run_hash": run_hash, "ckpt_step": step, "attention_hash": h, "settings": settings,
              "rows": rows, "versions": versions(), "device": device_name(run.device)}
    records.atomic_write_json(path, result)
    return result


@torch.no_grad()
def attention_shares(model: LoopMDM, tokens: torch.Tensor, ts: Sequence[float], loops: int, seed: int,
                     batch_size: int = 8) -> list[dict]:
    """The statistic of `attention_stats` for a model in memory: one row per (t, loop, mid layer), averaged
    over heads, sequences and query positions, with the per-sequence values (``seq_masked_to_masked``,
    ``seq_masked_key_frac``: mean over a sequence's masked queries) for confidence intervals over sequences.
    Masks come from a generator seeded by (seed, t): every model and every loop count sees the same masked
    positions, so loops and runs compare paired by sequence."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mask_id, schedule = model.cfg.mask_id, Schedule()
    rows = []
    for ti, t in enumerate(ts):
        acc: dict[tuple[int, int], list[float]] = {}  # per (loop, layer): sums over (batch, head, query)
        per_seq: dict[tuple[int, int], tuple[list[float], list[float]]] = {}  # per (loop, layer): per sequence
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (ti + 1))
        for start in range(0, tokens.shape[0], batch_size):
            x = tokens[start:start + batch_size]
            tt = torch.full((x.shape[0],), float(t))
            z, masked = forward_mask(x, tt, mask_id, schedule, generator=gen)
            maps = model(z.to(device), tt.to(device), loops=loops, return_attention=True).attention
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
                    n_q = mk.sum(1)
                    seq, base = per_seq.setdefault((k, j), ([], []))
                    for b in torch.nonzero(n_q > 0).flatten().tolist():  # sequences with a masked query
                        seq.append((onto_masked[b] * mk[b]).sum().item() / n_q[b].item())
                        base.append(key_frac[b, 0].item())
        for (k, j), (mm, n_mq, um, n_uq, base) in sorted(acc.items()):
            rows.append({"t": float(t), "loop": k, "layer": j,
                         "masked_to_masked": mm / n_mq if n_mq else None,
                         "unmasked_to_masked": um / n_uq if n_uq else None,
                         "masked_key_frac": base / n_mq if n_mq else None,
                         "n_masked_queries": int(n_mq), "n_unmasked_queries": int(n_uq),
                         "seq_masked_to_masked": per_seq[(k, j)][0], "seq_masked_key_frac": per_seq[(k, j)][1]})
    model.train(was_training)
    return rows

