"""The figures' one style: colours per family, markers per width, axis formatting, PNG + PDF with units on every
axis, and the result each figure function returns (a figure without data is skipped with a note)."""

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


def widths(df: pd.DataFrame) -> list[float]:
    return sorted(pd.to_numeric(df["d_model"], errors="coerce").dropna().unique()) if "d_model" in df else []


def width_marker(df: pd.DataFrame, width: Any) -> str:
    """One marker per model width, the same in every figure of a study (the widths in sorted order)."""
    ws = widths(df)
    try:
        return MARKERS[ws.index(float(width)) % len(MARKERS)]
    except (ValueError, TypeError):
        return "o"


def short(message: str, limit: int = 48) -> str:
    """A fit's message for a legend: its first clause, cut at a word boundary (never mid-word)."""
    first = message.split(" (")[0].split(": ")[0].split("; ")[0]
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + " …"


def sci(v: float, decimals: int | None = None) -> str:
    """1e12 -> '1e12', 3e11 -> '3e11' (short, never '3×10^11' crammed between minor ticks); ``decimals`` fixes
    the mantissa's digits (1.48e13, 1.52e13 on a narrow axis)."""
    if v <= 0 or not np.isfinite(v):
        return ""
    e = int(math.floor(math.log10(v) + 1e-9))
    m = v / 10**e
    if decimals is not None:
        return f"{m:.{decimals}f}e{e}"
    return f"{m:.0f}e{e}" if abs(m - round(m)) < 1e-6 else f"{m:.1f}e{e}"


def log_x_clean(ax: plt.Axes, which: str = "x") -> None:
    """Log axis with labels only at 1, 2, 5 x 10^k when it spans < 2 decades (else 10^k), as '3e11'; on an
    axis narrower than a factor 3 (one budget), a few ticks with as many digits as keep them distinct.
    ``which="y"`` does the same for the y axis."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if hi / lo < 3:
        ticks = np.geomspace(lo, hi, 6 if hi / lo >= 1.2 else 5)[1:-1]
        d = next(k for k in range(1, 6) if len({sci(t, k) for t in ticks}) == len(ticks) or k == 5)
        axis.set_major_locator(mticker.FixedLocator(ticks))
        axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: sci(v, d)))
        axis.set_minor_locator(mticker.NullLocator())
        axis.set_minor_formatter(mticker.NullFormatter())
        return
    subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) < 2.2 else (1.0,)
    axis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: sci(v)))
    axis.set_minor_locator(mticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0))
    axis.set_minor_formatter(mticker.NullFormatter())


def decimal_y(ax: plt.Axes, target: int = 6) -> None:
    """Plain decimal labels (2.4, 2.6, ...) on a log or linear y axis; no minor labels."""
    lo, hi = ax.get_ylim()
    span = hi - lo
    if not (np.isfinite(span) and span > 0):
        return
    step = next((st for st in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
                 if span / st <= target), None)
    if step is None:  # a span this wide is no decimal axis: matplotlib's own few ticks
        ax.yaxis.set_major_locator(mticker.MaxNLocator(target))
        return
    ticks = np.arange(math.ceil(lo / step) * step, hi + 1e-12, step)
    ticks = ticks[ticks > 0] if ax.get_yscale() == "log" else ticks
    dec = len(f"{step:g}".partition(".")[2])  # 0.25 needs two decimals: 2.75 is not "2.8"
    ax.yaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter(f"%.{dec}f"))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())


def integer_ticks(ax: plt.Axes, values: Sequence[float]) -> None:
    """Ticks at the values evaluated (loop counts, thresholds), as plain numbers: '1 2 4 8', never '2^0'."""
    ax.xaxis.set_major_locator(mticker.FixedLocator(sorted(set(float(v) for v in values))))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def smax_lines(ax: plt.Axes, s_max_values: Sequence[float], label: bool = True) -> None:
    """The training s_max as a dotted vertical line, named in the legend."""
    for sm in sorted(set(float(v) for v in s_max_values)):
        ax.axvline(sm, color="k", ls=":", lw=0.8, label=f"training s_max = {sm:g}" if label else None)


def mean_ci(values: Sequence[float], scale: float = 1.0) -> tuple[float, float, float]:
    """Mean and 95% normal-approximation CI of per-problem scores (x ``scale``), clipped to [0, scale]."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else 0.0
    return scale * m, scale * max(0.0, m - half), scale * min(1.0, m + half)


def save(fig: plt.Figure, figdir: Path, name: str, formats: Sequence[str]) -> list[str]:
    figdir.mkdir(parents=True, exist_ok=True)
    out = []
    fig.tight_layout()
    for ext in formats:
        p = figdir / f"{name}.{ext}"
        fig.savefig(p, bbox_inches="tight")
        out.append(str(p))
    plt.close(fig)
    return out
