"""The paper's claims, each turned into a number with a CI and a verdict by a rule stated in the Claim.

Every claim gets two verdicts and a statement of power:

- against no effect: ``supported`` / ``not supported`` / ``inconclusive`` (the claim's own rule);
- against the paper's value, where the paper states one (3.3x, +8.5 points): ``consistent with the paper``
  (the CI covers it) / ``smaller than the paper`` (the CI lies below) / ``larger than the paper`` /
  ``undetermined`` (no CI, or only a bound on the side that cannot decide);
- the minimum detectable effect (MDE): the smallest true effect this study would find significant against
  no effect with 80% power at its own noise, (z_0.975 + z_0.8) x s.e., the s.e. read off the claim's own
  bootstrap CI (on log scale for multipliers). With it, how much more data the paper's value would need:
  s.e. falls as 1/sqrt(n), so (MDE / paper effect)^2 times the eval sequences or comparison groups.

A claim whose inputs are missing is ``inconclusive`` with a caveat naming what is missing; no claim function
raises on bad data.

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

from ..bootstrap import Z80, Z95
from ..util import fmt, fmt_near, jsonable

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
NOT_MEASURED = "not measured"  # how the report shows a claim whose inputs are missing (its rule says inconclusive)
ONE_SEED = "one seed per config: training-seed variance is not in the CI"
PAPER_MULTIPLIER = 3.3
PAPER_GSM8K_POINTS = 8.5
NOT_IN_PAPER = "not in the paper"  # a number the report adds (φ): no paper value, no direction the paper states
CONSISTENT, SMALLER, LARGER, UNDETERMINED = ("consistent with the paper", "smaller than the paper",
                                             "larger than the paper", "undetermined")

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
    paper_verdict: str | None = None  # against the paper's value (None: the paper states a direction only)
    mde: float | None = None  # minimum detectable effect at 80% power, in the claim's unit
    mde_text: str | None = None

    def measured_str(self) -> str:
        if self.measured_text is not None:
            return self.measured_text
        return "—" if self.measured is None else with_unit(self.measured, self.unit, self.decimals())

    def ci_str(self) -> str:
        if self.ci_text is not None:
            return self.ci_text
        if self.ci_low is None or self.ci_high is None:
            return "—"
        d = self.decimals()
        return f"[{number(self.ci_low, self.unit, d)}, {number(self.ci_high, self.unit, d)}]"

    def decimals(self) -> int | None:
        """One number of digits for the estimate and its CI (see `decimals_for`)."""
        return decimals_for(self.unit, self.ci_low, self.ci_high)

    @property
    def measured_at_all(self) -> bool:
        return not self.details.get("missing_input")

    def verdict_text(self) -> str:
        """The verdict as a reader should see it: a claim without data is not measured, not 'inconclusive'."""
        return self.verdict if self.measured_at_all else NOT_MEASURED

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def unit_kind(unit: str) -> str:
    """x (a multiplier), % (a share), points (a score difference) or nats (an NLL or a difference of NLLs)."""
    u = unit.strip()
    if u == "x":
        return "x"
    if u.startswith("%"):
        return "%"
    if u.startswith("points"):
        return "points"
    return "nats" if u.startswith("nats") else "other"


def decimals_for(unit: str, low: float | None = None, high: float | None = None) -> int | None:
    """Digits after the point, the same for an estimate and its CI: shares and points to 0.1; NLLs to as many
    decimals as give the CI's half-width two significant digits (3 to 5: 0.036 [0.009, 0.069], 0.0030
    [0.0002, 0.0070]); a multiplier keeps three significant digits (None)."""
    kind = unit_kind(unit)
    if kind in ("%", "points"):
        return 1
    if kind != "nats":
        return None
    half = abs(high - low) / 2 if low is not None and high is not None and math.isfinite(high - low) else 0.0
    if half <= 0:
        return 3
    return int(min(5, max(3, 1 - math.floor(math.log10(half)))))


def number(v: float, unit: str, decimals: int | None) -> str:
    """A value in a claim's unit: '0.978x', '25.9%', '+7.0', '-0.036'."""
    kind = unit_kind(unit)
    if kind == "x":
        return f"{fmt_near(v)}x"
    if kind == "%":
        return f"{v:.{decimals}f}%"
    if kind in ("points", "nats"):
        return f"{v:+.{decimals}f}" if v != 0 else f"{0:.{decimals}f}"
    return fmt(v)


