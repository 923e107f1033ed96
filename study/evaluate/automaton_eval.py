"""The positive control's scorer: accuracy per depth (automaton row k, pointer hop k) vs inference loops S.

A run trained on an iterated-computation corpus (``data.corpus: eca:...`` or ``pointer:...``, ``data.align:
true``, ``data.seq_len`` = the record length) sees each held-out record with its given part (row 0, or the
table and the start node) and every later cell masked, and fills them:

- ``parallel``: in ONE step, the argmax of every masked cell at once. Row k needs k rule steps and nothing was
  decoded before it, so whatever depth the answer takes must be inside one forward pass: this is the order
  that sees depth (and loops);
- ``confidence`` / ``raster`` / ``random`` (`model.diffusion.infill`): in as many steps as there are depths,
  one depth's worth of cells per step, committed in that order — sequential decoding can stand in for depth
  (raster fills exactly one row per step), which is the contrast.

Per record, the share of cells right at each depth goes to ``per_depth`` (records in a fixed order with
``sample_ids``, so two models are compared paired on the same records) and the share of all masked cells to
``per_sample`` (metric ``cells``); the file is ``evals/<kind>-<order>-<hash>.json`` in the task-evaluation
contract, keyed by (run hash, checkpoint step, settings) and never recomputed. Each file also carries the
generator's NLL floor (nats/token; 0 for a run trained with ``data.given``, whose NLL is of the rest given
the given part, a function of it), the chance accuracy and the per-depth accuracy of always answering the
majority value (``majority_per_depth``), so an analysis needs nothing from ``study``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

import records
from model.diffusion import INFILL_ORDERS, infill
from study.data.corpora import ITERATED, iterated

from .loading import checkpoint_identity, load_run, short_hash
from .provenance import device_name, versions
from .request import AUTOMATON_ORDERS, EvalError, check_loops, check_orders

PARALLEL = "parallel"
assert set(AUTOMATON_ORDERS) == {PARALLEL, *INFILL_ORDERS}, "request.AUTOMATON_ORDERS is parallel + the infill orders"
DEFAULT_LOOPS = (1, 2, 4, 8, 16)
DEFAULT_RECORDS = 200


def task_name(kind: str, order: str) -> str:
    return f"{kind}-{order}"


def depth_accuracy(pred: torch.Tensor, truth: torch.Tensor, depths: list[list[int]]) -> torch.Tensor:
    """(B, K): for each record, the share of depth k's positions where ``pred`` equals ``truth``."""
    right = (pred == truth).float()
    return torch.stack([right[:, pos].mean(1) for pos in depths], dim=1)


def majority_accuracy(truth: torch.Tensor, depths: list[list[int]]) -> list[float]:
    """Per depth, the accuracy of always answering that depth's most common value: what a model that ignores
    the given part can reach (for an automaton, rows drift away from 50/50 under many rules)."""
    out = []
    for pos in depths:
        vals = truth[:, pos].flatten()
        out.append(float(torch.bincount(vals).max()) / vals.numel())
    return out


