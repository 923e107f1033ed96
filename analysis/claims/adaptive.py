"""Claim 5: adaptive loop exit saves inference compute at equal quality — per exit threshold, the loops saved
and the NLL given up against fixed S; its computation and its table of thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import paired as PA
from ..bootstrap import group_draws, percentile_ci
from ..select import CORE_COLUMNS, fixed_loops, missing_columns, unique_points
from ..util import derive_rng, fmt
from .common import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Section, decimals_for, ensure_columns, inconclusive,
                     number)


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
        return inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, need))}")
    d = unique_points(df[(df["family"] == "loopmdm") & df["is_final"]])
    ad = d[d["exit_threshold"].notna()]
    if ad.empty:
        return inconclusive(*args, "no evaluations with exit_threshold set (no adaptive-exit runs)")
    d, ad = (ensure_columns(x, ["nll_per_seq", "eval_set"]) for x in (d, ad))
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
        return inconclusive(*args, "adaptive evals have no fixed-loop reference (fixed S = cap or s_max) or no "
                                    "mean_loops")
    t = pd.DataFrame(rows)
    margin_src = "fixed tolerance" if margin is None else "set by the caller"
    if margin is None:
        margin = EQUIV_MARGIN_NATS
    per = []
    for thr, dt in t.groupby("threshold"):
        sv, dl, se = dt["saving"].to_numpy(), dt["delta"].to_numpy(), dt["se"].to_numpy()
        D, (Sv,) = group_draws(dl, se, n_boot, rng, sv)
        dlo, dhi = percentile_ci(D.mean(axis=1), level)
        slo, shi = percentile_ci(Sv.mean(axis=1), level) if dl.size > 1 else (float(sv.mean()), float(sv.mean()))
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
                          f"{best['cap']:.3g} loops, ΔNLL {delta_text(best)} nats/token")
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


def delta_text(t: dict) -> str:
    """A threshold's ΔNLL and its CI with one number of decimals: '-0.0030 [-0.0070, -0.0002]'."""
    d = decimals_for("nats", t["delta_low"], t["delta_high"])
    if t["delta_low"] is None or t["delta_high"] is None:
        return number(t["delta"], "nats", d)
    return f"{number(t['delta'], 'nats', d)} [{number(t['delta_low'], 'nats', d)}, {number(t['delta_high'], 'nats', d)}]"


def details_md(c: Claim) -> list[str]:
    thresholds = c.details.get("thresholds")
    if not thresholds:
        return []
    mg = c.details.get("margin")
    L = [f"| threshold | runs | mean loops / cap | saving | ΔNLL, nats/token [95% CI] | s.e. | "
         f"equal quality (≤ {fmt(mg)}) |", "|---|---|---|---|---|---|---|"]
    for t in thresholds:
        eq = ("yes" if t["equal_quality"] else "no") if t["saving"] > 0 else "— (no loops saved)"
        L.append(f"| {t['threshold']:g} | {t['n_runs']} | {fmt(t['mean_loops'])} / {fmt(t['cap'])} | "
                 f"{100 * t['saving']:.1f}% | {delta_text(t)} | "
                 f"{t.get('se_method', '—')} | {eq} |")
    return L + [""]


SECTION = Section("adaptive", "5. Adaptive loops", ("adaptive_loops",), details=details_md)
