"""k-hop pointer chasing: a corpus whose last tokens need k sequential look-ups (a positive control for GPUs).

A record is a random permutation π of ``nodes`` letters written as a look-up table, one line ``x π(x)`` per node
in alphabetical order, then one line with a random start x0 followed by the chain x1 = π(x0), ..., xk:

    ac
    bd
    ca
    db
    a c a c          (without the spaces: 'acac')

With the table and x0 given and the chain masked, hop j needs j look-ups, each a content-addressed read (find
the line whose key is the previous hop): `study.evaluate.automaton_eval` scores per hop, as per row for the
automaton. The random part is (π, x0), and the record contains both, so its entropy is exactly
ln(nodes!) + ln(nodes) nats and ``nll_floor`` is that over ``record_len`` tokens (eos included). Held-out
scoring records come from another seed stream with every (π, x0) of the training corpus dropped.

A quick CPU trial (see the report of issue 27): content-addressed look-up is learned far more slowly than the
automaton's fixed-offset look-back, so this corpus is for GPU-scale controls.
"""
from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from typing import Iterator

from .heldout import held_out
from .tokenizers import DataError

GENERATOR_VERSION = 1
DEFAULT_N = 20_000
FORM = "pointer:NODES:HOPS[:N]"
LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class PointerChase:
    nodes: int
    hops: int
    n: int = DEFAULT_N
    depth_unit = "hop"  # hop j needs j look-ups from x0

    @property
    def chance(self) -> float:
        return 1 / self.nodes

    @property
    def spec(self) -> str:
        return f"pointer:{self.nodes}:{self.hops}:{self.n}"

    @property
    def record_len(self) -> int:
        """Tokens per record: nodes table lines of 3 characters, the chain line (hops + 2), eos."""
        return 3 * self.nodes + self.hops + 2 + 1

    @property
    def nll_floor(self) -> float:
        """Entropy of (π, x0) per token, nats: (ln nodes! + ln nodes) / record_len."""
        return (math.lgamma(self.nodes + 1) + math.log(self.nodes)) / self.record_len

    def chain(self, perm: tuple[int, ...], start: int) -> list[int]:
        out = [start]
        for _ in range(self.hops):
            out.append(perm[out[-1]])
        return out

    def text(self, perm: tuple[int, ...], start: int) -> str:
        table = "".join(f"{LETTERS[x]}{LETTERS[y]}\n" for x, y in enumerate(perm))
        return table + "".join(LETTERS[x] for x in self.chain(perm, start)) + "\n"

    def _draws(self, stream: str, seed: int) -> Iterator[tuple[tuple[int, ...], int]]:
        i = 0
        while True:
            rng = random.Random(f"pointer:{GENERATOR_VERSION}:{stream}:{seed}:{self.nodes}:{i}")
            perm = list(range(self.nodes))
            rng.shuffle(perm)
            yield tuple(perm), rng.randrange(self.nodes)
            i += 1

    def training_draws(self, seed: int = 0) -> Iterator[tuple[tuple[int, ...], int]]:
        it = self._draws("train", seed)
        for _ in range(self.n):
            yield next(it)

    def corpus(self, seed: int = 0) -> Iterator[str]:
        for perm, start in self.training_draws(seed):
            yield self.text(perm, start)

    def test_draws(self, n: int, seed: int = 0) -> list[tuple[tuple[int, ...], int]]:
        """``n`` distinct held-out (π, x0), none in the training corpus."""
        return held_out(self._draws("test", seed), self.training_draws(), n,
                        math.factorial(self.nodes) * self.nodes, self.spec, "use more nodes")

    def depth_positions(self) -> list[list[int]]:
        """``[j-1]``: the position of hop j (the table, x0, the line breaks and eos stay given)."""
        first = 3 * self.nodes  # the chain line starts after the table: x0 there, hop j at first + j
        return [[first + j] for j in range(1, self.hops + 1)]

    def scoring_records(self, n: int, seed: int = 0) -> list[tuple[str, str, list[list[int]]]]:
        """Held-out (id, text, depths), depths as `depth_positions`."""
        first, depths = 3 * self.nodes, self.depth_positions()
        return [(text[first:first + self.hops + 1] + "-" + text[1:first:3], text, depths)
                for text in (self.text(p, s) for p, s in self.test_draws(n, seed))]


def parse(spec: str) -> PointerChase:
    parts = str(spec).split(":")
    if parts[0] != "pointer" or len(parts) not in (3, 4) or not all(p.isdigit() for p in parts[1:]):
        raise DataError("data.corpus", f"bad {spec!r}: want {FORM} with non-negative integers, e.g. pointer:8:4")
    nodes, hops, *n = map(int, parts[1:])
    n = n[0] if n else DEFAULT_N
    problems = [msg for bad, msg in (
        (not 2 <= nodes <= len(LETTERS), f"nodes {nodes} must be 2..{len(LETTERS)} (one letter each)"),
        (not 1 <= hops <= 64, f"hops {hops} must be 1..64"),
        (n < 1, f"N {n} must be >= 1 (the number of tables)"),
    ) if bad]
    if problems:
        raise DataError("data.corpus", f"bad {spec!r}: {problems[0]} ({FORM})")
    return PointerChase(nodes, hops, n)
