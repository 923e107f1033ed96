"""The compute frontier L(C) per family: per-budget minima (or the lower envelope) fitted with E + A·C^-α."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..bootstrap import LEVEL, bootstrap_weights
from ..util import jsonable
from .core import DELTA, FitDiagnostics, FrontierModel, Interval, LawModel, batched_gn, budget_keys, diagnose, fit_status, interval, multistart


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
            return FrontierModel().pred_jac(np.atleast_2d(theta), (np.atleast_1d(x),))[0]

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


def frontier_starts(y: np.ndarray) -> np.ndarray:
    lmin = float(np.exp(y.min()))
    lmed = float(np.exp(np.median(y)))
    es = np.log(lmin * np.array([0.05, 0.3, 0.6, 0.8, 0.9, 0.97]))
    as_ = np.log(lmed) + np.log([0.01, 0.05, 0.2, 0.5, 1.0, 2.0])
    als = np.array([0.03, 0.08, 0.15, 0.3, 0.5, 0.8])
    return np.array(list(itertools.product(as_, es, als)))


def frontier_params(theta: np.ndarray, x0: float) -> np.ndarray:
    """Internal (a', e, alpha) -> raw (E, A, alpha)."""
    theta = np.atleast_2d(theta)
    return np.stack([np.exp(theta[:, 1]), np.exp(theta[:, 0] + theta[:, 2] * x0), theta[:, 2]], axis=1)


class _PowerModel(LawModel):
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
    mask = _frontier_mask(sel, C, loss, bud)
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
    model, pmodel = FrontierModel(), _PowerModel()
    theta, info, E_fixed, notes = _point_fit(model, pmodel, x[mask], y[mask], w[mask], delta, n_polish, fixed_E_fallback)
    pred_all = model.pred_jac(theta[None, :], (x,))[0][0]
    diag = diagnose(info, y[mask], pred_all[mask])
    boot = None
    if n_boot and n_boot > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        point_se = None if se is None else np.asarray(se, float)[good]
        boot, n_ok, n_fixed = _bootstrap(model, pmodel, sel, rng, int(n_boot), x, y, C, loss, w, mask, pred_all,
                                         theta, E_fixed, fixed_E_fallback, clusters, strata, bud, point_se, delta)
        diag.n_boot, diag.n_boot_ok = int(n_boot), n_ok
        if not E_fixed and n_fixed:
            notes.append(f"{n_fixed}/{int(n_boot)} bootstrap replicates fell back to E = 0 (their 3-parameter fit "
                         f"did not converge or put E at its bound)")
    raw = frontier_params(theta, x0)[0]
    braw = frontier_params(boot, x0) if boot is not None else None
    ints = [interval(raw[k], None if braw is None else braw[:, k], level) for k in range(3)]
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
        True, fit_status(diag, n_fit, 2 if E_fixed else 3), E=ints[0], A=ints[1],
        alpha=ints[2], n_fit_points=n_fit, C_range=(float(C.min()), float(C.max())),
        loss_range=(float(loss.min()), float(loss.max())), diagnostics=diag, residuals=resid, x0=x0,
        E_fixed=E_fixed, notes=notes, theta=theta, boot_theta=boot, **base)



def _frontier_mask(sel: str, C: np.ndarray, loss: np.ndarray, bud: np.ndarray | None) -> np.ndarray:
    """Which points form the frontier under the selection rule (see `fit_frontier`)."""
    if sel == "budget_min":
        return budget_minima(loss, bud)
    if sel == "envelope":
        return lower_envelope(C, loss)
    return np.ones(C.size, bool)


