"""The paper's claims, each turned into a number with a CI and a verdict by a rule stated in the Claim.

Verdicts are one of ``supported``, ``not supported``, ``inconclusive``. A claim whose inputs are
missing is ``inconclusive`` with a caveat naming what is missing; no claim function raises on bad data.

Task-evaluation contract (``runs/<run>/evals/<name>-<hash>.json``, one file per (task, checkpoint,
eval config)), read by ``analysis.collect.load_task_evals``::

    {
      "task": "gsm8k",              # lm-eval task name                                   (required)
      "metric": "exact_match",      # which metric per_sample holds                       (default "acc")
      "loops": 8,                   # inference loop count S (1 for a non-looped model)   (required for looped runs)
      "exit_threshold": null,       # adaptive-exit threshold, or null for fixed loops
      "step": 12000,                # checkpoint step evaluated
      "per_sample": [0, 1, 1, ...], # per-problem correctness (0/1 or a score in [0, 1]),  (required)
                                    #   in a STABLE problem order shared by every model
      "sample_ids": ["...", ...],   # optional: problem ids; when present, pairing uses them instead of order
      "score": 0.41,                # mean of per_sample, as a fraction in [0, 1]
      "n": 1319, "run_hash": "...", "eval_config_hash": "...", "lm_eval_version": "...", ...  (free extras)
    }

Deltas are reported in points (100 x difference of fractions), paired by problem.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import fits as F
from . import paired as PA
from ._util import CONVENTIONS, derive_rng, fmt, jsonable, normalise_convention
from .select import (CORE_COLUMNS, choose_eval_loops, final_points, fixed_loops, missing_columns,
                     is_cosine, run_schedules, unique_points)
from .studyfits import StudyFits

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
PAPER_MULTIPLIER = 3.3
PAPER_GSM8K_POINTS = 8.5
Z95 = 1.959963984540054

TASK_EVAL_CONTRACT = __doc__.split("::", 1)[1].split("Deltas are")[0]


@dataclass
class Claim:
    """One paper claim confronted with the study's data."""

    key: str
    name: str
    statement: str
    paper_value: float | None
    paper_text: str
    measured: float | None
    ci_low: float | None
    ci_high: float | None
    unit: str
    verdict: str
    rule: str
    caveats: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    level: float = 0.95
    measured_text: str | None = None  # display override when the measurement is a bound (censored)
    ci_text: str | None = None

    def measured_str(self) -> str:
        if self.measured_text is not None:
            return self.measured_text
        return "—" if self.measured is None else f"{fmt(self.measured)} {self.unit}".strip()

    def ci_str(self) -> str:
        if self.ci_text is not None:
            return self.ci_text
        return "—" if self.ci_low is None or self.ci_high is None else f"[{fmt(self.ci_low)}, {fmt(self.ci_high)}]"

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def _ensure_columns(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Optional columns (per-sequence NLLs, eval-set keys, ...) as None when a table lacks them."""
    miss = [c for c in cols if c not in df.columns]
    return df.assign(**{c: None for c in miss}) if miss else df


def _inconclusive(key: str, name: str, statement: str, paper_value: float | None, paper_text: str, unit: str,
                  rule: str, *caveats: str, details: dict[str, Any] | None = None) -> Claim:
    return Claim(key, name, statement, paper_value, paper_text, None, None, None, unit, INCONCLUSIVE, rule,
                 [c for c in caveats if c], {"missing_input": True, **(details or {})})


def _verdict_gt(low: float | None, high: float | None, null: float) -> str:
    """supported if the whole CI is above ``null``, not supported if the whole CI is below, else inconclusive."""
    if low is None or high is None or not (np.isfinite(low) or np.isinf(low)):
        return INCONCLUSIVE
    if low > null:
        return SUPPORTED
    if high < null:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _magnitude_note(low: float | None, high: float | None, paper: float, unit: str = "") -> str:
    if low is None or high is None:
        return ""
    if low <= 0 < paper <= high:  # censored: only an upper end is known
        return f"the CI (< {fmt(high)}{unit}) does not exclude the paper's {paper:g}{unit}"
    if low <= paper <= high:
        return f"the CI covers the paper's {paper:g}{unit}"
    if high < paper:
        return f"the CI lies below the paper's {paper:g}{unit}: the effect here is smaller than claimed"
    return f"the CI lies above the paper's {paper:g}{unit}: the effect here is larger than claimed"


# ---------------------------------------------------------------------------- 1. fitted multiplier
MULT_RULE = ("supported if the 95% bootstrap CI of the multiplier (baseline FLOPs / LoopMDM FLOPs to reach the "
             "baseline's best observed loss, from fitted frontiers) lies above 1; not supported if it lies below 1; "
             "else inconclusive. If no LoopMDM run reached that loss, only an upper bound is stated (baseline FLOPs "
             "/ LoopMDM's largest FLOPs): not supported if its 95% upper end is below 1 or if the CI from LoopMDM's "
             "extrapolated frontier lies below 1, else inconclusive (a bound never supports). "
             "Whether the CI covers 3.3 is stated separately")


def claim_multiplier(fits: StudyFits, convention: str, *, paper: float = PAPER_MULTIPLIER, n_levels: int = 25) -> Claim:
    conv = normalise_convention(convention)
    key = f"multiplier[{conv}]"
    name = f"1. training-FLOPs multiplier (fitted frontiers, {conv})"
    statement = "LoopMDM matches same-size MDMs with up to 3.3x fewer training FLOPs (test NLL)"
    args = (key, name, statement, paper, "up to 3.3x", "x", MULT_RULE)
    base, loop = fits.get_frontier("mdm", conv), fits.get_frontier("loopmdm", conv)
    if base is None or loop is None:
        miss = [f for f, v in (("mdm (baseline)", base), ("loopmdm", loop)) if v is None]
        return _inconclusive(*args, f"no frontier for {', '.join(miss)} under {conv}: missing final evaluations "
                                    f"or FLOPs column")
    bad = [f"{f.family}: {f.message}" for f in (base, loop) if not f.ok]
    if bad:
        return _inconclusive(*args, *(f"frontier fit not possible — {b}" for b in bad))
    L_star = base.loss_range[0]
    hi = min(base.loss_range[1], loop.loss_range[1])
    levels = np.linspace(L_star, hi, n_levels) if hi > L_star else np.array([L_star])
    m = F.efficiency_multiplier(base, loop, L_star, levels)
    v = m.value
    verdict = _verdict_gt(v.low, v.high, 1.0)
    measured, low, high = v.estimate, v.low, v.high
    measured_text = ci_text = None
    caveats: list[str] = []
    # LoopMDM never observed at the baseline's best loss: its FLOPs there would be an extrapolation of its
    # fitted frontier. What the data do state is a bound: no LoopMDM run reached L* with up to C_max FLOPs,
    # so the multiplier is below C_base(L*) / C_max.
    not_reached = loop.loss_range is not None and loop.loss_range[0] > L_star
    bound = None
    if not_reached:
        c_max = loop.C_range[1]
        cb = float(base.invert([L_star])[0])
        if not np.isfinite(cb):  # the fitted baseline misses its own best point: use that point's FLOPs
            cb = min(r["C"] for r in base.residuals if r["loss"] == L_star) if base.residuals else math.nan
        bound = cb / c_max
        sb = base.invert_samples([L_star])[:, 0] / c_max
        sb = sb[np.isfinite(sb)]
        b_hi = float(np.quantile(sb, LEVEL_HI)) if sb.size >= 2 else None
        measured, low, high = None, 0.0, b_hi
        measured_text = f"not reached within the observed range (< {fmt(bound)} x)"
        ci_text = f"< {fmt(b_hi)} x" if b_hi is not None else "—"
        # an upper bound can only refute: not supported if it lies below 1, or if LoopMDM's extrapolated
        # frontier puts the whole CI below 1 (said so in a caveat); never supported from a bound
        by_bound = b_hi is not None and b_hi < 1.0
        by_extrap = v.high is not None and np.isfinite(v.high) and v.high < 1.0
        verdict = NOT_SUPPORTED if by_bound or by_extrap else INCONCLUSIVE
        if by_extrap and not by_bound:
            caveats.append("verdict from the extrapolated LoopMDM frontier (its whole CI lies below 1); the model-free "
                           "bound alone is inconclusive")
        caveats.append(
            f"LoopMDM's best observed loss ({loop.loss_range[0]:.4g}) is above the baseline's best ({L_star:.4g}): no "
            f"LoopMDM run reached it with up to {fmt(c_max)} FLOPs, so the multiplier is below baseline FLOPs at that "
            f"loss ({fmt(cb)}) / {fmt(c_max)}; upper end of the CI from the baseline frontier's bootstrap")
        caveats.append(f"extrapolating LoopMDM's fitted frontier to that loss instead: "
                       f"{_mult_text(v.estimate)} [{_mult_text(v.low)}, {_mult_text(v.high)}] (model-dependent)")
    else:
        if v.estimate is not None and not np.isfinite(v.estimate):
            measured, measured_text = None, "not reached by the fitted baseline frontier"
            caveats.append("the baseline's fitted frontier flattens above this loss (E ≥ L*): the multiplier is not "
                           "defined at this level")
        if (v.high is not None and not np.isfinite(v.high)) or (v.low is not None and not np.isfinite(v.low)):
            ci_text = bounded_ci_text(v.low if v.low is not None else 0.0, v.high, " x")
        caveats += list(m.extrapolated)
    mag = _magnitude_note(low, high, paper, "x")
    if mag:
        caveats.append(mag)
    for f in (base, loop):
        d = f.diagnostics
        if d and not d.converged:
            caveats.append(f"{f.family} frontier: optimizer did not report convergence ({d.optimizer_message})")
        if d and d.n_boot and d.n_boot_ok < 0.9 * d.n_boot:
            caveats.append(f"{f.family} frontier: only {d.n_boot_ok}/{d.n_boot} bootstrap refits converged")
        if f.n_fit_points < 6:
            caveats.append(f"{f.family} frontier rests on {f.n_fit_points} points (3 parameters)")
        caveats += [f"{f.family} frontier: {n}" for n in f.notes]
    caveats.append(f"LoopMDM evaluated at {fits.loops_note}")
    caveats.append(f"frontiers fitted on {base.method} ({base.n_fit_points} MDM, {loop.n_fit_points} LoopMDM points)")
    robust = None
    ab, al = fits.frontier_alt.get(f"mdm|{conv}"), fits.frontier_alt.get(f"loopmdm|{conv}")
    if ab is not None and al is not None and ab.ok and al.ok:
        ra = F.efficiency_multiplier(ab, al, L_star).value
        robust = dict(method=f"{ab.method} / {al.method}", value=ra.to_dict())
        caveats.append(f"robustness ({ab.method} frontiers for MDM, {al.method} for LoopMDM): "
                       f"{_mult_text(ra.estimate)} [{_mult_text(ra.low)}, {_mult_text(ra.high)}]"
                       + (" (LoopMDM extrapolated)" if al.loss_range and al.loss_range[0] > L_star else ""))
    details = dict(convention=conv, eval_loops=fits.loops, curve=m.to_dict(), robustness=robust,
                   baseline_frontier={k: getattr(base, k).to_dict() for k in ("E", "A", "alpha")},
                   loopmdm_frontier={k: getattr(loop, k).to_dict() for k in ("E", "A", "alpha")},
                   baseline_method=base.method, loopmdm_method=loop.method,
                   baseline_points=base.n_fit_points, loopmdm_points=loop.n_fit_points,
                   not_reached_in_range=not_reached, upper_bound=bound,
                   loopmdm_loss_range=list(loop.loss_range) if loop.loss_range else None, extrapolated_value=v.to_dict(),
                   covers_paper=None if not_reached else v.covers(paper))
    return Claim(key, name, statement, paper, "up to 3.3x", measured, low, high, "x", verdict, MULT_RULE,
                 caveats, details, measured_text=measured_text, ci_text=ci_text)


LEVEL_HI = 0.975


def _mult_text(x: float | None) -> str:
    """A multiplier for prose: infinite = the frontier never reaches the loss, not a number."""
    if x is None:
        return "—"
    if not np.isfinite(x):
        return "not reached" if x > 0 else "—"
    return f"{fmt(x)}x"


# -------------------------------------------------------------------------- 2. paper's own protocol
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
    ``weights`` (n_boot, N) from ``paired.bootstrap_weights``): every draw resamples the same eval
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


def bounded_text(lo: float | None, hi: float | None, unit: str = "x") -> str:
    """A censored estimate in words: exact, 'not reached (< hi)', '>= lo', or a range."""
    if lo is None or hi is None:
        return "—"
    if lo == hi or (lo > 0 and math.isfinite(hi) and fmt(lo) == fmt(hi)):
        return f"{fmt(lo)}{unit}"
    if lo <= 0 and math.isinf(hi):
        return "not identified (censored both ways)"
    if lo <= 0:
        return f"not reached (< {fmt(hi)}{unit})"
    if math.isinf(hi):
        return f"≥ {fmt(lo)}{unit} (reached at the first eval point)"
    return f"{fmt(lo)}–{fmt(hi)}{unit} (censored groups)"


def _bounded_value(lo: float, hi: float) -> float | None:
    """A number for a partially identified estimate: the midpoint when both bounds are finite and > 0
    (a narrow interval from censored groups near the median), else None (only a bound is known)."""
    return (lo + hi) / 2 if lo > 0 and math.isfinite(hi) else None


def bounded_ci_text(lo: float | None, hi: float | None, unit: str = "x") -> str:
    """A CI whose ends may be censored: '< hi', '≥ lo' or '[lo, hi]'."""
    if lo is None or hi is None:
        return "—"
    if lo <= 0 and math.isinf(hi):
        return "unbounded"
    if lo <= 0:
        return f"< {fmt(hi)}{unit}"
    if math.isinf(hi):
        return f"≥ {fmt(lo)}{unit}"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _membership(df: pd.DataFrame) -> pd.DataFrame:
    """(group, role, run, seed) once per membership, groups with a name only."""
    m = df[["group", "role", "run", "seed"]].drop_duplicates(["group", "run"])
    return m[m["group"].astype(str) != ""]


def _per_run_arrays(d: pd.DataFrame, cols: Sequence[str], order: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Split a table into numpy arrays per run in one pass (pandas per-group filtering is ~100x slower)."""
    if d.empty:
        return {}
    d = d.sort_values(["run", *order], kind="stable")
    runs = d["run"].to_numpy()
    cuts = np.flatnonzero(runs[1:] != runs[:-1]) + 1
    arrs = {c: np.split(d[c].to_numpy(), cuts) for c in cols}
    starts = np.concatenate([[0], cuts])
    return {str(runs[i]): {c: arrs[c][k] for c in cols} for k, i in enumerate(starts)}


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
    return F.percentile_ci(lo_draws, level)[0], F.percentile_ci(hi_draws, level)[1]


def claim_protocol(df: pd.DataFrame, convention: str, *, loops: int | None = None, n_boot: int = 1000,
                   seed: int = 0, paper: float = PAPER_MULTIPLIER, level: float = 0.95) -> Claim:
    conv = normalise_convention(convention)
    key = f"protocol[{conv}]"
    name = f"2. multiplier by the paper's protocol (eval-point crossing, {conv})"
    statement = "LoopMDM reaches the same-size MDM's final NLL with up to 3.3x fewer training FLOPs"
    args = (key, name, statement, paper, "up to 3.3x", "x", PROTO_RULE)
    need = CORE_COLUMNS + [conv, "nll_se", "seed"]
    if missing_columns(df, need):
        return _inconclusive(*args, f"missing columns: {', '.join(missing_columns(df, need))}")
    if loops is None:
        loops, _ = choose_eval_loops(df)
    if loops is None:
        return _inconclusive(*args, "no final fixed-loop evaluations of LoopMDM")
    rng = derive_rng(seed, "protocol", conv)
    df = _ensure_columns(df, ["nll_per_seq", "eval_set"])
    mem = _membership(df)
    fx = unique_points(fixed_loops(df[df["run"].isin(mem["run"])]))
    fx = fx[np.isfinite(pd.to_numeric(fx[conv], errors="coerce").astype(float))]
    loop_runs_all = set(mem.loc[mem["role"] == "looped", "run"])
    base_runs_all = set(mem.loc[mem["role"] == "baseline_same", "run"])
    lt_tab = fx[fx["run"].isin(loop_runs_all) & (fx["eval_loops"] == loops)]
    bt_tab = fx[fx["run"].isin(base_runs_all) & fx["is_final"]]
    bt_tab = bt_tab[bt_tab["eval_loops"] == bt_tab.groupby("run")["eval_loops"].transform("min")]
    # a point at 0 FLOPs (the step-0 eval) has no place on a log-FLOPs axis
    lt_tab = lt_tab[pd.to_numeric(lt_tab[conv], errors="coerce").astype(float) > 0]
    # a cosine run read mid-schedule has a higher loss than a run with that budget would reach: only its
    # final point may stand for its budget (constant-LR and WSD runs are read along the way)
    sched = run_schedules(df[df["run"].isin(loop_runs_all | base_runs_all)])
    cosine = {r for r, v in sched.items() if is_cosine(v)}
    unknown = sorted(r for r, v in sched.items() if v is None)
    n_mid_dropped = int((lt_tab["run"].isin(cosine) & ~lt_tab["is_final"]).sum())
    lt_tab = lt_tab[~(lt_tab["run"].isin(cosine) & ~lt_tab["is_final"])]
    cols = [conv, "nll", "nll_se", "step", "nll_per_seq", "eval_set"]
    traj = _per_run_arrays(lt_tab, cols, [conv, "step"])
    fin = _per_run_arrays(bt_tab, cols, ["step"])
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
                    weights[n] = PA.bootstrap_weights(n, n_boot, rng)
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
        return _inconclusive(*args, "no comparison group has both a looped run (with evals at S="
                             f"{loops}) and a same-size baseline with a final eval")
    m_lo = float(np.median([gr["value_low"] for gr in groups]))
    m_hi = float(np.median([gr["value_high"] for gr in groups]))
    G_lo, G_hi = _median_bounds(np.stack([gr["draws"][0] for gr in groups], axis=1),
                                np.stack([gr["draws"][1] for gr in groups], axis=1), rng)
    lo, hi = _ci_of_bounds(G_lo, G_hi, level)
    verdict = _verdict_gt(lo, hi, 1.0)
    if hi is not None and hi <= 1.0:  # never reached at equal budget: the bound 1 is strict (m < 1)
        verdict = NOT_SUPPORTED
    mag = _magnitude_note(lo, hi, paper, "x")
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
        caveats.append(f"LR schedule unknown for {len(unknown)} run(s) (no optim.schedule in config.yaml): valid only "
                       f"if they are constant-LR/WSD runs (mid-schedule points of a cosine run understate the loss "
                       f"it would reach)")
    caveats.append(PA.method_note(methods, n_paired, "LoopMDM/baseline pairs", kind="eval noise in the bootstrap"))
    caveats.append(f"LoopMDM read at S={loops} loops")
    if len(groups) == 1:
        caveats.append("a single comparison group: the CI reflects eval noise (and seeds) only")
    if all(gr["n_pairs"] == 1 for gr in groups):
        caveats.append("one seed per config: training-seed variance is not in the CI")
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


# ------------------------------------------------------------------------------------ 3. deeper MDM
DEEPER_RULE = ("ΔNLL = NLL(deeper MDM) − NLL(LoopMDM at S), final evals, paired by comparison group (and seed); "
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
    mem = _membership(df)
    lp = final_points(df, "loopmdm", loops).set_index("run")
    dp = final_points(df, "mdm_deeper").set_index("run")
    rows = []
    for g, mg in mem.groupby("group", sort=False):
        la = [r for r in mg.loc[mg["role"] == "looped", "run"] if r in lp.index]
        de = [r for r in mg.loc[mg["role"] == "baseline_deeper", "run"] if r in dp.index]
        if not la or not de:
            continue
        pairs = [(a, b) for a in la for b in de if lp.at[a, "seed"] == dp.at[b, "seed"]] or \
                [(a, b) for a in la for b in de]
        d = np.array([dp.at[b, "nll"] - lp.at[a, "nll"] for a, b in pairs], float)
        ses = [PA.diff_se(dp.at[b, "nll_per_seq"], lp.at[a, "nll_per_seq"], dp.at[b, "nll_se"], lp.at[a, "nll_se"],
                          dp.at[b, "eval_set"], lp.at[a, "eval_set"]) for a, b in pairs]
        se = np.array([x[0] for x in ses])
        fl = []
        for a, b in pairs:
            num, den = float(dp.at[b, "flops_6N_nonembed"]), float(lp.at[a, "flops_6N_nonembed"])
            if np.isfinite(num) and np.isfinite(den) and num > 0 and den > 0:
                fl.append(num / den)
        method = PA.PAIRED if all(x[1] == PA.PAIRED for x in ses) else PA.UNPAIRED
        rows.append(dict(group=str(g), delta=float(d.mean()), se=float(np.sqrt(np.sum(se**2)) / len(d)),
                         se_method=method, n_seqs=min(x[2] for x in ses), n_pairs=len(d),
                         flops_ratio_deeper_over_loop=float(np.mean(fl)) if fl else None))
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
    if fr and (np.nanmax(np.abs(np.log(fr))) > np.log(1.1)):
        caveats.append(f"training FLOPs of the pair differ by up to {np.nanmax(np.exp(np.abs(np.log(fr)))):.2f}x: "
                       f"per-step compute not matched")
    if all(r["n_pairs"] == 1 for r in rows):
        caveats.append("one seed per config: training-seed variance is not in the CI")
    return Claim(key, name, statement, None, "LoopMDM better (ΔNLL > 0)", float(dlt.mean()), lo, hi, "nats/token",
                 _verdict_gt(lo, hi, 0.0), DEEPER_RULE, caveats, dict(eval_loops=loops, groups=rows))


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


# ------------------------------------------------------------------------------------ 6. task deltas
TASK_RULE = ("paired bootstrap over problems of the score difference (LoopMDM at S − same-size MDM), in points; "
             "supported if the 95% CI lies above 0, not supported if below 0, else inconclusive. Headline = the "
             "comparison group with the largest budget (then model)")


def _align(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
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
        return _inconclusive(*args, "no task evaluations (runs/*/evals/*.json) found")
    t = tasks[tasks["task"] == task]
    if t.empty:
        return _inconclusive(*args, f"no evaluations of task '{task}'")
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
        al = _align(a, b)
        if al is None:
            caveats.append(f"group {g}: per_sample arrays cannot be paired (different lengths, no sample_ids)")
            continue
        x, y = al
        diff = x - y
        idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
        bs = 100 * diff[idx].mean(axis=1)
        lo, hi = F.percentile_ci(bs, level)
        res.append(dict(group=str(g), loops=S, n=int(diff.size), loop_score=100 * float(x.mean()),
                        base_score=100 * float(y.mean()), delta=100 * float(diff.mean()), low=lo, high=hi,
                        budget=float(a.get("budget_flops", np.nan)), params=float(a.get("params_total", np.nan)),
                        metric=str(a.get("metric"))))
    if not res:
        return _inconclusive(*args, *caveats, f"no comparison group has '{task}' evals of both a LoopMDM and its "
                                              f"same-size MDM")
    head = max(res, key=lambda r: (np.nan_to_num(r["budget"], nan=-1), np.nan_to_num(r["params"], nan=-1)))
    if paper is not None:
        m = _magnitude_note(head["low"], head["high"], paper, " points")
        if m:
            caveats.append(m)
    caveats.append(f"group {head['group']}, S={head['loops']}, n={head['n']} problems, {head['metric']}: "
                   f"{head['loop_score']:.1f} vs {head['base_score']:.1f}")
    if len(res) > 1:
        caveats.append(f"{len(res)} groups evaluated; all are listed in the details")
    return Claim(key, name, statement, paper, ptxt, head["delta"], head["low"], head["high"], "points",
                 _verdict_gt(head["low"], head["high"], 0.0), TASK_RULE, caveats, dict(groups=res, headline=head["group"]))


# ---------------------------------------------------------------------------------------- all
def evaluate_claims(
    df: pd.DataFrame, fits: StudyFits, tasks: pd.DataFrame | None = None, *,
    conventions: Sequence[str] = CONVENTIONS, n_boot: int = 1000, seed: int = 0,
    task_names: Sequence[str] | None = None,
) -> list[Claim]:
    """Every claim; an unexpected error in one claim becomes an inconclusive claim naming the error."""
    jobs: list[tuple[str, Callable[[], Claim]]] = []
    for c in conventions:
        jobs.append((f"multiplier[{normalise_convention(c)}]", lambda c=c: claim_multiplier(fits, c)))
    for c in conventions:
        jobs.append((f"protocol[{normalise_convention(c)}]",
                     lambda c=c: claim_protocol(df, c, loops=fits.loops, n_boot=n_boot, seed=seed)))
    jobs.append(("deeper", lambda: claim_deeper(df, loops=fits.loops, n_boot=n_boot, seed=seed)))
    jobs.append(("loop_scaling", lambda: claim_loop_scaling(df, n_boot=n_boot, seed=seed)))
    jobs.append(("adaptive", lambda: claim_adaptive(df, n_boot=n_boot, seed=seed)))
    names = list(task_names) if task_names else []
    if not names:
        names = sorted(tasks["task"].unique()) if tasks is not None and not tasks.empty and "task" in tasks else []
        if "gsm8k" not in names:
            names = ["gsm8k"] + names
    for tk in names:
        jobs.append((f"task[{tk}]", lambda tk=tk: claim_task_delta(tasks, tk, n_boot=n_boot, seed=seed)))
    out = []
    for key, job in jobs:
        try:
            out.append(job())
        except Exception as e:  # a claim must never take the report down
            out.append(_inconclusive(key, key, "", None, "", "", "", f"internal error while evaluating: "
                                                                     f"{e.__class__.__name__}: {e}"))
    return out


def multiplier_disagreements(claims: Sequence[Claim]) -> list[str]:
    """Conventions where the fitted multiplier and the paper-protocol multiplier CIs do not overlap."""
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
