"""The positive control: on data where depth must help, does the harness see looping help? (`criteria`: the gate,
the criteria and the inert test, measured; `preregistration`: what counts, from the spec's ``control:``.) The
report renders the result (`analysis.report.control`) and draws its accuracy per depth (`analysis.figures.control`).
"""
from .criteria import (DETECTED, INERT, NO_DATA, NO_GATE, NOT_DETECTED, ControlResult, Criterion, control_for_study,
                       deep_mean, detected_effects, evaluate_control, fmt_signed, load_depth_evals, paired_ci)
from .preregistration import SPEC_KEY, Preregistration, PreregistrationError, read_preregistration

__all__ = ["DETECTED", "INERT", "NO_DATA", "NO_GATE", "NOT_DETECTED", "SPEC_KEY", "ControlResult", "Criterion",
           "Preregistration", "PreregistrationError", "control_for_study", "deep_mean", "detected_effects",
           "evaluate_control", "fmt_signed", "load_depth_evals", "paired_ci", "read_preregistration"]
