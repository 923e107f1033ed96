"""Figures for the report: one style, PNG + PDF, units on every axis, log scales where quantities span decades.

Each ``fig_*`` function returns a ``FigureResult``; a figure without data is skipped with a note
instead of raising, so a partial sweep still gets every figure it can support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .claims import Claim  # noqa: E402
from .select import family_points, fixed_loops, unique_points  # noqa: E402
from .study_fits import StudyFits  # noqa: E402

COLORS = {"mdm": "#4C72B0", "loopmdm": "#DD8452", "mdm_deeper": "#55A868"}
LABELS = {"mdm": "MDM (same size)", "loopmdm": "LoopMDM", "mdm_deeper": "MDM (deeper)"}
CONV_LABEL = {"flops_6N_nonembed": "6·N_nonembed·D", "flops_6N_total": "6·N_total·D", "flops_exact": "exact matmul"}
MIN_DNLL_SPAN = 0.02  # nats/token: the smallest half-range a ΔNLL axis shows
STYLE = {
    "figure.figsize": (6.0, 4.2), "figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "font.size": 9.5, "legend.fontsize": 8,
    "legend.frameon": False, "lines.linewidth": 1.6,
}


@dataclass
class FigureResult:
    name: str
    files: list[str] = field(default_factory=list)
    note: str | None = None
    caption: str = ""

    @property
    def made(self) -> bool:
        return bool(self.files)

    def to_dict(self) -> dict[str, Any]:
        return dict(name=self.name, files=self.files, note=self.note, caption=self.caption)


MARKERS = "os^DvP*X"


def _widths(df: pd.DataFrame) -> list[float]:
    return sorted(pd.to_numeric(df["d_model"], errors="coerce").dropna().unique()) if "d_model" in df else []


def _width_marker(df: pd.DataFrame, width: Any) -> str:
    """One marker per model width, the same in every figure of a study (the widths in sorted order)."""
    ws = _widths(df)
    try:
        return MARKERS[ws.index(float(width)) % len(MARKERS)]
    except (ValueError, TypeError):
        return "o"


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
                    marker=_width_marker(df, dr["d_model"].iloc[0]), ms=3)
        for fam in COLORS:
            if (d["family"] == fam).any():
                ax.plot([], [], color=COLORS[fam], label=LABELS[fam])
        for w in _widths(d):
            ax.plot([], [], color="0.5", ls="none", marker=_width_marker(df, w), label=f"width {w:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_x_clean(ax)
        _decimal_y(ax)
        ax.set_xlabel("training FLOPs [exact matmul]")
        ax.set_ylabel("validation NLL [nats/token]")
        ax.set_title("Training curves")
        ax.legend(fontsize=7, ncol=2)
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def _short(message: str, limit: int = 48) -> str:
    """A fit's message for a legend: its first clause, cut at a word boundary (never mid-word)."""
    first = message.split(" (")[0].split(": ")[0].split("; ")[0]
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + " …"


def _sci(v: float) -> str:
    """1e12 -> '1e12', 3e11 -> '3e11' (short, never '3×10^11' crammed between minor ticks)."""
    if v <= 0 or not np.isfinite(v):
        return ""
    e = int(math.floor(math.log10(v) + 1e-9))
    m = v / 10**e
    return f"{m:.0f}e{e}" if abs(m - round(m)) < 1e-6 else f"{m:.1f}e{e}"


def _log_x_clean(ax: plt.Axes) -> None:
    """Log x axis with labels only at 1, 2, 5 x 10^k when the axis spans < 2 decades (else 10^k), as '3e11'."""
    lo, hi = ax.get_xlim()
    subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) < 2.2 else (1.0,)
    ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _sci(v)))
    ax.xaxis.set_minor_locator(mticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _decimal_y(ax: plt.Axes, target: int = 6) -> None:
    """Plain decimal labels (2.4, 2.6, ...) on a log or linear y axis; no minor labels."""
    lo, hi = ax.get_ylim()
    span = hi - lo
    if not (np.isfinite(span) and span > 0):
        return
    step = next((st for st in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10) if span / st <= target), 10)
    ticks = np.arange(math.ceil(lo / step) * step, hi + 1e-12, step)
    ticks = ticks[ticks > 0] if ax.get_yscale() == "log" else ticks
    dec = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    ax.yaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter(f"%.{dec}f"))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())


