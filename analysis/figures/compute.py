"""Figures of training compute: training curves, compute frontiers per FLOPs convention, IsoFLOP parabolas and
the multiplier against loss (claims 1 and 3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..claims import Claim
from ..select import family_points, fixed_loops, unique_points
from ..study_fits import StudyFits
from .style import (COLORS, CONV_LABEL, LABELS, STYLE, FigureResult, decimal_y, log_x_clean, mticker, plt, save, short,
                    width_marker, widths)


def fig_training_curves(df: pd.DataFrame, fits: StudyFits | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Validation NLL along training vs training FLOPs (exact), one line per run: colour = family, marker = width."""
    name = "training_curves"
    cap = ("Validation NLL along training vs training FLOPs (exact), one line per run (LoopMDM at the claims' S); "
           "colour: family, marker: width")
    loops = fits.loops if fits is not None else None
    parts = [family_points(df, fam, loops, final_only=False) for fam in COLORS]
    d = pd.concat([p for p in parts if not p.empty]) if any(not p.empty for p in parts) else pd.DataFrame()
    if d.empty or "flops_exact" not in d or d.groupby("run")["step"].nunique().max() < 2:
        return FigureResult(name, note="no run has evaluations at >= 2 training steps", caption=cap)
    d = d[pd.to_numeric(d["flops_exact"], errors="coerce") > 0]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for run, dr in d.sort_values("flops_exact").groupby("run", sort=False):
            fam = dr["family"].iloc[0]
            ax.plot(dr["flops_exact"], dr["nll"], color=COLORS.get(fam, "0.5"), alpha=0.55, lw=0.9,
                    marker=width_marker(df, dr["d_model"].iloc[0]), ms=3)
        for fam in COLORS:
            if (d["family"] == fam).any():
                ax.plot([], [], color=COLORS[fam], label=LABELS[fam])
        for w in widths(d):
            ax.plot([], [], color="0.5", ls="none", marker=width_marker(df, w), label=f"width {w:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_x_clean(ax)
        decimal_y(ax)
        ax.set_xlabel("training FLOPs [exact matmul]")
        ax.set_ylabel("validation NLL [nats/token]")
        ax.set_title("Training curves")
        ax.legend(fontsize=7, ncol=2)
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_loss_vs_flops(df: pd.DataFrame, fits: StudyFits, conv: str, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = f"loss_vs_flops_{conv.replace('flops_', '')}"
    cap = (f"Final validation NLL vs training FLOPs ({CONV_LABEL.get(conv, conv)}), per family; lines: fitted frontier "
           f"L(C) = E + A·C^-α, bands: 95% bootstrap")
    fams = [f for f in COLORS if fits.get_frontier(f, conv) is not None]
    if not fams:
        return FigureResult(name, note=f"no frontier fits under {conv}", caption=cap)
    any_fit = any(fits.get_frontier(f, conv).ok for f in fams)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for fam in fams:
            fit = fits.get_frontier(fam, conv)
            d = fixed_loops(df[(df["family"] == fam) & df["is_final"]])
            if fam == "loopmdm" and fits.loops is not None:
                d = d[d["eval_loops"] == fits.loops]
            d = unique_points(d).drop_duplicates("run")
            if conv in d:  # with a fit, the points it does not rest on are faint; without one, every point counts
                for w, dw in d.groupby("d_model", dropna=False):
                    ax.scatter(dw[conv], dw["nll"], s=12 if any_fit else 26, alpha=0.45 if any_fit else 0.9,
                               color=COLORS[fam], lw=0 if any_fit else 0.4, edgecolor="k", marker=width_marker(df, w))
            if fit.ok:
                pts = [r for r in fit.residuals if r.get("on_frontier")]
                ax.scatter([r["C"] for r in pts], [r["loss"] for r in pts], s=22, color=COLORS[fam],
                           edgecolor="k", lw=0.4, zorder=3)
                lo_c, hi_c = fit.C_range
                cg = np.geomspace(lo_c, hi_c, 120)  # solid where there are data, dashed where extrapolated
                ax.plot(cg, fit.predict(cg), color=COLORS[fam],
                        label=f"{LABELS[fam]}: α={fit.alpha.estimate:.3f}, "
                              f"{'E=0 fixed' if fit.E_fixed else f'E={fit.E.estimate:.2f}'} ({fit.method})")
                for a, b in ((lo_c / 1.5, lo_c), (hi_c, hi_c * 1.5)):
                    ce = np.geomspace(a, b, 20)
                    ax.plot(ce, fit.predict(ce), color=COLORS[fam], ls="--", lw=1.0)
                lo, hi = fit.predict_band(cg)
                ax.fill_between(cg, lo, hi, color=COLORS[fam], alpha=0.15, lw=0)
            else:
                ax.scatter([], [], s=26, color=COLORS[fam], edgecolor="k", lw=0.4,
                           label=f"{LABELS[fam]}: no fit ({short(fit.message)})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_x_clean(ax)
        decimal_y(ax)
        ax.set_xlabel(f"training FLOPs [{CONV_LABEL.get(conv, conv)}]")
        ax.set_ylabel("validation NLL [nats/token]")
        title = "Compute frontier"
        if fits.loops is not None:
            title += f" (LoopMDM at S={fits.loops})"
        ax.set_title(title)
        if any_fit:
            ax.scatter([], [], s=22, color="0.5", edgecolor="k", lw=0.4, label="points the frontier is fitted to")
            ax.scatter([], [], s=10, color="0.5", alpha=0.35, lw=0, label="other final runs")
            ax.plot([], [], color="0.5", ls="--", lw=1.0, label="fit extrapolated beyond the data")
        for w in widths(df):
            ax.scatter([], [], s=12, color="0.5", marker=width_marker(df, w), label=f"width {w:g}")
        # below the axes: bands and points fill the plot area
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2 if any_fit else 1, fontsize=7)
        if not any_fit:
            cap = (f"Final validation NLL vs training FLOPs ({CONV_LABEL.get(conv, conv)}), per family; points only: "
                   f"no frontier could be fitted (see What is missing)")
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_isoflop(fits: StudyFits, family: str, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = f"isoflop_{family}"
    cap = (f"IsoFLOP curves for {LABELS.get(family, family)}: loss vs size per budget, parabola in log N; ★ the "
           f"parabola's minimum (hollow, parabola dotted out to it: beyond the sizes tried, not trusted)")
    iso = fits.isoflop.get(family)
    if iso is None or not any(b.coeffs for b in iso.budgets):
        return FigureResult(name, note=f"no IsoFLOP parabolas for {family}", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        cmap = plt.get_cmap("viridis")
        bs = [b for b in iso.budgets if b.N]
        kinds = set()  # which stars are drawn: filled (trusted) and/or hollow (beyond the sizes tried)
        for i, b in enumerate(bs):
            col = cmap(i / max(1, len(bs) - 1))
            ax.scatter(b.N, b.loss, s=14, color=col)
            if not b.coeffs:
                continue
            c0, c1, c2 = b.coeffs
            lo, hi = np.log(min(b.N)) - b.xc - 0.2, np.log(max(b.N)) - b.xc + 0.2
            xs = np.linspace(lo, hi, 80)
            star = b.N_star is not None and b.L_star is not None
            if not c2 > 0:  # a parabola opening downwards explains nothing: the points alone
                ax.scatter([], [], s=14, color=col, label=f"C={b.budget:.1e} (loss not convex in N: no parabola)")
                continue
            ax.plot(np.exp(xs + b.xc), c0 + c1 * xs + c2 * xs * xs, color=col, lw=1, label=f"C={b.budget:.1e}")
            if star:  # the star lies on its parabola: dotted out to it where it is beyond the sizes tried
                x_star = math.log(b.N_star.estimate) - b.xc
                if not lo <= x_star <= hi:
                    xe = np.linspace(min(x_star, lo), max(x_star, hi), 80)
                    xe = xe[(xe < lo) | (xe > hi)]
                    ax.plot(np.exp(xe + b.xc), c0 + c1 * xe + c2 * xe * xe, color=col, lw=0.9, ls=":")
                ax.scatter([b.N_star.estimate], [b.L_star.estimate], marker="*", s=110, zorder=4,
                           facecolor="none" if b.edge else col, edgecolor="k", lw=0.7)
                kinds.add("edge" if b.edge else "trusted")
        ax.set_xscale("log")
        log_x_clean(ax)
        losses = [v for b in bs for v in b.loss] + [b.L_star.estimate for b in bs if b.L_star is not None]
        pad = max(0.3 * (max(losses) - min(losses)), 0.05)  # a parabola without a minimum must not set the scale
        ax.set_ylim(min(losses) - pad, max(losses) + pad)
        decimal_y(ax)
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("final validation NLL [nats/token]")
        t = f"IsoFLOP: {LABELS.get(family, family)}"
        if iso.N_opt is not None:
            t += f" — N* ∝ C^{iso.N_opt.exponent.estimate:.2f}"
        ax.set_title(t)
        if "trusted" in kinds:
            ax.scatter([], [], marker="*", s=80, color="0.5", edgecolor="k", lw=0.7, label="optimum (parabola minimum)")
        if "edge" in kinds:
            ax.scatter([], [], marker="*", s=80, facecolor="none", edgecolor="k", lw=0.7,
                       label="optimum beyond the sizes tried (not trusted)")
        ax.legend(ncol=2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_multiplier(claims: Sequence[Claim], figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """The multiplier against the loss level, one panel per FLOPs convention (drawn in one panel the three
    curves lie on top of each other), each with its band and the reference lines named in the legend."""
    name = "multiplier_vs_loss"
    cap = ("Training-FLOPs multiplier (MDM FLOPs / LoopMDM FLOPs to reach a loss) vs loss level, one panel per FLOPs "
           "convention; bands: 95% bootstrap; grey: loss levels LoopMDM was not observed at (extrapolated)")
    cs = [c for c in claims if c.key.startswith("multiplier[") and c.details.get("curve")]
    if not cs:
        return FigureResult(name, note="no fitted multiplier (frontiers missing)", caption=cap)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(cs), figsize=(3.4 * len(cs) + 0.6, 3.8), sharey=True, squeeze=False)
        for i, (ax, c) in enumerate(zip(axes[0], cs)):
            cv = c.details["curve"]
            x = np.array(cv["loss_levels"], float)
            y, lo, hi = (np.array([np.nan if v is None else v for v in cv[k]], float) for k in ("estimate", "low", "high"))
            col = plt.get_cmap("tab10")(i)
            conv = c.details.get("convention", "")
            ax.plot(x, y, color=col, label="multiplier (fitted frontiers)")
            ax.fill_between(x, np.clip(lo, 0.05, 20), np.clip(hi, 0.05, 20), color=col, alpha=0.18, lw=0,
                            label="95% bootstrap band")
            lr = c.details.get("loopmdm_loss_range")
            if lr and x.size and x.min() < lr[0]:
                ax.axvspan(x.min(), lr[0], color="0.85", alpha=0.5, lw=0, label="LoopMDM not observed (extrapolated)")
            ax.axhline(1.0, color="k", lw=0.8, ls=":", label="1x: no saving")
            ax.axhline(3.3, color="firebrick", lw=0.8, ls="--", label="paper: up to 3.3x")
            ax.set_yscale("log")
            ax.set_title(CONV_LABEL.get(conv, conv), fontsize=9)
            ax.set_xlabel("validation NLL level [nats/token]")
        ax0 = axes[0][0]
        ylo, yhi = ax0.get_ylim()
        ax0.set_ylim(max(ylo, 0.05), min(max(yhi, 4.0), 20))
        ylo, yhi = ax0.get_ylim()
        tk = [t for t in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20) if ylo <= t <= yhi]
        for ax in axes[0]:
            ax.yaxis.set_major_locator(mticker.FixedLocator(tk))
            ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(mticker.NullLocator())
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax0.set_ylabel("FLOPs multiplier [x]")
        handles, labels = ax0.get_legend_handles_labels()
        # the curve and its band: every panel has its own colour, the legend shows them in a neutral one
        handles[:2] = [plt.Line2D([], [], color="0.35"), plt.matplotlib.patches.Patch(color="0.35", alpha=0.18)]
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=3, fontsize=7, frameon=False)
        fig.suptitle("How many times fewer FLOPs LoopMDM needs")
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)
