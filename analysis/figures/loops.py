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
from .style import (COLORS, LABELS, MIN_DNLL_SPAN, STYLE, FigureResult, integer_ticks, log_x_clean, mean_ci, mticker,
                    plt, save, short, smax_lines)


def fig_nll_vs_loops(df: pd.DataFrame, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    name = "nll_vs_loops"
    cap = ("Change in final NLL vs inference loops S relative to S=1 (thin: runs; thick: mean with 95% CI over runs); "
           "dotted: training s_max")
    d = unique_points(fixed_loops(df[(df["family"] == "loopmdm") & df["is_final"]]))
    if d.empty or d["eval_loops"].nunique() < 2:
        return FigureResult(name, note="no loop scan (final evals at >= 2 loop counts)", caption=cap)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        curves, mc = {}, {}
        for run, dr in d.groupby("run"):
            dr = dr.sort_values("eval_loops")
            ref = dr["nll"].iloc[0]
            ax.plot(dr["eval_loops"], dr["nll"] - ref, color=COLORS["loopmdm"], alpha=0.15, lw=0.8)
            se = pd.to_numeric(dr["nll_se"], errors="coerce").fillna(0.0).to_numpy() if "nll_se" in dr else \
                np.zeros(len(dr))
            for s, v, e in zip(dr["eval_loops"], dr["nll"] - ref, np.hypot(se, se[0])):
                curves.setdefault(int(s), []).append(v)
                mc[int(s)] = e
        ss = sorted(curves)
        m = [np.mean(curves[s]) for s in ss]
        if d["run"].nunique() > 1:  # the spread over runs
            se = [np.std(curves[s], ddof=1) / math.sqrt(len(curves[s])) if len(curves[s]) > 1 else 0 for s in ss]
            label = "mean ± 95% CI over runs"
        else:  # one run: its own MC error, unpaired (wider than the paired CI of claim 4)
            se = [mc[s] if s != ss[0] else 0.0 for s in ss]
            label = "the run ± 95% CI (MC s.e., unpaired)"
        ax.errorbar(ss, m, yerr=1.96 * np.array(se), color=COLORS["loopmdm"], lw=2.2, capsize=2, label=label)
        ax.plot([], [], color=COLORS["loopmdm"], alpha=0.3, lw=0.8, label="one run")
        smax_lines(ax, pd.to_numeric(d["s_max"], errors="coerce").dropna().unique())
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_xscale("log", base=2)
        integer_ticks(ax, ss)
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
           "squares: same-size MDM; diamonds: deeper MDM; bars: 95% CI (1.96 x the MC standard error)")
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
            slug = str(lp.sort_values("run")["slug"].iloc[0])  # the looped run names its group
            fixed = lp[lp["exit_threshold"].isna()].drop_duplicates("eval_loops").sort_values("eval_loops")
            xs = list(flops_per_token(fixed, fixed["eval_loops"]))
            ax.errorbar(xs, fixed["nll"], yerr=ci95(fixed), color=color, marker="o", ms=4, capsize=2,
                        label=f"{slug} (LoopMDM, fixed S)")
            for x, (_, r) in zip(xs, fixed.iterrows()):
                ax.annotate(f"S={int(r['eval_loops'])}", (x, r["nll"]), textcoords="offset points", xytext=(3, 3),
                            fontsize=6, color=color)
            ada = lp[lp["exit_threshold"].notna() & lp["mean_loops"].notna()]
            if not ada.empty:
                ax.errorbar(list(flops_per_token(ada, ada["mean_loops"])), ada["nll"], yerr=ci95(ada), fmt="^",
                            color=color, ms=5, capsize=2)
            for fam, marker in (("mdm", "s"), ("mdm_deeper", "D")):
                b = dg[dg["family"] == fam].drop_duplicates("run")
                if not b.empty:
                    ax.errorbar([flops_per_token(r, 1) for _, r in b.iterrows()], b["nll"], yerr=ci95(b),
                                fmt=marker, color=color, ms=5, mec="k", mew=0.5, capsize=2)
        kinds = (("^", "LoopMDM, adaptive exit", top["exit_threshold"].notna() & (top["family"] == "loopmdm")),
                 ("s", "same-size MDM", top["family"] == "mdm"), ("D", "deeper MDM", top["family"] == "mdm_deeper"))
        for marker, label, present in kinds:  # a marker is explained only where the figure has it
            if present.any():
                ax.scatter([], [], marker=marker, color="w", edgecolor="k", label=label)
        ax.set_xscale("log")
        log_x_clean(ax)
        ax.set_xlabel("inference FLOPs per token per denoising step (exact)")
        ax.set_ylabel("final validation NLL [nats/token]")
        ax.set_title("Quality vs inference compute")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def ci95(d: pd.DataFrame) -> np.ndarray | None:
    """Half-widths of the 95% CIs of final NLLs (1.96 x the MC standard error), None without standard errors."""
    if "nll_se" not in d:
        return None
    return 1.96 * pd.to_numeric(d["nll_se"], errors="coerce").fillna(0.0).to_numpy()


