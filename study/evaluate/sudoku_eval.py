"""The Sudoku positive control: fill the blanks of held-out puzzles with a trained run, at several loop counts.

A run trained on solved grids (``data.corpus: sudoku``, ``data.align: true``, ``data.seq_len: 91`` = 9 lines
of 9 + eos, `sudoku.layout`) sees each test puzzle as its solution with the blanks masked, and fills them with
`model.diffusion.infill` one cell per step in a *restricted* order (``random`` by default, or ``raster``;
``confidence`` is the free order). Exact-solve and cell accuracy per puzzle go to
``evals/sudoku-<hash>.json`` in the task-evaluation contract (metric ``exact``; ``cells_per_sample`` beside
it), keyed by (run hash, checkpoint step, settings) and never recomputed, so the report's task claim and its
score-vs-loops figure read them like any other task."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

import records
from model.diffusion import INFILL_ORDERS, infill
from study.data import sudoku

from .loading import checkpoint_identity, load_run, short_hash
from .provenance import device_name, versions
from .request import EvalError, check_loops

TASK = "sudoku"
DEFAULT_LOOPS = (1, 2, 4, 8, 16)


def sudoku_eval(run_dir: str | Path, loops: Sequence[int] = DEFAULT_LOOPS, n_puzzles: int = 100, blanks: int = 30,
                order: str = "random", seed: int = 0, batch_size: int = 50, device: str = "auto",
                quiet: bool = True) -> list[dict]:
    """One record per loop count S (S = 1 only for a non-looped run); see the module docstring."""
    if order not in INFILL_ORDERS:
        raise EvalError("order", f"got {order!r}; allowed: {', '.join(INFILL_ORDERS)}")
    if not 1 <= blanks <= 64:
        raise EvalError("blanks", f"got {blanks}; choose 1..64")
    cfg, run_hash, ckpt, meta, weights = checkpoint_identity(run_dir, "latest")
    if not str(cfg.data.corpus).startswith("sudoku") or cfg.data.seq_len != sudoku.RECORD_LEN or not cfg.data.align:
        raise EvalError("run", f"{run_dir} was not trained on Sudoku grids (needs data.corpus: sudoku, "
                               f"data.seq_len: {sudoku.RECORD_LEN}, data.align: true; it has {cfg.data.corpus!r}, "
                               f"{cfg.data.seq_len}, align={cfg.data.align})")
    loops = check_loops(loops) if cfg.model.is_looped else [1]
    step = int(meta["step"])
    todo, out = [], []
    for S in loops:
        settings = {"loops": S, "n_puzzles": n_puzzles, "blanks": blanks, "order": order, "seed": seed,
                    "weights": weights, "generator": sudoku.GENERATOR_VERSION}
        h = short_hash({"run_hash": run_hash, "ckpt_step": step, **settings})
        path = records.task_eval_path(run_dir, TASK, h)
        if path.is_file():
            out.append(records.read_json(path))
        else:
            todo.append((S, settings, h, path))
    if not todo:
        return out
    puzzles = list(sudoku.generate(n_puzzles, blanks=blanks, seed=seed, split="test"))
    run = load_run(run_dir, records.ckpt_step(ckpt), device, prefer_ema=(weights == "ema"))
    tok = run.tokenizer
    mask_id = run.model.cfg.mask_id
    rows = []
    for p in puzzles:
        text, masked = sudoku.layout(p["solution"]), sudoku.layout(p["puzzle"])
        ids = tok.encode(text)
        if len(ids) != len(text):
            raise EvalError("run", f"tokenizer {cfg.data.tokenizer!r} does not give one token per character")
        ids = [mask_id if ch == sudoku.BLANK else i for ch, i in zip(masked, ids)] + [tok.eos_id]
        rows.append(ids)
    x_all = torch.tensor(rows, dtype=torch.long)
    for S, settings, h, path in todo:
        t0 = time.perf_counter()
        answers = []
        for lo in range(0, len(puzzles), batch_size):
            x = x_all[lo:lo + batch_size].to(run.device)
            y = infill(run.model, x, steps=blanks, order=order, loops=S,
                       generator=torch.Generator().manual_seed(seed * 7919 + lo))
            answers += [sudoku.unlayout(tok.decode(r[:-1].tolist())) for r in y.cpu()]
        scores = [sudoku.score(a, p["solution"]) for a, p in zip(answers, puzzles)]
        exact = [s["exact"] for s in scores]
        cells = [s["cells"] for s in scores]
        record = {"task": TASK, "metric": "exact", "score": sum(exact) / len(exact), "loops": S,
                  "exit_threshold": None, "per_sample": exact, "sample_ids": [p["id"] for p in puzzles],
                  "n": len(puzzles), "cell_accuracy": sum(cells) / len(cells), "cells_per_sample": cells,
                  "blank_cell_accuracy": (sum(cells) * 81 - (81 - blanks) * len(cells)) / (blanks * len(cells)),
                  "run_hash": run_hash, "ckpt_step": step, "step": step, "eval_hash": h, "config": settings,
                  "versions": versions(), "device": device_name(run.device), "wall_s": time.perf_counter() - t0}
        records.atomic_write_json(path, record)
        if not quiet:
            print(f"[{Path(run_dir).name}] sudoku S={S} ({order} order, {blanks} blanks): exact "
                  f"{record['score']:.3f}, cells {record['cell_accuracy']:.3f} ({record['wall_s']:.1f} s)", flush=True)
        out.append(record)
    return out
