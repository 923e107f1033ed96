"""Elementary cellular-automaton histories: a corpus whose tokens come from *iterating* a rule (the positive control).

A history is ``rows`` rows of ``width`` cells ('0'/'1'): row 0 is uniformly random, row k is the rule applied
to row k-1 (Wolfram's numbering: new cell = bit ``4·left + 2·centre + right`` of ``rule``), with a periodic
(wrap-around) or fixed (zeros outside) boundary. As model text it is one aligned record of ``record_len``
tokens (trained with ``data.align: true``), laid out either

- ``rows``: one line per row (like a Sudoku grid): a cell's three parents sit width+2, width+1 and width tokens
  back, the same offsets for every cell (with RoPE a look-back by a fixed relative offset); or
- ``columns``: one line per cell, its history left to right (time runs along the line): a cell's centre parent
  is the token just before it and its other parents rows+2 back and rows ahead. With short histories these
  offsets are small, and sizing trials learned the rule far faster this way (issue 27's report).

Either way row k needs k rule steps from row 0: with row 0 given and every later cell masked, a network that
computes one rule step per layer application fills row k only with >= k of them
(`study.evaluate.automaton_eval` scores per row).

The random part of a record is its first row alone (the rest is a function of it, and the record contains it),
so the entropy of a record is exactly width·ln 2 nats and the best any model can do is ``nll_floor`` =
width·ln 2 / record_len nats/token (eos included). Training records are draws of a seed stream; held-out test
records come from another stream with every first row that occurs in the training corpus dropped, so a scored
record was never trained on, whatever the width.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

from .heldout import held_out
from .tokenizers import DataError

GENERATOR_VERSION = 1
BOUNDARIES = ("periodic", "fixed")
LAYOUTS = ("rows", "columns")
DEFAULT_N = 20_000
FORM = "eca:RULE:WIDTH:ROWS[:N][:periodic|fixed][:rows|columns]"
MAX_WIDTH, MAX_ROWS = 512, 256


@dataclass(frozen=True)
class Automaton:
    """One corpus setting (the canonical spec string is ``spec``; it keys the token cache)."""

    rule: int
    width: int
    rows: int
    n: int = DEFAULT_N
    boundary: str = "periodic"
    layout: str = "rows"
    depth_unit = "row"  # what depth k counts: row k needs k rule steps from row 0
    chance = 0.5  # accuracy of a guess per cell

    @property
    def spec(self) -> str:
        tail = "" if self.layout == "rows" else f":{self.layout}"  # rows: the spec (and cache key) it always had
        return f"eca:{self.rule}:{self.width}:{self.rows}:{self.n}:{self.boundary}{tail}"

    @property
    def record_len(self) -> int:
        """Tokens per record: every cell, a newline per line, then eos (a byte-level model's data.seq_len)."""
        lines, per_line = (self.rows, self.width) if self.layout == "rows" else (self.width, self.rows)
        return lines * (per_line + 1) + 1

    def position(self, k: int, i: int) -> int:
        """Character position of cell i of row k in the record's text."""
        return k * (self.width + 1) + i if self.layout == "rows" else i * (self.rows + 1) + k

    @property
    def nll_floor(self) -> float:
        """The record's entropy per token, nats: width·ln 2 (a uniform first row) over record_len tokens."""
        return self.width * math.log(2) / self.record_len

    def step(self, row: tuple[int, ...]) -> tuple[int, ...]:
        """One application of the rule to a row."""
        w = self.width
        if self.boundary == "periodic":
            nb = [(row[i - 1], row[i], row[(i + 1) % w]) for i in range(w)]
        else:
            pad = (0,) + tuple(row) + (0,)
            nb = [(pad[i], pad[i + 1], pad[i + 2]) for i in range(w)]
        return tuple((self.rule >> (4 * a + 2 * b + c)) & 1 for a, b, c in nb)

    def history(self, first: tuple[int, ...]) -> list[tuple[int, ...]]:
        rows = [tuple(first)]
        for _ in range(self.rows - 1):
            rows.append(self.step(rows[-1]))
        return rows

    def text(self, first: tuple[int, ...]) -> str:
        rows = self.history(first)
        return layout(rows) if self.layout == "rows" else layout(list(zip(*rows)))

    def _first_rows(self, stream: str, seed: int) -> Iterator[tuple[int, ...]]:
        i = 0
        while True:
            rng = random.Random(f"eca:{GENERATOR_VERSION}:{stream}:{seed}:{self.width}:{i}")
            yield tuple(rng.getrandbits(1) for _ in range(self.width))
            i += 1

    def training_first_rows(self, seed: int = 0) -> Iterator[tuple[int, ...]]:
        """The first rows of the corpus's ``n`` records, in corpus order (independent of rule and rows: two
        corpora that differ only in the rule start from the same random rows)."""
        it = self._first_rows("train", seed)
        for _ in range(self.n):
            yield next(it)

    def corpus(self, seed: int = 0) -> Iterator[str]:
        for first in self.training_first_rows(seed):
            yield self.text(first)

    def test_first_rows(self, n: int, seed: int = 0) -> list[tuple[int, ...]]:
        """``n`` held-out first rows: another stream, distinct, none of them a training record's first row."""
        return held_out(self._first_rows("test", seed), self.training_first_rows(), n, 2 ** self.width, self.spec,
                        "use a wider automaton")

    def depth_positions(self) -> list[list[int]]:
        """``[k-1]``: the character positions of row k's cells, the cells a scorer masks (row 0, the line
        breaks and eos stay given)."""
        return [[self.position(k, i) for i in range(self.width)] for k in range(1, self.rows)]

    def scoring_records(self, n: int, seed: int = 0) -> list[tuple[str, str, list[list[int]]]]:
        """Held-out (id, text, depths), depths as `depth_positions`."""
        depths = self.depth_positions()
        return [("".join(map(str, first)), self.text(first), depths) for first in self.test_first_rows(n, seed)]


def layout(rows: list[tuple[int, ...]]) -> str:
    """Rows of cells -> one line of '0'/'1' per row (the text a model reads and writes)."""
    return "".join("".join(map(str, r)) + "\n" for r in rows)


def parse(spec: str) -> Automaton:
    """``eca:RULE:WIDTH:ROWS[:N][:BOUNDARY][:LAYOUT]`` -> Automaton; a bad part is one DataError naming data.corpus."""
    head, *parts = str(spec).split(":")
    if head != "eca" or not 3 <= len(parts) <= 6:
        raise DataError("data.corpus", f"bad {spec!r}: want {FORM}, e.g. eca:30:16:8")
    numbers, words = parts[:3], parts[3:]
    if words and words[0].isdigit():
        numbers.append(words.pop(0))
    if not all(v.isdigit() for v in numbers):
        raise DataError("data.corpus", f"bad {spec!r}: RULE, WIDTH, ROWS and N are non-negative integers ({FORM})")
    rule, width, rows, *n = map(int, numbers)
    n = n[0] if n else DEFAULT_N
    choice = {"boundary": "periodic", "layout": "rows"}
    for w in words:
        kind = "boundary" if w in BOUNDARIES else "layout" if w in LAYOUTS else None
        if kind is None or choice.get(f"{kind}_given"):
            raise DataError("data.corpus", f"bad {spec!r}: {w!r} is not a boundary ({', '.join(BOUNDARIES)}) or a "
                                           f"layout ({', '.join(LAYOUTS)}) given once after N ({FORM})")
        choice[kind], choice[f"{kind}_given"] = w, "yes"
    problems = [msg for bad, msg in (
        (not 0 <= rule <= 255, f"rule {rule} is not an elementary rule (0..255)"),
        (not 3 <= width <= MAX_WIDTH, f"width {width} must be 3..{MAX_WIDTH}"),
        (not 2 <= rows <= MAX_ROWS, f"rows {rows} must be 2..{MAX_ROWS} (row 0 is given, later rows are computed)"),
        (n < 1, f"N {n} must be >= 1 (the number of histories)"),
    ) if bad]
    if problems:
        raise DataError("data.corpus", f"bad {spec!r}: {problems[0]} ({FORM})")
    return Automaton(rule, width, rows, n, choice["boundary"], choice["layout"])
