"""Claim 2: the training-FLOPs multiplier by the paper's own protocol — where LoopMDM's eval points first cross
the same-size MDM's final NLL (its computation, its table of groups in the report, and how it compares with
claim 1)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

import records

from .. import paired as PA
from ..bootstrap import bootstrap_weights, percentile_ci
from ..select import CORE_COLUMNS, choose_eval_loops, missing_columns, protocol_points
from ..util import derive_rng, normalise_convention
from .common import (NOT_SUPPORTED, ONE_SEED, PAPER_MULTIPLIER, Claim, Section, bounded_ci_text, bounded_text, cell,
                     ensure_columns, inconclusive, magnitude_note, per_run_arrays, verdict_gt)

PROTO_RULE = ("per comparison group: baseline total FLOPs / FLOPs at which LoopMDM (fixed S) first reaches the "
              "baseline's final NLL along its eval points (log-FLOPs interpolation; eval points at 0 FLOPs are not "
              "used). A group where LoopMDM never reaches that NLL only bounds the multiplier from above "
              "(< baseline FLOPs / LoopMDM's last-eval FLOPs); one where it is already below at its first eval "
              "point only bounds it from below: such groups count as intervals, and every CI end takes the "
              "conservative side. CI from a bootstrap of the eval noise — paired, resampling the shared eval "
              "sequences (nll_per_seq) for every point of both runs at once, or, without per-sequence NLLs, drawing "
              "each point from its MC standard error — and resampling of seeds and groups. Headline = median over "
              "groups (the median, unlike a mean, stays defined when some groups are censored): supported if its "
              "95% CI lies above 1, not supported if it lies at or below 1 (a never-reached bound is strict), else "
              "inconclusive")

NEVER, FIRST, EXACT = -1, 1, 0  # censoring codes of a crossing


def _crossing(Ct: np.ndarray, Cb: float, L: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiplier Cb / C* and its censoring code for each row of ``L`` (draws x eval points) against the
    baseline loss ``lb`` (one per draw). C* = first crossing of the trajectory below lb, linear in log C
    between eval points. Never reached (NEVER): the value is the upper bound Cb / C_last; reached at the
    first eval point (FIRST): the value is the lower bound Cb / C_first. ``Ct`` must be > 0."""
    L = np.atleast_2d(L)
    lb = np.atleast_1d(lb)[:, None]
    cond = L <= lb
    reached = cond.any(axis=1)
    k = np.argmax(cond, axis=1)
    lc = np.log(Ct)
    out = np.full(L.shape[0], Cb / Ct[-1])
    code = np.full(L.shape[0], NEVER, dtype=np.int8)
    first = reached & (k == 0)
    out[first] = Cb / Ct[0]
    code[first] = FIRST
    mid = reached & (k > 0)
    if mid.any():
        kk = k[mid]
        l0, l1 = L[mid, kk - 1], L[mid, kk]
        step = l1 - l0
        safe = np.where(step != 0, step, -1.0)
        t = np.clip((lb[mid, 0] - l0) / safe, 0, 1)
        out[mid] = Cb / np.exp(lc[kk - 1] + t * (lc[kk] - lc[kk - 1]))
        code[mid] = EXACT
    return out, code


