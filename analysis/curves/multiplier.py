"""The efficiency multiplier: baseline FLOPs / LoopMDM FLOPs to reach the same loss, read off fitted curves."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..bootstrap import LEVEL, percentile_ci
from ..util import jsonable
from .core import Interval
from .frontier import FrontierFit


# ----------------------------------------------------------------------------------- multiplier
@dataclass
class MultiplierCurve:
    """FLOPs the baseline needs to reach a loss / FLOPs the other family needs (>1: the other family
    is cheaper). ``at`` is the headline loss level (the baseline's best observed loss)."""

    loss_levels: list[float]
    estimate: list[float]
    low: list[float | None]
    high: list[float | None]
    at_loss: float
    value: Interval
    extrapolated: list[str]
    n_boot_ok: int
    level: float = LEVEL

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def efficiency_multiplier(
    base: FrontierFit, other: FrontierFit, at_loss: float, loss_levels: Sequence[float] | None = None,
    level: float = LEVEL,
) -> MultiplierCurve:
    """Invert both fitted frontiers at each loss level; CI from pairing independent bootstrap
    replicates of the two families (the families were trained independently)."""
    if loss_levels is None:
        loss_levels = [at_loss]
    levels = np.concatenate([[at_loss], np.asarray(loss_levels, float)])
    with np.errstate(all="ignore"):
        est = base.invert(levels) / other.invert(levels)
    sb, so = base.invert_samples(levels), other.invert_samples(levels)
    n = min(len(sb), len(so))
    lows, highs, n_ok = [], [], 0
    if n >= 2:
        with np.errstate(all="ignore"):
            R = sb[:n] / so[:n]
        rows_ok = ~np.isnan(R).all(axis=1)
        n_ok = int(rows_ok.sum())
        for k in range(levels.size):
            lo, hi = percentile_ci(R[:, k], level)
            lows.append(lo)
            highs.append(hi)
    else:
        lows = highs = [None] * levels.size
    extrap = []
    for fit in (base, other):
        if fit.loss_range and not (fit.loss_range[0] <= at_loss <= fit.loss_range[1]):
            extrap.append(f"{fit.family or 'family'}: loss {at_loss:.4g} outside its observed range "
                          f"[{fit.loss_range[0]:.4g}, {fit.loss_range[1]:.4g}] (extrapolated)")
    return MultiplierCurve(
        loss_levels=levels[1:].tolist(), estimate=est[1:].tolist(), low=lows[1:], high=highs[1:],
        at_loss=float(at_loss), value=Interval(float(est[0]), lows[0], highs[0], level), extrapolated=extrap,
        n_boot_ok=n_ok, level=level)


