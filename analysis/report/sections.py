"""The report's sections beside the claims: fit diagnostics (frontiers, IsoFLOP, parametric, backtests), task
scores per inference loop count, loop diagnostics, mask-to-mask attention, and how a figure is embedded."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import records

from .. import curves as F
from .. import loop_diagnostics as LD
from ..attention import rise as attention_rise
from ..claims.common import cell
from ..figures import FigureResult
from ..study_fits import StudyFits
from ..util import fmt


def figure_md(f: FigureResult | None, study_dir: Path) -> list[str]:
    """A made figure's PNG embedded (path relative to the report) with its caption below."""
    png = [p for p in f.files if p.endswith(".png")] if f is not None and f.made else []
    return [f"![{f.caption}]({os.path.relpath(png[0], study_dir)})", "", f"_{f.caption}_", ""] if png else []


def frontier_table(fits: StudyFits, alt: bool = False) -> list[str]:
    src = fits.frontier_alt if alt else fits.frontier
    if not src:
        return ["_none_", ""]
    lines = ["| family | convention | method | points | E | A | α [95% CI] | RMSE(log) | R² | converged | starts agree | boot ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, f in src.items():
        if not f.ok:
            lines.append(f"| {f.family} | {f.convention} | {f.method} | {f.n_fit_points} | — | — | — | — | — | — | — | "
                         f"{cell(f.message)} |")
            continue
        d = f.diagnostics
        lines.append(
            f"| {f.family} | {f.convention} | {f.method} | {f.n_fit_points} | "
            f"{'0 (fixed)' if getattr(f, 'E_fixed', False) else f'{fmt(f.E.estimate)} [{fmt(f.E.low)}, {fmt(f.E.high)}]'} | "
            f"{fmt(f.A.estimate)} | {fmt(f.alpha.estimate)} "
            f"[{fmt(f.alpha.low)}, {fmt(f.alpha.high)}] | {fmt(d.rmse_log)} | {fmt(d.r2_log)} | "
            f"{'yes' if d.converged else 'NO'} | {d.n_starts_agree}/{d.n_starts} | {d.n_boot_ok}/{d.n_boot} |")
    lines.append("")
    flagged = []
    for f in src.values():
        pts = [r for r in (f.residuals or []) if r.get("on_frontier")] if f.ok else []
        mask = F.mad_outliers([r["resid_log"] for r in pts])
        flagged += [(f, r) for r, m in zip(pts, mask) if m]
    if flagged:
        lines += [f"Frontier points flagged by the outlier rule (|residual in log loss − median| > {F.OUTLIER_K:g} × "
                  f"1.4826 MAD; reported, not dropped — refit them with `python -m analysis.fit --drop-outliers`):", ""]
        lines += [f"- {f.family} / {f.convention}: C = {fmt(r['C'])}, loss {fmt(r['loss'], 4)} (fit {fmt(r['pred'], 4)}, "
                  f"residual {r['resid_log']:+.4f})" for f, r in flagged]
    else:
        lines.append(f"No frontier point is flagged by the outlier rule (|residual| > {F.OUTLIER_K:g} × 1.4826 MAD in "
                     f"log loss, over fits with ≥ 5 frontier points).")
    return lines + [""]


def fit_diagnostics_md(fits: StudyFits | None) -> list[str]:
    L = ["## Fit diagnostics", ""]
    if fits is None:
        return L + ["_No fits (see What is missing)._", ""]
    L += [f"LoopMDM rows used in fits: {fits.loops_note}. Bootstrap: {fits.n_boot} resamples of runs "
          f"(within budgets for IsoFLOP), percentile 95% intervals. Huber δ=1e-3 on log loss, L-BFGS-B from a grid of "
          f"starts, Gauss-Newton polish; 'starts agree' = polished starts that reach the best objective and parameters.",
          "", "### Compute frontiers L(C) = E + A·C^-α (used by claim 1)", ""]
    L += frontier_table(fits)
    if fits.frontier_alt:
        L += ["### Robustness: the other frontier method (not used by the claims)", "",
              "Primary: the points that are the frontier — IsoFLOP minima when >= 4 budgets have a trusted interior "
              "optimum, else the best run per FLOPs budget. Robustness: with a constant LR, the lower envelope of all "
              "eval points along training (from the smallest final FLOPs up); otherwise the other final-point method. "
              "', E=0' in the method: the 3-parameter fit did not converge or put E at its bound, so a pure power law "
              "was fitted.", ""]
        L += frontier_table(fits, alt=True)
    L += ["### IsoFLOP (Chinchilla approach 2)", ""]
    for fam, iso in fits.isoflop.items():
        L.append(f"**{fam}** — {iso.message}")
        if iso.N_opt is not None:
            L.append(f"N* ∝ C^{fmt(iso.N_opt.exponent.estimate)} [{fmt(iso.N_opt.exponent.low)}, "
                     f"{fmt(iso.N_opt.exponent.high)}], D* ∝ C^{fmt(iso.D_opt.exponent.estimate)} "
                     f"[{fmt(iso.D_opt.exponent.low)}, {fmt(iso.D_opt.exponent.high)}] over {iso.n_trusted} trusted budgets")
        if iso.budgets:
            L += ["", "| budget | runs | sizes | N* [95% CI] | D* | L* | trusted | note |", "|---|---|---|---|---|---|---|---|"]
            for b in iso.budgets:
                ns = "—" if b.N_star is None else f"{fmt(b.N_star.estimate)} [{fmt(b.N_star.low)}, {fmt(b.N_star.high)}]"
                ls = "—" if b.L_star is None else fmt(b.L_star.estimate, 4)
                L.append(f"| {fmt(b.budget)} | {b.n_points} | {b.n_sizes} | {ns} | {fmt(b.D_star)} | {ls} | "
                         f"{'yes' if b.trusted else 'no'} | {cell(b.note)} |")
        L.append("")
    L += ["### Parametric L(N, D) = E + A/N^α + B/D^β (Chinchilla approach 3)", "",
          "N = non-embedding parameters (physical: a looped model's shared weights count once), D = training "
          "tokens; one final point per run.", "",
          "| family | points | E | A | B | α | β | N* ∝ C^a | converged | grad | starts agree | RMSE(log) | R² | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, p in fits.parametric.items():
        if not p.ok:
            L.append(f"| {fam} | {p.n_points} | — | — | — | — | — | — | — | — | — | — | — | {cell(p.message)} |")
            continue
        d = p.diagnostics
        iv = lambda x: f"{fmt(x.estimate)} [{fmt(x.low)}, {fmt(x.high)}]"  # noqa: E731
        L.append(f"| {fam} | {p.n_points} | {iv(p.E)} | {iv(p.A)} | {iv(p.B)} | {iv(p.alpha)} | {iv(p.beta)} | "
                 f"{iv(p.N_exponent)} | {'yes' if d.converged else 'NO'} | {fmt(d.grad_norm)} | "
                 f"{d.n_starts_agree}/{d.n_starts} | {fmt(d.rmse_log)} | {fmt(d.r2_log)} | {cell(p.message)} |")
    L += ["", "### Backtests (fit on smaller budgets, predict the largest)", "",
          "| family | law | held-out budget | train/test runs | predicted | observed | error | note |",
          "|---|---|---|---|---|---|---|---|"]
    for b in fits.backtests:
        err = "—" if b.rel_error_pct is None else f"{b.error_nats:+.4f} nats ({b.rel_error_pct:+.2f}%)"
        L.append(f"| {b.family} | {b.law} | {fmt(b.held_out_budget)} | {b.n_train}/{b.n_test} | {fmt(b.predicted, 4)} | "
                 f"{fmt(b.observed, 4)} | {err} | {cell(b.message)} |")
    if not fits.backtests:
        L.append("| — | — | — | — | — | — | — | no budgets to hold out |")
    return L + [""]


def task_loops_md(tasks: pd.DataFrame | None) -> list[str]:
    """Score (and cell accuracy, where a task has one) per family and inference loop count, per task."""
    if tasks is None or tasks.empty or "loops" not in tasks:
        return []
    t = tasks[tasks["exit_threshold"].isna()] if "exit_threshold" in tasks else tasks
    t = t.drop_duplicates("file")
    L = ["## Task scores vs inference loops", ""]
    for task, dt in t.groupby("task", sort=True):
        loops = sorted({int(x) for x in dt["loops"].dropna()})
        cells = "cell_accuracy" in dt and dt["cell_accuracy"].notna().any()
        L += [f"**{task}** ({dt['metric'].iloc[0]}, % over {int(dt['n'].max())} problems"
              + ("; in brackets: % of cells right" if cells else "") + "; mean over runs)", "",
              "| family | " + " | ".join(f"S={s}" for s in loops) + " |", "|---|" + "---|" * len(loops)]
        for fam in ("mdm", "mdm_deeper", "loopmdm"):
            df = dt[dt["family"] == fam]
            if df.empty:
                continue
            cols = []
            for s in loops:
                d = df[df["loops"] == s]
                if d.empty:
                    cols.append("—")
                    continue
                v = f"{100 * d['score'].mean():.1f}"
                cols.append(v + (f" ({100 * d['cell_accuracy'].mean():.1f})" if cells else ""))
            L.append(f"| {FAMILY_LABEL.get(fam, fam)} | " + " | ".join(cols) + " |")
        L.append("")
    return L


FAMILY_LABEL = {"mdm": "MDM (same size)", "mdm_deeper": "MDM (deeper)", "loopmdm": "LoopMDM"}


def loop_diagnostics_md(sens: pd.DataFrame | None, states: pd.DataFrame | None, figs: dict[str, FigureResult],
             study_dir: Path) -> list[str]:
    """Per looped run: loop sensitivity (inert?), NLL beyond s_max, and whether the looped state settles."""
    if (sens is None or sens.empty) and (states is None or states.empty):
        return []
    L = ["## Loop diagnostics", "",
         f"_Sensitivity_ = NLL(S=1) − NLL(S=s_max), final eval, paired 95% CI; **inert** when the CI lies within "
         f"±{LD.INERT_NATS} nats/token. _Beyond s_max_ = NLL(largest S evaluated) − NLL(S=s_max). _State_ from the "
         f"per-loop diagnostics at the last eval point: **settles** when the increment ||h_k − h_(k−1)|| shrinks "
         f"below {LD.SETTLE_RATIO:g}× its loop-2 size by the last loop, **drifts** when it does not while consecutive "
         f"increments stay aligned (cosine > {LD.DRIFT_COS:g}) and the norm grows, **diverges** when the increments "
         f"grow more than {LD.DIVERGE_RATIO:g}-fold.", "",
         "| run | variant | sensitivity, nats/token [95% CI] | inert | beyond s_max [95% CI] | state | increment last/2nd "
         "| late cosine | norm growth | rel. change k=1 → last |", "|---|---|---|---|---|---|---|---|---|---|"]
    st = {} if states is None or states.empty else {r["run"]: r for _, r in states.iterrows()}
    sn = {} if sens is None or sens.empty else {r["run"]: r for _, r in sens.iterrows()}
    for run in list(sn) + [r for r in st if r not in sn]:
        a, b = sn.get(run), st.get(run)
        slug, variant = (a if a is not None else b)["slug"], (a if a is not None else b)["variant"]
        if a is not None:
            sens_t = f"{a['sensitivity']:+.4f} [{a['sens_low']:+.4f}, {a['sens_high']:+.4f}]"
            inert = "**yes**" if a["inert"] else "no"
            bey = (f"S={int(a['beyond_S'])}: {a['beyond_delta']:+.4f} [{a['beyond_low']:+.4f}, {a['beyond_high']:+.4f}]"
                   if pd.notna(a.get("beyond_S")) else "— (no S > s_max)")
        else:
            sens_t, inert, bey = "—", "—", "—"
        if b is not None:
            state = (b["state"], fmt(b["increment_ratio"]), fmt(b["late_cos"]), f"{fmt(b['norm_growth'])}×",
                     f"{fmt(b['rel_change_first'])} → {fmt(b['rel_change_last'])} (k={b['loops']})")
        else:
            state = (f"— (no {records.LOOP_DIAG})", "—", "—", "—", "—")
        L.append(f"| {cell(slug)} | {cell(variant)} | {sens_t} | {inert} | {bey} | " + " | ".join(map(cell, state)) + " |")
    L.append("")
    if sens is not None and not sens.empty and "variant" in sens:
        L += ["Per variant (mean over its runs):", "", "| variant | runs | sensitivity | inert runs | beyond s_max | state(s) |",
              "|---|---|---|---|---|---|"]
        for v, g in sens.groupby("variant", sort=False):
            kinds = sorted({st[r]["state"] for r in g["run"] if r in st}) or ["—"]
            bd = g["beyond_delta"].dropna() if "beyond_delta" in g else pd.Series(dtype=float)
            L.append(f"| {cell(v)} | {len(g)} | {g['sensitivity'].mean():+.4f} | {int(g['inert'].sum())} | "
                     f"{'—' if bd.empty else f'{bd.mean():+.4f}'} | {', '.join(kinds)} |")
        L.append("")
    return L + figure_md(figs.get("loop_state"), study_dir)


def attention_md(att: pd.DataFrame | None, figs: dict[str, FigureResult], study_dir: Path) -> list[str]:
    """Mask-to-mask attention: the rise from loop 1 to the last loop per looped run and mid layer."""
    if att is None or att.empty:
        return []
    r = attention_rise(att)
    L = ["## Mask-to-mask attention", "",
         "Share of attention that masked queries put on masked keys (mean over noise levels, heads and queries), "
         "from the first to the last loop of the mid block; paired over evaluation sequences, 95% CI. The paper "
         "reads a rise as looping promoting attention among masked positions.", "",
         "| run | variant | mid layer | loops | change in share [95% CI] |", "|---|---|---|---|---|"]
    for _, x in r.iterrows():
        ci = f" [{x['low']:+.4f}, {x['high']:+.4f}]" if pd.notna(x["low"]) else " (no per-sequence data)"
        L.append(f"| {cell(x['slug'])} | {cell(x['variant'])} | {x['layer']} | {x['first_loop']} → {x['last_loop']} "
                 f"| {x['delta']:+.4f}{ci} |")
    return L + [""] + figure_md(figs.get("attention"), study_dir)
