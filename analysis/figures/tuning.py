"""The tuning stage's figure: final NLL vs LR per family at the tuning budget, one panel per width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .style import COLORS, LABELS, STYLE, FigureResult, decimal_y, log_x_clean, plt, save


def fig_nll_vs_lr(t: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = "nll_vs_lr"
    cap = ("Final validation NLL vs learning rate at the tuning budget, per family (LoopMDM at the S the claims read); "
           "bars: ±1 s.e. of the difference to the family's chosen LR, paired over the shared evaluation sequences (the "
           "noise the choice rests on); ringed: the LR the family's grid runs trained at; ✕ at the top: diverged")
    if t is None or t.empty:
        return FigureResult(name, note="no tuning stage", caption=cap)
    widths = sorted(t["width"].dropna().unique())
    diverged: list[tuple[plt.Axes, np.ndarray, str]] = []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(widths), figsize=(4.2 * len(widths) + 1.0, 3.8), squeeze=False, sharey=True)
        for ax, w in zip(axes[0], widths):
            tw = t[t["width"] == w]
            several = tw.groupby("family")["key"].nunique().max() > 1  # by: model: name the keys
            for key, g in tw.groupby("key", sort=True):
                fam = str(g["family"].iloc[0])
                col = COLORS.get(fam, "0.4")
                ok = g[g["state"] == "done"].sort_values("lr")
                if ok.empty and not (g["state"] == "diverged").any():
                    continue  # nothing measured yet (its tuning unfinished): no legend entry
                label = LABELS.get(fam, fam) + (f" ({key})" if several else "")
                ax.errorbar(ok["lr"], ok["nll"], yerr=pd.to_numeric(ok["se_vs_chosen"], errors="coerce").fillna(0.0),
                            color=col, marker="o", ms=4, capsize=2, label=label)
                ch = ok[ok["chosen"]]
                ax.plot(ch["lr"], ch["nll"], "o", ms=11, mfc="none", mec=col, mew=1.6)
                div = g[g["state"] == "diverged"]["lr"].to_numpy(float)
                if div.size:
                    diverged.append((ax, div, col))
            ax.set_xscale("log")
            log_x_clean(ax)
            ax.set_xlabel("learning rate")
            ax.set_title(f"width {int(w)}")
        axes[0][0].set_ylabel("final NLL [nats/token]")
        lo, hi = axes[0][0].get_ylim()
        for ax, lrs, col in diverged:
            ax.plot(lrs, np.full(lrs.size, hi - 0.03 * (hi - lo)), "x", color=col, ms=8, mew=2)
        for ax in axes[0]:
            decimal_y(ax)
        axes[0][0].legend()
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)