def fig_score_vs_loops(tasks: pd.DataFrame | None, figdir: Path, formats=("png", "pdf")) -> FigureResult:
    """Task score against the loops S LoopMDM was run with, each point with its 95% CI over problems; the
    baselines (which do not loop) as horizontal lines with their CI as a band. The caption names only what
    is drawn."""
    name = "score_vs_loops"
    cap = "Task score vs inference loops (LoopMDM); bars and bands: 95% CI over problems (normal approximation)"
    if tasks is None or tasks.empty or "loops" not in tasks:
        return FigureResult(name, note="no task evaluations", caption=cap)
    lt = tasks[(tasks["family"] == "loopmdm")].drop_duplicates("file")
    if lt.empty:
        return FigureResult(name, note="no task evaluations of LoopMDM", caption=cap)
    styles = {"mdm": "--", "mdm_deeper": ":"}
    drawn: set[str] = set()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for i, (task, dt) in enumerate(lt.groupby("task")):
            col = plt.get_cmap("tab10")(i)
            pts = [(float(s), *mean_ci(np.concatenate([np.asarray(p, float) for p in g["per_sample"]]), 100))
                   for s, g in dt.groupby("loops")]
            s_, m, lo, hi = (np.array(v) for v in zip(*pts))
            ax.errorbar(s_, m, yerr=[m - lo, hi - m], marker="o", color=col, capsize=3,
                        label=f"{task}: LoopMDM (mean ± 95% CI)")
            for fam, ls in styles.items():
                b = tasks[(tasks["family"] == fam) & (tasks["task"] == task)].drop_duplicates("file")
                if b.empty:
                    continue
                bm, blo, bhi = mean_ci(np.concatenate([np.asarray(p, float) for p in b["per_sample"]]), 100)
                ax.axhline(bm, color=col, ls=ls, lw=1.1, label=f"{task}: {LABELS[fam]} (band: 95% CI)")
                ax.axhspan(blo, bhi, color=col, alpha=0.08, lw=0)
                drawn.add(fam)
        ax.set_xscale("log", base=2)
        integer_ticks(ax, lt["loops"].dropna().unique())
        ax.set_xlabel("inference loops S")
        ax.set_ylabel("score [points]")
        top = max(ax.get_ylim()[1], 5.0)  # scores start at 0: keep it in view, and a floor visible as one
        ax.set_ylim(-0.03 * top, top)
        floor = not (tasks["score"].fillna(0) > 0).any()
        ax.set_title("Task score vs loops" + (" — every model scored 0 (floor)" if floor else ""))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=7)
        for fam in ("mdm", "mdm_deeper"):
            if fam in drawn:
                cap += f"; {'dashed' if fam == 'mdm' else 'dotted'}: {LABELS[fam]}"
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)


