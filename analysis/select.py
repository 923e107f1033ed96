"""Selecting the rows each analysis may use from the tidy table (pure pandas, no fitting).

The rules live here, in one place, because a wrong selection silently biases every fit downstream:
final points only for anything read off a budget (a cosine run read mid-schedule looks worse than it
is), one row per (run, eval point) no matter how many groups share the run, fixed-loop rows apart from
adaptive-exit rows, and one inference loop count S for the looped family.
"""
from __future__ import annotations

from typing import Any

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .collect import BASE_COLUMNS

#: columns without which nothing can be claimed (the rest only disable single analyses)
CORE_COLUMNS = ["run", "family", "group", "role", "step", "eval_loops", "exit_threshold", "nll", "is_final"]
POINT_KEY = ["run", "step", "eval_loops", "exit_threshold"]


def missing_columns(df: pd.DataFrame, columns: list[str] | None = None) -> list[str]:
    return [c for c in (columns or BASE_COLUMNS) if c not in df.columns]


def clean(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop rows that cannot be used and say how many; add absent optional columns as NaN."""
    notes = []
    df = df.copy()
    # pandas deep-copies .attrs on every operation; the collect summary there made claims 10x slower
    df.attrs = {}
    for c in BASE_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    if "exit_threshold" in df:
        df["exit_threshold"] = pd.to_numeric(df["exit_threshold"], errors="coerce")
    bad = ~np.isfinite(pd.to_numeric(df["nll"], errors="coerce").astype(float))
    if bad.any():
        notes.append(f"{int(bad.sum())} row(s) with missing/non-finite nll dropped")
        df = df[~bad]
    df["is_final"] = df["is_final"].fillna(False).astype(bool)
    return df, notes


def unique_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, step, eval_loops, exit_threshold): a baseline shared by several groups must
    count once in a fit, or it would be weighted by how many groups reuse it."""
    if df.empty:
        return df
    return df.loc[~df.duplicated(subset=POINT_KEY)]


def fixed_loops(df: pd.DataFrame) -> pd.DataFrame:
    """Rows evaluated with a fixed loop count (no adaptive exit)."""
    return df[df["exit_threshold"].isna()]


def choose_eval_loops(df: pd.DataFrame, min_loops: int = 6) -> tuple[int | None, str]:
    """The inference S for the looped family in the training-efficiency claims.

    Rule: the largest S >= ``min_loops`` (the paper compares at S >= 6) that every looped run has a
    final fixed-loop eval for, and that is <= the smallest s_max among them (S beyond s_max is depth
    extrapolation: claim 4 studies it, the efficiency claims do not use it). Falls back to the largest
    common S <= s_max, then to the most common S, saying so."""
    d = fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]])
    if d.empty:
        return None, "no final fixed-loop evaluations of the looped family"
    runs = d["run"].unique()
    per_run = d.groupby("run")["eval_loops"].apply(lambda s: set(int(v) for v in s.dropna()))
    common = set.intersection(*per_run.tolist()) if len(per_run) else set()
    smax = pd.to_numeric(d["s_max"], errors="coerce")
    cap = int(smax.min()) if smax.notna().any() else max(common or {0})
    in_dist = sorted(s for s in common if s <= cap)
    big = [s for s in in_dist if s >= min_loops]
    if big:
        return big[-1], f"S={big[-1]} (largest S >= {min_loops} and <= s_max={cap} evaluated in all {len(runs)} looped runs)"
    if in_dist:
        return in_dist[-1], (f"S={in_dist[-1]}: no S >= {min_loops} within s_max={cap} is evaluated in every looped "
                             f"run, so the largest common one is used (the paper compares at S >= {min_loops})")
    counts = d["eval_loops"].value_counts()
    if counts.empty:
        return None, "looped runs have no eval_loops values"
    s = int(counts.index[0])
    return s, f"S={s}: looped runs share no common S; the most frequent one is used (runs lacking it are left out)"


def family_points(df: pd.DataFrame, family: str, loops: int | None = None, final_only: bool = True) -> pd.DataFrame:
    """Fixed-loop eval rows of ``family``: looped runs at S=``loops``, others at their smallest evaluated S
    (1 for a non-looped model); one row per run (``final_only``) or per run and step (whole trajectories)."""
    mask = df["family"] == family
    if final_only:
        mask &= df["is_final"]  # a boolean mask even on an empty table (an object Series would pick columns)
    d = fixed_loops(df[mask])
    if d.empty:
        return d
    if family == "loopmdm" and loops is not None:
        d = d[d["eval_loops"] == loops]
    else:
        d = d[d["eval_loops"] == d.groupby("run")["eval_loops"].transform("min")]
    return unique_points(d).drop_duplicates("run" if final_only else ["run", "step"])


