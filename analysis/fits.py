"""Scaling-law fits: pure functions on arrays, no I/O.

Three estimators, each with a bootstrap over *runs* (not points: a run's eval points share its
training noise) and goodness-of-fit diagnostics:

* ``fit_frontier``   L(C) = E + A * C**-alpha on the compute frontier of one family (per-budget minima,
                     or the lower envelope of dense points); E = 0 fallback when E is not identified;
* ``fit_isoflop``    Chinchilla approach 2: per budget a parabola in log N, then N*(C), D*(C) power laws;
* ``fit_parametric`` Chinchilla approach 3: L(N, D) = E + A/N**alpha + B/D**beta.

Fitting choices and why (after Hoffmann et al. 2022, Besiroglu et al. 2024 "Chinchilla scaling: a
replication attempt", Porian et al. 2024 "Resolving discrepancies in compute-optimal scaling"):

* The loss is modelled in log space with log-sum-exp terms, ``log L = LSE(a - alpha log N, b - beta log D, e)``,
  so every term stays positive without constraints and relative errors are weighted alike at every scale.
* Huber loss with delta = 1e-3 on log-loss residuals: points that miss by more than ~0.1 % (diverged
  runs, a bad eval) pull linearly instead of quadratically.
* L-BFGS-B from a grid of starts with tight tolerances; the replication paper showed that the published
  Chinchilla fit had stopped early, so we report the optimiser status, the gradient norm at the solution
  and how many starts agree with the best one.
* Internally log N, log D, log C are centred on a reference scale (x - x0). This is only a
  reparameterisation (a = a' + alpha x0), but it removes the strong a/alpha correlation that makes raw-unit
  fits ill-conditioned; parameters are reported in raw units.
* Bootstrap: resampling runs with replacement is the same as refitting with multinomial integer weights,
  so all replicates are fitted *together* with a batched, damped Gauss-Newton (IRLS for Huber) solver,
  warm-started at the point fit. No per-replicate grid search: the point fit already located the basin.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from ._util import jsonable

DELTA = 1e-3
LEVEL = 0.95

__all__ = [
    "DELTA", "Interval", "FitDiagnostics", "FrontierFit", "ParametricFit", "IsoFlopBudget", "IsoFlopFit",
    "Backtest", "MultiplierCurve", "PowerLaw", "huber", "lower_envelope", "budget_minima", "fit_frontier", "fit_parametric",
    "fit_isoflop", "fit_frontier_isoflop", "fit_power_law", "budget_keys", "backtest_frontier", "backtest_parametric", "efficiency_multiplier",
    "bootstrap_weights", "mc_weights", "percentile_ci",
]


# --------------------------------------------------------------------------------------------- basics
@dataclass
class Interval:
    """A point estimate with a percentile-bootstrap interval (``low``/``high`` are None when no CI)."""

    estimate: float
    low: float | None = None
    high: float | None = None
    level: float = LEVEL

    def covers(self, value: float) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return bool(self.low <= value <= self.high)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def huber(r: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Huber loss: quadratic inside +-delta, linear outside (robust to a few bad runs)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


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


def _interval(estimate: float, samples: np.ndarray | None, level: float) -> Interval:
    if samples is None:
        return Interval(float(estimate), None, None, level)
    lo, hi = percentile_ci(samples, level)
    return Interval(float(estimate), lo, hi, level)


def mc_weights(loss: np.ndarray, se: np.ndarray | None) -> np.ndarray | None:
    """Inverse-variance weights in log space from the Monte-Carlo standard error of each NLL.

    Normalised to mean 1 so that the Huber delta keeps its meaning (a residual scale in log loss)."""
    if se is None:
        return None
    loss = np.asarray(loss, float)
    se = np.asarray(se, float)
    sl = se / loss
    ok = np.isfinite(sl) & (sl > 0)
    if not ok.any():
        return None
    floor = np.median(sl[ok]) * 0.1  # a reported se of ~0 must not give one point all the weight
    sl = np.where(ok, np.maximum(sl, floor), np.median(sl[ok]))
    w = 1.0 / sl**2
    return w / w.mean()


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


def _gof(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """RMSE of log-loss residuals and R^2 of log loss (what the fit minimises, so what it is judged on)."""
    r = y - pred
    rmse = float(np.sqrt(np.mean(r**2))) if r.size else math.nan
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    r2 = 1.0 - float(np.sum(r**2)) / ss_tot if ss_tot > 0 else math.nan
    return rmse, r2


# ------------------------------------------------------------------------------------- law models
class _Model:
    """A law in log space with its Jacobian, batched over parameter vectors (B, p)."""

    names: tuple[str, ...] = ()
    lb: np.ndarray
    ub: np.ndarray

    def pred_jac(self, theta: np.ndarray, X: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _FrontierModel(_Model):
    """log L = logaddexp(a' - alpha x, e) with x = log C - x0; theta = (a', e, alpha)."""

    names = ("a", "e", "alpha")
    lb = np.array([-50.0, -10.0, 0.0])
    ub = np.array([50.0, 10.0, 5.0])

    def pred_jac(self, theta, X):
        (x,) = X
        x = x if x.ndim == 2 else x[None, :]
        a, e, al = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        z1 = a - al * x
        pred = np.logaddexp(z1, e)
        p1 = np.exp(z1 - pred)
        jac = np.stack([p1, 1.0 - p1, -p1 * x], axis=-1)
        return pred, jac


class _ParametricModel(_Model):
    """log L = LSE(a' - alpha u, b' - beta v, e), u = log N - u0, v = log D - v0;
    theta = (a', b', e, alpha, beta)."""

    names = ("a", "b", "e", "alpha", "beta")
    lb = np.array([-50.0, -50.0, -10.0, 0.0, 0.0])
    ub = np.array([50.0, 50.0, 10.0, 5.0, 5.0])

    def pred_jac(self, theta, X):
        u, v = X
        u = u if u.ndim == 2 else u[None, :]
        v = v if v.ndim == 2 else v[None, :]
        a, b, e = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        al, be = theta[:, 3:4], theta[:, 4:5]
        z1 = a - al * u
        z2 = b - be * v
        z3 = np.broadcast_to(e, z1.shape)
        m = np.maximum(np.maximum(z1, z2), z3)
        s1, s2, s3 = np.exp(z1 - m), np.exp(z2 - m), np.exp(z3 - m)
        tot = s1 + s2 + s3
        pred = m + np.log(tot)
        p1, p2, p3 = s1 / tot, s2 / tot, s3 / tot
        jac = np.stack([p1, p2, p3, -p1 * u, -p2 * v], axis=-1)
        return pred, jac


def _objective(pred: np.ndarray, y: np.ndarray, W: np.ndarray, delta: float) -> np.ndarray:
    """Weighted Huber on log residuals, scaled by 1/(delta * sum w) so tolerances are scale-free."""
    r = (y if y.ndim == 2 else y[None, :]) - pred
    return np.sum(W * huber(r, delta), axis=1) / (delta * np.maximum(W.sum(axis=1), 1e-300))


def _scipy_fun(model: _Model, X, y, w, delta) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    wsum = max(float(w.sum()), 1e-300)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        pred, jac = model.pred_jac(theta[None, :], X)
        r = y - pred[0]
        f = float(np.sum(w * huber(r, delta))) / (delta * wsum)
        psi = np.clip(r, -delta, delta)
        g = -(w * psi) @ jac[0] / (delta * wsum)
        return f, g

    return fun


def _batched_gn(
    model: _Model,
    theta0: np.ndarray,
    X: tuple[np.ndarray, ...],
    y: np.ndarray,
    W: np.ndarray,
    delta: float = DELTA,
    max_iter: int = 200,
    ftol: float = 1e-10,
    xtol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped (Levenberg-Marquardt) Gauss-Newton on the Huber objective, for B problems at once.

    Returns (theta, objective, converged). Each replicate has its own damping and stops on its own; a
    step is kept only if it lowers the true Huber objective. Tolerances are looser than the point
    fit's (1e-7 relative in the parameters): bootstrap spreads are orders of magnitude wider."""
    theta = np.array(theta0, dtype=float, copy=True)
    B, p = theta.shape
    Y = np.broadcast_to(y, (B, y.shape[-1]))  # one data vector, or one per replicate (parametric bootstrap)
    lam = np.full(B, 1e-3)
    wsum = np.maximum(W.sum(axis=1), 1e-300)
    pred, J = model.pred_jac(theta, X)
    F = _objective(pred, Y, W, delta)
    done = np.zeros(B, bool)
    conv = np.zeros(B, bool)
    eye = np.eye(p)
    for _ in range(max_iter):
        idx = np.nonzero(~done)[0]
        if idx.size == 0:
            break
        Wi, Ji = W[idx], J[idx]
        r = Y[idx] - pred[idx]
        a = np.abs(r)
        psi = np.clip(r, -delta, delta)
        omega = np.where(a > delta, delta / np.maximum(a, 1e-300), 1.0)
        scale = (delta * wsum[idx])[:, None]
        g = -np.einsum("bn,bnp->bp", Wi * psi, Ji) / scale
        Jt = np.transpose(Ji, (0, 2, 1))
        # damping scale from the IRLS majoriser (always positive definite where data exist) ...
        d = np.sum(Ji * Ji * (Wi * omega)[:, :, None], axis=1) / scale
        # ... curvature from Huber's generalised Hessian (only residuals inside delta curve): semismooth
        # Newton converges in a few steps once the inlier set settles, where IRLS crawls linearly
        H = np.matmul(Jt * (Wi * (a <= delta))[:, None, :], Ji) / scale[:, :, None]
        A = H + lam[idx, None, None] * (d[:, :, None] * eye) + 1e-12 * (d.max(axis=1) + 1e-30)[:, None, None] * eye
        try:
            step = np.linalg.solve(A, -g[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(A[k], -g[k], rcond=None)[0] for k in range(idx.size)])
        th_new = np.clip(theta[idx] + step, model.lb, model.ub)
        pred_new, J_new = model.pred_jac(th_new, tuple(x[idx] if x.ndim == 2 else x for x in X))
        F_new = _objective(pred_new, Y[idx], W[idx], delta)
        F_old = F[idx]
        acc = np.isfinite(F_new) & (F_new <= F_old)
        ai = idx[acc]
        theta[ai], pred[ai], J[ai], F[ai] = th_new[acc], pred_new[acc], J_new[acc], F_new[acc]
        lam[ai] = np.maximum(lam[ai] / 3.0, 1e-12)
        lam[idx[~acc]] *= 5.0
        real_step = np.abs(step).max(axis=1)
        small = (F_old - np.where(acc, F_new, F_old) <= ftol * np.maximum(F_old, 1e-300)) & (
            real_step <= xtol * (1.0 + np.abs(theta[idx]).max(axis=1))
        )
        stop_ok = acc & small
        stalled = lam[idx] > 1e10
        done[idx[stop_ok | stalled]] = True
        conv[idx[stop_ok]] = True
        # a stalled replicate whose gradient is ~0 is at its optimum (no step can improve it)
        if stalled.any():
            th_s = theta[idx[stalled]]
            gs = g[stalled]
            # projected gradient: a component pushing against an active bound does not count
            gs = np.where(((th_s <= model.lb + 1e-9) & (gs > 0)) | ((th_s >= model.ub - 1e-9) & (gs < 0)), 0.0, gs)
            conv[idx[stalled]] = np.abs(gs).max(axis=1) < 1e-6
    return theta, F, conv


