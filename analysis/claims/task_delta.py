"""Claim 6: task scores (GSM8K and others) — LoopMDM minus the same-size MDM, paired by problem."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bootstrap import percentile_ci
from ..util import derive_rng
from .common import PAPER_GSM8K_POINTS, Claim, Section, inconclusive, magnitude_note, verdict_gt


TASK_RULE = ("paired bootstrap over problems of the score difference (LoopMDM at S − same-size MDM), in points; "
             "supported if the 95% CI lies above 0, not supported if below 0, else inconclusive. Headline = the "
             "comparison group with the largest budget (then model)")


def align(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    ia, ib = a.get("sample_ids"), b.get("sample_ids")
    pa, pb = np.asarray(a["per_sample"], float), np.asarray(b["per_sample"], float)
    if isinstance(ia, (list, np.ndarray)) and isinstance(ib, (list, np.ndarray)) and len(ia) == pa.size \
            and len(ib) == pb.size:
        pos = {k: i for i, k in enumerate(ib)}
        common = [(i, pos[k]) for i, k in enumerate(ia) if k in pos]
        if not common:
            return None
        i, j = map(np.array, zip(*common))
        return pa[i], pb[j]
    if pa.size != pb.size or pa.size == 0:
        return None
    return pa, pb


def claim_task_delta(tasks: pd.DataFrame | None, task: str = "gsm8k", *, loops: int | None = None,
                     n_boot: int = 1000, seed: int = 0, paper: float | None = None, level: float = 0.95) -> Claim:
    key, name = f"task[{task}]", f"6. {task} score: LoopMDM − same-size MDM"
    if paper is None and task.lower().startswith("gsm8k"):
        paper = PAPER_GSM8K_POINTS
    statement = (f"LoopMDM improves {task} by +{paper:g} points" if paper is not None
                 else f"LoopMDM improves {task}")
    ptxt = f"+{paper:g} points" if paper is not None else "improvement"
    args = (key, name, statement, paper, ptxt, "points", TASK_RULE)
    if tasks is None or tasks.empty or "task" not in tasks:
        return inconclusive(*args, "no task evaluations (runs/*/evals/*.json) found")
    t = tasks[tasks["task"] == task]
    if t.empty:
        return inconclusive(*args, f"no evaluations of task '{task}'")
    t = t[t["exit_threshold"].isna()] if "exit_threshold" in t else t
    rng = derive_rng(seed, "task", task)
    res, caveats = [], []
    for g, dg in t[t["group"].astype(str) != ""].groupby("group"):
        lp, bp = dg[dg["family"] == "loopmdm"], dg[dg["family"] == "mdm"]
        if lp.empty or bp.empty:
            continue
        avail = sorted({int(x) for x in lp["loops"].dropna()})
        smax = pd.to_numeric(lp["s_max"], errors="coerce").max()
        S = loops
        if S is None:
            cand = [s for s in avail if (not np.isfinite(smax) or s <= smax)]
            S = ([s for s in cand if s >= 6] or cand or avail or [None])[-1]
        la = lp[lp["loops"] == S] if S is not None else lp
        bl = bp[bp["loops"] == bp["loops"].min()] if bp["loops"].notna().any() else bp
        if la.empty:
            continue
        a, b = la.sort_values("step").iloc[-1], bl.sort_values("step").iloc[-1]
        al = align(a, b)
        if al is None:
            caveats.append(f"group {g}: per_sample arrays cannot be paired (different lengths, no sample_ids)")
            continue
        x, y = al
        diff = x - y
        idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
        bs = 100 * diff[idx].mean(axis=1)
        lo, hi = percentile_ci(bs, level)
        res.append(dict(group=str(g), loops=S, n=int(diff.size), loop_score=100 * float(x.mean()),
                        base_score=100 * float(y.mean()), delta=100 * float(diff.mean()), low=lo, high=hi,
                        budget=float(a.get("budget_flops", np.nan)), params=float(a.get("params_total", np.nan)),
                        metric=str(a.get("metric"))))
    if not res:
        return inconclusive(*args, *caveats, f"no comparison group has '{task}' evals of both a LoopMDM and its "
                                              f"same-size MDM")
    head = max(res, key=lambda r: (np.nan_to_num(r["budget"], nan=-1), np.nan_to_num(r["params"], nan=-1)))
    if paper is not None:
        m = magnitude_note(head["low"], head["high"], paper, " points")
        if m:
            caveats.append(m)
    caveats.append(f"group {head['group']}, S={head['loops']}, n={head['n']} problems, {head['metric']}: "
                   f"{head['loop_score']:.1f} vs {head['base_score']:.1f}")
    for edge in (0.0, 100.0):
        if head["loop_score"] == edge and head["base_score"] == edge:
            caveats.insert(0, f"both models scored {edge:g} on every problem: a {'floor' if edge == 0 else 'ceiling'} "
                              f"effect — this comparison cannot show a difference (make the task "
                              f"{'easier or train longer' if edge == 0 else 'harder'})")
    if len(res) > 1:
        caveats.append(f"{len(res)} groups evaluated; all are listed in the details")
    return Claim(key, name, statement, paper, ptxt, head["delta"], head["low"], head["high"], "points",
                 verdict_gt(head["low"], head["high"], 0.0), TASK_RULE, caveats, dict(groups=res, headline=head["group"]))


SECTION = Section("task", "6. Task scores (GSM8K and others)", ("score_vs_loops",))
