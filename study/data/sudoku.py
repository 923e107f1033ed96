"""Sudoku puzzles with a unique solution, and their scores: the paper's case study, used as a positive control.

A grid is an 81-character string, row by row, digits 1-9, '.' for a blank; as model text it is laid out as
9 lines of 9 (``layout``: 90 characters + eos = a 91-token record). The line breaks matter to a model with
relative positions only (RoPE): with them a column is "the same distance after a line break" and a row "no
break in between", both visible from relative offsets; without them rows are not (a first training attempt
on bare 81-digit records stayed near chance: 16% of blank cells right, against 11%). ``generate`` fills a random valid
grid (randomised backtracking), then blanks cells in random order, keeping a blank only while the puzzle
still has exactly one solution, until ``blanks`` cells are blank (the difficulty knob: more blanks, fewer
givens, harder); a puzzle that cannot lose more cells uniquely is replaced by a fresh one. Everything is a
pure function of (seed, index), so a test set is the same on every machine.

Scores: ``exact`` is 1 only if every cell of the answer equals the solution; ``cells`` is the fraction of the
81 cells that do (givens included, so a copied puzzle is not scored 0 — compare with ``givens/81``).
"""
from __future__ import annotations

import random
from typing import Iterator

DIGITS = "123456789"
BLANK = "."
GENERATOR_VERSION = 1


def _peers() -> list[tuple[int, ...]]:
    out = []
    for i in range(81):
        r, c = divmod(i, 9)
        b = (r // 3) * 3 * 9 + (c // 3) * 3
        box = {b + 9 * dr + dc for dr in range(3) for dc in range(3)}
        out.append(tuple(sorted(({r * 9 + k for k in range(9)} | {k * 9 + c for k in range(9)} | box) - {i})))
    return out


PEERS = _peers()


def candidates(cells: list[int], i: int) -> list[int]:
    used = {cells[p] for p in PEERS[i]}
    return [d for d in range(1, 10) if d not in used]


def count_solutions(grid: str, limit: int = 2) -> int:
    """How many solutions ``grid`` has, counting up to ``limit`` (backtracking, most-constrained cell first)."""
    cells = [0 if ch == BLANK else int(ch) for ch in grid]
    count = 0

    def search() -> bool:
        nonlocal count
        best, best_c = -1, None
        for i, v in enumerate(cells):
            if v == 0:
                c = candidates(cells, i)
                if best_c is None or len(c) < len(best_c):
                    best, best_c = i, c
                    if len(c) <= 1:
                        break
        if best < 0:
            count += 1
            return count >= limit
        for d in best_c:
            cells[best] = d
            if search():
                return True
        cells[best] = 0
        return False

    search()
    return count


def _filled(rng: random.Random) -> list[int]:
    cells = [0] * 81

    def fill(i: int) -> bool:
        if i == 81:
            return True
        c = candidates(cells, i)
        rng.shuffle(c)
        for d in c:
            cells[i] = d
            if fill(i + 1):
                return True
        cells[i] = 0
        return False

    fill(0)
    return cells


RECORD_LEN = 91  # 9 lines of 9 digits + eos: data.seq_len of a model trained on `solved_grids`


def layout(grid: str) -> str:
    """81 cells -> 9 lines of 9 (the text a model reads and writes)."""
    return "\n".join(grid[r * 9:(r + 1) * 9] for r in range(9)) + "\n"


def unlayout(text: str) -> str:
    """Model text -> 81 cells (line breaks dropped; anything else kept, so a malformed answer scores low)."""
    return text.replace("\n", "")


def solved_grids(n: int, seed: int = 0) -> Iterator[str]:
    """``n`` random solved grids (no uniqueness search: fast), the pretraining corpus of the positive control.
    Their seed stream is separate from the puzzles', so no test puzzle's solution is a training grid by
    construction (a collision of two random grids out of ~6.7e21 is not a concern)."""
    for i in range(n):
        rng = random.Random(f"sudoku-grid:{GENERATOR_VERSION}:{seed}:{i}")
        yield layout("".join(map(str, _filled(rng))))


def make_puzzle(rng: random.Random, blanks: int) -> tuple[str, str] | None:
    """(puzzle, solution) with exactly ``blanks`` blanks and a unique solution, or None if this grid's random
    blanking order ran out of cells it could remove."""
    solution = _filled(rng)
    cells = list(solution)
    order = list(range(81))
    rng.shuffle(order)
    n = 0
    for i in order:
        if n == blanks:
            break
        keep, cells[i] = cells[i], 0
        if count_solutions("".join(BLANK if v == 0 else str(v) for v in cells)) == 1:
            n += 1
        else:
            cells[i] = keep
    if n < blanks:
        return None
    to_str = lambda cs: "".join(BLANK if v == 0 else str(v) for v in cs)  # noqa: E731
    return to_str(cells), to_str(solution)


def generate(n: int, blanks: int = 30, seed: int = 0, split: str = "train") -> Iterator[dict]:
    """``n`` puzzles {id, puzzle, solution, blanks}; the train and test splits use different seeds."""
    if not 1 <= blanks <= 64:
        raise ValueError(f"blanks={blanks}: choose 1..64 (a unique 9x9 Sudoku keeps at least 17 givens)")
    salt = {"train": 0, "test": 1}[split]
    k = 0
    for i in range(n):
        while True:
            rng = random.Random(f"sudoku:{GENERATOR_VERSION}:{seed}:{salt}:{i}:{k}")
            made = make_puzzle(rng, blanks)
            k += 1
            if made is not None:
                break
        yield {"id": f"sudoku-{split}-{seed}-{i}", "puzzle": made[0], "solution": made[1], "blanks": blanks}


def is_valid_solution(grid: str) -> bool:
    """Every row, column and box holds 1-9 once."""
    if len(grid) != 81 or any(ch not in DIGITS for ch in grid):
        return False
    cells = [int(ch) for ch in grid]
    return all(cells[i] not in {cells[p] for p in PEERS[i]} for i in range(81))


def score(answer: str, solution: str) -> dict[str, float]:
    """exact (0/1) and cell accuracy over the 81 cells; an answer of the wrong length counts its first 81
    characters, missing ones as wrong."""
    a = (answer or "")[:81].ljust(81, "?")
    right = sum(x == y for x, y in zip(a, solution))
    return {"exact": float(right == 81), "cells": right / 81}