def _bounds(value: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) multiplier consistent with a censored crossing: never reached -> (0, bound),
    reached at the first point -> (bound, inf), else (value, value)."""
    return np.where(code == NEVER, 0.0, value), np.where(code == FIRST, np.inf, value)


def _crossing_draws(Ct: np.ndarray, Lt: np.ndarray, St: np.ndarray, Cb: float, Lb: float, Sb: float,
                    rng: np.random.Generator, n_boot: int, *, paired: tuple[np.ndarray, np.ndarray] | None = None,
                    weights: np.ndarray | None = None) -> tuple[tuple[float, float], tuple[np.ndarray, np.ndarray], str]:
    """Multiplier bounds (point, and ``n_boot`` draws) and the censoring status of the point.

    Paired (``paired`` = (per-sequence NLLs of the trajectory (K, N), of the baseline (N,)) and
    ``weights`` (n_boot, N): the sequence bootstrap, rows summing to 1): every draw resamples the same eval
    sequences for all trajectory points and the baseline, so the shared sequence difficulty and masking
    noise cancel in the comparison. Otherwise each point is drawn independently with its MC s.e."""
    v, c = _crossing(Ct, Cb, Lt[None, :], np.array([Lb]))
    plo, phi = _bounds(v, c)
    status = {EXACT: "reached", NEVER: "not reached", FIRST: "reached at the first eval point"}[int(c[0])]
    if paired is not None and weights is not None:
        Pt, pb = paired
        Lt_d = weights @ Pt.T
        Lb_d = weights @ pb
    else:
        Lt_d = Lt[None, :] + rng.standard_normal((n_boot, Lt.size)) * np.nan_to_num(St, nan=0.0)[None, :]
        Lb_d = Lb + rng.standard_normal(n_boot) * (0.0 if not np.isfinite(Sb) else Sb)
    return (float(plo[0]), float(phi[0])), _bounds(*_crossing(Ct, Cb, Lt_d, Lb_d)), status


def _bounded_value(lo: float, hi: float) -> float | None:
    """A number for a partially identified estimate: the midpoint when both bounds are finite and > 0
    (a narrow interval from censored groups near the median), else None (only a bound is known)."""
    return (lo + hi) / 2 if lo > 0 and math.isfinite(hi) else None


def _median_bounds(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap draws (n_boot, k) of k units' bounds -> draws of the bounds of their median, resampling
    the units within each draw (the same resample for both bounds). The median is monotone, so the
    medians of the bounds bound the median."""
    if lo.shape[1] > 1:
        idx = rng.integers(0, lo.shape[1], size=lo.shape)
        lo, hi = np.take_along_axis(lo, idx, axis=1), np.take_along_axis(hi, idx, axis=1)
    return np.median(lo, axis=1), np.median(hi, axis=1)