def fig_adaptive(df: pd.DataFrame, figdir: Path, formats=("png", "pdf"), claims: Sequence[Claim] = ()) -> FigureResult:
    """Mean loops used (left) and ΔNLL against fixed S (right) per exit threshold, each with the claim's 95% CI;
    the right panel is scaled to the data, so the equal-quality margin shows as lines when it is in view and
    is named in the legend when it lies beyond it."""
    name = "adaptive_loops"
    cap = ("Adaptive exit vs exit threshold, mean over runs with the claim's 95% CI: loops used (left; dotted: the "
           "cap) and ΔNLL vs fixed S = cap (right; dashed: the equal-quality margin)")
    d = unique_points(df[(df["family"] == "loopmdm") & df["is_final"]])
    ad = d[d["exit_threshold"].notna()]
    if ad.empty:
        return FigureResult(name, note="no adaptive-exit evaluations (exit_threshold set)", caption=cap)
    fx = fixed_loops(d)[["run", "eval_loops", "nll"]].rename(columns={"nll": "nll_fixed"})
    m = ad[["run", "eval_loops", "exit_threshold", "mean_loops", "nll"]].merge(fx, on=["run", "eval_loops"], how="left")
    m["dn"] = m["nll"] - m["nll_fixed"]
    t = m.groupby("exit_threshold")[["mean_loops", "dn"]].mean().rename(columns={"mean_loops": "ml"})
    claim = next((c for c in claims if c.key == "adaptive"), None)
    per = {round(p["threshold"], 12): p for p in (claim.details.get("thresholds", []) if claim else [])}
    rows = [per.get(round(x, 12), {}) for x in t.index]
    has_ci = rows and all(r.get("delta_low") is not None and r.get("saving_low") is not None for r in rows)
    cap_loops = float(pd.to_numeric(m["eval_loops"], errors="coerce").mean())
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.8))
        if has_ci:  # loops used = cap x (1 - saving): the CI of the saving is the CI of the loops used
            lo = np.array([r["cap"] * (1 - r["saving_high"]) for r in rows])
            hi = np.array([r["cap"] * (1 - r["saving_low"]) for r in rows])
            a1.errorbar(t.index, t["ml"], yerr=[np.clip(t["ml"] - lo, 0, None), np.clip(hi - t["ml"], 0, None)],
                        marker="o", color=COLORS["loopmdm"], capsize=3, label="mean ± 95% CI")
            dlo = np.array([r["delta_low"] for r in rows])
            dhi = np.array([r["delta_high"] for r in rows])
            a2.errorbar(t.index, t["dn"], yerr=[np.clip(t["dn"] - dlo, 0, None), np.clip(dhi - t["dn"], 0, None)],
                        marker="o", color=COLORS["loopmdm"], capsize=3, label="mean ± 95% CI")
            reach = float(np.nanmax(np.abs(np.concatenate([dlo, dhi, t["dn"].to_numpy()]))))
        else:
            a1.plot(t.index, t["ml"], marker="o", color=COLORS["loopmdm"], label="mean (no CI: claim not computed)")
            a2.plot(t.index, t["dn"], marker="o", color=COLORS["loopmdm"], label="mean (no CI: claim not computed)")
            reach = float(np.nanmax(np.abs(t["dn"].to_numpy())))
        a1.axhline(cap_loops, color="k", lw=0.8, ls=":", label=f"fixed S = {cap_loops:g} (the cap)")
        a1.set_ylabel("mean loops used")
        a2.axhline(0, color="k", lw=0.8, ls=":", label="no change vs fixed S")
        half = max(reach * 1.35, 1e-4)
        margin = claim.details.get("margin") if claim else None
        if margin and margin <= half:
            for sgn in (-1, 1):
                a2.axhline(sgn * margin, color="0.35", lw=0.9, ls="--",
                           label=f"equal-quality margin ±{margin:g}" if sgn > 0 else None)
            half = max(half, margin * 1.2)
        elif margin:
            a2.plot([], [], color="0.35", lw=0.9, ls="--",
                    label=f"equal-quality margin ±{margin:g}: beyond this view")
        a2.set_ylim(-half, half)
        a2.set_ylabel("ΔNLL vs fixed S [nats/token]")
        for a in (a1, a2):  # ticks at the thresholds evaluated, plain numbers
            a.set_xscale("log")
            integer_ticks(a, list(t.index))
            a.set_xlabel("exit threshold")
            a.legend(fontsize=7, loc="best")
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
            variant = "" if r["variant"] in ("plain", None) else f" · {r['variant']}"
            style = dict(color=cmap(i % 10), marker="os^vD<>ph*"[(i // 10 + i) % 10], ms=3.5,
                         label=f"{r['slug']}{variant}")  # the slug names the run (width, layout, S, budget)
            axes[0].plot(k, r["rel_change"], **style)
            axes[1].plot(k, r["increment_norm"], **style)
            axes[2].plot(k, r["state_norm"], **style)
        smax = pd.to_numeric(last["s_max"], errors="coerce").dropna().unique()
        for j, (a, ylab) in enumerate(zip(axes, ("relative change", "increment norm per token",
                                                 "state norm per token"))):
            a.set_xlabel("loop k")
            a.set_ylabel(ylab)
            smax_lines(a, smax, label=j == 0)
        for a in axes:  # all log: a settling state spans decades downwards, a diverging one upwards
            a.set_yscale("log")
            log_x_clean(a, which="y")
            a.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=min(4, len(labels)),
                   fontsize=7, frameon=False)
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
                    ax.fill_between(g["loop"], g["low"], g["high"], color=cmap(j), alpha=0.2, lw=0,
                                    label="95% CI over sequences" if j == 0 else None)
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