def final_points(df: pd.DataFrame, family: str, loops: int | None = None) -> pd.DataFrame:
    """One final, fixed-loop row per run of ``family`` (see family_points)."""
    return family_points(df, family, loops, final_only=True)


def trajectory(df: pd.DataFrame, run: str, loops: int | None, flops_col: str) -> pd.DataFrame:
    """A run's fixed-loop eval points in training order (for the paper's crossing protocol)."""
    d = fixed_loops(df[df["run"] == run])
    if loops is not None:
        d = d[d["eval_loops"] == loops]
    else:
        d = d[d["eval_loops"] == d["eval_loops"].min()]
    d = unique_points(d)
    return d.sort_values([flops_col, "step"])


def run_schedules(df: pd.DataFrame) -> dict[str, str | None]:
    """Each run's LR schedule: the ``lr_schedule`` column (config.yaml ``optim.schedule``), else a sweep
    axis whose name mentions 'sched' (tables from before the column existed), else None (unknown)."""
    if df.empty or "run" not in df:
        return {}
    cols = (["lr_schedule"] if "lr_schedule" in df.columns else []) + \
        [c for c in df.columns if c.startswith("axis_") and "sched" in c.lower()]
    out: dict[str, str | None] = {}
    d = df.drop_duplicates("run")
    for i, run in enumerate(d["run"].to_numpy()):
        val = None
        for c in cols:
            v = d[c].iloc[i]
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                val = str(v).strip().lower()
                break
        out[str(run)] = val
    return out


def is_cosine(schedule: str | None) -> bool:
    return schedule is not None and "cos" in schedule


@dataclass
class ProtocolPoints:
    """The rows the paper's eval-point protocol reads: every fixed-S point of each looped run at S (its
    trajectory), and each same-size baseline's final point, per comparison-group membership."""

    membership: pd.DataFrame  # (group, role, run, seed), groups with a name only
    looped: pd.DataFrame
    baseline: pd.DataFrame
    unknown_schedule: list[str] = field(default_factory=list)  # runs whose LR schedule is not recorded
    cosine: set[str] = field(default_factory=set)  # runs with a cosine LR schedule
    n_mid_schedule_dropped: int = 0  # mid-schedule points of cosine runs left out


def memberships(df: pd.DataFrame) -> pd.DataFrame:
    """(group, role, run, seed) once per membership, groups with a name only."""
    m = df[["group", "role", "run", "seed"]].drop_duplicates(["group", "run"])
    return m[m["group"].astype(str) != ""]


def protocol_points(df: pd.DataFrame, conv: str, loops: int) -> ProtocolPoints:
    """Points at 0 FLOPs (the step-0 eval) have no place on a log-FLOPs axis and are left out; so are the
    mid-schedule points of cosine runs: read mid-schedule, such a run has a higher loss than a run with that
    budget would reach, so only its final point may stand for its budget (constant-LR and WSD runs are read
    along the way)."""
    mem = memberships(df)
    fx = unique_points(fixed_loops(df[df["run"].isin(mem["run"])]))
    fx = fx[np.isfinite(pd.to_numeric(fx[conv], errors="coerce").astype(float))]
    loop_runs = set(mem.loc[mem["role"] == "looped", "run"])
    base_runs = set(mem.loc[mem["role"] == "baseline_same", "run"])
    lt = fx[fx["run"].isin(loop_runs) & (fx["eval_loops"] == loops)]
    bt = fx[fx["run"].isin(base_runs) & fx["is_final"]]
    bt = bt[bt["eval_loops"] == bt.groupby("run")["eval_loops"].transform("min")]
    lt = lt[pd.to_numeric(lt[conv], errors="coerce").astype(float) > 0]
    sched = run_schedules(df[df["run"].isin(loop_runs | base_runs)])
    cosine = {r for r, v in sched.items() if is_cosine(v)}
    mid = lt["run"].isin(cosine) & ~lt["is_final"]
    return ProtocolPoints(mem, lt[~mid], bt, sorted(r for r, v in sched.items() if v is None), cosine, int(mid.sum()))


