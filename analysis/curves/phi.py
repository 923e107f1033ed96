"""The looped family's effective-parameter ratio φ, against a plain-model law.

A model of N unique (non-embedding) parameters whose looped block runs k times on average (k = E[S] under the
training distribution of S) is modelled as a plain model of

    N_eff = N · (1 + φ (k − 1))

parameters (the number the 2026 looped-model scaling work reports): φ = 0, looping adds nothing; φ = N_mid / N, a
loop is worth a distinct copy of the looped layers (what the deeper MDM spends); φ = 1, every loop is worth a copy
of the whole network. φ is fitted jointly with the Chinchilla law of the plain runs,

    L(N, D) = E + A / N_eff^α + B / D^β,      N_eff = N for a plain model (k = 1),

in the log-sum-exp parameterisation of `parametric` (θ = a', b', e, α, β, φ): the plain runs (same-size and deeper
MDMs) pin the law, the looped runs then identify φ. The bootstrap resamples runs within each stratum (plain, looped
by default), so every replicate keeps both and φ's interval carries the law's own uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..bootstrap import LEVEL
from ..util import jsonable
from .core import (DELTA, FitDiagnostics, Interval, LawModel, ParametricModel, bootstrap_refits, diagnose, fit_status,
                   interval, multistart)
from .parametric import parametric_params, parametric_starts

PHI_STARTS = (0.0, 0.1, 0.3, 0.7, 1.5)
PHI_MAX = 10.0


class PhiModel(LawModel):
    """log L = LSE(a' − α (u + log(1 + φ q)), b' − β v, e) with u = log N − u0, v = log D − v0, q = k − 1;
    θ = (a', b', e, α, β, φ). φ is bounded below so that N_eff stays positive at the largest k."""

    names = ("a", "b", "e", "alpha", "beta", "phi")

    def __init__(self, q_max: float):
        self.lb = np.array([-50.0, -50.0, -10.0, 0.0, 0.0, -0.99 / max(q_max, 1e-9)])
        self.ub = np.array([50.0, 50.0, 10.0, 5.0, 5.0, PHI_MAX])

    def pred_jac(self, theta, X):
        """The parametric law at log N_eff = log N + log(1 + φ q): its Jacobian, plus φ's column through log N_eff."""
        u, v, q = (x if x.ndim == 2 else x[None, :] for x in X)
        ph = theta[:, 5:6]
        pred, jac = ParametricModel().pred_jac(theta[:, :5], (u + np.log1p(ph * q), v))
        dphi = jac[..., 0] * -theta[:, 3:4] * q / (1.0 + ph * q)  # d pred / d log N_eff = -alpha * p1
        return pred, np.concatenate([jac, dphi[..., None]], axis=-1)


@dataclass
class PhiFit:
    """φ with its bootstrap interval, the plain law it was read against, and N_eff / N at the looped runs' mean k."""

    ok: bool
    message: str
    phi: Interval | None = None
    n_eff_ratio: Interval | None = None  # 1 + φ (k̄ − 1) at the mean k of the looped runs
    mean_loops: float | None = None
    phi_unrolled: float | None = None  # N_mid / N: a loop worth a distinct copy of the looped layers
    E: Interval | None = None
    A: Interval | None = None
    B: Interval | None = None
    alpha: Interval | None = None
    beta: Interval | None = None
    n_plain: int = 0
    n_looped: int = 0
    n_runs: int = 0
    diagnostics: FitDiagnostics | None = None
    residuals: list[dict[str, float]] = field(default_factory=list)
    theta: np.ndarray | None = field(default=None, repr=False)
    boot_theta: np.ndarray | None = field(default=None, repr=False)
    u0: float = 0.0
    v0: float = 0.0

    def predict(self, N: Any, D: Any, loops: Any = 1.0) -> np.ndarray:
        """The fitted loss of a model of N parameters run at k = ``loops`` loops on D tokens."""
        N, D, k = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, float)) for x in (N, D, loops)))
        X = (np.log(N.ravel()) - self.u0, np.log(D.ravel()) - self.v0, k.ravel() - 1.0)
        return np.exp(PhiModel(1.0).pred_jac(self.theta[None, :], X)[0][0]).reshape(N.shape)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("ok", "message", "phi", "n_eff_ratio", "mean_loops", "phi_unrolled", "E", "A",
                                           "B", "alpha", "beta", "n_plain", "n_looped", "n_runs", "diagnostics",
                                           "residuals")}
        d["law"] = "L = E + A / (N (1 + phi (k - 1)))^alpha + B / D^beta, k = E[S] (1 for a plain model)"
        return jsonable(d)


