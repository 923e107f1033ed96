"""Claims 3-5: LoopMDM vs the deeper MDM, inference compute vs loops, and adaptive exit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import curves as F
from .. import paired as PA
from .._util import derive_rng, fmt
from ..select import (CORE_COLUMNS, choose_eval_loops, final_points, fixed_loops, missing_columns,
                     unique_points)
from .common import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, _ensure_columns, _inconclusive, _verdict_gt
from ..select import memberships
from .multiplier import _per_run_arrays



# ------------------------------------------------------------------------------------ 3. deeper MDM
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
        return _inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, CORE_COLUMNS))}")
    if loops is None:
        loops, _ = choose_eval_loops(df)
    if (df["family"] == "mdm_deeper").sum() == 0:
        return _inconclusive(*args, "no deeper-MDM runs (family mdm_deeper) in the study")
    if loops is None:
        return _inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "deeper")
    df = _ensure_columns(df, ["nll_per_seq", "eval_set"])
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
        return _inconclusive(*args, f"no comparison group has a LoopMDM final eval at S={loops} and a deeper-MDM "
                                    f"final eval")
    dlt = np.array([r["delta"] for r in rows])
    se = np.array([r["se"] for r in rows])
    draws = dlt[None, :] + rng.standard_normal((n_boot, dlt.size)) * se[None, :]
    if dlt.size > 1:
        draws = np.take_along_axis(draws, rng.integers(0, dlt.size, size=draws.shape), axis=1)
    lo, hi = F.percentile_ci(draws.mean(axis=1), level)
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
        caveats.append("one seed per config: training-seed variance is not in the CI")
    return Claim(key, name, statement, None, "LoopMDM better (ΔNLL > 0)", float(dlt.mean()), lo, hi, "nats/token",
                 _verdict_gt(lo, hi, 0.0), DEEPER_RULE, caveats, dict(eval_loops=loops, groups=rows))


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


# ------------------------------------------------------------------------------ 4. inference loops
LOOPS_RULE = ("slope of final NLL vs log2(S) for S <= s_max, per looped run, averaged over runs (95% CI from each "
              "run's slope standard error — paired over the shared eval sequences when nll_per_seq is there, else "
              "from the MC errors — and resampling runs): supported if the CI lies below 0 (more loops, lower NLL), "
              "not supported if above 0, else inconclusive; how many runs never rise by more than 2 s.e. between "
              "consecutive loop counts is reported")


def claim_loop_scaling(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Claim:
    key, name = "loop_scaling", "4. inference compute scales with loops"
    statement = "test NLL improves as inference loops S increase (up to the training maximum)"
    args = (key, name, statement, None, "NLL falls with S", "nats/token per doubling of S", LOOPS_RULE)
    if missing_columns(df, CORE_COLUMNS + ["s_max"]):
        return _inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, CORE_COLUMNS + ['s_max']))}")
    d = unique_points(fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]]))
    if d.empty:
        return _inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "loops")
    runs = []
    d = _ensure_columns(d, ["nll_per_seq", "eval_set"])
    per = _per_run_arrays(d, ["eval_loops", "nll", "nll_se", "s_max", "nll_per_seq", "eval_set"], ["eval_loops"])
    for run, a in per.items():
        S = a["eval_loops"].astype(float)
        smax = float(np.nanmax(pd.to_numeric(pd.Series(a["s_max"]), errors="coerce"))) if len(a["s_max"]) else np.nan
        inside = S <= smax if np.isfinite(smax) else np.ones(S.size, bool)
        if np.unique(S[inside]).size < 2:
            continue
        x = np.log2(S[inside])
        y = a["nll"][inside].astype(float)
        s = np.nan_to_num(a["nll_se"][inside].astype(float))
        xc = x - x.mean()
        slope = float(xc @ (y - y.mean()) / (xc @ xc))
        Y = PA.stack(list(a["nll_per_seq"][inside]), list(a["eval_set"][inside]))
        if Y is not None:  # paired: every S of a run sees the same sequences and noise
            n = Y.shape[1]
            slope_se = float(((xc @ Y) / (xc @ xc)).std(ddof=1) / math.sqrt(n))
            step_se = np.diff(Y, axis=0).std(axis=1, ddof=1) / math.sqrt(n)
        else:
            n = 0
            slope_se = float(np.sqrt(np.sum((xc / (xc @ xc)) ** 2 * s**2)))
            step_se = np.sqrt(s[1:] ** 2 + s[:-1] ** 2)
        rises = np.diff(y) > 2 * step_se
        at_smax = float(y[S[inside] == S[inside].max()].mean())
        beyond = ~inside
        runs.append(dict(run=str(run), s_max=smax, slope=slope, slope_se=slope_se,
                         se_method=PA.PAIRED if Y is not None else PA.UNPAIRED, n_seqs=n, monotone=bool(not rises.any()),
                         loops=[int(v) for v in S[inside]],
                         n_loops=int(np.unique(S[inside]).size),
                         beyond_delta=float(a["nll"][beyond][-1] - at_smax) if beyond.any() else None,
                         beyond_S=int(S[beyond][-1]) if beyond.any() else None))
    if not runs:
        return _inconclusive(*args, "no looped run has final evals at >= 2 loop counts <= s_max (no loop scan)")
    sl = np.array([r["slope"] for r in runs])
    se = np.array([r["slope_se"] for r in runs])
    draws = sl[None, :] + rng.standard_normal((n_boot, sl.size)) * se[None, :]
    if sl.size > 1:
        draws = np.take_along_axis(draws, rng.integers(0, sl.size, size=draws.shape), axis=1)
    lo, hi = F.percentile_ci(draws.mean(axis=1), level)
    mono = float(np.mean([r["monotone"] for r in runs]))
    n_mono = sum(r["monotone"] for r in runs)
    scans = sorted({tuple(r["loops"]) for r in runs})
    scan_txt = "; ".join(", ".join(map(str, sc)) for sc in scans[:3]) + (" …" if len(scans) > 3 else "")
    caveats = [f"loop counts evaluated (≤ s_max): S = {scan_txt}"
               + (" — only two per run: the slope is a two-point difference" if max(map(len, scans)) == 2 else ""),
               f"NLL never rises significantly (> 2 s.e.) from one loop count to the next in {n_mono} of "
               f"{len(runs)} run(s)",
               PA.method_note([r["se_method"] for r in runs], [r["n_seqs"] for r in runs], "looped runs")]
    bd = [r["beyond_delta"] for r in runs if r["beyond_delta"] is not None]
    if bd:
        caveats.append(f"beyond s_max (S up to {max(r['beyond_S'] for r in runs if r['beyond_S'])}): mean ΔNLL "
                       f"{np.mean(bd):+.4f} nats vs S=s_max ({'keeps improving' if np.mean(bd) < 0 else 'no further gain'})")
    else:
        caveats.append("no evals with S > s_max: extrapolation in depth not tested")
    verdict = INCONCLUSIVE
    if hi is not None and hi < 0:
        verdict = SUPPORTED
    elif lo is not None and lo > 0:
        verdict = NOT_SUPPORTED
    return Claim(key, name, statement, None, "NLL falls with S", float(sl.mean()), lo, hi, "nats/token per doubling of S",
                 verdict, LOOPS_RULE, caveats, dict(runs=runs, monotone_fraction=mono,
                                                    mean_beyond_delta=float(np.mean(bd)) if bd else None))


# ---------------------------------------------------------------------------------- 5. adaptive exit
EQUIV_MARGIN_NATS = 0.01
"""'Equal quality' for adaptive exit: ΔNLL at most 0.01 nats/token (about 1% in perplexity). A fixed
tolerance stated up front, not one derived from the noise: a margin that grows with the eval noise
(the old default, 2 x the median MC s.e., was 0.27 nats on a small study) lets a noisier study declare
'equal quality' more easily, which is backwards."""

ADAPT_RULE = ("per exit threshold, over looped runs' final evals: saving = 1 − mean loops used / S cap, "
              "ΔNLL = NLL(adaptive) − NLL(fixed S = cap) (its error paired over the shared eval sequences when "
              "nll_per_seq is there, else the two MC errors combined); 'equal quality' if the upper end of the "
              f"95% CI of the mean ΔNLL is at most the margin, a fixed tolerance of {EQUIV_MARGIN_NATS:g} nats/token "
              "(≈1% perplexity) unless set otherwise. Supported if an equal-quality threshold has a saving CI above "
              "0; not supported if every threshold that saves loops is clearly worse (ΔNLL CI entirely above the "
              "margin); else inconclusive. Measured = the largest equal-quality saving")


def claim_adaptive(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, margin: float | None = None,
                   level: float = 0.95) -> Claim:
    key, name = "adaptive", "5. adaptive loops save compute at equal quality"
    statement = "adaptive loop exit saves inference compute at equal quality"
    args = (key, name, statement, None, "saves compute", "% loops saved", ADAPT_RULE)
    need = CORE_COLUMNS + ["mean_loops", "nll_se"]
    if missing_columns(df, need):
        return _inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, need))}")
    d = unique_points(df[(df["family"] == "loopmdm") & df["is_final"]])
    ad = d[d["exit_threshold"].notna()]
    if ad.empty:
        return _inconclusive(*args, "no evaluations with exit_threshold set (no adaptive-exit runs)")
    d, ad = (_ensure_columns(x, ["nll_per_seq", "eval_set"]) for x in (d, ad))
    rng = derive_rng(seed, "adaptive")
    cols = ["run", "eval_loops", "s_max", "exit_threshold", "nll", "nll_se", "mean_loops", "nll_per_seq", "eval_set"]
    ref = {(r[0], float(r[1])): r for r in fixed_loops(d)[cols].itertuples(index=False, name=None)
           if r[1] is not None and np.isfinite(float(r[1]))}
    rows = []
    for r in ad[cols].itertuples(index=False):
        cap = float(r.eval_loops) if pd.notna(r.eval_loops) else float(r.s_max)
        # the fixed eval at the cap, else at s_max
        f = ref.get((r.run, cap))
        if f is None and pd.notna(r.s_max):
            cap = float(r.s_max)
            f = ref.get((r.run, cap))
        if f is None or not pd.notna(r.mean_loops):
            continue
        se, method, n = PA.diff_se(r.nll_per_seq, f[7], r.nll_se, f[5], r.eval_set, f[8])
        rows.append(dict(run=r.run, threshold=float(r.exit_threshold), saving=1 - float(r.mean_loops) / cap,
                         delta=float(r.nll - f[4]), se=se, se_method=method, n_seqs=n,
                         se_fixed=float(np.nan_to_num(f[5])), mean_loops=float(r.mean_loops), cap=cap))
    if not rows:
        return _inconclusive(*args, "adaptive evals have no fixed-loop reference (fixed S = cap or s_max) or no "
                                    "mean_loops")
    t = pd.DataFrame(rows)
    margin_src = "fixed tolerance" if margin is None else "set by the caller"
    if margin is None:
        margin = EQUIV_MARGIN_NATS
    per = []
    for thr, dt in t.groupby("threshold"):
        sv, dl, se = dt["saving"].to_numpy(), dt["delta"].to_numpy(), dt["se"].to_numpy()
        D = dl[None, :] + rng.standard_normal((n_boot, dl.size)) * se[None, :]
        if dl.size > 1:
            idx = rng.integers(0, dl.size, size=D.shape)
            D = np.take_along_axis(D, idx, axis=1)
            Sv = sv[idx]
        else:
            Sv = np.repeat(sv[None, :], n_boot, axis=0)
        dlo, dhi = F.percentile_ci(D.mean(axis=1), level)
        slo, shi = F.percentile_ci(Sv.mean(axis=1), level) if dl.size > 1 else (float(sv.mean()), float(sv.mean()))
        per.append(dict(threshold=float(thr), n_runs=int(dl.size), saving=float(sv.mean()), saving_low=slo,
                        saving_high=shi, delta=float(dl.mean()), delta_low=dlo, delta_high=dhi,
                        mean_loops=float(dt["mean_loops"].mean()), cap=float(dt["cap"].mean()),
                        se_method=PA.PAIRED if (dt["se_method"] == PA.PAIRED).all() else PA.UNPAIRED,
                        equal_quality=bool(dhi is not None and dhi <= margin)))
    eq = [p for p in per if p["equal_quality"] and p["saving"] > 0]
    caveats = [f"'equal quality' = ΔNLL's upper 95% bound ≤ {margin:g} nats/token ({margin_src})"]
    idle = [p for p in per if p["saving"] <= 0]
    if idle:
        thr_list = ", ".join(f"{p['threshold']:g}" for p in idle)
        caveats.append(f"exit threshold(s) {thr_list} never exited early "
                       f"(mean loops used = the cap): those evals equal the fixed-S ones and cannot test adaptive "
                       f"exit — evaluate larger thresholds")
    wide = [p for p in per if p["saving"] > 0 and p["delta_low"] is not None and p["delta_high"] is not None
            and (p["delta_high"] - p["delta_low"]) / 2 > margin]
    if wide:
        half = max((p["delta_high"] - p["delta_low"]) / 2 for p in wide)
        caveats.append(f"the ΔNLL CI (± {half:.3g} nats) is wider than the margin for {len(wide)} threshold(s): too "
                       f"few eval sequences/draws to show equal quality")
    caveats.append(PA.method_note(list(t["se_method"]), list(t["n_seqs"]), "adaptive-vs-fixed comparisons"))
    if eq:
        best = max(eq, key=lambda p: p["saving"])
        verdict = SUPPORTED if (best["saving_low"] is not None and best["saving_low"] > 0) else INCONCLUSIVE
        meas, lo, hi = 100 * best["saving"], 100 * best["saving_low"], 100 * best["saving_high"]
        caveats.insert(0, f"best equal-quality threshold {best['threshold']:g}: {best['mean_loops']:.3g} of "
                          f"{best['cap']:.3g} loops, ΔNLL {best['delta']:+.4f} [{fmt(best['delta_low'])}, "
                          f"{fmt(best['delta_high'])}] nats/token")
        if len(set(t["run"])) == 1:
            caveats.append("a single looped run: saving CI degenerate")
    else:
        saving_ones = [p for p in per if p["saving"] > 0]
        clearly_worse = saving_ones and all(p["delta_low"] is not None and p["delta_low"] > margin for p in saving_ones)
        verdict = NOT_SUPPORTED if clearly_worse else INCONCLUSIVE
        meas = lo = hi = None
        if not saving_ones:
            caveats.insert(0, "no exit threshold saved any loops: adaptive exit was not exercised")
        else:
            caveats.insert(0, "no threshold saves loops at equal quality"
                           + (" (all that save loops are clearly worse)" if clearly_worse else ""))
    details = dict(margin=margin, margin_source=margin_src, thresholds=per)
    if not any(p["saving"] > 0 for p in per):
        details["missing_input"] = True  # nothing to judge: listed under "What is missing"
    return Claim(key, name, statement, None, "saves compute", meas, lo, hi, "% loops saved", verdict, ADAPT_RULE,
                 caveats, details)


