"""Backtests: refit without the largest budget and predict it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..util import jsonable
from .core import budget_keys
from .frontier import fit_frontier
from .parametric import fit_parametric


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

