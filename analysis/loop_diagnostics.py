"""Why looping does or does not help: loop sensitivity and the behaviour of the looped state, per looped run.

- **Loop sensitivity**: NLL(S=1) − NLL(S=s_max) on the final evaluation, paired over the shared eval
  sequences. A looped run whose 95% CI lies within ±``INERT_NATS`` is *inert*: looping barely changes its
  output, so any claim about what looping buys is, for that run, a claim about noise. The claims name it.
- **Beyond s_max**: NLL(S=largest evaluated) − NLL(S=s_max): does depth extrapolate (falls) or break (rises)?
- **State behaviour** from ``loops.jsonl`` (``model.diagnostics``, last eval point): *settles* when the
  increments ||h_k − h_{k−1}|| shrink to under half their size from loop 2 to the last loop; *drifts* when they
  do not, while consecutive increments point the same way (mean cosine over the second half > 0.9) and the
  state norm grows; *diverges* when the increments themselves grow more than ``DIVERGE_RATIO``-fold (the
  norm then grows geometrically); otherwise *neither* (it oscillates or wanders). Drift makes the relative change fall like
  1/k only because the norm grows, which turns an adaptive-exit threshold into a fixed loop cap.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import paired as PA
from .bootstrap import Z95
from .select import fixed_loops, unique_points

INERT_NATS = 0.005
SETTLE_RATIO = 0.5
DRIFT_COS = 0.9
DIVERGE_RATIO = 2.0
DRIFT_GROWTH = 1.2  # state norm, last loop / first: "the norm grows" for a drift


def _final_fixed(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "family" not in df:
        return df
    return unique_points(fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]]))


def _delta(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """NLL(a) − NLL(b) with its paired 95% CI."""
    se, method, n = PA.diff_se(a.get("nll_per_seq"), b.get("nll_per_seq"), a.get("nll_se"), b.get("nll_se"),
                               a.get("eval_set"), b.get("eval_set"))
    d = float(a["nll"] - b["nll"])
    return dict(delta=d, se=se, low=d - Z95 * se, high=d + Z95 * se, se_method=method, n_seqs=n)


def loop_sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """One row per looped run with final evals at S=1 and S=s_max: the sensitivity, the inert flag, and the
    change beyond s_max where an S > s_max was evaluated."""
    d = _final_fixed(df)
    rows = []
    for run, g in d.groupby("run", sort=False):
        s_max = int(pd.to_numeric(g["s_max"], errors="coerce").max())
        by = {int(r.eval_loops): r for r in g.itertuples(index=False) if pd.notna(r.eval_loops)}
        if 1 not in by or s_max not in by or s_max == 1:
            continue
        one, top = pd.Series(by[1]._asdict()), pd.Series(by[s_max]._asdict())
        sens = _delta(one, top)
        row = dict(run=run, slug=str(g["slug"].iloc[0]), variant=str(g["variant"].iloc[0]) if "variant" in g else "plain",
                   s_max=s_max, nll_s1=float(one["nll"]), nll_smax=float(top["nll"]),
                   sensitivity=sens["delta"], sens_low=sens["low"], sens_high=sens["high"], se_method=sens["se_method"],
                   inert=bool(-INERT_NATS < sens["low"] and sens["high"] < INERT_NATS))
        beyond = [s for s in by if s > s_max]
        if beyond:
            b = _delta(pd.Series(by[max(beyond)]._asdict()), top)
            row.update(beyond_S=max(beyond), beyond_delta=b["delta"], beyond_low=b["low"], beyond_high=b["high"])
        rows.append(row)
    return pd.DataFrame(rows)


def state_behaviour(diag: dict[str, Any]) -> dict[str, Any]:
    """Settles / diverges / drifts / neither from one loops.jsonl row (see the module docstring), with its numbers."""
    inc = [float(x) for x in diag["increment_norm"]]
    norm = [float(x) for x in diag["state_norm"]]
    cos = [float(x) for x in diag["increment_cos"] if x is not None]
    K = len(inc)
    first = inc[1] if K > 1 else inc[0]
    ratio = inc[-1] / first if first > 0 else float("nan")
    half = cos[len(cos) // 2:] if cos else []
    mean_cos = float(np.mean(half)) if half else float("nan")
    growth = norm[-1] / norm[0] if norm[0] > 0 else float("nan")
    if ratio < SETTLE_RATIO:
        kind = "settles"
    elif ratio > DIVERGE_RATIO:
        kind = "diverges"
    elif mean_cos > DRIFT_COS and growth > DRIFT_GROWTH:
        kind = "drifts"
    else:
        kind = "neither"
    return dict(state=kind, loops=K, increment_ratio=ratio, late_cos=mean_cos, norm_growth=growth,
                rel_change_first=float(diag["rel_change"][0]), rel_change_last=float(diag["rel_change"][-1]))


def state_table(diag: pd.DataFrame) -> pd.DataFrame:
    """One row per looped run: the state behaviour at its last eval point."""
    if diag is None or diag.empty:
        return pd.DataFrame()
    last = diag.sort_values("step").groupby("run", sort=False).tail(1)
    rows = [dict(run=r["run"], slug=r["slug"], variant=r["variant"], step=int(r["step"]), **state_behaviour(r))
            for _, r in last.iterrows()]
    return pd.DataFrame(rows)


def inert_note(sens: pd.DataFrame) -> str | None:
    """The caveat claims 1-4 carry when looped runs are inert; None when none is (or none could be tested)."""
    if sens is None or sens.empty or not sens["inert"].any():
        return None
    n, k = len(sens), int(sens["inert"].sum())
    return (f"{k} of {n} looped run(s) are inert: NLL(S=1) − NLL(S=s_max) lies within ±{INERT_NATS} nats/token "
            f"(95% CI), so looping barely changes their output — the likely reason for this verdict")
