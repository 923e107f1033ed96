"""The paper's claims, each one unit — its computation, the rule its verdict follows, and its section of the
report — in `multiplier` (1), `phi` (1b: the effective-parameter ratio, beside the multiplier; not the paper's),
`protocol` (2), `deeper` (3), `loop_scaling` (4), `adaptive` (5) and `task_delta` (6);
`common` holds the Claim, the verdicts against no effect and against the paper, and power; `study_claims`
runs them all in the report's order."""

from .adaptive import EQUIV_MARGIN_NATS, claim_adaptive
from .study_claims import SECTIONS, all_claims
from .common import (CONSISTENT, INCONCLUSIVE, LARGER, NOT_IN_PAPER, NOT_SUPPORTED, PAPER_GSM8K_POINTS, PAPER_MULTIPLIER,
                     SMALLER, SUPPORTED, TASK_EVAL_CONTRACT, UNDETERMINED, Claim, Section, bounded_ci_text, bounded_text,
                     minimum_detectable, paper_verdict, state_power)
from .deeper import claim_deeper
from .loop_scaling import claim_loop_scaling
from .multiplier import claim_multiplier
from .phi import claim_phi
from .protocol import claim_protocol, multiplier_disagreements
from .task_delta import claim_task_delta

__all__ = [n for n in dir() if not n.startswith("_") and n not in (
    "adaptive", "common", "deeper", "loop_scaling", "multiplier", "phi", "protocol", "study_claims", "task_delta")]
