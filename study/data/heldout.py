"""Held-out records of a generated corpus that no training record repeats (the iterated-computation corpora)."""
from __future__ import annotations

from typing import Hashable, Iterable, Iterator, TypeVar

from .tokenizers import DataError

T = TypeVar("T", bound=Hashable)


def held_out(stream: Iterator[T], training: Iterable[T], n: int, space: int, spec: str, advice: str) -> list[T]:
    """The first ``n`` distinct draws of ``stream`` that are not in ``training``: a scored record was never trained
    on, however small the space of records (``space`` of them in all). Too small a space is a DataError."""
    seen = set(training)
    if space - len(seen) < n:
        raise DataError("data.corpus", f"{spec}: only {space - len(seen)} records are not in the training corpus, "
                                       f"{n} test records asked; {advice}")
    out: list[T] = []
    for draw in stream:
        if draw not in seen:
            seen.add(draw)
            out.append(draw)
            if len(out) == n:
                break
    return out
