"""The paper's claims, each turned into a number with a CI and a verdict by a rule stated in the Claim
(the rules and the task-evaluation contract: `analysis.claims.common`)."""

from . import common  # noqa: F401
from .common import CONSISTENT, INCONCLUSIVE, LARGER, NOT_SUPPORTED, SMALLER, SUPPORTED, UNDETERMINED, Claim, PAPER_GSM8K_POINTS, PAPER_MULTIPLIER, TASK_EVAL_CONTRACT, Z80, Z95, _ensure_columns, _inconclusive, _magnitude_note, _verdict_gt, minimum_detectable, paper_verdict, state_power  # noqa: F401
from .multiplier import LEVEL_HI, MULT_RULE, PROTO_RULE, _bounded_value, _bounds, _ci_of_bounds, _crossing, _crossing_draws, _median_bounds, _mult_text, _per_run_arrays, bounded_ci_text, bounded_text, claim_multiplier, claim_protocol  # noqa: F401
from .loops import ADAPT_RULE, DEEPER_RULE, EQUIV_MARGIN_NATS, LOOPS_RULE, claim_adaptive, claim_deeper, claim_loop_scaling  # noqa: F401
from .tasks import TASK_RULE, _align, claim_task_delta  # noqa: F401
from .evaluate import evaluate_claims, multiplier_disagreements  # noqa: F401