def _multistart(
    model: _Model,
    X: tuple[np.ndarray, ...],
    y: np.ndarray,
    w: np.ndarray,
    starts: np.ndarray,
    delta: float,
    n_polish: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Evaluate the objective on every grid start (vectorised), run L-BFGS-B from the best
    ``n_polish`` of them, and report how many of those agree with the winner."""
    W = w[None, :]
    F0 = np.concatenate([_objective(model.pred_jac(chunk, X)[0], y, W, delta) for chunk in np.array_split(
        starts, max(1, int(np.ceil(starts.shape[0] * y.size / 2e6))))])
    F0 = np.where(np.isfinite(F0), F0, np.inf)
    order = np.argsort(F0)[: max(1, n_polish)]
    fun = _scipy_fun(model, X, y, w, delta)
    results = []
    bounds = list(zip(model.lb, model.ub))
    for i in order:
        res = minimize(fun, starts[i], jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(maxiter=20000, maxfun=40000, ftol=1e-15, gtol=1e-11, maxcor=20))
        results.append(res)
    best = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    # Gauss-Newton polish from the winner: quadratic convergence where L-BFGS-B crawls on flat valleys.
    th, Fp, cp = _batched_gn(model, best.x[None, :], X, y, W, delta, max_iter=500, ftol=1e-14, xtol=1e-10)
    theta = th[0] if Fp[0] <= best.fun else best.x
    f_best = float(min(Fp[0], best.fun))
    _, g = fun(theta)
    free = (theta > model.lb + 1e-9) & (theta < model.ub - 1e-9)
    grad_norm = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    agree = sum(
        1 for r in results
        if np.isfinite(r.fun) and r.fun <= f_best * (1 + 1e-6) + 1e-15
        and np.allclose(r.x, theta, rtol=1e-3, atol=1e-3)
    )
    info = dict(
        converged=bool((best.success or cp[0]) and grad_norm < 1e-5),
        optimizer_message=str(best.message),
        n_grid=int(starts.shape[0]),
        n_starts=len(results),
        n_starts_agree=int(agree),
        grad_norm=grad_norm,
        objective=f_best,
        at_bound=[model.names[k] for k in range(len(theta)) if not free[k]],
    )
    return theta, info


# ---------------------------------------------------------------------------------- diagnostics
@dataclass
class FitDiagnostics:
    """What a reader needs to trust (or not) a fit: optimiser status, agreement of starts, residuals."""

    converged: bool
    optimizer_message: str
    n_grid: int
    n_starts: int
    n_starts_agree: int
    grad_norm: float
    objective: float
    at_bound: list[str]
    rmse_log: float
    r2_log: float
    max_abs_resid_log: float
    n_boot: int = 0
    n_boot_ok: int = 0

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def _diagnostics(info: dict[str, Any], y: np.ndarray, pred: np.ndarray) -> FitDiagnostics:
    rmse, r2 = _gof(y, pred)
    return FitDiagnostics(rmse_log=rmse, r2_log=r2,
                          max_abs_resid_log=float(np.max(np.abs(y - pred))) if y.size else math.nan, **info)


# -------------------------------------------------------------------------------------- frontier
def lower_envelope(C: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Boolean mask of the compute frontier: points no cheaper point beats (strictly lower loss)."""
    C = np.asarray(C, float)
    loss = np.asarray(loss, float)
    order = np.lexsort((loss, C))
    Ls = loss[order]
    prev = np.concatenate([[np.inf], np.minimum.accumulate(Ls)[:-1]])
    mask = np.zeros(C.size, bool)
    mask[order] = Ls < prev
    return mask


def _envelope_batched(order: np.ndarray, loss_sorted: np.ndarray, W_sorted: np.ndarray) -> np.ndarray:
    """Envelope membership per bootstrap replicate (points absent from a replicate cannot shield others)."""
    Lm = np.where(W_sorted > 0, loss_sorted[None, :], np.inf)
    prev = np.concatenate([np.full((Lm.shape[0], 1), np.inf), np.minimum.accumulate(Lm, axis=1)[:, :-1]], axis=1)
    return (W_sorted > 0) & (loss_sorted[None, :] < prev)


@dataclass
class FrontierFit:
    """L(C) = E + A * C**-alpha for one family (C in the FLOPs convention named in ``convention``)."""

    ok: bool
    message: str
    family: str | None = None
    convention: str | None = None
    method: str = "envelope"
    E: Interval | None = None
    A: Interval | None = None
    alpha: Interval | None = None
    n_points: int = 0
    n_fit_points: int = 0
    C_range: tuple[float, float] | None = None
    loss_range: tuple[float, float] | None = None
    diagnostics: FitDiagnostics | None = None
    residuals: list[dict[str, float]] = field(default_factory=list)
    x0: float = 0.0
    E_fixed: bool = False  # True: E = 0 was imposed (pure power law), see ``notes``
    notes: list[str] = field(default_factory=list)  # identifiability / fallback statements for the report
    theta: np.ndarray | None = field(default=None, repr=False)
    boot_theta: np.ndarray | None = field(default=None, repr=False)

    # -- evaluation (point fit, and every bootstrap replicate for bands) --
    def _log_pred(self, theta: np.ndarray, C: np.ndarray) -> np.ndarray:
        x = np.log(np.asarray(C, float)) - self.x0
        with np.errstate(invalid="ignore"):  # failed bootstrap replicates are NaN rows
            return _FrontierModel().pred_jac(np.atleast_2d(theta), (np.atleast_1d(x),))[0]

    def predict(self, C: Any) -> np.ndarray:
        return np.exp(self._log_pred(self.theta, C)[0])

    def predict_band(self, C: Any, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap band of L(C)."""
        if self.boot_theta is None or len(self.boot_theta) < 2:
            p = self.predict(C)
            return p, p
        P = np.exp(self._log_pred(self.boot_theta, C))
        q = [(1 - level) / 2, 1 - (1 - level) / 2]
        lo, hi = np.nanquantile(P, q, axis=0)
        return lo, hi

    @staticmethod
    def _invert(theta: np.ndarray, x0: float, L: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        a, e, al = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        L = np.atleast_1d(np.asarray(L, float))[None, :]
        ex = L - np.exp(e)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (a - np.log(np.where(ex > 0, ex, np.nan))) / np.where(al > 0, al, np.nan)
            out = np.exp(x + x0)
        out = np.where(ex > 0, out, np.inf)
        return np.where(np.isnan(theta).any(axis=1, keepdims=True), np.nan, out)  # failed replicate: unknown

    def invert(self, L: Any) -> np.ndarray:
        """FLOPs needed to reach loss L (inf when L is at or below the fitted irreducible loss E)."""
        return self._invert(self.theta, self.x0, L)[0]

    def invert_samples(self, L: Any) -> np.ndarray:
        """(n_boot, len(L)) FLOPs-to-reach-L for each bootstrap replicate (NaN rows: failed replicates)."""
        if self.boot_theta is None:
            return np.empty((0, np.atleast_1d(L).size))
        return self._invert(self.boot_theta, self.x0, L)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "ok", "message", "family", "convention", "method", "E", "A", "alpha", "n_points",
            "n_fit_points", "C_range", "loss_range", "diagnostics", "residuals", "E_fixed", "notes")}
        d["law"] = "L(C) = A * C^-alpha (E fixed at 0)" if self.E_fixed else "L(C) = E + A * C^-alpha"
        return jsonable(d)


def _gather_nonzero(W: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-replicate (B, m) arrays of the points with non-zero weight, padded with weight-0 copies."""
    nz = W > 0
    m = max(1, int(nz.sum(axis=1).max()))
    order = np.argsort(~nz, axis=1, kind="stable")[:, :m]
    Wg = np.take_along_axis(W, order, axis=1)
    return x[order], y[order], Wg


def _frontier_starts(y: np.ndarray) -> np.ndarray:
    lmin = float(np.exp(y.min()))
    lmed = float(np.exp(np.median(y)))
    es = np.log(lmin * np.array([0.05, 0.3, 0.6, 0.8, 0.9, 0.97]))
    as_ = np.log(lmed) + np.log([0.01, 0.05, 0.2, 0.5, 1.0, 2.0])
    als = np.array([0.03, 0.08, 0.15, 0.3, 0.5, 0.8])
    return np.array(list(itertools.product(as_, es, als)))


def _frontier_params(theta: np.ndarray, x0: float) -> np.ndarray:
    """Internal (a', e, alpha) -> raw (E, A, alpha)."""
    theta = np.atleast_2d(theta)
    return np.stack([np.exp(theta[:, 1]), np.exp(theta[:, 0] + theta[:, 2] * x0), theta[:, 2]], axis=1)


class _PowerModel(_Model):
    """E fixed at 0 (pure power law): log L = a' - alpha x; theta = (a', alpha)."""

    names = ("a", "alpha")
    lb = np.array([-50.0, 0.0])
    ub = np.array([50.0, 5.0])

    def pred_jac(self, theta, X):
        (x,) = X
        x = x if x.ndim == 2 else x[None, :]
        a, al = theta[:, 0:1], theta[:, 1:2]
        pred = a - al * x
        jac = np.stack([np.ones_like(pred), -np.broadcast_to(x, pred.shape)], axis=-1)
        return pred, jac


def _pad_power(theta2: np.ndarray) -> np.ndarray:
    """(a', alpha) -> the frontier parameterisation (a', e=-inf, alpha): E = exp(e) = 0."""
    theta2 = np.atleast_2d(theta2)
    return np.stack([theta2[:, 0], np.full(theta2.shape[0], -np.inf), theta2[:, 1]], axis=1)


def budget_minima(loss: Sequence[float], budget: Sequence[float]) -> np.ndarray:
    """Boolean mask: per FLOPs budget the lowest-loss point (IsoFLOP minima of the runs tried). Points
    without a budget are never selected."""
    loss = np.asarray(loss, float)
    b = budget_keys(budget)
    mask = np.zeros(loss.size, bool)
    for c in np.unique(b[np.isfinite(b)]):
        idx = np.nonzero((b == c) & np.isfinite(loss))[0]
        if idx.size:
            mask[idx[np.argmin(loss[idx])]] = True
    return mask


def _budget_minima_batched(loss: np.ndarray, budget: np.ndarray, Wb: np.ndarray) -> np.ndarray:
    """Per bootstrap replicate: indicator of each budget's lowest-loss point among the points drawn."""
    b = budget_keys(budget)
    out = np.zeros(Wb.shape, bool)
    rows = np.arange(Wb.shape[0])
    for c in np.unique(b[np.isfinite(b)]):
        idx = np.nonzero(b == c)[0]
        Lm = np.where(Wb[:, idx] > 0, loss[idx][None, :], np.inf)
        j = np.argmin(Lm, axis=1)
        present = np.isfinite(Lm[rows, j])
        out[rows[present], idx[j[present]]] = True
    return out


def _budget_minima_batched_y(Y: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Per replicate (row of perturbed log losses ``Y``): indicator of each budget's lowest point."""
    b = budget_keys(budget)
    out = np.zeros(Y.shape, bool)
    rows = np.arange(Y.shape[0])
    for c in np.unique(b[np.isfinite(b)]):
        idx = np.nonzero(b == c)[0]
        out[rows, idx[np.argmin(Y[:, idx], axis=1)]] = True
    return out


FRONTIER_SELECT = {
    "budget_min": "per-budget minima",
    "envelope": "lower envelope",
    "all": "all points",
}


def fit_frontier(
    C: Sequence[float],
    loss: Sequence[float],
    *,
    clusters: Sequence[Any] | None = None,
    strata: Sequence[Any] | None = None,
    weights: Sequence[float] | None = None,
    envelope: bool = True,
    select: str | None = None,
    budget: Sequence[float] | None = None,
    fixed_E_fallback: bool = True,
    se: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    level: float = LEVEL,
    delta: float = DELTA,
    n_polish: int = 5,
    min_points: int = 4,
    family: str | None = None,
    convention: str | None = None,
    method: str | None = None,
) -> FrontierFit:
    """Fit L(C) = E + A C^-alpha to the points that form the compute frontier.

    ``select`` picks them (default: ``"envelope"`` if ``envelope`` else ``"all"``):

    * ``"budget_min"`` -- per FLOPs ``budget`` the lowest-loss point (the best run tried at that budget);
      fitted with equal weight per budget, so the curve runs along the best runs, not between widths;
    * ``"envelope"``   -- the Pareto lower envelope: points that no cheaper point beats. On final points
      of a few widths this keeps a worse width whose run happened to cost slightly fewer FLOPs, so it is
      meant for *dense* points (all eval points along constant-LR training), not for final points;
    * ``"all"``        -- every point (a law fitted to one configuration's points).

    The selection is redone inside every bootstrap replicate, so the CI includes the frontier's selection
    noise. Replicates: runs (``clusters``) resampled within ``strata``; except for ``"budget_min"`` with
    ``se`` (each point's standard error of its loss), where the runs of a budget are *different*
    configurations, not exchangeable draws: there every point's log loss is perturbed by Gaussian noise of
    scale sqrt((se/L)^2 + r^2) (r: its residual from the fit when it is a frontier point), the minima are
    re-selected and refitted (a noise bootstrap, as Porian et al. perturb losses rather than drop runs).

    Few points and 3 parameters: when the 3-parameter fit does not converge, or E runs to its lower
    bound (E -> 0: the data show no floor), and ``fixed_E_fallback``, the fit falls back to E = 0 (a pure
    power law, 2 parameters); ``E_fixed`` and ``notes`` say so. Each bootstrap replicate follows the same
    rule, so the CI reflects the model choice too."""
    sel = select or ("envelope" if envelope else "all")
    if sel not in FRONTIER_SELECT:
        raise ValueError(f"select must be one of {sorted(FRONTIER_SELECT)}, got {sel!r}")
    if sel == "budget_min" and budget is None:
        raise ValueError("select='budget_min' needs budget")
    C = np.asarray(C, float)
    loss = np.asarray(loss, float)
    method = method or sel
    base = dict(family=family, convention=convention, method=method, n_points=int(C.size))
    good = np.isfinite(C) & np.isfinite(loss) & (C > 0) & (loss > 0)
    C, loss = C[good], loss[good]
    clusters = np.arange(good.sum()) if clusters is None else np.asarray(clusters)[good]
    strata = None if strata is None else np.asarray(strata)[good]
    bud = None if budget is None else np.asarray(budget, float)[good]
    w = np.ones(C.size) if weights is None else np.asarray(weights, float)[good]
    if sel == "budget_min":
        mask = budget_minima(loss, bud)
    elif sel == "envelope":
        mask = lower_envelope(C, loss)
    else:
        mask = np.ones(C.size, bool)
    n_fit = int(mask.sum())
    n_distinct = np.unique(np.round(np.log10(C[mask]), 3)).size if n_fit else 0
    if n_fit < min_points or n_distinct < 3:
        return FrontierFit(False, f"too few frontier points to fit 3 parameters ({n_fit} points, need "
                                  f"{min_points} at >= 3 distinct FLOPs)", n_fit_points=n_fit, **base)
    if np.log10(C[mask].max() / C[mask].min()) < 0.3:
        return FrontierFit(False, "frontier spans less than a factor 2 in FLOPs (a single budget?): "
                                  "the exponent is not identifiable", n_fit_points=n_fit, **base)
    x0 = float(np.mean(np.log(C[mask])))
    x = np.log(C) - x0
    y = np.log(loss)
    wfit = w
    model = _FrontierModel()
    theta, info = _multistart(model, (x[mask],), y[mask], wfit[mask], _frontier_starts(y[mask]), delta, n_polish)
    notes: list[str] = []
    E_fixed = False
    reason = None
    if not info["converged"]:
        reason = "the 3-parameter fit did not converge"
    elif "e" in info["at_bound"]:
        reason = "E ran to its lower bound (the points show no loss floor)"
    pmodel = _PowerModel()
    if reason and fixed_E_fallback:
        p_starts = np.array(list(itertools.product(
            float(np.median(y[mask])) + np.log([0.5, 1.0, 2.0]), [0.03, 0.1, 0.3, 0.8])))
        th2, info2 = _multistart(pmodel, (x[mask],), y[mask], wfit[mask], p_starts, delta, min(n_polish, 4))
        theta, info, E_fixed = _pad_power(th2)[0], info2, True
        info["at_bound"] = [n for n in info["at_bound"] if n != "a"]
        notes.append(f"E fixed at 0 (pure power law L = A·C^-α): {reason}")
    pred_all = model.pred_jac(theta[None, :], (x,))[0][0]
    diag = _diagnostics(info, y[mask], pred_all[mask])
    boot = None
    if n_boot and n_boot > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        Yfull = None
        if sel == "budget_min" and se is not None:
            sl = np.asarray(se, float)[good] / loss
            sl = np.where(np.isfinite(sl) & (sl > 0), sl, 0.0)
            r = np.where(mask, y - pred_all, 0.0)
            scale = np.sqrt(sl**2 + r**2)
            Yfull = y[None, :] + rng.standard_normal((n_boot, y.size)) * scale[None, :]
            Wb = _budget_minima_batched_y(Yfull, bud) * w[None, :]
        else:
            Wb = bootstrap_weights(rng, clusters, n_boot, strata) * w[None, :]
        if Yfull is not None:
            pass
        elif sel == "envelope":
            order = np.lexsort((loss, C))
            inc = np.zeros_like(Wb, dtype=bool)
            inc[:, order] = _envelope_batched(order, loss[order], Wb[:, order])
            Wb = Wb * inc
        elif sel == "budget_min":
            Wb = _budget_minima_batched(loss, bud, Wb) * wfit[None, :]
        npts = (Wb > 0).sum(axis=1)
        if Yfull is None:
            Xb, Yb, Wg = _gather_nonzero(Wb, x, y)  # each replicate only carries its own frontier points
        else:
            order = np.argsort(~(Wb > 0), axis=1, kind="stable")[:, : max(1, int(npts.max()))]
            Xb, Yb, Wg = x[order], np.take_along_axis(Yfull, order, 1), np.take_along_axis(Wb, order, 1)
        nb = int(n_boot)
        th2b, F2, cv2 = _batched_gn(pmodel, np.repeat(_power_start(theta, x[mask], y[mask])[None, :], nb, 0),
                                    (Xb,), Yb, Wg, delta)
        ok2 = (npts >= 2) & cv2 & np.isfinite(F2)
        if E_fixed:
            th = _pad_power(th2b)
            ok = ok2
            n_fixed = int(ok.sum())
        else:
            th3, F3, cv3 = _batched_gn(model, np.repeat(theta[None, :], nb, 0), (Xb,), Yb, Wg, delta)
            ok3 = (npts >= 3) & cv3 & np.isfinite(F3) & (th3[:, 1] > model.lb[1] + 1e-6)
            use2 = ~ok3 & ok2 if fixed_E_fallback else np.zeros(nb, bool)
            th = np.where(use2[:, None], _pad_power(th2b), th3)
            ok = ok3 | use2
            n_fixed = int(use2.sum())
        th[~ok] = np.nan
        boot = th
        diag.n_boot, diag.n_boot_ok = nb, int(ok.sum())
        if not E_fixed and n_fixed:
            notes.append(f"{n_fixed}/{nb} bootstrap replicates fell back to E = 0 (their 3-parameter fit did not "
                         f"converge or put E at its bound)")
    raw = _frontier_params(theta, x0)[0]
    braw = _frontier_params(boot, x0) if boot is not None else None
    ints = [_interval(raw[k], None if braw is None else braw[:, k], level) for k in range(3)]
    if E_fixed:
        ints[0] = Interval(0.0, None, None, level)
    elif ints[0].low is not None and ints[0].high - ints[0].low > 0.25 * float(loss[mask].min()):
        notes.append(f"E is not identified by {n_fit} points: its 95% CI [{ints[0].low:.3g}, {ints[0].high:.3g}] "
                     f"spans more than a quarter of the lowest loss; extrapolations depend on it")
    resid = [dict(C=float(c), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p), on_frontier=bool(m))
             for c, l, p, yy, m in zip(C, loss, pred_all, y, mask)]
    if E_fixed:
        base["method"] = f"{method}, E=0"
    return FrontierFit(
        True, "ok" if diag.converged else "optimizer did not report convergence", E=ints[0], A=ints[1],
        alpha=ints[2], n_fit_points=n_fit, C_range=(float(C.min()), float(C.max())),
        loss_range=(float(loss.min()), float(loss.max())), diagnostics=diag, residuals=resid, x0=x0,
        E_fixed=E_fixed, notes=notes, theta=theta, boot_theta=boot, **base)


def _power_start(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Start for the E = 0 refits: the point fit's own (a', alpha) if it is a pure power law, else OLS."""
    if np.isneginf(theta[1]):
        return np.array([theta[0], theta[2]])
    k, c = np.polyfit(x, y, 1)
    return np.array([c, max(-k, 1e-3)])


# ------------------------------------------------------------------------------------ parametric
@dataclass
class ParametricFit:
    """L(N, D) = E + A/N^alpha + B/D^beta, with the compute-optimal exponents it implies under C ∝ N D:
    N* ∝ C^(beta/(alpha+beta)), D* ∝ C^(alpha/(alpha+beta))."""

    ok: bool
    message: str
    family: str | None = None
    E: Interval | None = None
    A: Interval | None = None
    B: Interval | None = None
    alpha: Interval | None = None
    beta: Interval | None = None
    N_exponent: Interval | None = None
    D_exponent: Interval | None = None
    n_points: int = 0
    n_runs: int = 0
    diagnostics: FitDiagnostics | None = None
    residuals: list[dict[str, float]] = field(default_factory=list)
    u0: float = 0.0
    v0: float = 0.0
    theta: np.ndarray | None = field(default=None, repr=False)
    boot_theta: np.ndarray | None = field(default=None, repr=False)

    def predict(self, N: Any, D: Any) -> np.ndarray:
        u = np.log(np.asarray(N, float)) - self.u0
        v = np.log(np.asarray(D, float)) - self.v0
        u, v = np.broadcast_arrays(np.atleast_1d(u), np.atleast_1d(v))
        return np.exp(_ParametricModel().pred_jac(self.theta[None, :], (u.ravel(), v.ravel()))[0][0]).reshape(u.shape)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "ok", "message", "family", "E", "A", "B", "alpha", "beta", "N_exponent", "D_exponent",
            "n_points", "n_runs", "diagnostics", "residuals")}
        d["law"] = "L(N, D) = E + A / N^alpha + B / D^beta"
        return jsonable(d)


def _parametric_params(theta: np.ndarray, u0: float, v0: float) -> np.ndarray:
    """Internal (a', b', e, alpha, beta) -> raw (E, A, B, alpha, beta, N_exp, D_exp)."""
    t = np.atleast_2d(theta)
    al, be = t[:, 3], t[:, 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        a_n = be / (al + be)
    return np.stack([np.exp(t[:, 2]), np.exp(t[:, 0] + al * u0), np.exp(t[:, 1] + be * v0), al, be, a_n, 1 - a_n],
                    axis=1)


def _parametric_starts(y: np.ndarray) -> np.ndarray:
    lmin = float(np.exp(y.min()))
    lmed = float(np.exp(np.median(y)))
    es = np.log(lmin * np.array([0.2, 0.5, 0.8, 0.95]))
    abs_ = np.log(lmed) + np.log([0.02, 0.1, 0.3, 1.0, 3.0])
    exps = np.array([0.1, 0.25, 0.45, 0.8, 1.3])
    return np.array([(a, b, e, al, be) for a, b, e, al, be in itertools.product(abs_, abs_, es, exps, exps)])


def fit_parametric(
    N: Sequence[float],
    D: Sequence[float],
    loss: Sequence[float],
    *,
    clusters: Sequence[Any] | None = None,
    weights: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    level: float = LEVEL,
    delta: float = DELTA,
    n_polish: int = 10,
    min_points: int = 8,
    family: str | None = None,
) -> ParametricFit:
    """Chinchilla approach 3 with the replication paper's corrections (tight tolerances, grid of
    starts, convergence reported); bootstrap over runs (``clusters``)."""
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    loss = np.asarray(loss, float)
    good = np.isfinite(N) & np.isfinite(D) & np.isfinite(loss) & (N > 0) & (D > 0) & (loss > 0)
    N, D, loss = N[good], D[good], loss[good]
    clusters = np.arange(N.size) if clusters is None else np.asarray(clusters)[good]
    w = np.ones(N.size) if weights is None else np.asarray(weights, float)[good]
    n_runs = int(np.unique(clusters).size)
    if N.size < min_points or np.unique(np.round(np.log(N), 4)).size < 2 or np.unique(np.round(np.log(D), 4)).size < 2:
        return ParametricFit(False, f"need >= {min_points} points spanning several N and D for 5 parameters "
                                    f"(got {N.size} points)", family=family, n_points=int(N.size), n_runs=n_runs)
    u0, v0 = float(np.mean(np.log(N))), float(np.mean(np.log(D)))
    u, v, y = np.log(N) - u0, np.log(D) - v0, np.log(loss)
    model = _ParametricModel()
    theta, info = _multistart(model, (u, v), y, w, _parametric_starts(y), delta, n_polish)
    pred = model.pred_jac(theta[None, :], (u, v))[0][0]
    diag = _diagnostics(info, y, pred)
    boot = None
    if n_boot and n_boot > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        Wb = bootstrap_weights(rng, clusters, n_boot) * w[None, :]
        th, Fb, cv = _batched_gn(model, np.repeat(theta[None, :], n_boot, 0), (u, v), y, Wb, delta)
        ok = cv & np.isfinite(Fb)
        th[~ok] = np.nan
        boot = th
        diag.n_boot, diag.n_boot_ok = int(n_boot), int(ok.sum())
    raw = _parametric_params(theta, u0, v0)[0]
    braw = _parametric_params(boot, u0, v0) if boot is not None else None
    ints = [_interval(raw[k], None if braw is None else braw[:, k], level) for k in range(7)]
    resid = [dict(N=float(n), D=float(d), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p))
             for n, d, l, p, yy in zip(N, D, loss, pred, y)]
    msg = "ok" if diag.converged else "optimizer did not report convergence"
    if diag.at_bound:
        msg += f"; parameters at their bounds: {', '.join(diag.at_bound)}"
    return ParametricFit(True, msg, family=family, E=ints[0], A=ints[1], B=ints[2], alpha=ints[3], beta=ints[4],
                         N_exponent=ints[5], D_exponent=ints[6], n_points=int(N.size), n_runs=n_runs,
                         diagnostics=diag, residuals=resid, u0=u0, v0=v0, theta=theta, boot_theta=boot)


# --------------------------------------------------------------------------------------- isoflop
@dataclass
class PowerLaw:
    """y = coef * x^exponent, fitted by least squares in log-log space."""

    coef: Interval
    exponent: Interval
    n_points: int
    r2_log: float

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(coef, exponent, r2) of y = coef x^exponent, OLS in log-log."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    k, c = np.polyfit(lx, ly, 1)
    rmse, r2 = _gof(ly, k * lx + c)
    return float(np.exp(c)), float(k), r2


@dataclass
class IsoFlopBudget:
    budget: float
    n_points: int
    n_sizes: int
    N_star: Interval | None
    D_star: float | None
    L_star: Interval | None
    curvature: float | None
    edge: bool
    trusted: bool
    note: str
    N: list[float] = field(default_factory=list)
    D: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    coeffs: list[float] = field(default_factory=list)  # parabola c0 + c1 x + c2 x^2, x = log N - xc
    xc: float = 0.0
    C_star: dict[str, float] = field(default_factory=dict)  # FLOPs at the optimum, per convention

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


@dataclass
class IsoFlopFit:
    """Chinchilla approach 2. Budgets whose optimum lies at (or beyond) the edge of the sizes tried are
    kept in the table but flagged and left out of the power laws."""

    ok: bool
    message: str
    family: str | None = None
    budgets: list[IsoFlopBudget] = field(default_factory=list)
    N_opt: PowerLaw | None = None
    D_opt: PowerLaw | None = None
    n_trusted: int = 0
    n_boot: int = 0
    boot_L_star: np.ndarray | None = field(default=None, repr=False)  # (n_boot, n_budgets)

    def minima(self) -> tuple[np.ndarray, np.ndarray]:
        """(budget, L*) of the trusted budgets, e.g. to fit a frontier on IsoFLOP minima."""
        bs = [b for b in self.budgets if b.trusted and b.L_star is not None]
        return np.array([b.budget for b in bs]), np.array([b.L_star.estimate for b in bs])

    def to_dict(self) -> dict[str, Any]:
        return jsonable({k: getattr(self, k) for k in (
            "ok", "message", "family", "budgets", "N_opt", "D_opt", "n_trusted", "n_boot")})


def _wquad(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted quadratic fits y ≈ c0 + c1 x + c2 x^2 for each row of W -> (B, 3)."""
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    XtW = X.T[None, :, :] * W[:, None, :]
    A = XtW @ X
    b = XtW @ y
    A = A + 1e-12 * np.eye(3)
    with np.errstate(all="ignore"):
        out = np.full((W.shape[0], 3), np.nan)
        ok = (W > 0).sum(axis=1) >= 3
        # a replicate needs 3 distinct sizes for a parabola
        xs = np.where(W > 0, x[None, :], np.nan)
        ok &= (np.nanmax(xs, axis=1) - np.nanmin(xs, axis=1)) > 0
        if ok.any():
            out[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
    return out


def _wild_quad(x: np.ndarray, y: np.ndarray, coef: np.ndarray, se: np.ndarray | None, rng: np.random.Generator,
               n_boot: int) -> np.ndarray:
    """Parabola coefficients for ``n_boot`` wild-bootstrap replicates (Rademacher signs)."""
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    P = np.linalg.pinv(X)  # (3, n)
    h = np.clip(np.einsum("ij,ji->i", X, P), 0, 0.999)
    r = (y - X @ coef) / np.sqrt(1 - h)
    scale = np.abs(r) if se is None else np.maximum(np.abs(r), se)
    v = rng.choice(np.array([-1.0, 1.0]), size=(n_boot, x.size))
    Ys = (X @ coef)[None, :] + v * scale[None, :]
    return Ys @ P.T


def fit_isoflop(
    budget: Sequence[float],
    N: Sequence[float],
    D: Sequence[float],
    loss: Sequence[float],
    *,
    clusters: Sequence[Any] | None = None,
    C: dict[str, Sequence[float]] | None = None,
    se: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    level: float = LEVEL,
    family: str | None = None,
    bootstrap: str = "wild",
) -> IsoFlopFit:
    """Per budget: parabola of loss in log N, optimum N*, D* (read off the budget's own N-D relation,
    so any FLOPs convention works), L*. Then N*(C), D*(C) power laws over trusted budgets. Bootstrap
    resamples runs within each budget, so every replicate keeps the IsoFLOP design.

    ``C`` maps FLOPs-convention names to per-run FLOPs; the FLOPs at each optimum are then read off the
    budget's own N-C relation (a nominal budget in one convention is a slightly different FLOP count in
    another).

    Bootstrap: ``"wild"`` (default) keeps every run and perturbs each loss by its leverage-corrected
    parabola residual times a random sign (floored by its MC standard error ``se``); ``"runs"`` resamples
    runs within the budget. With the usual 5-8 sizes per budget, resampling runs leaves fewer than 3
    distinct sizes in a sizeable share of replicates and the parabola is undefined there, so the wild
    bootstrap is the default for IsoFLOP (as Porian et al. perturb losses rather than drop runs)."""
    budget = budget_keys(budget)
    N, D, loss = (np.asarray(a, float) for a in (N, D, loss))
    good = np.isfinite(budget) & np.isfinite(N) & np.isfinite(D) & np.isfinite(loss) & (N > 0) & (D > 0)
    Cs = {k: np.asarray(v, float)[good] for k, v in (C or {}).items()}
    se = None if se is None else np.nan_to_num(np.asarray(se, float)[good])
    budget, N, D, loss = budget[good], N[good], D[good], loss[good]
    clusters = np.arange(N.size) if clusters is None else np.asarray(clusters)[good]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ub = np.unique(budget)
    out: list[IsoFlopBudget] = []
    boot_logN = np.full((max(n_boot, 0), ub.size), np.nan)
    boot_logD = np.full((max(n_boot, 0), ub.size), np.nan)
    boot_L = np.full((max(n_boot, 0), ub.size), np.nan)
    for j, c in enumerate(ub):
        m = budget == c
        n_sizes = int(np.unique(np.round(np.log(N[m]), 6)).size)
        if n_sizes < 3:
            out.append(IsoFlopBudget(float(c), int(m.sum()), n_sizes, None, None, None, None, False, False,
                                     "fewer than 3 model sizes: no parabola", N=N[m].tolist(), D=D[m].tolist(),
                                     loss=loss[m].tolist()))
            continue
        xc = float(np.mean(np.log(N[m])))
        x = np.log(N[m]) - xc
        yy = loss[m]
        coef = _wquad(x, yy, np.ones((1, x.size)))[0]
        kd, cd = np.polyfit(x, np.log(D[m]), 1)
        c2 = float(coef[2])
        note = ""
        if not c2 > 0:
            out.append(IsoFlopBudget(float(c), int(m.sum()), n_sizes, None, None, None, c2, True, False,
                                     "loss is not convex in log N here: no interior optimum", N=N[m].tolist(),
                                     D=D[m].tolist(), loss=yy.tolist(), coeffs=coef.tolist(), xc=xc))
            continue
        xs = -coef[1] / (2 * c2)
        ls = coef[0] - coef[1] ** 2 / (4 * c2)
        i_min = int(np.argmin(yy))
        edge = bool(xs <= x.min() or xs >= x.max() or x[i_min] in (x.min(), x.max()))
        if edge:
            note = "optimum at the edge of the sizes tried: extend the grid"
        bN = bL = None
        if n_boot > 0:
            if bootstrap == "runs":
                cb = _wquad(x, yy, bootstrap_weights(rng, clusters[m], n_boot))
            else:
                cb = _wild_quad(x, yy, coef, None if se is None else se[m], rng, n_boot)
            with np.errstate(all="ignore"):
                valid = cb[:, 2] > 0
                xsb = np.where(valid, -cb[:, 1] / (2 * cb[:, 2]), np.nan)
                lsb = np.where(valid, cb[:, 0] - cb[:, 1] ** 2 / (4 * cb[:, 2]), np.nan)
            # an optimum extrapolated far outside the sizes tried is not an estimate; drop it
            far = (xsb < x.min() - 1.0) | (xsb > x.max() + 1.0)
            xsb[far] = np.nan
            lsb[far] = np.nan
            bN, bL = np.exp(xsb + xc), lsb
            boot_logN[:, j] = xsb + xc
            boot_logD[:, j] = kd * xsb + cd
            boot_L[:, j] = lsb
        c_star = {}
        for name, cv in Cs.items():
            ok = np.isfinite(cv[m]) & (cv[m] > 0)
            if ok.sum() >= 2:
                kc, cc = np.polyfit(x[ok], np.log(cv[m][ok]), 1)
                c_star[name] = float(math.exp(kc * xs + cc))
        out.append(IsoFlopBudget(
            float(c), int(m.sum()), n_sizes, _interval(math.exp(xs + xc), bN, level),
            float(math.exp(kd * xs + cd)), _interval(ls, bL, level), c2, edge, not edge, note,
            N=N[m].tolist(), D=D[m].tolist(), loss=yy.tolist(), coeffs=coef.tolist(), xc=xc, C_star=c_star))
    trusted = np.array([b.trusted for b in out]) if out else np.zeros(0, bool)
    n_tr = int(trusted.sum())
    fit = IsoFlopFit(n_tr >= 2, "", family=family, budgets=out, n_trusted=n_tr, n_boot=int(max(n_boot, 0)),
                     boot_L_star=boot_L if n_boot > 0 else None)
    if n_tr < 2:
        fit.message = (f"{n_tr} budget(s) with a trusted interior optimum; need >= 2 for N*(C), D*(C) "
                       f"(>= 3 to judge the fit)")
        return fit
    lc = np.log(ub[trusted])
    lN = np.log([b.N_star.estimate for b, t in zip(out, trusted) if t])
    lD = np.log([b.D_star for b, t in zip(out, trusted) if t])
    laws = []
    for ly, bl in ((lN, boot_logN), (lD, boot_logD)):
        k, c0 = np.polyfit(lc, ly, 1)
        _, r2 = _gof(ly, k * lc + c0)
        ks = cs = None
        if n_boot > 0:
            Y = bl[:, trusted]
            M = np.isfinite(Y)
            cnt = M.sum(axis=1)
            with np.errstate(all="ignore"):
                mx = np.where(M, lc[None, :], 0).sum(1) / cnt
                my = np.where(M, Y, 0).sum(1) / cnt
                dx = np.where(M, lc[None, :] - mx[:, None], 0)
                ks = (dx * np.where(M, Y - my[:, None], 0)).sum(1) / (dx**2).sum(1)
                cs = np.exp(my - ks * mx)
            bad = cnt < 2
            ks[bad] = np.nan
            cs[bad] = np.nan
        laws.append(PowerLaw(_interval(math.exp(c0), cs, level), _interval(k, ks, level), int(lc.size), r2))
    fit.N_opt, fit.D_opt = laws
    fit.message = "ok" if n_tr >= 3 else "only 2 trusted budgets: power laws are exact lines, judge with care"
    return fit


def fit_frontier_isoflop(
    iso: IsoFlopFit,
    convention: str | None = None,
    *,
    level: float = LEVEL,
    delta: float = DELTA,
    n_polish: int = 5,
    min_points: int = 4,
) -> FrontierFit:
    """L(C) fitted to the IsoFLOP minima L*(C*) of the trusted budgets (approach 2's frontier).

    Each minimum is a parabola vertex, so it interpolates between the sizes tried and is far less
    sensitive to which runs a bootstrap replicate draws than the raw lower envelope. The bootstrap
    reuses the IsoFLOP replicates (runs resampled within budgets): each replicate's minima are refitted,
    at the point estimate's C* (the optimum's FLOPs barely move within a budget)."""
    base = dict(family=iso.family, convention=convention, method="isoflop")
    idx = [j for j, b in enumerate(iso.budgets) if b.trusted and b.L_star is not None
           and (convention is None or convention in b.C_star)]
    if len(idx) < min_points:
        return FrontierFit(False, f"{len(idx)} trusted IsoFLOP minima (need {min_points})", n_points=len(iso.budgets),
                           n_fit_points=len(idx), **base)
    Cst = np.array([iso.budgets[j].C_star[convention] if convention else iso.budgets[j].budget for j in idx])
    Ls = np.array([iso.budgets[j].L_star.estimate for j in idx])
    if np.any(Ls <= 0):
        return FrontierFit(False, "non-positive IsoFLOP minimum", n_points=len(iso.budgets), **base)
    x0 = float(np.mean(np.log(Cst)))
    x, y = np.log(Cst) - x0, np.log(Ls)
    model = _FrontierModel()
    w = np.ones(x.size)
    theta, info = _multistart(model, (x,), y, w, _frontier_starts(y), delta, n_polish)
    pred = model.pred_jac(theta[None, :], (x,))[0][0]
    diag = _diagnostics(info, y, pred)
    boot = None
    if iso.boot_L_star is not None and iso.boot_L_star.shape[0] > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            Yb = np.log(iso.boot_L_star[:, idx])
        Wb = np.isfinite(Yb).astype(float)
        Yb = np.where(np.isfinite(Yb), Yb, 0.0)
        nb = Yb.shape[0]
        th, Fb, cv = _batched_gn(model, np.repeat(theta[None, :], nb, 0), (x,), Yb, Wb, delta)
        ok = cv & np.isfinite(Fb) & (Wb.sum(axis=1) >= 3)
        th[~ok] = np.nan
        boot = th
        diag.n_boot, diag.n_boot_ok = int(nb), int(ok.sum())
    raw = _frontier_params(theta, x0)[0]
    braw = _frontier_params(boot, x0) if boot is not None else None
    ints = [_interval(raw[k], None if braw is None else braw[:, k], level) for k in range(3)]
    resid = [dict(C=float(c), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p), on_frontier=True)
             for c, l, p, yy in zip(Cst, Ls, pred, y)]
    return FrontierFit(
        True, "ok" if diag.converged else "optimizer did not report convergence", E=ints[0], A=ints[1],
        alpha=ints[2], n_points=len(iso.budgets), n_fit_points=len(idx), C_range=(float(Cst.min()), float(Cst.max())),
        loss_range=(float(Ls.min()), float(Ls.max())), diagnostics=diag, residuals=resid, x0=x0, theta=theta,
        boot_theta=boot, **base)


# ----------------------------------------------------------------------------------- multiplier
@dataclass
class MultiplierCurve:
    """FLOPs the baseline needs to reach a loss / FLOPs the other family needs (>1: the other family
    is cheaper). ``at`` is the headline loss level (the baseline's best observed loss)."""

    loss_levels: list[float]
    estimate: list[float]
    low: list[float | None]
    high: list[float | None]
    at_loss: float
    value: Interval
    extrapolated: list[str]
    n_boot_ok: int
    level: float = LEVEL

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def efficiency_multiplier(
    base: FrontierFit, other: FrontierFit, at_loss: float, loss_levels: Sequence[float] | None = None,
    level: float = LEVEL,
) -> MultiplierCurve:
    """Invert both fitted frontiers at each loss level; CI from pairing independent bootstrap
    replicates of the two families (the families were trained independently)."""
    if loss_levels is None:
        loss_levels = [at_loss]
    levels = np.concatenate([[at_loss], np.asarray(loss_levels, float)])
    with np.errstate(all="ignore"):
        est = base.invert(levels) / other.invert(levels)
    sb, so = base.invert_samples(levels), other.invert_samples(levels)
    n = min(len(sb), len(so))
    lows, highs, n_ok = [], [], 0
    if n >= 2:
        with np.errstate(all="ignore"):
            R = sb[:n] / so[:n]
        rows_ok = ~np.isnan(R).all(axis=1)
        n_ok = int(rows_ok.sum())
        for k in range(levels.size):
            lo, hi = percentile_ci(R[:, k], level)
            lows.append(lo)
            highs.append(hi)
    else:
        lows = highs = [None] * levels.size
    extrap = []
    for fit in (base, other):
        if fit.loss_range and not (fit.loss_range[0] <= at_loss <= fit.loss_range[1]):
            extrap.append(f"{fit.family or 'family'}: loss {at_loss:.4g} outside its observed range "
                          f"[{fit.loss_range[0]:.4g}, {fit.loss_range[1]:.4g}] (extrapolated)")
    return MultiplierCurve(
        loss_levels=levels[1:].tolist(), estimate=est[1:].tolist(), low=lows[1:], high=highs[1:],
        at_loss=float(at_loss), value=Interval(float(est[0]), lows[0], highs[0], level), extrapolated=extrap,
        n_boot_ok=n_ok, level=level)


# ------------------------------------------------------------------------------------- backtests
@dataclass
class Backtest:
    """Fit on the smaller budgets, predict the largest: the honest test of a law used to extrapolate."""

    law: str
    ok: bool
    message: str
    held_out_budget: float | None = None
    n_train: int = 0
    n_test: int = 0
    predicted: float | None = None
    observed: float | None = None
    error_nats: float | None = None
    rel_error_pct: float | None = None
    rmse_log_test: float | None = None
    family: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def budget_keys(budget: Sequence[float]) -> np.ndarray:
    """Budgets rounded to 6 significant digits: the same nominal budget recomputed in floating point
    (6*N*D) must land in one IsoFLOP group."""
    b = np.asarray(budget, float)
    with np.errstate(all="ignore"):
        return np.array([float(f"{x:.6g}") if np.isfinite(x) else np.nan for x in b])


def _split_largest(budget: np.ndarray) -> tuple[np.ndarray, float] | None:
    budget = budget_keys(budget)
    ub = np.unique(budget[np.isfinite(budget)])
    if ub.size < 3:
        return None
    return budget < ub[-1], float(ub[-1])


def backtest_frontier(
    C: Sequence[float], loss: Sequence[float], budget: Sequence[float], *, select: str = "budget_min",
    family: str | None = None,
) -> Backtest:
    """Predict the best loss reached at the largest budget from a frontier fitted on the rest (by default
    on the per-budget minima, as the primary frontier)."""
    C, loss, budget = (np.asarray(a, float) for a in (C, loss, budget))
    sp = _split_largest(budget)
    if sp is None:
        return Backtest("frontier", False, "need >= 3 budgets to hold one out", family=family)
    train, held = sp
    budget = budget_keys(budget)
    fit = fit_frontier(C[train], loss[train], select=select, budget=budget[train], n_boot=0, min_points=3)
    if not fit.ok:
        return Backtest("frontier", False, f"fit on smaller budgets failed: {fit.message}", held, int(train.sum()),
                        int((~train).sum()), family=family)
    test = ~train
    i = np.argmin(loss[test])
    obs, c = float(loss[test][i]), float(C[test][i])
    pred = float(fit.predict([c])[0])
    return Backtest("frontier", True, "ok", held, int(train.sum()), int(test.sum()), pred, obs, pred - obs,
                    100 * (pred - obs) / obs, float(abs(np.log(pred / obs))), family=family)


def backtest_parametric(
    N: Sequence[float], D: Sequence[float], loss: Sequence[float], budget: Sequence[float], *,
    family: str | None = None,
) -> Backtest:
    """Predict every run of the largest budget from L(N, D) fitted on the rest; headline = best run."""
    N, D, loss, budget = (np.asarray(a, float) for a in (N, D, loss, budget))
    sp = _split_largest(budget)
    if sp is None:
        return Backtest("parametric", False, "need >= 3 budgets to hold one out", family=family)
    train, held = sp
    budget = budget_keys(budget)
    fit = fit_parametric(N[train], D[train], loss[train], n_boot=0, n_polish=8)
    if not fit.ok:
        return Backtest("parametric", False, f"fit on smaller budgets failed: {fit.message}", held,
                        int(train.sum()), int((~train).sum()), family=family)
    test = ~train
    pred = fit.predict(N[test], D[test])
    i = int(np.argmin(loss[test]))
    obs = float(loss[test][i])
    rm = float(np.sqrt(np.mean(np.log(pred / loss[test]) ** 2)))
    return Backtest("parametric", True, "ok", held, int(train.sum()), int(test.sum()), float(pred[i]), obs,
                    float(pred[i] - obs), float(100 * (pred[i] - obs) / obs), rm, family=family)
