"""Claim 1: the training-FLOPs multiplier, read off fitted compute frontiers (its computation, and its table in
the report: the multiplier at three loss levels)."""

from __future__ import annotations

import math

import numpy as np

from .. import curves as F
from ..study_fits import StudyFits
from ..util import fmt, fmt_near, normalise_convention
from .common import (INCONCLUSIVE, NOT_SUPPORTED, PAPER_MULTIPLIER, Claim, Section, bounded_ci_text, inconclusive,
                     magnitude_note, verdict_gt)

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
        return inconclusive(*args, f"no frontier for {', '.join(miss)} under {conv}: missing final evaluations "
                                    f"or FLOPs column")
    bad = [f"{f.family}: {f.message}" for f in (base, loop) if not f.ok]
    if bad:
        return inconclusive(*args, *(f"frontier fit not possible — {b}" for b in bad))
    L_star = base.loss_range[0]
    hi = min(base.loss_range[1], loop.loss_range[1])
    levels = np.linspace(L_star, hi, n_levels) if hi > L_star else np.array([L_star])
    m = F.efficiency_multiplier(base, loop, L_star, levels)
    v = m.value
    verdict = verdict_gt(v.low, v.high, 1.0)
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
        measured_text = f"not reached in the observed range (< {fmt_near(bound)}x)"
        ci_text = f"< {fmt_near(b_hi)}x" if b_hi is not None else "—"
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
                       f"{mult_text(v.estimate)} [{mult_text(v.low)}, {mult_text(v.high)}] (model-dependent)")
    else:
        if v.estimate is not None and not np.isfinite(v.estimate):
            measured, measured_text = None, "not reached by the fitted baseline frontier"
            caveats.append("the baseline's fitted frontier flattens above this loss (E ≥ L*): the multiplier is not "
                           "defined at this level")
        if (v.high is not None and not np.isfinite(v.high)) or (v.low is not None and not np.isfinite(v.low)):
            ci_text = bounded_ci_text(v.low if v.low is not None else 0.0, v.high)
        caveats += list(m.extrapolated)
    mag = magnitude_note(low, high, paper, "x")
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
                       f"{mult_text(ra.estimate)} [{mult_text(ra.low)}, {mult_text(ra.high)}]"
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


def mult_text(x: float | None) -> str:
    """A multiplier for prose: infinite = the frontier never reaches the loss, not a number."""
    if x is None:
        return "—"
    if not np.isfinite(x):
        return "not reached" if x > 0 else "—"
    return f"{fmt(x)}x"


def details_md(c: Claim) -> list[str]:
    """The fitted multiplier at the lowest, middle and highest loss level, and whether LoopMDM was seen there."""
    cv = c.details.get("curve")
    n = len(cv["loss_levels"]) if cv else 0
    if not n:
        return []
    lr = c.details.get("loopmdm_loss_range")
    L = ["| loss level | multiplier (fitted frontiers) | 95% CI | LoopMDM observed at this loss? |", "|---|---|---|---|"]
    for i in sorted({0, n // 2, n - 1}):
        lvl, est, lo, hi = cv["loss_levels"][i], cv["estimate"][i], cv["low"][i], cv["high"][i]
        seen = "—" if not lr else ("yes" if lvl >= lr[0] else "no: extrapolated")
        # None here = infinite or undefined (JSON has no inf): a frontier that never reaches the loss
        ci = "—" if lo is None and hi is None else (
            f"≥ {fmt(lo)} (upper end unbounded)" if hi is None else f"[{fmt(lo)}, {fmt(hi)}]")
        L.append(f"| {fmt(lvl, 4)} | {'not defined' if est is None else fmt(est)} | {ci} | {seen} |")
    return L + [""]


SECTION = Section("multiplier", "1. Training-FLOPs multiplier from fitted frontiers",
                  ("loss_vs_flops_6N_nonembed", "loss_vs_flops_6N_total", "loss_vs_flops_exact", "multiplier_vs_loss",
                   "isoflop_mdm", "isoflop_loopmdm", "training_curves"), details=details_md)
