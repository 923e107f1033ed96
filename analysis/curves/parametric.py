"""Chinchilla-style L(N, D) = E + A/N^α + B/D^β."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..bootstrap import LEVEL
from ..util import jsonable
from .core import (DELTA, FitDiagnostics, Interval, ParametricModel, bootstrap_refits, diagnose, fit_status, interval,
                   multistart)


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
        return np.exp(ParametricModel().pred_jac(self.theta[None, :], (u.ravel(), v.ravel()))[0][0]).reshape(u.shape)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "ok", "message", "family", "E", "A", "B", "alpha", "beta", "N_exponent", "D_exponent",
            "n_points", "n_runs", "diagnostics", "residuals")}
        d["law"] = "L(N, D) = E + A / N^alpha + B / D^beta"
        return jsonable(d)


def parametric_params(theta: np.ndarray, u0: float, v0: float) -> np.ndarray:
    """Internal (a', b', e, alpha, beta) -> raw (E, A, B, alpha, beta, N_exp, D_exp)."""
    t = np.atleast_2d(theta)
    al, be = t[:, 3], t[:, 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        a_n = be / (al + be)
    return np.stack([np.exp(t[:, 2]), np.exp(t[:, 0] + al * u0), np.exp(t[:, 1] + be * v0), al, be, a_n, 1 - a_n],
                    axis=1)


def parametric_starts(y: np.ndarray) -> np.ndarray:
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
    model = ParametricModel()
    theta, info = multistart(model, (u, v), y, w, parametric_starts(y), delta, n_polish)
    pred = model.pred_jac(theta[None, :], (u, v))[0][0]
    diag = diagnose(info, y, pred)
    boot = None
    if n_boot and n_boot > 0:
        boot, n_ok = bootstrap_refits(model, theta, (u, v), y, w, clusters, n_boot, seed, delta)
        diag.n_boot, diag.n_boot_ok = int(n_boot), n_ok
    raw = parametric_params(theta, u0, v0)[0]
    braw = parametric_params(boot, u0, v0) if boot is not None else None
    ints = [interval(raw[k], None if braw is None else braw[:, k], level) for k in range(7)]
    resid = [dict(N=float(n), D=float(d), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p))
             for n, d, l, p, yy in zip(N, D, loss, pred, y)]
    msg = fit_status(diag, int(N.size), 5)
    return ParametricFit(True, msg, family=family, E=ints[0], A=ints[1], B=ints[2], alpha=ints[3], beta=ints[4],
                         N_exponent=ints[5], D_exponent=ints[6], n_points=int(N.size), n_runs=n_runs,
                         diagnostics=diag, residuals=resid, u0=u0, v0=v0, theta=theta, boot_theta=boot)


