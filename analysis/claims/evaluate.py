"""All claims of a study at once, and where the multiplier estimates disagree."""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from .._util import CONVENTIONS, normalise_convention
from ..study_fits import StudyFits
from ..select import loss_trend
from .common import INCONCLUSIVE, Claim, _inconclusive, state_power
from .loops import claim_adaptive, claim_deeper, claim_loop_scaling
from .multiplier import claim_multiplier, claim_protocol
from .tasks import claim_task_delta



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
        if not any(n.startswith("gsm8k") for n in names):  # the claim row stays, marked not measured
            names = ["gsm8k"] + names
    for tk in names:
        jobs.append((f"task[{tk}]", lambda tk=tk: claim_task_delta(tasks, tk, n_boot=n_boot, seed=seed)))
    out = []
    for key, job in jobs:
        try:
            out.append(state_power(job()))
        except Exception as e:  # a claim must never take the report down
            out.append(_inconclusive(key, key, "", None, "", "", "", f"internal error while evaluating: "
                                                                     f"{e.__class__.__name__}: {e}"))
    from ..loop_diagnostics import inert_note, loop_sensitivity  # it imports claims.common: not at module load

    try:
        note = inert_note(loop_sensitivity(df))
    except Exception as e:  # diagnostics must not take the claims down either
        note = None
        out[0].caveats.append(f"loop sensitivity not computed: {e.__class__.__name__}: {e}")
    flat_loss(out, df)
    if note:
        for c in out:
            if c.key.split("[")[0] in INERT_CLAIMS and not c.details.get("missing_input"):
                c.caveats.insert(0, note)
                c.details["inert_runs"] = note
    return out


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
                                f"fits.json)")


#: the claims about what looping buys, which an inert looped run (loop sensitivity ~ 0) explains away
INERT_CLAIMS = ("multiplier", "protocol", "deeper", "loop_scaling")


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

