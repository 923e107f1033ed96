"""Figures of looping: NLL and task scores against inference loops, quality against inference compute,
adaptive exit, the looped state per loop, and mask-to-mask attention per loop (claims 4-6 and the diagnostics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import records

from ..attention import share_by_loop
from ..claims import Claim
from ..collect import flops_per_token
from ..select import fixed_loops, unique_points
from .style import COLORS, LABELS, MIN_DNLL_SPAN, STYLE, FigureResult, mticker, plt, save, short


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
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


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
            xs = list(flops_per_token(fixed, fixed["eval_loops"]))
            ax.plot(xs, fixed["nll"], color=color, marker="o", ms=4, label=f"LoopMDM d{width}, fixed S")
            for x, (_, r) in zip(xs, fixed.iterrows()):
                ax.annotate(f"S={int(r['eval_loops'])}", (x, r["nll"]), textcoords="offset points", xytext=(3, 3),
                            fontsize=6, color=color)
            ada = lp[lp["exit_threshold"].notna() & lp["mean_loops"].notna()]
            if not ada.empty:
                ax.scatter(list(flops_per_token(ada, ada["mean_loops"])), ada["nll"], marker="^",
                           color=color, s=28, label=f"LoopMDM d{width}, adaptive exit")
            for fam, marker in (("mdm", "s"), ("mdm_deeper", "D")):
                for _, r in dg[dg["family"] == fam].drop_duplicates("run").iterrows():
                    ax.scatter([flops_per_token(r, 1)], [r["nll"]], marker=marker, color=color, s=30,
                               edgecolor="k", lw=0.5)
        ax.scatter([], [], marker="s", color="w", edgecolor="k", label="same-size MDM")
        ax.scatter([], [], marker="D", color="w", edgecolor="k", label="deeper MDM")
        ax.set_xscale("log")
        ax.set_xlabel("inference FLOPs per token per denoising step (exact)")
        ax.set_ylabel("final validation NLL [nats/token]")
        ax.set_title("Quality vs inference compute")
        ax.legend(fontsize=7, loc="best")
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


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
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


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
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_loop_state(diag: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Relative change, increment size and state norm vs loop k, one line per looped run (last eval point)."""
    name = "loop_state"
    cap = ("Looped state per loop k, last eval point of each looped run: relative change ||h_k − h_{k−1}||/||h_k|| "
           "(left), increment ||h_k − h_{k−1}|| per token (middle), state norm per token (right); dotted: s_max")
    if diag is None or diag.empty:
        return FigureResult(name, note=f"no loop diagnostics ({records.LOOP_DIAG}: looped runs trained with this version)",
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
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_attention(att: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Mask-to-mask attention share vs loop, one panel per looped run, one line per mid layer with its 95% CI
    over sequences; dashed: the share under uniform attention (the fraction of keys masked)."""
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
            ax.set_title(short(f"{run['slug']}", 40), fontsize=8)
            ax.set_xlabel("loop k")
            ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        axes[0][0].set_ylabel("masked → masked attention share")
        axes[0][0].legend(fontsize=7, loc="best")
        fig.suptitle("Does looping promote attention among masked positions?")
        fig.tight_layout()
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)
