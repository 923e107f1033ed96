"""IsoFLOP profiles: a parabola in log N per budget, its optimum, and power laws through the optima."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..bootstrap import LEVEL, bootstrap_weights
from ..util import jsonable
from .core import DELTA, FrontierModel, Interval, batched_gn, budget_keys, diagnose, goodness_of_fit, interval, multistart
from .frontier import FrontierFit, frontier_params, frontier_starts


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
    rmse, r2 = goodness_of_fit(ly, k * lx + c)
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
        b, draws = _one_budget(float(c), N[m], D[m], loss[m], clusters[m], None if se is None else se[m],
                               {k: v[m] for k, v in Cs.items()}, n_boot, bootstrap, rng, level)
        out.append(b)
        if draws is not None:
            boot_logN[:, j], boot_logD[:, j], boot_L[:, j] = draws
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
    laws = [_optimum_law(lc, ly, bl[:, trusted] if n_boot > 0 else None, level)
            for ly, bl in ((lN, boot_logN), (lD, boot_logD))]
    fit.N_opt, fit.D_opt = laws
    fit.message = "ok" if n_tr >= 3 else "only 2 trusted budgets: power laws are exact lines, judge with care"
    return fit



def _one_budget(c: float, N, D, loss, clusters, se, Cs: dict, n_boot: int, bootstrap: str, rng, level: float):
    """One budget's parabola in log N, its optimum and (with ``n_boot``) the optimum's replicates.
    -> (IsoFlopBudget, (log N*, log D*, L*) per replicate, or None when there is no parabola)."""
    n_sizes = int(np.unique(np.round(np.log(N), 6)).size)
    if n_sizes < 3:
        return IsoFlopBudget(c, int(N.size), n_sizes, None, None, None, None, False, False,
                             "fewer than 3 model sizes: no parabola", N=N.tolist(), D=D.tolist(),
                             loss=loss.tolist()), None
    xc = float(np.mean(np.log(N)))
    x = np.log(N) - xc
    coef = _wquad(x, loss, np.ones((1, x.size)))[0]
    kd, cd = np.polyfit(x, np.log(D), 1)
    c2 = float(coef[2])
    if not c2 > 0:
        return IsoFlopBudget(c, int(N.size), n_sizes, None, None, None, c2, True, False,
                             "loss is not convex in log N here: no interior optimum", N=N.tolist(),
                             D=D.tolist(), loss=loss.tolist(), coeffs=coef.tolist(), xc=xc), None
    xs = -coef[1] / (2 * c2)
    ls = coef[0] - coef[1] ** 2 / (4 * c2)
    i_min = int(np.argmin(loss))
    edge = bool(xs <= x.min() or xs >= x.max() or x[i_min] in (x.min(), x.max()))
    note = "optimum at the edge of the sizes tried: extend the grid" if edge else ""
    bN = bL = draws = None
    if n_boot > 0:
        if bootstrap == "runs":
            cb = _wquad(x, loss, bootstrap_weights(rng, clusters, n_boot))
        else:
            cb = _wild_quad(x, loss, coef, se, rng, n_boot)
        with np.errstate(all="ignore"):
            valid = cb[:, 2] > 0
            xsb = np.where(valid, -cb[:, 1] / (2 * cb[:, 2]), np.nan)
            lsb = np.where(valid, cb[:, 0] - cb[:, 1] ** 2 / (4 * cb[:, 2]), np.nan)
        # an optimum extrapolated far outside the sizes tried is not an estimate; drop it
        far = (xsb < x.min() - 1.0) | (xsb > x.max() + 1.0)
        xsb[far] = np.nan
        lsb[far] = np.nan
        bN, bL = np.exp(xsb + xc), lsb
        draws = (xsb + xc, kd * xsb + cd, lsb)
    c_star = {}
    for name, cv in Cs.items():
        ok = np.isfinite(cv) & (cv > 0)
        if ok.sum() >= 2:
            kc, cc = np.polyfit(x[ok], np.log(cv[ok]), 1)
            c_star[name] = float(math.exp(kc * xs + cc))
    return IsoFlopBudget(
        c, int(N.size), n_sizes, interval(math.exp(xs + xc), bN, level),
        float(math.exp(kd * xs + cd)), interval(ls, bL, level), c2, edge, not edge, note,
        N=N.tolist(), D=D.tolist(), loss=loss.tolist(), coeffs=coef.tolist(), xc=xc, C_star=c_star), draws


def _optimum_law(lc: np.ndarray, ly: np.ndarray, Y: np.ndarray | None, level: float) -> PowerLaw:
    """log y* = k log C + c through the trusted budgets' optima, with the slope's and prefactor's replicates
    from each replicate's optima (``Y``: replicates x trusted budgets, NaN where a replicate has none)."""
    k, c0 = np.polyfit(lc, ly, 1)
    _, r2 = goodness_of_fit(ly, k * lc + c0)
    ks = cs = None
    if Y is not None:
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
    return PowerLaw(interval(math.exp(c0), cs, level), interval(k, ks, level), int(lc.size), r2)


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
    model = FrontierModel()
    w = np.ones(x.size)
    theta, info = multistart(model, (x,), y, w, frontier_starts(y), delta, n_polish)
    pred = model.pred_jac(theta[None, :], (x,))[0][0]
    diag = diagnose(info, y, pred)
    boot = None
    if iso.boot_L_star is not None and iso.boot_L_star.shape[0] > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            Yb = np.log(iso.boot_L_star[:, idx])
        Wb = np.isfinite(Yb).astype(float)
        Yb = np.where(np.isfinite(Yb), Yb, 0.0)
        nb = Yb.shape[0]
        th, Fb, cv = batched_gn(model, np.repeat(theta[None, :], nb, 0), (x,), Yb, Wb, delta)
        ok = cv & np.isfinite(Fb) & (Wb.sum(axis=1) >= 3)
        th[~ok] = np.nan
        boot = th
        diag.n_boot, diag.n_boot_ok = int(nb), int(ok.sum())
    raw = frontier_params(theta, x0)[0]
    braw = frontier_params(boot, x0) if boot is not None else None
    ints = [interval(raw[k], None if braw is None else braw[:, k], level) for k in range(3)]
    resid = [dict(C=float(c), loss=float(l), pred=float(np.exp(p)), resid_log=float(yy - p), on_frontier=True)
             for c, l, p, yy in zip(Cst, Ls, pred, y)]
    return FrontierFit(
        True, "ok" if diag.converged else "optimizer did not report convergence", E=ints[0], A=ints[1],
        alpha=ints[2], n_points=len(iso.budgets), n_fit_points=len(idx), C_range=(float(Cst.min()), float(Cst.max())),
        loss_range=(float(Ls.min()), float(Ls.max())), diagnostics=diag, residuals=resid, x0=x0, theta=theta,
        boot_theta=boot, **base)


