"""Sudoku puzzles with a unique solution, and their scores: the paper's case study, used as a positive control.

Three sizes (``size``): 9 (the classic 9x9 with 3x3 boxes, the default), 6 (6x6, boxes of 2 rows x 3 columns)
and 4 (4x4, 2x2 boxes). A grid is a string of size*size characters, row by row, digits 1..size, '.' for a
blank; as model text it is laid out as ``size`` lines of ``size`` (``layout``: a 9x9 grid is 90 characters +
eos = a 91-token record, `record_len`). The line breaks matter to a model with relative positions only (RoPE):
with them a column is "the same distance after a line break" and a row "no break in between", both visible
from relative offsets; without them rows are not (a first training attempt on bare 81-digit records stayed
near chance: 16% of blank cells right, against 11%). ``generate`` fills a random valid grid (randomised
backtracking), then blanks cells in random order, keeping a blank only while the puzzle still has exactly
one solution, until ``blanks`` cells are blank (the difficulty knob: more blanks, fewer givens, harder); a
puzzle that cannot lose more cells uniquely is replaced by a fresh one. Everything is a pure function of
(size, seed, index), so a test set is the same on every machine; the 9x9 streams are those of generator
version 1 byte for byte (the smaller sizes have streams of their own).

There are only 288 valid 4x4 grids, so a 4x4 corpus holds every test solution (the size is for smoke tests and
memorisation, not generalisation); 6x6 has 28,200,960 and 9x9 about 6.7e21, so a corpus of a few ten thousand
grids almost never holds a test puzzle's solution.

Scores: ``exact`` is 1 only if every cell of the answer equals the solution; ``cells`` is the fraction of
cells that do (givens included, so a copied puzzle is not scored 0 — compare with givens / cells);
``blanks`` the fraction of the puzzle's blank cells that do (chance: 1/size).
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

BLANK = "."
GENERATOR_VERSION = 1
SCORER_VERSION = 2  # 2: answers read cell by cell (`cells_at`); 1 dropped line breaks, shifting cells
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (box rows, box columns)
MIN_GIVENS = {4: 4, 6: 8, 9: 17}  # the fewest givens a uniquely solvable puzzle of each size can have
DEFAULT_GRIDS = 20_000  # solved grids in a sudoku corpus when its spec names no count


@dataclass(frozen=True)
class Geometry:
    """The cells, peers and text layout of one grid size."""

    size: int
    box_rows: int
    box_cols: int
    peers: tuple[tuple[int, ...], ...]

    @property
    def cells(self) -> int:
        return self.size * self.size

    @property
    def digits(self) -> str:
        return "123456789"[:self.size]

    @property
    def max_blanks(self) -> int:
        return self.cells - MIN_GIVENS[self.size]

    @property
    def tag(self) -> str:
        """The seed and id prefix: 'sudoku' for 9x9 (generator version 1's streams), 'sudoku6x6' etc."""
        return "sudoku" if self.size == 9 else f"sudoku{self.size}x{self.size}"


@functools.lru_cache(maxsize=None)
def geometry(size: int = 9) -> Geometry:
    if size not in BOXES:
        raise ValueError(f"size={size!r}: choose one of {', '.join(map(str, sorted(BOXES)))} (a {size}x{size} grid "
                         f"has no standard boxes)")
    br, bc = BOXES[size]
    peers = []
    for i in range(size * size):
        r, c = divmod(i, size)
        top, left = (r // br) * br, (c // bc) * bc
        box = {(top + dr) * size + left + dc for dr in range(br) for dc in range(bc)}
        row = {r * size + k for k in range(size)}
        col = {k * size + c for k in range(size)}
        peers.append(tuple(sorted((row | col | box) - {i})))
    return Geometry(size, br, bc, tuple(peers))


def record_len(size: int = 9) -> int:
    """Tokens of one laid-out grid + eos: the data.seq_len of a model trained on `solved_grids` of ``size``."""
    return size * (size + 1) + 1


def parse_corpus(spec: str) -> tuple[int, int]:
    """``sudoku[:SIZExSIZE][:N]`` -> (size, N grids); ValueError says what is allowed."""
    parts = str(spec).strip().split(":")
    if parts[0] != "sudoku" or len(parts) > 3:
        raise ValueError(f"bad {spec!r}: want sudoku[:SIZE][:N], SIZE one of 4x4, 6x6, 9x9 and N >= 1 grids")
    size, n = 9, DEFAULT_GRIDS
    rest = parts[1:]
    if rest and "x" in rest[0]:
        a, _, b = rest.pop(0).partition("x")
        if a != b or not a.isdigit() or int(a) not in BOXES:
            raise ValueError(f"bad {spec!r}: grid size {a}x{b}; choose 4x4, 6x6 or 9x9")
        size = int(a)
    if rest:
        if len(rest) > 1 or not rest[0].isdigit() or int(rest[0]) < 1:
            raise ValueError(f"bad {spec!r}: want sudoku[:SIZE][:N], N >= 1 the number of solved grids")
        n = int(rest[0])
    return size, n


def canonical_corpus(size: int, n: int) -> str:
    """The cache key's spelling: 9x9 keeps generator version 1's 'sudoku:N' (its token caches stay valid)."""
    return f"sudoku:{n}" if size == 9 else f"sudoku:{size}x{size}:{n}"


def candidates(cells: list[int], i: int, size: int = 9) -> list[int]:
    used = {cells[p] for p in geometry(size).peers[i]}
    return [d for d in range(1, size + 1) if d not in used]


def _cells(grid: str) -> list[int]:
    return [0 if ch == BLANK else int(ch) for ch in grid]


def _text(cells: list[int]) -> str:
    return "".join(BLANK if v == 0 else str(v) for v in cells)


def count_solutions(grid: str, limit: int = 2, size: int = 9) -> int:
    """How many solutions ``grid`` has, counting up to ``limit`` (backtracking, most-constrained cell first)."""
    cells = _cells(grid)
    count = 0

    def search() -> bool:
        nonlocal count
        best, best_c = -1, None
        for i, v in enumerate(cells):
            if v == 0:
                c = candidates(cells, i, size)
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


def _filled(rng: random.Random, size: int = 9) -> list[int]:
    n_cells = size * size
    cells = [0] * n_cells

    def fill(i: int) -> bool:
        if i == n_cells:
            return True
        c = candidates(cells, i, size)
        rng.shuffle(c)
        for d in c:
            cells[i] = d
            if fill(i + 1):
                return True
        cells[i] = 0
        return False

    fill(0)
    return cells


def layout(grid: str, size: int = 9) -> str:
    """size*size cells -> ``size`` lines of ``size`` (the text a model reads and writes)."""
    return "\n".join(grid[r * size:(r + 1) * size] for r in range(size)) + "\n"


def unlayout(text: str) -> str:
    """Model text -> cells (line breaks dropped; anything else kept, so a malformed answer scores low)."""
    return text.replace("\n", "")


def cells_at(pieces: Sequence[str], size: int = 9) -> str:
    """A model's answer read cell by cell at the layout's positions (``pieces``: one decoded token a position):
    a piece that is not one digit is '?', so a line break or special token written into a cell costs that
    cell only (dropping it, as `unlayout` does, would shift every later cell and score them as wrong)."""
    g = geometry(size)
    out = []
    for r in range(size):
        for c in range(size):
            i = r * (size + 1) + c
            ch = pieces[i] if i < len(pieces) else ""
            out.append(ch if len(ch) == 1 and ch in g.digits else "?")
    return "".join(out)


def solved_grids(n: int, seed: int = 0, size: int = 9) -> Iterator[str]:
    """``n`` random solved grids (no uniqueness search: fast), the pretraining corpus of the positive control.
    Their seed stream is separate from the puzzles', so no test puzzle's solution is a training grid by
    construction at 9x9 (a collision of two random grids out of ~6.7e21 is not a concern; at 6x6 one test
    solution in ~1,400 is expected among 20,000 training grids; at 4x4 all of them are)."""
    tag = geometry(size).tag
    for i in range(n):
        rng = random.Random(f"{tag}-grid:{GENERATOR_VERSION}:{seed}:{i}")
        yield layout(_text(_filled(rng, size)), size)


def make_puzzle(rng: random.Random, blanks: int, size: int = 9) -> tuple[str, str] | None:
    """(puzzle, solution) with exactly ``blanks`` blanks and a unique solution, or None if this grid's random
    blanking order ran out of cells it could remove."""
    solution = _filled(rng, size)
    cells = list(solution)
    order = list(range(size * size))
    rng.shuffle(order)
    n = 0
    for i in order:
        if n == blanks:
            break
        keep, cells[i] = cells[i], 0
        if count_solutions(_text(cells), size=size) == 1:
            n += 1
        else:
            cells[i] = keep
    if n < blanks:
        return None
    return _text(cells), _text(solution)


def check_blanks(blanks: int, size: int = 9) -> None:
    """ValueError unless a unique ``size`` x ``size`` puzzle can have ``blanks`` blanks."""
    g = geometry(size)
    if isinstance(blanks, bool) or not isinstance(blanks, int) or not 1 <= blanks <= g.max_blanks:
        raise ValueError(f"blanks={blanks!r}: choose 1..{g.max_blanks} (a unique {size}x{size} Sudoku keeps at "
                         f"least {MIN_GIVENS[size]} givens)")


def generate(n: int, blanks: int = 30, seed: int = 0, split: str = "train", size: int = 9) -> Iterator[dict]:
    """``n`` puzzles {id, puzzle, solution, blanks}; the train and test splits use different seeds."""
    check_blanks(blanks, size)
    tag = geometry(size).tag
    salt = {"train": 0, "test": 1}[split]
    k = 0
    for i in range(n):
        while True:
            rng = random.Random(f"{tag}:{GENERATOR_VERSION}:{seed}:{salt}:{i}:{k}")
            made = make_puzzle(rng, blanks, size)
            k += 1
            if made is not None:
                break
        yield {"id": f"{tag}-{split}-{seed}-{i}", "puzzle": made[0], "solution": made[1], "blanks": blanks}


def is_valid_solution(grid: str, size: int = 9) -> bool:
    """Every row, column and box holds 1..size once."""
    g = geometry(size)
    if len(grid) != g.cells or any(ch not in g.digits for ch in grid):
        return False
    cells = [int(ch) for ch in grid]
    return all(cells[i] not in {cells[p] for p in g.peers[i]} for i in range(g.cells))


def score(answer: str, solution: str, puzzle: str | None = None) -> dict[str, float]:
    """exact (0/1) and cell accuracy over the solution's cells; with the puzzle, also ``blanks``: the share of
    its blank cells answered right (what the model filled in; chance is 1/size). An answer of the wrong length
    counts its first cells, missing ones as wrong."""
    n = len(solution)
    a = (answer or "")[:n].ljust(n, "?")
    right = [x == y for x, y in zip(a, solution)]
    out = {"exact": float(all(right)), "cells": sum(right) / n}
    if puzzle is not None:
        blank = [ok for ok, ch in zip(right, puzzle) if ch == BLANK]
        out["blanks"] = sum(blank) / len(blank) if blank else 1.0
    return out
