"""Named scaling rules: how batch, LR and warmup follow model size and budget across a sweep.

Each rule is a pure function of a run dict (and the resolved config for rules that need the step count), so
a plan records exactly which rule set each number. Spec syntax: ``scaling: {lr: "inv_sqrt_width:128"}``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from model.config import ConfigError


def _width(run: dict) -> int:
    return int(run.get("model", {}).get("d_model", 128))


def _arg(rule: str, knob: str) -> tuple[str, float | None]:
    name, _, arg = rule.partition(":")
    if not arg:
        return name, None
    try:
        return name, float(arg)
    except ValueError:
        raise ConfigError(f"scaling.{knob}", f"rule {rule!r}: the part after ':' must be a number") from None


def _need(value: float | None, knob: str, rule: str, what: str) -> float:
    if value is None or value <= 0:
        raise ConfigError(f"scaling.{knob}", f"rule {rule!r} needs a positive {what} after ':'")
    return value


def lr_rule(rule: str) -> Callable[[dict], None]:
    """``constant`` | ``inv_width:REF`` (muP-like, lr * REF/d) | ``inv_sqrt_width:REF`` (lr * sqrt(REF/d))."""
    name, ref = _arg(rule, "lr")

    def apply(run: dict) -> None:
        optim = run.setdefault("optim", {})
        base = float(optim.get("lr", 3e-3))
        if name == "inv_width":
            optim["lr"] = base * _need(ref, "lr", rule, "reference width") / _width(run)
        elif name == "inv_sqrt_width":
            optim["lr"] = base * math.sqrt(_need(ref, "lr", rule, "reference width") / _width(run))

    if name not in ("constant", "inv_width", "inv_sqrt_width"):
        raise ConfigError("scaling.lr", f"unknown rule {rule!r}; allowed: constant, inv_width:REF, inv_sqrt_width:REF")
    return apply


def batch_rule(rule: str) -> Callable[[dict], None]:
    """``constant`` | ``sqrt_budget:REF_FLOPS`` (global batch * sqrt(C / REF), rounded to a power of two)."""
    name, ref = _arg(rule, "batch")

    def apply(run: dict) -> None:
        if name == "sqrt_budget":
            batch = run.setdefault("batch", {})
            flops = run.get("budget", {}).get("flops")
            if flops is None:
                raise ConfigError("scaling.batch", "sqrt_budget needs FLOPs budgets (budget.flops)")
            base = int(batch.get("global_batch", 32))
            scaled = base * math.sqrt(float(flops) / _need(ref, "batch", rule, "reference FLOPs budget"))
            batch["global_batch"] = max(1, 2 ** int(round(math.log2(max(scaled, 1)))))

    if name not in ("constant", "sqrt_budget"):
        raise ConfigError("scaling.batch", f"unknown rule {rule!r}; allowed: constant, sqrt_budget:REF_FLOPS")
    return apply


def warmup_rule(rule: str) -> Callable[[dict, int], None]:
    """``constant`` | ``fraction:F`` (warmup = F * the run's steps, which are known only after resolving)."""
    name, frac = _arg(rule, "warmup")

    def apply(run: dict, steps: int) -> None:
        if name == "fraction":
            run.setdefault("optim", {})["warmup_steps"] = int(round(_need(frac, "warmup", rule, "fraction") * steps))

    if name not in ("constant", "fraction"):
        raise ConfigError("scaling.warmup", f"unknown rule {rule!r}; allowed: constant, fraction:F")
    return apply


RULES: dict[str, Callable[[str], Any]] = {"lr": lr_rule, "batch": batch_rule, "warmup": warmup_rule}