def loss_trend(df: pd.DataFrame, family: str = "mdm", floor: float = 0.005) -> dict[str, Any]:
    """Does the baseline's loss fall with compute? The best final NLL at the smallest and at the largest FLOPs
    budget: it falls when the drop exceeds twice their combined MC error (and ``floor`` nats). A study where it
    does not (a held-out corpus the models cannot learn, budgets too close together) cannot measure a
    training-compute multiplier, however the fits come out."""
    d = final_points(df, family) if not df.empty and "family" in df else df
    if d.empty or "budget_flops" not in d or d["budget_flops"].nunique() < 2:
        return dict(falls=None, text="fewer than 2 budgets: the loss trend in compute is not tested")
    best = d.sort_values("nll").groupby("budget_flops", sort=True).head(1).sort_values("budget_flops")
    lo, hi = best.iloc[0], best.iloc[-1]
    se = float(np.hypot(np.nan_to_num(float(lo["nll_se"])), np.nan_to_num(float(hi["nll_se"]))))
    fall, noise = float(lo["nll"] - hi["nll"]), max(2 * se, floor)
    ratio = float(hi["budget_flops"] / lo["budget_flops"])
    text = (f"{family}: best final NLL {lo['nll']:.4f} at budget {lo['budget_flops']:.3g} vs {hi['nll']:.4f} at "
            f"{hi['budget_flops']:.3g} ({ratio:.3g}x the compute): a fall of {fall:+.4f} nats/token")
    return dict(falls=bool(fall > noise), fall=fall, noise=noise, compute_ratio=ratio, text=text)


def seed_spread(df: pd.DataFrame, loops: int | None = None) -> dict[str, Any]:
    """Training-seed variance where a study measured it: configs (family + slug; the slug names everything but
    the seed) trained with >= 2 seeds, the standard deviation of their final NLL across seeds. No CI of a study
    with one seed per config can contain this variance; the report says which case a study is in."""
    if df.empty or "seed" not in df:
        return dict(n_configs=0, text="no runs")
    parts = [final_points(df, fam, loops if fam == "loopmdm" else None) for fam in df["family"].dropna().unique()]
    d = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else pd.DataFrame()
    if d.empty:
        return dict(n_configs=0, text="no final evaluations")
    sds, rows = [], []
    for (fam, slug), g in d.groupby(["family", "slug"], sort=True):
        if g["seed"].nunique() >= 2:
            sd = float(g.groupby("seed")["nll"].mean().std(ddof=1))
            sds.append(sd)
            rows.append(dict(family=fam, slug=slug, n_seeds=int(g["seed"].nunique()), sd=sd))
    mc = float(np.nanmedian(pd.to_numeric(d["nll_se"], errors="coerce"))) if "nll_se" in d else float("nan")
    if not sds:
        return dict(n_configs=0, median_mc_se=mc, text="one seed per config: training-seed variance is not measured, "
                    "and no CI in this report contains it (set `seeds: [0, 1, 2]` in the spec to measure it)")
    med = float(np.median(sds))
    return dict(n_configs=len(sds), median_sd=med, max_sd=float(np.max(sds)), median_mc_se=mc, configs=rows,
                text=f"{len(sds)} config(s) trained with >= 2 seeds: final-NLL s.d. across seeds median {med:.4f}, "
                     f"max {np.max(sds):.4f} nats/token (median MC s.e. of one eval {mc:.4f})")


def collapse_seeds(d: pd.DataFrame) -> pd.DataFrame:
    """Final points of one family with several training seeds per config (same slug) -> one point per config:
    the mean over seeds, its ``nll_se`` the standard error of that mean from the spread across seeds (floored
    at the mean MC error / sqrt(k)). The fits' noise bootstraps then draw each config's loss with the seed
    variance in it — the parametric form of resampling seeds within a config — and a frontier picked from
    per-budget minima is not biased downward by taking the luckiest seed. One seed per config: unchanged."""
    if d.empty or "seed" not in d or "slug" not in d or d.groupby("slug")["seed"].nunique().max() < 2:
        return d
    rows = []
    for _, g in d.groupby("slug", sort=False):
        r = g.iloc[0].copy()
        k = len(g)
        if k > 1:
            for c in ("nll", "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact"):
                if c in g:
                    r[c] = float(pd.to_numeric(g[c], errors="coerce").mean())
            mc = float(np.sqrt(np.nanmean(pd.to_numeric(g["nll_se"], errors="coerce") ** 2) / k))
            r["nll_se"] = max(float(g["nll"].std(ddof=1)) / np.sqrt(k), mc if np.isfinite(mc) else 0.0)
            r["run"] = "|".join(map(str, g["run"]))
        rows.append(r)
    return pd.DataFrame(rows).reset_index(drop=True)