def _save(fig: plt.Figure, figdir: Path, name: str, formats: Sequence[str]) -> list[str]:
    figdir.mkdir(parents=True, exist_ok=True)
    out = []
    fig.tight_layout()
    for ext in formats:
        p = figdir / f"{name}.{ext}"
        fig.savefig(p, bbox_inches="tight")
        out.append(str(p))
    plt.close(fig)
    return out


def fig_loss_vs_flops(df: pd.DataFrame, fits: StudyFits, conv: str, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = f"loss_vs_flops_{conv.replace('flops_', '')}"
    cap = (f"Final validation NLL vs training FLOPs ({CONV_LABEL.get(conv, conv)}), per family; lines: fitted frontier "
           f"L(C) = E + A·C^-α, bands: 95% bootstrap")
    fams = [f for f in COLORS if fits.get_frontier(f, conv) is not None]
    if not fams:
        return FigureResult(name, note=f"no frontier fits under {conv}", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for fam in fams:
            fit = fits.get_frontier(fam, conv)
            d = fixed_loops(df[(df["family"] == fam) & df["is_final"]])
            if fam == "loopmdm" and fits.loops is not None:
                d = d[d["eval_loops"] == fits.loops]
            d = unique_points(d).drop_duplicates("run")
            if conv in d:
                for w, dw in d.groupby("d_model", dropna=False):
                    ax.scatter(dw[conv], dw["nll"], s=12, alpha=0.45, color=COLORS[fam], lw=0,
                               marker=_width_marker(df, w))
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
                ax.plot([], [], color=COLORS[fam], label=f"{LABELS[fam]}: no fit ({_short(fit.message)})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_x_clean(ax)
        _decimal_y(ax)
        ax.set_xlabel(f"training FLOPs [{CONV_LABEL.get(conv, conv)}]")
        ax.set_ylabel("validation NLL [nats/token]")
        title = "Compute frontier"
        if fits.loops is not None:
            title += f" (LoopMDM at S={fits.loops})"
        ax.set_title(title)
        ax.scatter([], [], s=22, color="0.5", edgecolor="k", lw=0.4, label="points the frontier is fitted to")
        ax.scatter([], [], s=10, color="0.5", alpha=0.35, lw=0, label="other final runs")
        ax.plot([], [], color="0.5", ls="--", lw=1.0, label="fit extrapolated beyond the data")
        for w in _widths(df):
            ax.scatter([], [], s=12, color="0.5", marker=_width_marker(df, w), label=f"width {w:g}")
        # below the axes: bands and points fill the plot area
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7)
        if not any(fits.get_frontier(f, conv).ok for f in fams):
            cap = (f"Final validation NLL vs training FLOPs ({CONV_LABEL.get(conv, conv)}), per family; points only: "
                   f"no frontier could be fitted (see What is missing)")
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_isoflop(fits: StudyFits, family: str, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = f"isoflop_{family}"
    cap = f"IsoFLOP curves for {LABELS.get(family, family)}: loss vs size per budget, parabola in log N; ★ optimum (hollow: at the grid edge, not trusted)"
    iso = fits.isoflop.get(family)
    if iso is None or not any(b.coeffs for b in iso.budgets):
        return FigureResult(name, note=f"no IsoFLOP parabolas for {family}", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        cmap = plt.get_cmap("viridis")
        bs = [b for b in iso.budgets if b.N]
        for i, b in enumerate(bs):
            col = cmap(i / max(1, len(bs) - 1))
            ax.scatter(b.N, b.loss, s=14, color=col)
            if b.coeffs:
                xs = np.linspace(np.log(min(b.N)) - b.xc - 0.2, np.log(max(b.N)) - b.xc + 0.2, 80)
                c0, c1, c2 = b.coeffs
                ax.plot(np.exp(xs + b.xc), c0 + c1 * xs + c2 * xs * xs, color=col, lw=1, label=f"C={b.budget:.1e}")
            if b.N_star is not None and b.L_star is not None:
                ax.scatter([b.N_star.estimate], [b.L_star.estimate], marker="*", s=110, zorder=4,
                           facecolor="none" if b.edge else col, edgecolor="k", lw=0.7)
        ax.set_xscale("log")
        _log_x_clean(ax)
        _decimal_y(ax)
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("final validation NLL [nats/token]")
        t = f"IsoFLOP: {LABELS.get(family, family)}"
        if iso.N_opt is not None:
            t += f" — N* ∝ C^{iso.N_opt.exponent.estimate:.2f}"
        ax.set_title(t)
        ax.legend(ncol=2, fontsize=7)
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_multiplier(claims: Sequence[Claim], figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = "multiplier_vs_loss"
    cap = "Training-FLOPs multiplier (MDM FLOPs / LoopMDM FLOPs to reach a loss) vs loss level, per FLOPs convention; bands: 95% bootstrap"
    cs = [c for c in claims if c.key.startswith("multiplier[") and c.details.get("curve")]
    if not cs:
        return FigureResult(name, note="no fitted multiplier (frontiers missing)", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for i, c in enumerate(cs):
            cv = c.details["curve"]
            x = np.array(cv["loss_levels"], float)
            y = np.array([np.nan if v is None else v for v in cv["estimate"]], float)
            lo = np.array([np.nan if v is None else v for v in cv["low"]], float)
            hi = np.array([np.nan if v is None else v for v in cv["high"]], float)
            col = plt.get_cmap("tab10")(i)
            conv = c.details.get("convention", "")
            ax.plot(x, y, color=col, label=CONV_LABEL.get(conv, conv))
            ax.fill_between(x, np.clip(lo, 0.05, 20), np.clip(hi, 0.05, 20), color=col, alpha=0.15, lw=0)
            lr = c.details.get("loopmdm_loss_range")
            if lr and i == 0 and x.size and x.min() < lr[0]:
                ax.axvspan(x.min(), lr[0], color="0.85", alpha=0.5, lw=0,
                           label="LoopMDM not observed this low (extrapolated)")
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.axhline(3.3, color="firebrick", lw=0.8, ls="--", label="paper: 3.3x")
        ax.set_yscale("log")
        ylo, yhi = ax.get_ylim()
        ax.set_ylim(max(ylo, 0.05), min(yhi, 20))
        ylo, yhi = ax.get_ylim()
        tk = [t for t in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20) if ylo <= t <= yhi]
        ax.yaxis.set_major_locator(mticker.FixedLocator(tk))
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(mticker.NullLocator())
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xlabel("validation NLL level [nats/token]")
        ax.set_ylabel("FLOPs multiplier [x]")
        ax.set_title("How many times fewer FLOPs LoopMDM needs")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7)
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_nll_vs_loops(df: pd.DataFrame, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = "nll_vs_loops"
    cap = "Change in final NLL vs inference loops S relative to S=1 (thin: runs; thick: mean); dotted: training s_max"
    d = unique_points(fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]]))
    if d.empty or d["eval_loops"].nunique() < 2:
        return FigureResult(name, note="no loop scan (final evals at >= 2 loop counts)", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        curves = {}
        for run, dr in d.groupby("run"):
            dr = dr.sort_values("eval_loops")
            ref = dr["nll"].iloc[0]
            ax.plot(dr["eval_loops"], dr["nll"] - ref, color=COLORS["loopmdm"], alpha=0.15, lw=0.8)
            for s, v in zip(dr["eval_loops"], dr["nll"] - ref):
                curves.setdefault(int(s), []).append(v)
        ss = sorted(curves)
        m = [np.mean(curves[s]) for s in ss]
        se = [np.std(curves[s], ddof=1) / math.sqrt(len(curves[s])) if len(curves[s]) > 1 else 0 for s in ss]
        ax.errorbar(ss, m, yerr=1.96 * np.array(se), color=COLORS["loopmdm"], lw=2.2, capsize=2, label="mean ± 95% CI")
        for sm in sorted(pd.to_numeric(d["s_max"], errors="coerce").dropna().unique()):
            ax.axvline(sm, color="k", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(mticker.FixedLocator(ss))
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(mticker.NullLocator())
        ax.set_xlabel("inference loops S")
        ax.set_ylabel("ΔNLL vs S=1 [nats/token]")
        # never stretch a tiny effect over the whole plot: at least ±MIN_DNLL_SPAN around 0 stays in view
        y0, y1 = ax.get_ylim()
        ax.set_ylim(min(y0, -MIN_DNLL_SPAN), max(y1, MIN_DNLL_SPAN))
        ax.set_title("Inference-loop scaling (LoopMDM, final checkpoints)")
        ax.legend()
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def inference_flops(row: pd.Series, loops: float) -> float:
    """One denoising step's forward FLOPs per token (exact convention) of a table row's model at ``loops``;
    the vocabulary comes from the (tied) embedding's parameter count. The head count does not change the
    FLOPs, so one head stands in for it (any width divides by one)."""
    from model import ModelConfig, flops

    variant = str(row.get("variant") or "plain")
    head, mid, tail = int(row["n_head_layers"]), int(row["n_mid_layers"]), int(row["n_tail_layers"])
    s_max = max(1, int(row["s_max"]))
    if mid == 0:  # a plain stack written as head + tail: the same FLOPs as one mid block applied once
        head, mid, tail, s_max, loops = 0, head + tail, 0, 1, 1
    cfg = ModelConfig(vocab_size=int(round(row["params_embedding"] / row["d_model"])), d_model=int(row["d_model"]),
                      n_heads=1, n_head_layers=head, n_mid_layers=mid, n_tail_layers=tail, s_max=s_max,
                      max_seq_len=int(row["seq_len"]),
                      loop_input="concat" if "inject=concat" in variant else "add" if "inject=add" in variant else "none")
    return flops.inference_flops_per_token(cfg, int(row["seq_len"]), loops)


def fig_nll_vs_inference_flops(df: pd.DataFrame, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Final NLL against one denoising step's FLOPs per token, at the largest budget of each width: LoopMDM
    at each fixed S (line) and with adaptive exit (triangles, at the loops it used), the same-size and the
    deeper MDM as single points."""
    name = "nll_vs_inference_flops"
    cap = ("Final validation NLL vs inference FLOPs per token and denoising step (exact), largest budget per width: "
           "LoopMDM at fixed S (circles, labelled S) and adaptive exit (triangles, at its mean loops); "
           "squares: same-size MDM; diamonds: deeper MDM")
    fin = df[df["is_final"]].copy() if "is_final" in df else pd.DataFrame()
    if fin.empty or not (fin["family"] == "loopmdm").any():
        return FigureResult(name, note="no final evaluations of looped runs", caption=cap)
    top = fin[fin["budget_flops"] == fin.groupby("d_model")["budget_flops"].transform("max")]
    groups = sorted(g for g in top.loc[top["family"] == "loopmdm", "group"].unique() if g)
    if not groups:
        return FigureResult(name, note="no comparison groups at the largest budget", caption=cap)
    cmap = plt.get_cmap("tab10")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for i, g in enumerate(groups):
            dg, color = top[top["group"] == g], cmap(i)
            lp = dg[dg["family"] == "loopmdm"]
            width = int(lp["d_model"].iloc[0])
            fixed = lp[lp["exit_threshold"].isna()].drop_duplicates("eval_loops").sort_values("eval_loops")
            xs = [inference_flops(r, r["eval_loops"]) for _, r in fixed.iterrows()]
            ax.plot(xs, fixed["nll"], color=color, marker="o", ms=4, label=f"LoopMDM d{width}, fixed S")
            for x, (_, r) in zip(xs, fixed.iterrows()):
                ax.annotate(f"S={int(r['eval_loops'])}", (x, r["nll"]), textcoords="offset points", xytext=(3, 3),
                            fontsize=6, color=color)
            ada = lp[lp["exit_threshold"].notna() & lp["mean_loops"].notna()]
            if not ada.empty:
                ax.scatter([inference_flops(r, r["mean_loops"]) for _, r in ada.iterrows()], ada["nll"], marker="^",
                           color=color, s=28, label=f"LoopMDM d{width}, adaptive exit")
            for fam, marker in (("mdm", "s"), ("mdm_deeper", "D")):
                for _, r in dg[dg["family"] == fam].drop_duplicates("run").iterrows():
                    ax.scatter([inference_flops(r, 1)], [r["nll"]], marker=marker, color=color, s=30,
                               edgecolor="k", lw=0.5)
        ax.scatter([], [], marker="s", color="w", edgecolor="k", label="same-size MDM")
        ax.scatter([], [], marker="D", color="w", edgecolor="k", label="deeper MDM")
        ax.set_xscale("log")
        ax.set_xlabel("inference FLOPs per token per denoising step (exact)")
        ax.set_ylabel("final validation NLL [nats/token]")
        ax.set_title("Quality vs inference compute")
        ax.legend(fontsize=7, loc="best")
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_score_vs_loops(tasks: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = "score_vs_loops"
    cap = ("Task score vs inference loops (LoopMDM, mean over comparison groups); dashed: same-size MDM, dotted: "
           "deeper MDM")
    if tasks is None or tasks.empty or "loops" not in tasks:
        return FigureResult(name, note="no task evaluations", caption=cap)
    lt = tasks[(tasks["family"] == "loopmdm")].drop_duplicates("file")
    if lt.empty:
        return FigureResult(name, note="no task evaluations of LoopMDM", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for i, (task, dt) in enumerate(lt.groupby("task")):
            col = plt.get_cmap("tab10")(i)
            g = dt.groupby("loops")["score"].mean() * 100
            ax.plot(g.index, g.values, marker="o", color=col, label=f"{task} (LoopMDM)")
            for fam, ls in (("mdm", "--"), ("mdm_deeper", ":")):
                b = tasks[(tasks["family"] == fam) & (tasks["task"] == task)].drop_duplicates("file")
                if not b.empty:
                    ax.axhline(100 * b["score"].mean(), color=col, ls=ls, lw=1, label=f"{task} ({LABELS[fam]})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("inference loops S")
        ax.set_ylabel("score [points]")
        ax.set_title("Task score vs loops")
        ax.legend()
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_adaptive(df: pd.DataFrame, figdir: Path, formats=("png", "pdf"), claims: Sequence[Claim] = ()) -> FigureResult:
    name = "adaptive_loops"
    cap = ("Adaptive exit: mean loops used (left, dotted: the cap) and ΔNLL vs fixed S = cap (right, with the "
           "claim's 95% CI; shaded: the equal-quality margin) vs exit threshold; mean over runs")
    d = unique_points(df[(df["family"] == "loopmdm") & df["is_final"]])
    ad = d[d["exit_threshold"].notna()]
    if ad.empty:
        return FigureResult(name, note="no adaptive-exit evaluations (exit_threshold set)", caption=cap)
    fx = fixed_loops(d)[["run", "eval_loops", "nll"]].rename(columns={"nll": "nll_fixed"})
    m = ad[["run", "eval_loops", "exit_threshold", "mean_loops", "nll"]].merge(fx, on=["run", "eval_loops"], how="left")
    m["dn"] = m["nll"] - m["nll_fixed"]
    t = m.groupby("exit_threshold")[["mean_loops", "dn"]].mean().rename(columns={"mean_loops": "ml"})
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.6))
        a1.plot(t.index, t["ml"], marker="o", color=COLORS["loopmdm"])
        a1.set_xscale("log")
        a1.set_xlabel("exit threshold")

        a1.set_ylabel("mean loops used")
        cap_loops = float(pd.to_numeric(m["eval_loops"], errors="coerce").mean())
        a1.axhline(cap_loops, color="k", lw=0.8, ls=":", label=f"fixed S = {cap_loops:g} (the cap)")
        a1.legend(fontsize=7)
        ad = next((c for c in claims if c.key == "adaptive"), None)
        per = {round(p["threshold"], 12): p for p in (ad.details.get("thresholds", []) if ad else [])}
        lo = [per.get(round(x, 12), {}).get("delta_low") for x in t.index]
        hi = [per.get(round(x, 12), {}).get("delta_high") for x in t.index]
        if all(v is not None for v in lo + hi):
            err = np.array([t["dn"].to_numpy() - np.array(lo), np.array(hi) - t["dn"].to_numpy()]).clip(min=0)
            a2.errorbar(t.index, t["dn"], yerr=err, marker="o", color=COLORS["loopmdm"], capsize=3,
                        label="mean ± 95% CI")
            margin = ad.details.get("margin")
            if margin:
                a2.axhspan(-margin, margin, color="0.85", alpha=0.5, lw=0, label=f"±{margin:g} (equal quality)")
        else:
            a2.plot(t.index, t["dn"], marker="o", color=COLORS["loopmdm"], label="mean")
        a2.axhline(0, color="k", lw=0.8, ls=":")
        a2.legend(fontsize=7)
        a2.set_xscale("log")
        a2.set_xlabel("exit threshold")
        a2.set_ylabel("ΔNLL vs fixed S [nats/token]")
        for a in (a1, a2):  # ticks at the thresholds evaluated, plain numbers
            a.xaxis.set_major_locator(mticker.FixedLocator(list(t.index)))
            a.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
            a.xaxis.set_minor_locator(mticker.NullLocator())
        fig.suptitle("Adaptive loops")
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_loop_state(diag: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Relative change, increment size and state norm vs loop k, one line per looped run (last eval point)."""
    name = "loop_state"
    cap = ("Looped state per loop k, last eval point of each looped run: relative change ||h_k − h_{k−1}||/||h_k|| "
           "(left), increment ||h_k − h_{k−1}|| per token (middle), state norm per token (right); dotted: s_max")
    if diag is None or diag.empty:
        return FigureResult(name, note="no loop diagnostics (loops.jsonl: looped runs trained with this version)",
                            caption=cap)
    last = diag.sort_values("step").groupby("run", sort=False).tail(1).sort_values("slug")
    cmap = plt.get_cmap("tab10")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
        for i, (_, r) in enumerate(last.iterrows()):
            k = np.arange(1, len(r["rel_change"]) + 1)
            label = f"{r['variant']} · {r['n_head_layers']}+{r['n_mid_layers']}+{r['n_tail_layers']}"
            style = dict(color=cmap(i % 10), marker="os^vD<>ph*"[i % 10], ms=3.5, label=label)
            axes[0].plot(k, r["rel_change"], **style)
            axes[1].plot(k, r["increment_norm"], **style)
            axes[2].plot(k, r["state_norm"], **style)
        smax = pd.to_numeric(last["s_max"], errors="coerce").dropna().unique()
        for a, ylab in zip(axes, ("relative change", "increment norm per token", "state norm per token")):
            a.set_xlabel("loop k")
            a.set_ylabel(ylab)
            for sm in smax:
                a.axvline(sm, color="k", lw=0.8, ls=":")
        for a in axes:  # all log: a settling state spans decades downwards, a diverging one upwards
            a.set_yscale("log")
            a.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle("Does the looped state settle or drift?")
        fig.tight_layout()
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def fig_attention(att: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Mask-to-mask attention share vs loop, one panel per looped run, one line per mid layer with its 95% CI
    over sequences; dashed: the share under uniform attention (the fraction of keys masked)."""
    from .attention import share_by_loop

    name = "attention"
    cap = ("Share of attention that masked queries put on masked keys, per loop of the mid block (mean over "
           "noise levels, heads and queries; band: 95% CI over evaluation sequences); dashed: uniform attention")
    table = share_by_loop(att)
    if table.empty:
        return FigureResult(name, note="no attention statistics (study.eval --attention)", caption=cap)
    runs = table.drop_duplicates("run").sort_values(["width", "budget_flops", "slug"])
    cmap = plt.get_cmap("tab10")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs) + 0.6, 3.6), squeeze=False, sharey=True)
        for ax, (_, run) in zip(axes[0], runs.iterrows()):
            t = table[table["run"] == run["run"]]
            for j, (layer, g) in enumerate(t.groupby("layer")):
                g = g.sort_values("loop")
                ax.plot(g["loop"], g["share"], color=cmap(j), marker="os^v"[j % 4], ms=4, label=f"mid layer {layer}")
                if g["low"].notna().all():
                    ax.fill_between(g["loop"], g["low"], g["high"], color=cmap(j), alpha=0.2, lw=0)
            uni = t.groupby("loop")["uniform"].mean()
            ax.plot(uni.index, uni.values, color="k", ls="--", lw=0.9, label="uniform attention")
            ax.set_title(_short(f"{run['slug']}", 40), fontsize=8)
            ax.set_xlabel("loop k")
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        axes[0][0].set_ylabel("masked → masked attention share")
        axes[0][0].legend(fontsize=7, loc="best")
        fig.suptitle("Does looping promote attention among masked positions?")
        fig.tight_layout()
        return FigureResult(name, _save(fig, figdir, name, formats), caption=cap)


def make_figures(df: pd.DataFrame, tasks: pd.DataFrame | None, fits: StudyFits | None, claims: Sequence[Claim],
                 figdir: str | Path, formats: Sequence[str] = ("png", "pdf"),
                 loop_diag: pd.DataFrame | None = None, attention: pd.DataFrame | None = None) -> list[FigureResult]:
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
    out = []
    for j in jobs:
        try:
            out.append(j())
        except Exception as e:  # one broken figure must not cost the report
            plt.close("all")
            out.append(FigureResult(getattr(j, "__name__", "figure"), note=f"failed: {e.__class__.__name__}: {e}"))
    return out
