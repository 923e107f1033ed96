"""Resampling, the one home for it: percentile intervals, the cluster bootstrap (runs, or eval sequences paired
across everything that shares them) and the noisy group mean every per-group claim draws.

Draw order is part of the contract: each function consumes its generator the same way on every call, so a
report regenerated with the same seed is the same report.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
Z95 = 1.959963984540054  # two-sided 95%
Z80 = 0.8416212335729143  # one-sided: 80% power


def percentile_ci(samples: np.ndarray, level: float = LEVEL) -> tuple[float | None, float | None]:
    """Percentile interval over the finite-or-infinite samples; NaN replicates (failed fits) dropped.

    Infinite samples are legitimate (a family that never reaches a loss needs infinite FLOPs), so
    we use an interpolation-free quantile that can return inf instead of inf-inf=NaN."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size < 2:
        return None, None
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    method = "inverted_cdf" if np.isinf(s).any() else "linear"
    lo, hi = np.quantile(s, q, method=method)
    return float(lo), float(hi)


def bootstrap_weights(
    rng: np.random.Generator, clusters: np.ndarray, n_boot: int, strata: np.ndarray | None = None
) -> np.ndarray:
    """(n_boot, n_points) integer weights equivalent to resampling clusters (runs) with replacement.

    With ``strata`` (e.g. the budget of each run) clusters are resampled within each stratum so every
    replicate keeps every budget, as an IsoFLOP design requires."""
    clusters = np.asarray(clusters)
    _, codes = np.unique(clusters, return_inverse=True)
    n_c = codes.max() + 1 if codes.size else 0
    counts = np.zeros((n_boot, n_c))
    if strata is None:
        counts[:] = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=n_boot)
    else:
        strata = np.asarray(strata)
        c_stratum = np.empty(n_c, dtype=object)
        c_stratum[codes] = strata
        for s in np.unique(strata):
            members = np.nonzero(c_stratum == s)[0]
            k = members.size
            counts[:, members] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return counts[:, codes]


def group_draws(estimates: np.ndarray, ses: np.ndarray, n_boot: int, rng: np.random.Generator,
                *carried: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(n_boot, k) draws of k groups' estimates, each drawn from its own standard error and then the groups
    resampled with replacement (when k > 1): the mean over axis 1 is a bootstrap draw of the mean over groups
    with both the within-group noise and the between-group spread in it. ``carried`` arrays (k,) are resampled
    with the same groups (k = 1: repeated)."""
    draws = estimates[None, :] + rng.standard_normal((n_boot, estimates.size)) * ses[None, :]
    if estimates.size > 1:
        idx = rng.integers(0, estimates.size, size=draws.shape)
        return np.take_along_axis(draws, idx, axis=1), [c[idx] for c in carried]
    return draws, [np.repeat(c[None, :], n_boot, axis=0) for c in carried]


def record_group_draws(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) bootstrap draws of the mean of a (groups, records) matrix whose groups were scored on the same
    records: the records are resampled once per draw for every group together (a paired design keeps its
    pairing), then, with >= 2 groups, the groups."""
    m = np.asarray(values, float)
    G, n = m.shape
    ri = rng.integers(0, n, size=(n_boot, n))
    rec_means = np.stack([m[:, r].mean(axis=1) for r in ri])  # (n_boot, G)
    if G > 1:
        rec_means = np.take_along_axis(rec_means, rng.integers(0, G, size=(n_boot, G)), axis=1)
    return rec_means.mean(axis=1)
