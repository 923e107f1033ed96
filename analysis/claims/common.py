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
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .._util import fmt, jsonable

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