def _ci_of_bounds(lo_draws: np.ndarray, hi_draws: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Conservative CI: the lower end from the lower-bound draws, the upper end from the upper-bound draws."""
    return percentile_ci(lo_draws, level)[0], percentile_ci(hi_draws, level)[1]


def claim_protocol(df: pd.DataFrame, convention: str, *, loops: int | None = None, n_boot: int = 1000,
                   seed: int = 0, paper: float = PAPER_MULTIPLIER, level: float = 0.95) -> Claim:
    conv = normalise_convention(convention)
    key = f"protocol[{conv}]"
    name = f"2. multiplier by the paper's protocol (eval-point crossing, {conv})"
    statement = "LoopMDM reaches the same-size MDM's final NLL with up to 3.3x fewer training FLOPs"
    args = (key, name, statement, paper, "up to 3.3x", "x", PROTO_RULE)
    need = CORE_COLUMNS + [conv, "nll_se", "seed"]
    if missing_columns(df, need):
        return inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, need))}")
    if loops is None:
        loops, _ = choose_eval_loops(df)
    if loops is None:
        return inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "protocol", conv)
    df = ensure_columns(df, ["nll_per_seq", "eval_set"])
    sel = protocol_points(df, conv, loops)
    mem, lt_tab, bt_tab = sel.membership, sel.looped, sel.baseline
    unknown, cosine, n_mid_dropped = sel.unknown_schedule, sel.cosine, sel.n_mid_schedule_dropped
    cols = [conv, "nll", "nll_se", "step", "nll_per_seq", "eval_set"]
    traj = per_run_arrays(lt_tab, cols, [conv, "step"])
    fin = per_run_arrays(bt_tab, cols, ["step"])
    weights: dict[int, np.ndarray] = {}
    methods: list[str] = []
    n_paired: list[int] = []
    budget_of = df.drop_duplicates("run").set_index("run")["budget_flops"]
    groups = []
    caveats: list[str] = []
    for g, mg in mem.groupby("group", sort=False):
        loop_runs = [r for r in mg.loc[mg["role"] == "looped", "run"] if r in traj]
        base_runs = [r for r in mg.loc[mg["role"] == "baseline_same", "run"] if r in fin]
        if not loop_runs or not base_runs:
            continue
        seeds = dict(zip(mg["run"], mg["seed"]))
        pairs = [(lr, br) for lr in loop_runs for br in base_runs if seeds.get(lr) == seeds.get(br)] or \
                [(lr, br) for lr in loop_runs for br in base_runs]
        pts, dlo, dhi, stats = [], [], [], []
        for lr, br in pairs:
            t, b = traj[lr], fin[br]
            S = PA.stack(list(t["nll_per_seq"]) + [b["nll_per_seq"][-1]],
                         list(t["eval_set"]) + [b["eval_set"][-1]])
            paired = w = None
            if S is not None:
                paired, n = (S[:-1], S[-1]), S.shape[1]
                if n not in weights:
                    weights[n] = bootstrap_weights(rng, np.arange(n), n_boot) / float(n)
                w = weights[n]
            methods.append(PA.PAIRED if S is not None else PA.UNPAIRED)
            n_paired.append(S.shape[1] if S is not None else 0)
            p, (lo_d, hi_d), st = _crossing_draws(
                t[conv].astype(float), t["nll"].astype(float), t["nll_se"].astype(float), float(b[conv][-1]),
                float(b["nll"][-1]), float(b["nll_se"][-1]), rng, n_boot, paired=paired, weights=w)
            pts.append(p)
            dlo.append(lo_d)
            dhi.append(hi_d)
            stats.append(st)
        v_lo, v_hi = float(np.median([p[0] for p in pts])), float(np.median([p[1] for p in pts]))
        g_lo, g_hi = _median_bounds(np.stack(dlo, axis=1), np.stack(dhi, axis=1), rng)  # seed pairs resampled
        lo, hi = _ci_of_bounds(g_lo, g_hi, level)
        groups.append(dict(group=str(g), value=_bounded_value(v_lo, v_hi), value_low=v_lo, value_high=v_hi,
                           low=lo, high=hi, text=bounded_text(v_lo, v_hi), ci_text=bounded_ci_text(lo, hi),
                           n_pairs=len(pts), status=sorted(set(stats)), draws=(g_lo, g_hi),
                           budget=float(pd.to_numeric(budget_of.get(pairs[0][1]), errors="coerce"))))
    if not groups:
        return inconclusive(*args, "no comparison group has both a looped run (with evals at S="
                             f"{loops}) and a same-size baseline with a final eval")
    m_lo = float(np.median([gr["value_low"] for gr in groups]))
    m_hi = float(np.median([gr["value_high"] for gr in groups]))
    G_lo, G_hi = _median_bounds(np.stack([gr["draws"][0] for gr in groups], axis=1),
                                np.stack([gr["draws"][1] for gr in groups], axis=1), rng)
    lo, hi = _ci_of_bounds(G_lo, G_hi, level)
    verdict = verdict_gt(lo, hi, 1.0)
    if hi is not None and hi <= 1.0:  # never reached at equal budget: the bound 1 is strict (m < 1)
        verdict = NOT_SUPPORTED
    mag = magnitude_note(lo, hi, paper, "x")
    if mag:
        caveats.append(mag)
    never = [gr for gr in groups if "not reached" in gr["status"]]
    first = [gr for gr in groups if "reached at the first eval point" in gr["status"]]
    if never:
        caveats.append(f"in {len(never)} of {len(groups)} group(s) LoopMDM never reached the baseline's final NLL "
                       f"within its run: there the multiplier is only known to be below baseline FLOPs / LoopMDM's "
                       f"last-eval FLOPs")
    if first:
        caveats.append(f"in {len(first)} of {len(groups)} group(s) LoopMDM was already below the baseline's final NLL "
                       f"at its first eval point: a lower bound only (earlier eval points would pin it down)")
    if len(groups) > 1 and len(never) < len(groups):
        best = max(groups, key=lambda gr: (gr["value_low"], gr["value_high"]))
        caveats.append(f"largest single-group value {best['text']}, 95% CI {best['ci_text']} (group {best['group']}; "
                       f"a maximum over groups is biased upward)")
    if cosine:
        caveats.append(f"{len(cosine)} run(s) use a cosine LR schedule: their {n_mid_dropped} mid-schedule eval "
                       f"point(s) are left out (read mid-schedule, a cosine run looks worse than a run with that "
                       f"budget would be); only their final points are used, so LoopMDM crossings on them are "
                       f"bounds — prefer claim 1")
    if unknown:
        caveats.append(f"LR schedule unknown for {len(unknown)} run(s) (no optim.schedule in {records.CONFIG}): valid only "
                       f"if they are constant-LR/WSD runs (mid-schedule points of a cosine run understate the loss "
                       f"it would reach)")
    caveats.append(PA.method_note(methods, n_paired, "LoopMDM/baseline pairs", kind="eval noise in the bootstrap"))
    caveats.append(f"LoopMDM read at S={loops} loops")
    if len(groups) == 1:
        caveats.append("a single comparison group: the CI reflects eval noise (and seeds) only")
    if all(gr["n_pairs"] == 1 for gr in groups):
        caveats.append(ONE_SEED)
    details = dict(convention=conv, eval_loops=loops, groups=[{k: v for k, v in gr.items() if k != "draws"}
                                                              for gr in groups], n_groups=len(groups),
                   measured_low=m_lo, measured_high=m_hi, groups_never_reached=len(never),
                   lr_schedules=dict(cosine_runs=len(cosine), unknown_runs=len(unknown),
                                     mid_schedule_points_dropped=n_mid_dropped),
                   groups_reached_at_first_point=len(first),
                   eval_noise=dict(paired_pairs=methods.count(PA.PAIRED), unpaired_pairs=methods.count(PA.UNPAIRED),
                                   n_seqs=sorted(set(n for n in n_paired if n))))
    c = Claim(key, name, statement, paper, "up to 3.3x", _bounded_value(m_lo, m_hi), lo, hi, "x", verdict,
              PROTO_RULE, caveats, details)
    c.measured_text, c.ci_text = bounded_text(m_lo, m_hi), bounded_ci_text(lo, hi)
    return c


def details_md(c: Claim) -> list[str]:
    """The multiplier per comparison group, largest budgets first."""
    groups = c.details.get("groups")
    if not groups:
        return []
    L = ["| group | multiplier | 95% CI | seeds/pairs | status |", "|---|---|---|---|---|"]
    for g in sorted(groups, key=lambda g: -(g.get("budget") or 0))[:12]:
        L.append(f"| {cell(g['group'])} | {cell(g['text'])} | {cell(g['ci_text'])} | {g['n_pairs']} | "
                 f"{cell(', '.join(g['status']))} |")
    if len(groups) > 12:
        L.append(f"| … {len(groups) - 12} more in {records.FITS} | | | | |")
    return L + [""]


def multiplier_disagreements(claims: Sequence[Claim]) -> list[str]:
    """Conventions where the fitted multiplier (claim 1) and the protocol's CIs do not overlap."""
    by = {c.key: c for c in claims}
    out = []
    for k, c in by.items():
        if not k.startswith("multiplier["):
            continue
        p = by.get(k.replace("multiplier[", "protocol["))
        if p is None or None in (c.ci_low, c.ci_high, p.ci_low, p.ci_high):
            continue
        if c.ci_high < p.ci_low or p.ci_high < c.ci_low:
            out.append(f"{k[len('multiplier['):-1]}: fitted {c.measured_str()} {c.ci_str()} vs "
                       f"protocol {p.measured_str()} {p.ci_str()} — CIs do not overlap")
    return out


def closing_md(cs: Sequence[Claim], claims: Sequence[Claim]) -> list[str]:
    """Whether the two multipliers agree, convention by convention."""
    dis = multiplier_disagreements(claims)
    if dis:
        return ["**Fitted and protocol multipliers disagree** (non-overlapping CIs):", ""] + [f"- {d}" for d in dis] + [""]
    if not cs:
        return []
    by = {c.key: c for c in claims}
    both = [c for c in cs if c.ci_low is not None and c.ci_high is not None
            and (m := by.get(c.key.replace("protocol[", "multiplier["))) is not None
            and m.ci_low is not None and m.ci_high is not None]
    if both:
        return [f"The fitted (claim 1) and protocol multipliers have overlapping CIs under "
                f"{'every' if len(both) == len(cs) else 'each'} convention where both exist "
                f"({', '.join(c.details.get('convention', c.key) for c in both)}).", ""]
    return ["No convention has both a fitted (claim 1) and a protocol multiplier: they cannot be compared.", ""]


SECTION = Section("protocol", "2. Multiplier by the paper's protocol (eval-point crossing)", (), details=details_md,
                  closing=closing_md)
