"""Figures for the report: one style (`style`), training compute (`compute`), looping (`loops`), the tuning stage
(`tuning`). Each ``fig_*``
function returns a `FigureResult`; a figure without data is skipped with a note instead of raising, so a partial
sweep still gets every figure it can support."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..claims import Claim
from ..study_fits import StudyFits
from .compute import fig_isoflop, fig_loss_vs_flops, fig_multiplier, fig_training_curves
from .loops import (fig_adaptive, fig_attention, fig_loop_state, fig_nll_vs_inference_flops, fig_nll_vs_loops,
                    fig_score_vs_loops)
from .style import FigureResult, plt
from .tuning import fig_nll_vs_lr

__all__ = ["FigureResult", "fig_adaptive", "fig_attention", "fig_isoflop", "fig_loop_state", "fig_loss_vs_flops",
           "fig_multiplier", "fig_nll_vs_inference_flops", "fig_nll_vs_loops", "fig_nll_vs_lr", "fig_score_vs_loops",
           "fig_training_curves", "make_figures"]


def make_figures(df: pd.DataFrame, tasks: pd.DataFrame | None, fits: StudyFits | None, claims: Sequence[Claim],
                 figdir: str | Path, formats: Sequence[str] = ("png", "pdf"),
                 loop_diag: pd.DataFrame | None = None, attention: pd.DataFrame | None = None,
                 tuning: pd.DataFrame | None = None) -> list[FigureResult]:
    """All figures; each failure is contained to its figure."""
    figdir = Path(figdir)
    jobs = []
    if fits is not None:
        for conv in fits.conventions:
            jobs.append(lambda conv=conv: fig_loss_vs_flops(df, fits, conv, figdir, formats))
        for fam in ("mdm", "loopmdm", "mdm_deeper"):
            jobs.append(lambda fam=fam: fig_isoflop(fits, fam, figdir, formats))
    jobs += [lambda: fig_multiplier(claims, figdir, formats), lambda: fig_nll_vs_loops(df, figdir, formats),
             lambda: fig_nll_vs_inference_flops(df, figdir, formats),
             lambda: fig_score_vs_loops(tasks, figdir, formats), lambda: fig_adaptive(df, figdir, formats, claims),
             lambda: fig_loop_state(loop_diag, figdir, formats), lambda: fig_training_curves(df, fits, figdir, formats),
             lambda: fig_attention(attention, figdir, formats)]
    if tuning is not None and not tuning.empty:  # a study without a tuning stage says so in its LR section
        jobs.append(lambda: fig_nll_vs_lr(tuning, figdir, formats))
    out = []
    for j in jobs:
        try:
            out.append(j())
        except Exception as e:  # one broken figure must not cost the report
            plt.close("all")
            out.append(FigureResult(getattr(j, "__name__", "figure"), note=f"failed: {e.__class__.__name__}: {e}"))
    return out
