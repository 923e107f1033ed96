"""All claims of a study at once, in the report's order, with the caveats that cut across them (inert looped
runs, a loss that does not fall with compute)."""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

import records

from ..loop_diagnostics import inert_note, loop_sensitivity
from ..select import loss_trend, seed_spread
from ..study_fits import StudyFits
from ..util import CONVENTIONS, normalise_convention
from . import adaptive, deeper, loop_scaling, multiplier, phi, protocol, task_delta
from .common import INCONCLUSIVE, ONE_SEED, Claim, Section, inconclusive, state_power

#: the report's claim sections, in order
SECTIONS: tuple[Section, ...] = tuple(m.SECTION for m in (multiplier, phi, protocol, deeper, loop_scaling, adaptive,
                                                          task_delta))
#: the claims about what looping buys, which an inert looped run (loop sensitivity ~ 0) explains away
INERT_CLAIMS = ("multiplier", "phi", "protocol", "deeper", "loop_scaling")


def all_claims(
    df: pd.DataFrame, fits: StudyFits, tasks: pd.DataFrame | None = None, *,
    conventions: Sequence[str] = CONVENTIONS, n_boot: int = 1000, seed: int = 0,
    task_names: Sequence[str] | None = None,
) -> list[Claim]:
    """Every claim; an unexpected error in one claim becomes an inconclusive claim naming the error."""
    jobs: list[tuple[str, Callable[[], Claim]]] = []
    for c in conventions:
        jobs.append((f"multiplier[{normalise_convention(c)}]", lambda c=c: multiplier.claim_multiplier(fits, c)))
    jobs.append(("phi", lambda: phi.claim_phi(fits)))
    for c in conventions:
        jobs.append((f"protocol[{normalise_convention(c)}]",
                     lambda c=c: protocol.claim_protocol(df, c, loops=fits.loops, n_boot=n_boot, seed=seed)))
    jobs.append(("deeper", lambda: deeper.claim_deeper(df, loops=fits.loops, n_boot=n_boot, seed=seed)))
    jobs.append(("loop_scaling", lambda: loop_scaling.claim_loop_scaling(df, n_boot=n_boot, seed=seed)))
    jobs.append(("adaptive", lambda: adaptive.claim_adaptive(df, n_boot=n_boot, seed=seed)))
    names = list(task_names) if task_names else []
    if not names:
        names = sorted(tasks["task"].unique()) if tasks is not None and not tasks.empty and "task" in tasks else []
        if not any(n.startswith("gsm8k") for n in names):  # the claim row stays, marked not measured
            names = ["gsm8k"] + names
    for tk in names:
        jobs.append((f"task[{tk}]", lambda tk=tk: task_delta.claim_task_delta(tasks, tk, n_boot=n_boot, seed=seed)))
    out = []
    for key, job in jobs:
        try:
            out.append(state_power(job()))
        except Exception as e:  # a claim must never take the report down
            out.append(inconclusive(key, key, "", None, "", "", "", f"internal error while evaluating: "
                                                                     f"{e.__class__.__name__}: {e}"))
    try:
        note = inert_note(loop_sensitivity(df))
    except Exception as e:  # diagnostics must not take the claims down either
        note = None
        out[0].caveats.append(f"loop sensitivity not computed: {e.__class__.__name__}: {e}")
    flat_loss(out, df)
    one_seed(out, df)
    if note:
        for c in out:
            if c.key.split("[")[0] in INERT_CLAIMS and not c.details.get("missing_input"):
                c.caveats.insert(0, note)
                c.details["inert_runs"] = note
    return out


def one_seed(claims: Sequence[Claim], df: pd.DataFrame) -> None:
    """Where every config was trained with one seed, no CI holds training-seed variance: every measured claim
    says so (claim 6 too: its CI is over problems, for one model of each family)."""
    try:
        if seed_spread(df).get("n_configs", 0) > 0:
            return
    except Exception:  # the caveat must not cost the claims
        return
    for c in claims:
        if c.details.get("missing_input") or any(cv.startswith(ONE_SEED) for cv in c.caveats):
            continue
        if c.key.startswith("task["):
            c.caveats.append(f"{ONE_SEED}, which covers the problems only: one model of each family per comparison "
                             f"group, each from one training seed")
        else:
            c.caveats.append(ONE_SEED)


def flat_loss(claims: Sequence[Claim], df: pd.DataFrame) -> None:
    """No multiplier headline when the baseline's loss does not fall with compute: the multiplier is the ratio
    of FLOPs at which two flat curves meet, i.e. noise. The numbers stay in the details."""
    try:
        trend = loss_trend(df)
    except Exception:  # the trend is a guard, never a reason to lose the claims
        return
    if trend.get("falls") is not False:
        return
    for c in claims:
        if c.key.split("[")[0] in ("multiplier", "protocol") and not c.details.get("missing_input"):
            c.details["flat_loss"] = dict(trend, measured=c.measured, ci=[c.ci_low, c.ci_high], verdict=c.verdict)
            c.measured_text = "no headline: loss does not fall with compute"
            c.ci_text = "—"
            c.measured = c.ci_low = c.ci_high = None
            c.verdict = INCONCLUSIVE
            c.paper_verdict = "undetermined" if c.paper_value is not None else None
            c.mde, c.mde_text = None, "— (loss flat in compute)"
            c.caveats.insert(0, f"the loss does not fall with compute — {trend['text']}, within its noise "
                                f"(±{trend['noise']:.4f}): no multiplier can be read off (the fitted value is kept in "
                                f"{records.FITS})")
