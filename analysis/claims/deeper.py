"""Claim 3: LoopMDM against the deeper MDM at equal per-step compute, paired by comparison group (interpolated
between two bracketing depths where no integer depth matches); its computation and its table of groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

import records

from .. import paired as PA
from ..bootstrap import group_draws, percentile_ci
from ..select import CORE_COLUMNS, choose_eval_loops, final_points, memberships, missing_columns
from ..util import derive_rng, fmt
from .common import ONE_SEED, Claim, Section, cell, ensure_columns, inconclusive, verdict_gt


DEEPER_RULE = ("ΔNLL = NLL(deeper MDM) − NLL(LoopMDM at S), final evals, paired by comparison group (and seed); "
               "where two deeper depths bracket LoopMDM's per-step FLOPs, the deeper NLL is interpolated between them "
               "(linearly in log per-step FLOPs) to equal compute; "
               "mean over groups with a 95% CI from each group's standard error (paired over the shared eval "
               "sequences when nll_per_seq is there, else the two MC errors combined) and resampling groups: "
               "supported if the "
               "CI lies above 0 (LoopMDM better), not supported if below 0, else inconclusive")


def claim_deeper(df: pd.DataFrame, *, loops: int | None = None, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> Claim:
    key, name = "deeper", "3. LoopMDM vs deeper MDM at equal per-step compute"
    statement = "LoopMDM beats deeper non-looped MDMs with equal per-step compute"
    args = (key, name, statement, None, "LoopMDM better (ΔNLL > 0)", "nats/token", DEEPER_RULE)
    if missing_columns(df, CORE_COLUMNS):
        return inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, CORE_COLUMNS))}")
    if loops is None:
        loops, _ = choose_eval_loops(df)
    if (df["family"] == "mdm_deeper").sum() == 0:
        return inconclusive(*args, "no deeper-MDM runs (family mdm_deeper) in the study")
    if loops is None:
        return inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "deeper")
    df = ensure_columns(df, ["nll_per_seq", "eval_set"])
    mem = memberships(df)
    lp = final_points(df, "loopmdm", loops).set_index("run")
    dp = final_points(df, "mdm_deeper").set_index("run")
    rows = []
    for g, mg in mem.groupby("group", sort=False):
        la = [r for r in mg.loc[mg["role"] == "looped", "run"] if r in lp.index]
        de = [r for r in mg.loc[mg["role"] == "baseline_deeper", "run"] if r in dp.index]
        if not la or not de:
            continue
        d, ses, fl, brackets = [], [], [], []
        for a in la:
            same_seed = [b for b in de if dp.at[b, "seed"] == lp.at[a, "seed"]] or de
            pt = _per_token_flops(lp.loc[a])
            ratios = {b: _per_token_flops(dp.loc[b]) / pt for b in same_seed}
            for parts, weights, ratio in _equal_compute(ratios):
                deep = {"nll": sum(w * float(dp.at[b, "nll"]) for b, w in zip(parts, weights)),
                        "nll_per_seq": _mix_seq([dp.at[b, "nll_per_seq"] for b in parts], weights),
                        "nll_se": float(np.sqrt(sum((w * np.nan_to_num(float(dp.at[b, "nll_se"]))) ** 2
                                                    for b, w in zip(parts, weights))))}
                eset = dp.at[parts[0], "eval_set"] if len({str(dp.at[b, "eval_set"]) for b in parts}) == 1 else None
                d.append(float(deep["nll"] - lp.at[a, "nll"]))
                ses.append(PA.diff_se(deep["nll_per_seq"], lp.at[a, "nll_per_seq"], deep["nll_se"], lp.at[a, "nll_se"],
                                      eset, lp.at[a, "eval_set"]))
                fl.append(ratio)
                if len(parts) > 1:
                    brackets.append([float(ratios[b]) for b in parts])
        d = np.array(d, float)
        se = np.array([x[0] for x in ses])
        method = PA.PAIRED if all(x[1] == PA.PAIRED for x in ses) else PA.UNPAIRED
        fin = [r for r in fl if np.isfinite(r)]
        rows.append(dict(group=str(g), delta=float(d.mean()), se=float(np.sqrt(np.sum(se**2)) / len(d)),
                         se_method=method, n_seqs=min(x[2] for x in ses), n_pairs=len(d),
                         flops_ratio_deeper_over_loop=float(np.mean(fin)) if fin else None,
                         interpolated=bool(brackets), bracket_ratios=brackets[0] if brackets else None))
    if not rows:
        return inconclusive(*args, f"no comparison group has a LoopMDM final eval at S={loops} and a deeper-MDM "
                                    f"final eval")
    dlt = np.array([r["delta"] for r in rows])
    se = np.array([r["se"] for r in rows])
    draws, _ = group_draws(dlt, se, n_boot, rng)
    lo, hi = percentile_ci(draws.mean(axis=1), level)
    caveats = [f"LoopMDM at S={loops}; the deeper MDM's inference cost matches E[S] loops, not S",
               PA.method_note([r["se_method"] for r in rows], [r["n_seqs"] for r in rows], "groups")]
    if dlt.size == 1:
        caveats.append("a single comparison group: the CI reflects eval noise only")
    fr = [r["flops_ratio_deeper_over_loop"] for r in rows if r["flops_ratio_deeper_over_loop"] is not None]
    n_interp = sum(r["interpolated"] for r in rows)
    if n_interp:
        caveats.append(f"in {n_interp} of {len(rows)} group(s) no integer depth matches LoopMDM's per-step FLOPs: the "
                       f"deeper MDM's NLL is interpolated (linearly in log per-step FLOPs) between the two bracketing "
                       f"depths to equal per-step compute")
    if fr and (np.nanmax(np.abs(np.log(fr))) > np.log(1.05)):
        caveats.append(f"per-step FLOPs of the deeper MDM / LoopMDM (actual S draws) are up to "
                       f"{np.nanmax(np.exp(np.abs(np.log(fr)))):.3f}x apart: per-step compute not matched within 5% "
                       f"(plan with both bracketing depths to interpolate)")
    if all(r["n_pairs"] == 1 for r in rows):
        caveats.append(ONE_SEED)
    return Claim(key, name, statement, None, "LoopMDM better (ΔNLL > 0)", float(dlt.mean()), lo, hi, "nats/token",
                 verdict_gt(lo, hi, 0.0), DEEPER_RULE, caveats, dict(eval_loops=loops, groups=rows))


def _per_token_flops(row: pd.Series) -> float:
    """Exact training FLOPs per token actually spent (a looped run's realised S draws included)."""
    f, t = float(row.get("flops_exact", np.nan)), float(row.get("tokens", np.nan))
    return f / t if np.isfinite(f) and np.isfinite(t) and t > 0 else np.nan


def _equal_compute(ratios: dict[str, float]) -> list[tuple[list[str], list[float], float]]:
    """How to read the deeper MDM at LoopMDM's per-step compute from the deeper runs at hand, given each one's
    per-step FLOPs ratio to LoopMDM: (runs, weights, ratio) per comparison. Two runs bracketing 1 are
    interpolated linearly in log FLOPs (one comparison at ratio 1); otherwise each run is compared as it is."""
    fin = {b: r for b, r in ratios.items() if np.isfinite(r) and r > 0}
    lo = [b for b, r in fin.items() if r <= 1]
    hi = [b for b, r in fin.items() if r > 1]
    if lo and hi:
        b0, b1 = max(lo, key=fin.get), min(hi, key=fin.get)
        w = -np.log(fin[b0]) / (np.log(fin[b1]) - np.log(fin[b0]))
        return [([b0, b1], [1 - w, w], 1.0)]
    return [([b], [1.0], ratios[b]) for b in ratios]


def _mix_seq(arrays: list, weights: list[float]):
    """The weighted combination of per-sequence NLL arrays (as given for one run; None where any is missing
    or the lengths differ: the comparison then falls back to the unpaired MC errors)."""
    if len(arrays) == 1:
        return arrays[0]
    arrs = [PA.seq_array(v) for v in arrays]
    if any(a is None for a in arrs) or len({a.size for a in arrs}) != 1:
        return None
    return sum(w * a for w, a in zip(weights, arrs))


def details_md(c: Claim) -> list[str]:
    groups = c.details.get("groups")
    if not groups:
        return []
    L = ["| group | ΔNLL (deeper − loop), nats/token | s.e. | s.e. from | FLOPs ratio deeper/loop |",
         "|---|---|---|---|---|"]
    for g in groups[:12]:
        how = g.get("se_method", "—") + (f" ({g['n_seqs']} seqs)" if g.get("n_seqs") else "")
        br = g.get("bracket_ratios")
        ratio = fmt(g['flops_ratio_deeper_over_loop']) + (
            f" (interpolated between {fmt(br[0])} and {fmt(br[1])})" if br else "")
        L.append(f"| {cell(g['group'])} | {g['delta']:+.4f} | {fmt(g['se'])} | {how} | {ratio} |")
    if len(groups) > 12:
        L.append(f"| … {len(groups) - 12} more in {records.FITS} | | | | |")
    return L + [""]


SECTION = Section("deeper", "3. LoopMDM vs deeper MDM at equal per-step compute", ("isoflop_mdm_deeper",),
                  details=details_md)