def score_depths(model, truth: torch.Tensor, depths: list[list[int]], loops: int, order: str, seed: int = 0,
                 batch_size: int = 100, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, K) accuracy per record and depth: ``truth`` (n, L) token ids with every position in ``depths``
    masked, then filled by ``order`` (``parallel``: all at once; else one depth's worth per step)."""
    x_all = truth.clone()
    x_all[:, sorted(p for pos in depths for p in pos)] = model.cfg.mask_id
    steps = 1 if order == PARALLEL else len(depths)
    preds = []
    for lo in range(0, len(truth), batch_size):
        x = x_all[lo:lo + batch_size].to(device)
        preds.append(infill(model, x, steps=steps, order="confidence" if order == PARALLEL else order, loops=loops,
                            generator=torch.Generator().manual_seed(seed * 7919 + lo)).cpu())
    return depth_accuracy(torch.cat(preds), truth, depths)


def automaton_eval(run_dir: str | Path, loops: Sequence[int] = DEFAULT_LOOPS, n_records: int = DEFAULT_RECORDS,
                   orders: Sequence[str] = (PARALLEL,), seed: int = 0, batch_size: int = 100, device: str = "auto",
                   ckpt: str = "latest", force: bool = False, quiet: bool = True) -> list[dict]:
    """One record per (loop count S, order); S = 1 only for a non-looped run. See the module docstring."""
    orders = check_orders(orders)
    if n_records < 1:
        raise EvalError("automaton_records", f"got {n_records}; must be >= 1")
    cfg, run_hash, ckpt_path, meta, weights = checkpoint_identity(run_dir, ckpt)
    gen = iterated(cfg.data.corpus)
    if gen is None or cfg.data.seq_len != gen.record_len or not cfg.data.align:
        want = f"data.seq_len: {gen.record_len}" if gen is not None else "data.seq_len: the record length"
        raise EvalError("run", f"{run_dir} was not trained on aligned records of an iterated-computation corpus "
                               f"(needs data.corpus: {' or '.join(m.FORM for m in ITERATED.values())}, {want}, "
                               f"data.align: true; it has {cfg.data.corpus!r}, {cfg.data.seq_len}, "
                               f"align={cfg.data.align})")
    kind = gen.spec.split(":")[0]
    loops = check_loops(loops) if cfg.model.is_looped else [1]
    step = int(meta["step"])
    todo, out = [], []
    for S in loops:
        for order in orders:
            settings = {"loops": S, "order": order, "n_records": n_records, "seed": seed, "weights": weights,
                        "corpus": gen.spec, "generator": ITERATED[kind].GENERATOR_VERSION}
            h = short_hash({"run_hash": run_hash, "ckpt_step": step, **settings})
            path = records.task_eval_path(run_dir, task_name(kind, order), h)
            if path.is_file() and not force:
                out.append(records.read_json(path))
            else:
                todo.append((S, order, settings, h, path))
    if not todo:
        return out
    recs = gen.scoring_records(n_records, seed)
    run = load_run(run_dir, records.ckpt_step(ckpt_path), device, prefer_ema=(weights == "ema"))
    tok = run.tokenizer
    depths = recs[0][2]
    rows = []
    for _, text, _ in recs:
        ids = tok.encode(text)
        if len(ids) != len(text):
            raise EvalError("run", f"tokenizer {cfg.data.tokenizer!r} does not give one token per character")
        rows.append(ids + [tok.eos_id])
    truth = torch.tensor(rows, dtype=torch.long)
    majority = majority_accuracy(truth, depths)
    for S, order, settings, h, path in todo:
        t0 = time.perf_counter()
        acc = score_depths(run.model, truth, depths, S, order, seed, batch_size, run.device)
        weight = torch.tensor([len(p) for p in depths], dtype=torch.float)
        cells = (acc * weight).sum(1) / weight.sum()
        record = {"task": task_name(kind, order), "metric": "cells", "score": float(cells.mean()), "loops": S,
                  "exit_threshold": None, "per_sample": cells.tolist(), "sample_ids": [r[0] for r in recs],
                  "n": len(recs), "per_depth": acc.tolist(), "depth_accuracy": acc.mean(0).tolist(),
                  "depth_unit": gen.depth_unit, "depth_sizes": [len(p) for p in depths], "chance": gen.chance,
                  "majority_per_depth": majority, "nll_floor": 0.0 if cfg.data.given else gen.nll_floor, "record_len": gen.record_len,
                  "order": order, "run_hash": run_hash, "ckpt_step": step, "step": step, "eval_hash": h,
                  "config": settings, "versions": versions(), "device": device_name(run.device),
                  "wall_s": time.perf_counter() - t0}
        records.atomic_write_json(path, record)
        if not quiet:
            rows_txt = " ".join(f"{100 * a:.0f}" for a in record["depth_accuracy"])
            print(f"[{Path(run_dir).name}] {record['task']} S={S}: cells {record['score']:.3f}; % right per "
                  f"{gen.depth_unit} 1..{len(depths)}: {rows_txt} ({record['wall_s']:.1f} s)", flush=True)
        out.append(record)
    return out