def fit_phi(
    N: Sequence[float], D: Sequence[float], loss: Sequence[float], loops: Sequence[float], *,
    clusters: Sequence[Any] | None = None, strata: Sequence[Any] | None = None,
    mid_share: Sequence[float] | None = None, n_boot: int = 1000, seed: int | np.random.Generator = 0,
    level: float = LEVEL, delta: float = DELTA, n_polish: int = 10, min_plain: int = 6,
) -> PhiFit:
    """φ from points (N, D, loss, k): k = 1 for plain runs, E[S] for looped ones. ``strata`` (default: looped or
    not) keeps each replicate's mix of runs; ``mid_share`` (N_mid / N of each point) gives the reference φ of a
    loop that is worth a distinct copy of the looped layers."""
    N, D, loss, k = (np.asarray(x, float) for x in (N, D, loss, loops))
    good = np.isfinite(N) & np.isfinite(D) & np.isfinite(loss) & np.isfinite(k) & (N > 0) & (D > 0) & (loss > 0) & (k >= 1)
    N, D, loss, k = N[good], D[good], loss[good], k[good]
    q = k - 1.0
    looped = q > 1e-9
    clusters = np.arange(N.size) if clusters is None else np.asarray(clusters)[good]
    strata = looped if strata is None else np.asarray(strata)[good]
    share = None if mid_share is None else np.asarray(mid_share, float)[good]
    n_plain, n_looped = int((~looped).sum()), int(looped.sum())
    base = dict(n_plain=n_plain, n_looped=n_looped, n_runs=int(np.unique(clusters).size))
    distinct = lambda x: np.unique(np.round(np.log(x), 4)).size  # noqa: E731
    if n_plain < min_plain or distinct(N[~looped]) < 2 or distinct(D[~looped]) < 2:
        return PhiFit(False, f"the plain law needs >= {min_plain} plain runs spanning several N and D (got "
                             f"{n_plain} points, {distinct(N[~looped]) if n_plain else 0} sizes, "
                             f"{distinct(D[~looped]) if n_plain else 0} token counts)", **base)
    if n_looped < 1 or N.size < 8:
        return PhiFit(False, f"φ needs looped runs (E[S] > 1) beside the plain ones and >= 8 points for 6 "
                             f"parameters (got {n_looped} looped, {N.size} in all)", **base)
    u0, v0 = float(np.mean(np.log(N))), float(np.mean(np.log(D)))
    X = (np.log(N) - u0, np.log(D) - v0, q)
    y = np.log(loss)
    model = PhiModel(float(q.max()))
    w = np.ones(N.size)
    # starts: the plain law fitted alone (what pins E, A, B, α, β) at several φ, and the law's grid at φ = 0 in case
    # the plain runs alone fit badly; crossing the whole grid with every φ would cost 5x for the same optimum
    grid = parametric_starts(y)
    plain, _ = multistart(ParametricModel(), (X[0][~looped], X[1][~looped]), y[~looped], w[~looped],
                          parametric_starts(y[~looped]), delta, n_polish)
    starts = np.concatenate([[(*plain, p) for p in PHI_STARTS], np.column_stack([grid, np.zeros(len(grid))])])
    theta, info = multistart(model, X, y, w, starts, delta, n_polish)
    pred = model.pred_jac(theta[None, :], X)[0][0]
    diag = diagnose(info, y, pred)
    boot = None
    if n_boot and n_boot > 0:
        boot, n_ok = bootstrap_refits(model, theta, X, y, w, clusters, n_boot, seed, delta, strata)
        diag.n_boot, diag.n_boot_ok = int(n_boot), n_ok
    raw = parametric_params(theta, u0, v0)[0]
    braw = parametric_params(boot, u0, v0) if boot is not None else None
    law = [interval(raw[j], None if braw is None else braw[:, j], level) for j in range(5)]
    kbar = float(k[looped].mean())
    phi = interval(theta[5], None if boot is None else boot[:, 5], level)
    ratio = interval(1 + theta[5] * (kbar - 1), None if boot is None else 1 + boot[:, 5] * (kbar - 1), level)
    resid = [dict(N=float(n), D=float(d), loops=float(kk), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p))
             for n, d, kk, l, p, yy in zip(N, D, k, loss, pred, y)]
    ref = float(np.median(share[looped])) if share is not None and np.isfinite(share[looped]).any() else None
    return PhiFit(True, fit_status(diag, int(N.size), 6), phi=phi, n_eff_ratio=ratio, mean_loops=kbar,
                  phi_unrolled=ref, E=law[0], A=law[1], B=law[2], alpha=law[3], beta=law[4], diagnostics=diag,
                  residuals=resid, theta=theta, boot_theta=boot, u0=u0, v0=v0, **base)
