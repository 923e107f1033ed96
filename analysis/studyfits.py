"""Every scaling-law fit a study needs, run on the tidy table (frontiers per family x FLOPs convention,
IsoFLOP and parametric L(N, D) per family, backtests). Claims and figures read the result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import fits as F
from ._util import CONVENTIONS, derive_rng, jsonable, normalise_convention
from .select import choose_eval_loops, final_points

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
            backtests=[b.to_dict() for b in self.backtests], notes=self.notes))


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
) -> StudyFits:
    """Fit what can be fitted; anything that cannot is recorded with the reason, never raised.

    Frontier per family x convention: on the IsoFLOP minima when >= 4 budgets have a trusted interior
    optimum (``frontier_method='auto'``), else on the lower envelope of final points; the other one is
    kept in ``frontier_alt`` as a robustness check."""
    conventions = tuple(normalise_convention(c) for c in conventions)
    if loops is None:
        loops, note = choose_eval_loops(df)
    else:
        note = f"S={loops} (set by the caller)"
    out = StudyFits(loops=loops, loops_note=note, conventions=conventions, n_boot=n_boot, weighted=weighted)
    for fam in families:
        d = final_points(df, fam, loops)
        if d.empty:
            out.notes.append(f"family {fam}: no final evaluations")
            continue
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
        for conv in conventions:
            if conv not in d.columns or d[conv].isna().all():
                out.notes.append(f"family {fam}: no {conv} column/values")
                continue
            env = F.fit_frontier(
                d[conv].to_numpy(float), L, clusters=runs, strata=budget if has_budget else None, weights=w,
                n_boot=n_boot, seed=derive_rng(seed, "frontier", fam, conv), family=fam, convention=conv)
            isf = F.fit_frontier_isoflop(iso, conv) if iso is not None else None
            use_iso = frontier_method == "isoflop" or (frontier_method == "auto" and isf is not None and isf.ok)
            if use_iso and isf is not None:
                out.frontier[f"{fam}|{conv}"] = isf
                out.frontier_alt[f"{fam}|{conv}"] = env
            else:
                out.frontier[f"{fam}|{conv}"] = env
                if isf is not None:
                    out.frontier_alt[f"{fam}|{conv}"] = isf
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
