"""Every scaling-law fit a study needs, run on the tidy table (frontiers per family x FLOPs convention,
IsoFLOP and parametric L(N, D) per family, backtests). Claims and figures read the result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import curves as F
from .util import CONVENTIONS, derive_rng, jsonable, normalise_convention
from .select import choose_eval_loops, collapse_seeds, family_points, final_points, run_schedules

FAMILIES = ("mdm", "loopmdm", "mdm_deeper")


@dataclass
class StudyFits:
    loops: int | None
    loops_note: str
    conventions: tuple[str, ...]
    frontier: dict[str, F.FrontierFit] = field(default_factory=dict)      # key "family|convention"
    frontier_alt: dict[str, F.FrontierFit] = field(default_factory=dict)  # the other frontier method
    parametric: dict[str, F.ParametricFit] = field(default_factory=dict)  # key family
    isoflop: dict[str, F.IsoFlopFit] = field(default_factory=dict)        # key family
    backtests: list[F.Backtest] = field(default_factory=list)
    phi: F.PhiFit | None = None  # the looped family's effective-parameter ratio against the plain law
    notes: list[str] = field(default_factory=list)
    n_boot: int = 0
    weighted: bool = False

    def get_frontier(self, family: str, convention: str) -> F.FrontierFit | None:
        return self.frontier.get(f"{family}|{convention}")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dict(
            eval_loops=self.loops, eval_loops_rule=self.loops_note, conventions=list(self.conventions),
            n_boot=self.n_boot, weighted_by_mc_se=self.weighted,
            frontier={k: v.to_dict() for k, v in self.frontier.items()},
            frontier_alt={k: v.to_dict() for k, v in self.frontier_alt.items()},
            parametric={k: v.to_dict() for k, v in self.parametric.items()},
            isoflop={k: v.to_dict() for k, v in self.isoflop.items()},
            backtests=[b.to_dict() for b in self.backtests], phi=self.phi.to_dict() if self.phi else None,
            notes=self.notes))


def _all_constant(sched: dict[str, str | None], runs: Sequence[str]) -> bool:
    """True when every run's LR schedule is known and constant (no decay, so intermediate evals are fair
    frontier points); warmup-then-constant counts as constant."""
    vals = [sched.get(r) for r in runs]
    return bool(vals) and all(v is not None and "const" in v for v in vals)


def _trajectory_points(df: pd.DataFrame, family: str, loops: int | None) -> pd.DataFrame:
    """Every fixed-loop eval point of a family's runs (looped runs at S=``loops``, others at their smallest
    S), the final ones included; points at 0 FLOPs are dropped by the fit."""
    return family_points(df, family, loops, final_only=False)


def _budget_column(d: pd.DataFrame, conventions: Sequence[str]) -> str:
    conv = d["budget_convention"].dropna()
    if not conv.empty:
        c = normalise_convention(str(conv.mode().iloc[0]))
        if c in d.columns:
            return c
    return conventions[0]


def fit_study(
    df: pd.DataFrame,
    *,
    conventions: Sequence[str] = CONVENTIONS,
    n_boot: int = 1000,
    seed: int = 0,
    loops: int | None = None,
    weighted: bool = False,
    n_col: str = "params_nonembedding",
    families: Sequence[str] = FAMILIES,
    frontier_method: str = "auto",
    extras: bool = True,
) -> StudyFits:
    """Fit what can be fitted; anything that cannot is recorded with the reason, never raised.

    Frontier per family x convention (``frontier``, used by claim 1), fitted to the points that *are*
    the frontier:

    * primary: the IsoFLOP minima (parabola vertices) when >= 4 budgets have a trusted interior optimum
      (``frontier_method='auto'``, needs >= 3 sizes per budget); otherwise the per-budget minima of the
      final points (the best run tried at each FLOPs budget); without budgets, the lower envelope of the
      final points;
    * robustness (``frontier_alt``): with a constant LR schedule every eval point along training is a
      legitimate (loss, FLOPs) observation, so the lower envelope of all eval points at or above the
      smallest final FLOPs ("trajectory envelope"); with a decaying schedule, the other of the two
      final-point methods above.

    ``extras=False`` fits only what claim 1 reads (IsoFLOP parabolas and the primary frontier): no robustness
    frontier, Chinchilla L(N, D), φ or backtests — for coverage studies that refit many synthetic studies.
    """
    conventions = tuple(normalise_convention(c) for c in conventions)
    if loops is None:
        loops, note = choose_eval_loops(df)
    else:
        note = f"S={loops} (set by the caller)"
    out = StudyFits(loops=loops, loops_note=note, conventions=conventions, n_boot=n_boot, weighted=weighted)
    if extras:
        out.phi = fit_phi_study(df, loops, n_boot=n_boot, seed=seed, n_col=n_col)
    sched = run_schedules(df)
    const_lr = {fam: _all_constant(sched, df.loc[df["family"] == fam, "run"].unique()) for fam in families}
    for fam in families:
        d = final_points(df, fam, loops)
        if d.empty:
            out.notes.append(f"family {fam}: no final evaluations")
            continue
        n_raw = len(d)
        d = collapse_seeds(d)
        if len(d) < n_raw:
            out.notes.append(f"family {fam}: {n_raw} runs averaged over training seeds into {len(d)} configs (each "
                             f"config's s.e. from its seed spread)")
        runs = d["run"].to_numpy()
        w = F.mc_weights(d["nll"].to_numpy(float), d["nll_se"].to_numpy(float)) if weighted else None
        N = d[n_col].to_numpy(float)
        D = d["tokens"].to_numpy(float)
        L = d["nll"].to_numpy(float)
        budget = d["budget_flops"].to_numpy(float)
        has_budget = bool(np.isfinite(budget).any())
        iso = None
        if has_budget:
            Cmap = {c: d[c].to_numpy(float) for c in conventions if c in d.columns}
            iso = F.fit_isoflop(budget, N, D, L, clusters=runs, C=Cmap, se=d["nll_se"].to_numpy(float), n_boot=n_boot,
                                seed=derive_rng(seed, "isoflop", fam), family=fam)
            out.isoflop[fam] = iso
        else:
            out.isoflop[fam] = F.IsoFlopFit(False, "no budget_flops: runs cannot be grouped into IsoFLOP budgets",
                                            family=fam)
        traj = _trajectory_points(df, fam, loops) if const_lr.get(fam) and extras else None
        for conv in conventions:
            if conv not in d.columns or d[conv].isna().all():
                out.notes.append(f"family {fam}: no {conv} column/values")
                continue
            rng_key = derive_rng(seed, "frontier", fam, conv)
            if has_budget:
                bm = F.fit_frontier(
                    d[conv].to_numpy(float), L, select="budget_min", budget=budget, clusters=runs, strata=budget,
                    weights=w, se=d["nll_se"].to_numpy(float) if "nll_se" in d else None, n_boot=n_boot,
                    seed=rng_key, family=fam, convention=conv, method="budget minima")
            else:
                bm = F.fit_frontier(
                    d[conv].to_numpy(float), L, select="envelope", clusters=runs, weights=w, n_boot=n_boot,
                    seed=rng_key, family=fam, convention=conv, method="envelope of final points")
            isf = F.fit_frontier_isoflop(iso, conv) if iso is not None else None
            use_iso = isf is not None and (frontier_method == "isoflop" or (frontier_method == "auto" and isf.ok))
            primary, other = (isf, bm) if use_iso else (bm, isf)
            out.frontier[f"{fam}|{conv}"] = primary
            alt = None
            if traj is not None and conv in traj.columns:
                t = traj[np.isfinite(traj[conv].to_numpy(float))]
                cmin = float(np.nanmin(d[conv].to_numpy(float)))
                t = t[t[conv].to_numpy(float) >= cmin * (1 - 1e-9)]
                tb = t["budget_flops"].to_numpy(float) if has_budget else None
                alt = F.fit_frontier(
                    t[conv].to_numpy(float), t["nll"].to_numpy(float), select="envelope",
                    clusters=t["run"].to_numpy(), strata=tb, n_boot=n_boot,
                    seed=derive_rng(seed, "frontier_traj", fam, conv), family=fam, convention=conv,
                    method="trajectory envelope")
            elif other is not None and extras:
                alt = other
            if alt is not None:
                out.frontier_alt[f"{fam}|{conv}"] = alt
        if not extras:
            continue
        if np.isfinite(N).sum() >= 8 and np.isfinite(D).sum() >= 8:
            out.parametric[fam] = F.fit_parametric(N, D, L, clusters=runs, weights=w, n_boot=n_boot,
                                                   seed=derive_rng(seed, "parametric", fam), family=fam)
        else:
            out.parametric[fam] = F.ParametricFit(False, f"needs {n_col} and tokens for >= 8 runs", family=fam,
                                                  n_points=int(len(d)))
        if has_budget:
            bcol = _budget_column(d, conventions)
            out.backtests.append(F.backtest_frontier(d[bcol].to_numpy(float), L, budget, family=fam))
            if out.parametric[fam].ok:
                out.backtests.append(F.backtest_parametric(N, D, L, budget, family=fam))
    return out


def loop_shape(d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(E[S], N_mid / N) per row, from the table's own columns: the per-loop training FLOPs per token under
    6·N_nonembed are 6·N_mid, and params_effective − params_nonembedding = (E[S] − 1)·N_mid (E[S] = 1 for a plain
    model)."""
    col = lambda c: pd.to_numeric(d[c], errors="coerce").to_numpy(float) if c in d else np.full(len(d), np.nan)  # noqa: E731
    mid = col("train_flops_per_token_per_loop_6N_nonembed") / 6.0
    n = col("params_nonembedding")
    extra = col("params_effective") - n
    with np.errstate(all="ignore"):
        k = np.where(extra > 0, 1.0 + extra / mid, 1.0)
        return k, mid / n


def fit_phi_study(df: pd.DataFrame, loops: int | None, *, n_boot: int, seed: int,
                  n_col: str = "params_nonembedding") -> F.PhiFit:
    """φ on one final point per run: same-size and deeper MDMs as the plain law, LoopMDM at the claims' S."""
    parts = [final_points(df, fam, loops if fam == "loopmdm" else None) for fam in FAMILIES]
    d = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else pd.DataFrame()
    if d.empty:
        return F.PhiFit(False, "no final evaluations")
    k, share = loop_shape(d)
    k = np.where(d["family"].to_numpy() == "loopmdm", k, 1.0)
    return F.fit_phi(d[n_col].to_numpy(float), d["tokens"].to_numpy(float), d["nll"].to_numpy(float), k,
                     clusters=d["run"].to_numpy(), strata=d["family"].to_numpy() == "loopmdm", mid_share=share,
                     n_boot=n_boot, seed=derive_rng(seed, "phi"))