def _point_fit(model, pmodel, x, y, w, delta: float, n_polish: int, fixed_E_fallback: bool):
    """The 3-parameter fit on the frontier points, falling back to E = 0 (a pure power law) when it does not
    converge or E runs to its bound. -> (theta, info, E_fixed, notes)."""
    theta, info = multistart(model, (x,), y, w, frontier_starts(y), delta, n_polish)
    notes: list[str] = []
    reason = None
    if not info["converged"]:
        reason = "the 3-parameter fit did not converge"
    elif "e" in info["at_bound"]:
        reason = "E ran to its lower bound (the points show no loss floor)"
    if reason and fixed_E_fallback:
        p_starts = np.array(list(itertools.product(
            float(np.median(y)) + np.log([0.5, 1.0, 2.0]), [0.03, 0.1, 0.3, 0.8])))
        th2, info2 = multistart(pmodel, (x,), y, w, p_starts, delta, min(n_polish, 4))
        theta, info = _pad_power(th2)[0], info2
        info["at_bound"] = [n for n in info["at_bound"] if n != "a"]
        notes.append(f"E fixed at 0 (pure power law L = A·C^-α): {reason}")
        return theta, info, True, notes
    return theta, info, False, notes


def _bootstrap(model, pmodel, sel, rng, nb, x, y, C, loss, w, mask, pred_all, theta, E_fixed, fixed_E_fallback,
               clusters, strata, bud, se, delta):
    """Replicates of the whole fit, the frontier re-selected in each (see `fit_frontier` for the two
    schemes). -> (parameters per replicate with NaN rows for failed ones, replicates ok, replicates at E = 0)."""
    Yfull = None
    if sel == "budget_min" and se is not None:
        sl = se / loss
        sl = np.where(np.isfinite(sl) & (sl > 0), sl, 0.0)
        r = np.where(mask, y - pred_all, 0.0)
        scale = np.sqrt(sl**2 + r**2)
        Yfull = y[None, :] + rng.standard_normal((nb, y.size)) * scale[None, :]
        Wb = _budget_minima_batched_y(Yfull, bud) * w[None, :]
    else:
        Wb = bootstrap_weights(rng, clusters, nb, strata) * w[None, :]
        if sel == "envelope":
            order = np.lexsort((loss, C))
            inc = np.zeros_like(Wb, dtype=bool)
            inc[:, order] = _envelope_batched(order, loss[order], Wb[:, order])
            Wb = Wb * inc
        elif sel == "budget_min":
            Wb = _budget_minima_batched(loss, bud, Wb) * w[None, :]
    npts = (Wb > 0).sum(axis=1)
    if Yfull is None:
        Xb, Yb, Wg = _gather_nonzero(Wb, x, y)  # each replicate only carries its own frontier points
    else:
        order = np.argsort(~(Wb > 0), axis=1, kind="stable")[:, : max(1, int(npts.max()))]
        Xb, Yb, Wg = x[order], np.take_along_axis(Yfull, order, 1), np.take_along_axis(Wb, order, 1)
    th2b, F2, cv2 = batched_gn(pmodel, np.repeat(_power_start(theta, x[mask], y[mask])[None, :], nb, 0),
                                (Xb,), Yb, Wg, delta)
    ok2 = (npts >= 2) & cv2 & np.isfinite(F2)
    if E_fixed:
        th, ok, n_fixed = _pad_power(th2b), ok2, int(ok2.sum())
    else:
        th3, F3, cv3 = batched_gn(model, np.repeat(theta[None, :], nb, 0), (Xb,), Yb, Wg, delta)
        ok3 = (npts >= 3) & cv3 & np.isfinite(F3) & (th3[:, 1] > model.lb[1] + 1e-6)
        use2 = ~ok3 & ok2 if fixed_E_fallback else np.zeros(nb, bool)
        th = np.where(use2[:, None], _pad_power(th2b), th3)
        ok = ok3 | use2
        n_fixed = int(use2.sum())
    th[~ok] = np.nan
    return th, int(ok.sum()), n_fixed

def _power_start(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Start for the E = 0 refits: the point fit's own (a', alpha) if it is a pure power law, else OLS."""
    if np.isneginf(theta[1]):
        return np.array([theta[0], theta[2]])
    k, c = np.polyfit(x, y, 1)
    return np.array([c, max(-k, 1e-3)])