def with_unit(v: float, unit: str, decimals: int | None) -> str:
    """'0.978x', '25.9% loops saved', '+7.0 points', '-0.036 nats/token'."""
    kind = unit_kind(unit)
    if kind == "x":
        return number(v, unit, decimals)
    if kind == "%":
        return number(v, unit, decimals) + unit.strip()[1:]
    return f"{number(v, unit, decimals)} {unit}".strip()


def ensure_columns(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Optional columns (per-sequence NLLs, eval-set keys, ...) as None when a table lacks them."""
    miss = [c for c in cols if c not in df.columns]
    return df.assign(**{c: None for c in miss}) if miss else df


def inconclusive(key: str, name: str, statement: str, paper_value: float | None, paper_text: str, unit: str,
                  rule: str, *caveats: str, details: dict[str, Any] | None = None) -> Claim:
    return Claim(key, name, statement, paper_value, paper_text, None, None, None, unit, INCONCLUSIVE, rule,
                 [c for c in caveats if c], {"missing_input": True, **(details or {})})


def verdict_gt(low: float | None, high: float | None, null: float) -> str:
    """supported if the whole CI is above ``null``, not supported if the whole CI is below, else inconclusive."""
    if low is None or high is None or not (np.isfinite(low) or np.isinf(low)):
        return INCONCLUSIVE
    if low > null:
        return SUPPORTED
    if high < null:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def magnitude_note(low: float | None, high: float | None, paper: float, unit: str = "") -> str:
    if low is None or high is None:
        return ""
    if low <= 0 < paper <= high:  # censored: only an upper end is known
        return f"the CI (< {fmt(high)}{unit}) does not exclude the paper's {paper:g}{unit}"
    if low <= paper <= high:
        return f"the CI covers the paper's {paper:g}{unit}"
    if high < paper:
        return f"the CI lies below the paper's {paper:g}{unit}: the effect here is smaller than claimed"
    return f"the CI lies above the paper's {paper:g}{unit}: the effect here is larger than claimed"



def paper_verdict(low: float | None, high: float | None, paper: float | None, *, multiplicative: bool) -> str | None:
    """The CI against the paper's value. A multiplier CI with a censored lower end (<= 0: 'not reached',
    only an upper bound) can still be 'smaller'; an unbounded upper end can still be 'larger'."""
    if paper is None:
        return None
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)) or \
            (isinstance(high, float) and math.isnan(high)):
        return UNDETERMINED
    if high < paper:
        return SMALLER
    if low > paper:
        return LARGER
    censored = (multiplicative and low <= 0) or math.isinf(high) or math.isinf(low)
    return UNDETERMINED if censored else CONSISTENT


def minimum_detectable(low: float | None, high: float | None, *, multiplicative: bool,
                       estimate: float | None = None) -> float | None:
    """(z_0.975 + z_0.8) x s.e., the s.e. from a 95% CI's width (log scale for a multiplier, returned as a
    multiplier). With one end unbounded (a frontier that never reaches the loss in some replicates), the s.e.
    comes from the finite half around ``estimate``; None when neither works."""
    g = (lambda v: math.log(v) if v is not None and v > 0 else None) if multiplicative else (lambda v: v)
    lo, hi, est = g(low), g(high), g(estimate)
    fin = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    if fin(lo) and fin(hi):
        se = (hi - lo) / (2 * Z95)
    elif fin(est) and (fin(lo) or fin(hi)):
        se = abs(est - (lo if fin(lo) else hi)) / Z95
    else:
        return None
    mde = (Z95 + Z80) * se
    return math.exp(mde) if multiplicative else mde


def _power_ci(c: Claim) -> tuple[float | None, float | None, float | None]:
    """The CI (and estimate) that measure the study's noise: for a multiplier known only as a bound, those of
    the extrapolated frontier (claim 1) — their width still says how noisy the fits are."""
    if c.unit == "x" and (c.ci_low is None or c.ci_low <= 0):
        ev = c.details.get("extrapolated_value") or {}
        return ev.get("low"), ev.get("high"), ev.get("estimate")
    return c.ci_low, c.ci_high, c.measured


def state_power(c: Claim) -> Claim:
    """Fill ``paper_verdict``, ``mde`` and ``mde_text`` of a claim from its CI (see the module docstring)."""
    mult = c.unit == "x"
    c.paper_verdict = paper_verdict(c.ci_low, c.ci_high, c.paper_value, multiplicative=mult)
    if c.details.get("missing_input"):
        c.mde, c.mde_text = None, "— (no data)"
        return c
    lo, hi, est = _power_ci(c)
    if lo is not None and hi is not None and lo == hi:  # every draw equal: nothing varied, nothing measured
        c.mde, c.mde_text = None, "not determined: the CI has zero width (no variation, e.g. every problem scored 0)"
        return c
    c.mde = minimum_detectable(lo, hi, multiplicative=mult, estimate=est)
    if c.mde is None:
        c.mde_text = "not determined (censored or missing CI)"
        return c
    d = c.decimals()
    what = f"{fmt(c.mde)}x" if mult else f"|effect| >= {with_unit(c.mde, c.unit, d).lstrip('+')}"
    c.mde_text = f"{'>= ' if mult else ''}{what} at 80% power"
    paper = c.paper_value
    if paper is not None and paper not in (0, 1):
        effect, need = (math.log(paper), math.log(c.mde)) if mult else (abs(paper), c.mde)
        factor = (need / effect) ** 2 if effect > 0 else math.inf
        c.mde_text += ("; enough to detect the paper's value" if factor <= 1 else
                       f"; the paper's value needs ~{factor:.2g}x the data (eval sequences / groups)")
    return c


def bounded_text(lo: float | None, hi: float | None, unit: str = "x") -> str:
    """A censored multiplier (claims 1 and 2) in words: exact, 'not reached (< hi)', '>= lo', or a range."""
    if lo is None or hi is None:
        return "—"
    if lo == hi or (lo > 0 and math.isfinite(hi) and fmt(lo) == fmt(hi)):
        return f"{fmt(lo)}{unit}"
    if lo <= 0 and math.isinf(hi):
        return "not identified (censored both ways)"
    if lo <= 0:
        return f"not reached (< {fmt_near(hi)}{unit})"
    if math.isinf(hi):
        return f"≥ {fmt(lo)}{unit} (reached at the first eval point)"
    return f"{fmt(lo)}–{fmt(hi)}{unit} (censored groups)"


def bounded_ci_text(lo: float | None, hi: float | None, unit: str = "x") -> str:
    """A multiplier CI whose ends may be censored (claims 1 and 2): '< hi', '≥ lo' or '[lo, hi]'."""
    if lo is None or hi is None:
        return "—"
    if lo <= 0 and math.isinf(hi):
        return "unbounded"
    if lo <= 0:
        return f"< {fmt_near(hi)}{unit}"
    if math.isinf(hi):
        return f"≥ {fmt_near(lo)}{unit}"
    return f"[{fmt_near(lo)}{unit}, {fmt_near(hi)}{unit}]"


def per_run_arrays(d: pd.DataFrame, cols: Sequence[str], order: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Split a table into numpy arrays per run in one pass (pandas per-group filtering is ~100x slower)."""
    if d.empty:
        return {}
    d = d.sort_values(["run", *order], kind="stable")
    runs = d["run"].to_numpy()
    cuts = np.flatnonzero(runs[1:] != runs[:-1]) + 1
    arrs = {c: np.split(d[c].to_numpy(), cuts) for c in cols}
    starts = np.concatenate([[0], cuts])
    return {str(runs[i]): {c: arrs[c][k] for c in cols} for k, i in enumerate(starts)}


def cell(s: Any) -> str:
    """Text for a markdown table cell: no pipes, no line breaks."""
    return str(s).replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Section:
    """A claim's section of the report: its title, the figures it shows, and what it adds below each claim
    of its kind (a table of groups, levels or thresholds) and after them all."""

    key: str
    title: str
    figures: tuple[str, ...] = ()
    details: Callable[[Claim], list[str]] | None = None
    closing: Callable[[Sequence[Claim], Sequence[Claim]], list[str]] | None = None  # (its claims, all claims)
