r"""Datasets of the packaged lm-eval tasks, built offline (``custom_dataset: !function loaders.NAME``).

lm-eval calls these with the task's ``metadata`` (and, from its CLI, the model_args and ``--metadata``
JSON) as keyword arguments, so a difficulty, a size or a data folder is chosen per run without editing a YAML:

    loopmdm-lm-eval run --model loopmdm --model_args pretrained=RUN_DIR --include_path PKG --tasks gsm8k-synth \
        --metadata '{"difficulty": "tiny", "n": 200}' ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _dataset(splits: dict[str, list[dict]]):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


def _size(difficulty: Any, n: Any) -> tuple[str, int]:
    from study.data import gsm8k_synth

    difficulty = str(difficulty)
    gsm8k_synth.step_range(difficulty)  # a clear error for an unknown difficulty
    n = int(n)
    if n < 1:
        raise ValueError(f"metadata n={n}: the number of problems must be >= 1")
    return difficulty, n


def gsm8k_synth(difficulty: Any = "mixed", n: Any = 500, **_: Any):
    """N test-split problems of study.data.gsm8k_synth (hash-disjoint from what `gsm8k-synth` trains on), and a
    few train-split ones for few-shot examples."""
    from study.data import gsm8k_synth as gen
    from study.evaluate.lm_tasks import FEWSHOT_POOL

    difficulty, n = _size(difficulty, n)
    return _dataset({"test": gen.generate(n, seed=0, difficulty=difficulty, split="test"),
                     "train": gen.generate(FEWSHOT_POOL, seed=0, difficulty=difficulty, split="train")})


def gsm8k_synth_mc(difficulty: Any = "mixed", n: Any = 500, **_: Any):
    """The same test problems as multiple choice (study.evaluate.lm_tasks.mc_rows)."""
    from study.data import gsm8k_synth as gen
    from study.evaluate.lm_tasks import mc_rows

    difficulty, n = _size(difficulty, n)
    return _dataset({"test": mc_rows(gen.generate(n, seed=0, difficulty=difficulty, split="test"))})


def gsm8k_local(gsm8k_dir: Any = None, **_: Any):
    """Real GSM8K from local files: metadata ``gsm8k_dir``, else $LOOPMDM_GSM8K_DIR, holding test.jsonl (and
    train.jsonl for few-shot examples; without it they come from the test file, so keep num_fewshot 0)."""
    from study.evaluate.lm_tasks import ENV_GSM8K_DIR

    folder = gsm8k_dir or os.environ.get(ENV_GSM8K_DIR)
    if not folder or not (Path(folder).expanduser() / "test.jsonl").is_file():
        raise FileNotFoundError(f"gsm8k-local needs a folder with GSM8K's test.jsonl: set ${ENV_GSM8K_DIR} or pass "
                                f"--metadata '{{\"gsm8k_dir\": \"DIR\"}}' (got {folder!r})")
    folder = Path(folder).expanduser()
    train = folder / "train.jsonl"
    return _dataset({"test": _read_jsonl(folder / "test.jsonl"),
                     "train": _read_jsonl(train if train.is_file() else folder / "test.jsonl")})


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sudoku_complete(rows: Any = 1, n: Any = 100, **_: Any):
    """Held-out solved grids (the solutions of study.data.sudoku's test puzzles) with their last ``rows`` rows
    removed: the model writes them. With one row the answer is unique (each column misses one digit)."""
    from study.data import sudoku

    rows, n = int(rows), int(n)
    if not 1 <= rows <= 8 or n < 1:
        raise ValueError(f"metadata rows={rows}, n={n}: rows to complete 1..8, n >= 1 grids")
    docs = []
    for p in sudoku.generate(n, blanks=1, seed=0, split="test"):  # one blank: the cheapest unique puzzle
        lines = sudoku.layout(p["solution"]).splitlines(keepends=True)
        docs.append({"id": p["id"], "context": "".join(lines[:9 - rows]), "target": "".join(lines[9 - rows:]),
                     "solution": p["solution"], "rows": rows})
    return _dataset({"test": docs})


def sudoku_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``valid``: the given rows plus the written ones form a valid Sudoku (any valid completion counts);
    ``cells``: the share of written cells equal to the held-out grid's."""
    from study.data import sudoku

    written = "".join(ch for ch in results[0] if ch != "\n")[:9 * doc["rows"]]
    given = doc["context"].replace("\n", "")
    truth = doc["solution"][len(given):]
    return {"valid": float(sudoku.is_valid_solution(given + written)),
            "cells": sum(a == b for a, b in zip(written, truth)) / len(truth)}
