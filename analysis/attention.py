"""Does looping promote attention among masked positions? The mask-to-mask share per loop, with confidence
intervals over evaluation sequences (pure functions over ``analysis.collect.load_attention``'s table).

Each sequence's share is averaged over the noise levels t it was masked at (the same masks for every loop,
``study.evaluate.attention``), so loops compare paired by sequence: the rise from loop 1 to the last loop
has a paired CI, and the uniform-attention share (the fraction of keys masked) is the reference line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def _per_sequence(g: pd.DataFrame, column: str) -> np.ndarray | None:
    """(sequences,) mean over t of a per-sequence list column; None when the rows lack it (format 1)."""
    if column not in g or g[column].isna().any():
        return None
    arrays = [np.asarray(v, float) for v in g[column]]
    if len({a.size for a in arrays}) != 1 or arrays[0].size < 2:
        return None
    return np.mean(arrays, axis=0)


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over sequences."""
    m = float(np.mean(x))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return m, m - half, m + half


def share_by_loop(att: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (run, layer, loop): mean mask-to-mask share with its CI, and the uniform reference."""
    out = []
    if att is None or att.empty:
        return pd.DataFrame()
    for (run, layer, loop), g in att.groupby(["run", "layer", "loop"], sort=True):
        seq = _per_sequence(g, "seq_masked_to_masked")
        base = _per_sequence(g, "seq_masked_key_frac")
        first = g.iloc[0]
        row = dict(run=run, slug=first["slug"], variant=first["variant"], width=first["width"],
                   budget_flops=first["budget_flops"], S=first["S"], layer=int(layer), loop=int(loop),
                   share=float(g["masked_to_masked"].mean()), uniform=float(g["masked_key_frac"].mean()),
                   low=np.nan, high=np.nan, n_seqs=0)
        if seq is not None:
            row["share"], row["low"], row["high"] = mean_ci(seq, level)
            row["n_seqs"] = int(seq.size)
        if base is not None:
            row["uniform"] = float(base.mean())
        out.append(row)
    return pd.DataFrame(out)


def rise(att: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (run, layer): the share at the last loop minus loop 1, paired over sequences, with its CI."""
    out = []
    if att is None or att.empty:
        return pd.DataFrame()
    for (run, layer), g in att.groupby(["run", "layer"], sort=True):
        loops = sorted(g["loop"].unique())
        if len(loops) < 2:
            continue
        a = _per_sequence(g[g["loop"] == loops[0]], "seq_masked_to_masked")
        b = _per_sequence(g[g["loop"] == loops[-1]], "seq_masked_to_masked")
        first = g.iloc[0]
        row = dict(run=run, slug=first["slug"], variant=first["variant"], layer=int(layer), first_loop=int(loops[0]),
                   last_loop=int(loops[-1]), delta=np.nan, low=np.nan, high=np.nan)
        if a is not None and b is not None and a.size == b.size:
            row["delta"], row["low"], row["high"] = mean_ci(b - a, level)
        else:
            row["delta"] = float(g[g["loop"] == loops[-1]]["masked_to_masked"].mean()
                                 - g[g["loop"] == loops[0]]["masked_to_masked"].mean())
        out.append(row)
    return pd.DataFrame(out)
