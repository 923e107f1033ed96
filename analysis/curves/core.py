"""The shared machinery of every fit: intervals, Huber loss, weights, batched multi-start optimisation,
convergence diagnostics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from ..bootstrap import LEVEL, bootstrap_weights, percentile_ci
from ..util import jsonable

DELTA = 1e-3


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


OUTLIER_K = 3.0  # robust standard deviations beyond which a residual is flagged (analysis.fit and the report)


def mad_outliers(resid: np.ndarray, k: float = OUTLIER_K, min_points: int = 5) -> np.ndarray:
    """Boolean mask of residuals more than ``k`` robust standard deviations (1.4826 x MAD) from their median:
    the outlier rule, one definition for `analysis.fit` and the study report (Epoch's refit drops points by a
    stated rule, never by eye). Fewer than ``min_points`` residuals, or MAD = 0: nothing is flagged."""
    r = np.asarray(resid, float)
    if r.size < min_points:
        return np.zeros(r.size, bool)
    dev = np.abs(r - np.median(r))
    mad = 1.4826 * np.median(dev)
    return dev > k * mad if mad > 0 else np.zeros(r.size, bool)


def interval(estimate: float, samples: np.ndarray | None, level: float) -> Interval:
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


def goodness_of_fit(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """RMSE of log-loss residuals and R^2 of log loss (what the fit minimises, so what it is judged on)."""
    r = y - pred
    rmse = float(np.sqrt(np.mean(r**2))) if r.size else math.nan
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    r2 = 1.0 - float(np.sum(r**2)) / ss_tot if ss_tot > 0 else math.nan
    return rmse, r2


# ------------------------------------------------------------------------------------- law models
class LawModel:
    """A law in log space with its Jacobian, batched over parameter vectors (B, p)."""

    names: tuple[str, ...] = ()
    lb: np.ndarray
    ub: np.ndarray

    def pred_jac(self, theta: np.ndarray, X: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FrontierModel(LawModel):
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


class ParametricModel(LawModel):
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


def _scipy_fun(model: LawModel, X, y, w, delta) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    wsum = max(float(w.sum()), 1e-300)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        pred, jac = model.pred_jac(theta[None, :], X)
        r = y - pred[0]
        f = float(np.sum(w * huber(r, delta))) / (delta * wsum)
        psi = np.clip(r, -delta, delta)
        g = -(w * psi) @ jac[0] / (delta * wsum)
        return f, g

    return fun


def batched_gn(
    model: LawModel,
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


def bootstrap_refits(model: LawModel, theta: np.ndarray, X: tuple[np.ndarray, ...], y: np.ndarray, w: np.ndarray,
                     clusters: np.ndarray, n_boot: int, seed: int | np.random.Generator, delta: float = DELTA,
                     strata: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Every bootstrap replicate (runs resampled with replacement, within ``strata`` if given) refitted from the
    point fit, all at once: (n_boot, p) parameters, NaN where a refit failed, and how many converged."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    Wb = bootstrap_weights(rng, clusters, n_boot, strata) * w[None, :]
    th, Fb, cv = batched_gn(model, np.repeat(theta[None, :], n_boot, 0), X, y, Wb, delta)
    ok = cv & np.isfinite(Fb)
    th[~ok] = np.nan
    return th, int(ok.sum())


def multistart(
    model: LawModel,
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
    th, Fp, cp = batched_gn(model, best.x[None, :], X, y, W, delta, max_iter=500, ftol=1e-14, xtol=1e-10)
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


def diagnose(info: dict[str, Any], y: np.ndarray, pred: np.ndarray) -> FitDiagnostics:
    rmse, r2 = goodness_of_fit(y, pred)
    return FitDiagnostics(rmse_log=rmse, r2_log=r2,
                          max_abs_resid_log=float(np.max(np.abs(y - pred))) if y.size else math.nan, **info)


def fit_status(diag: FitDiagnostics, n_points: int, n_params: int) -> str:
    """'ok' only for a fit a reader may trust; otherwise what is wrong with it: no convergence, parameters at
    their bounds, starts that ended in different optima, or as many parameters as points (R² = 1 then
    means nothing). One rule for every law, so no fit says 'ok' for a reason another would not."""
    problems = []
    if not diag.converged:
        problems.append("the optimizer did not report convergence")
    if diag.at_bound:
        problems.append(f"parameters at their bounds: {', '.join(diag.at_bound)}")
    if diag.n_starts > 1 and diag.n_starts_agree * 2 < diag.n_starts:
        problems.append(f"only {diag.n_starts_agree}/{diag.n_starts} starts reached the best optimum")
    if n_points <= n_params + 1:
        problems.append(f"{n_params} parameters on {n_points} points: over-parameterised, R² is not meaningful")
    return "ok" if not problems else "NOT reliable: " + "; ".join(problems)


def budget_keys(budget: Sequence[float]) -> np.ndarray:
    """Budgets rounded to 6 significant digits: the same nominal budget recomputed in floating point
    (6*N*D) must land in one IsoFLOP group."""
    b = np.asarray(budget, float)
    with np.errstate(all="ignore"):
        return np.array([float(f"{x:.6g}") if np.isfinite(x) else np.nan for x in b])
