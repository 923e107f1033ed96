"""Claim 4: inference compute scales with loops — the slope of final NLL in log2(S) per looped run, paired over
the shared eval sequences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import paired as PA
from ..bootstrap import group_draws, percentile_ci
from ..select import CORE_COLUMNS, fixed_loops, missing_columns, unique_points
from ..util import derive_rng
from .common import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Section, ensure_columns, inconclusive,
                     per_run_arrays)


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
        return inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, CORE_COLUMNS + ['s_max']))}")
    d = unique_points(fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]]))
    if d.empty:
        return inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "loops")
    runs = []
    d = ensure_columns(d, ["nll_per_seq", "eval_set"])
    per = per_run_arrays(d, ["eval_loops", "nll", "nll_se", "s_max", "nll_per_seq", "eval_set"], ["eval_loops"])
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
        return inconclusive(*args, "no looped run has final evals at >= 2 loop counts <= s_max (no loop scan)")
    sl = np.array([r["slope"] for r in runs])
    se = np.array([r["slope_se"] for r in runs])
    draws, _ = group_draws(sl, se, n_boot, rng)
    lo, hi = percentile_ci(draws.mean(axis=1), level)
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


SECTION = Section("loop_scaling", "4. Inference-loop scaling", ("nll_vs_loops", "nll_vs_inference_flops"))
