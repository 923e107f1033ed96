"""``python -m analysis.report STUDY_DIR``: collect -> fit -> claims -> figures -> fits.json + report.md.

Always writes a report, even for a broken or partial study: what cannot be computed is listed under
"What is missing" rather than raised. Both outputs are written atomically (temp file + rename).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

import records

from ._util import CONVENTIONS, atomic_write_text, dumps, fmt, normalise_convention
from .claims import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TASK_EVAL_CONTRACT, Claim, evaluate_claims,
                     multiplier_disagreements)
from . import curves as F
from . import control as CT
from . import loop_diagnostics as LD
from .attention import rise as attention_rise
from .collect import BASE_COLUMNS, load_attention, load_loop_diagnostics, load_or_collect, load_task_evals
from .figures import FigureResult, make_figures
from .select import CORE_COLUMNS, clean, missing_columns, seed_spread
from .study_fits import StudyFits, fit_study

VERDICT_MARK = {SUPPORTED: "✅ supported", NOT_SUPPORTED: "❌ not supported", INCONCLUSIVE: "❔ inconclusive"}


@dataclass
class ReportResult:
    report_path: Path
    fits_path: Path
    claims: list[Claim]
    figures: list[FigureResult]
    missing: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _ci(c: Claim) -> str:
    return c.ci_str()


def _measured(c: Claim) -> str:
    return c.measured_str()


def _vs_paper(c: Claim) -> str:
    if c.paper_verdict is None:
        return "— (the paper states a direction)"
    return f"{c.paper_verdict} ({c.paper_text})" if c.paper_verdict != "undetermined" else "undetermined"


def environment() -> dict[str, str]:
    import matplotlib
    import pyarrow
    import scipy

    return {
        "machine": f"{platform.node()} ({platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs)",
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "pyarrow": pyarrow.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _missing_list(summary: dict[str, Any], df: pd.DataFrame, fits: StudyFits | None, claims: Sequence[Claim],
                  notes: Sequence[str]) -> list[str]:
    out = list(notes)
    s = summary or {}
    if s.get("partial"):
        out.append(f"{len(s['partial'])} run(s) still running/unfinished (no DONE.json; their final points are not "
                   f"used): {', '.join(s['partial'][:8])}{' …' if len(s['partial']) > 8 else ''}")
    if s.get("failed"):
        out.append(f"{len(s['failed'])} failed run(s) (FAILED.json): {', '.join(s['failed'][:8])}")
    if s.get("skipped_no_evals"):
        out.append(f"{len(s['skipped_no_evals'])} run(s) without any evaluation (skipped): "
                   f"{', '.join(s['skipped_no_evals'][:8])}{' …' if len(s['skipped_no_evals']) > 8 else ''}")
    if s.get("skipped_other"):
        out.append(f"{len(s['skipped_other'])} run dir(s) unreadable: " +
                   "; ".join(f"{k}: {v}" for k, v in list(s["skipped_other"].items())[:5]))
    if s.get("bad_lines"):
        out.append(f"{sum(s['bad_lines'].values())} unreadable evals.jsonl line(s) in {len(s['bad_lines'])} run(s)")
    if s.get("no_params"):
        out.append(f"{len(s['no_params'])} run(s) without meta.params in config.yaml (N-based fits lack them)")
    if s.get("groups_inferred"):
        out.append(f"{len(s['groups_inferred'])} run(s) without meta.groups: family guessed from s_max, not in any "
                   f"comparison group")
    if not df.empty and "family" in df:
        for fam in ("mdm", "loopmdm", "mdm_deeper"):
            if not (df["family"] == fam).any():
                out.append(f"no runs of family '{fam}'")
        if "budget_flops" in df and df["budget_flops"].nunique() == 1:
            out.append("a single FLOPs budget: frontiers, IsoFLOP power laws and backtests need several")
    messages: list[str] = []
    if fits is not None:
        out += [f"fits: {n}" for n in fits.notes]
        bad = [(k, f.message) for k, f in fits.frontier.items() if not f.ok]
        out += _grouped("frontier", bad, len(fits.frontier), "every frontier fit (family × FLOPs convention)")
        for k, f in fits.isoflop.items():
            edges = [b.budget for b in f.budgets if b.edge]
            if edges:
                out.append(f"IsoFLOP {k}: optimum at the edge of the sizes tried for budget(s) "
                           f"{', '.join(f'{e:.2g}' for e in edges)} — extend the size grid there")
        bad_iso = [(k, f.message) for k, f in fits.isoflop.items() if not f.ok]
        out += _grouped("IsoFLOP", bad_iso, len(fits.isoflop), "IsoFLOP, every family")
        bad_par = [(k, f.message) for k, f in fits.parametric.items() if not f.ok]
        out += _grouped("parametric L(N,D)", bad_par, len(fits.parametric), "parametric L(N,D), every family")
        messages = [m for _, m in bad + bad_iso + bad_par if m]
    for c in claims:
        if c.details.get("missing_input") and c.caveats:
            if any(m in c.caveats[0] for m in messages):
                continue  # the fit failure that caused it is listed above
            out.append(f"claim {c.key}: {c.caveats[0]}")
    return out


def _grouped(what: str, items: Sequence[tuple[str, str]], total: int, all_label: str) -> list[str]:
    """One line per distinct message, naming every fit that failed with it."""
    by: dict[str, list[str]] = {}
    for name, msg in items:
        by.setdefault(msg, []).append(name)
    return [f"{all_label}: {msg}" if len(names) == total and total > 1 else f"{what} {', '.join(names)}: {msg}"
            for msg, names in by.items()]


def _frontier_table(fits: StudyFits, alt: bool = False) -> list[str]:
    src = fits.frontier_alt if alt else fits.frontier
    if not src:
        return ["_none_", ""]
    lines = ["| family | convention | method | points | E | A | α [95% CI] | RMSE(log) | R² | converged | starts agree | boot ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, f in src.items():
        if not f.ok:
            lines.append(f"| {f.family} | {f.convention} | {f.method} | {f.n_fit_points} | — | — | — | — | — | — | — | "
                         f"{_cell(f.message)} |")
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


def _diagnostics_md(fits: StudyFits | None) -> list[str]:
    L = ["## Fit diagnostics", ""]
    if fits is None:
        return L + ["_No fits (see What is missing)._", ""]
    L += [f"LoopMDM rows used in fits: {fits.loops_note}. Bootstrap: {fits.n_boot} resamples of runs "
          f"(within budgets for IsoFLOP), percentile 95% intervals. Huber δ=1e-3 on log loss, L-BFGS-B from a grid of "
          f"starts, Gauss-Newton polish; 'starts agree' = polished starts that reach the best objective and parameters.",
          "", "### Compute frontiers L(C) = E + A·C^-α (used by claim 1)", ""]
    L += _frontier_table(fits)
    if fits.frontier_alt:
        L += ["### Robustness: the other frontier method (not used by the claims)", "",
              "Primary: the points that are the frontier — IsoFLOP minima when >= 4 budgets have a trusted interior "
              "optimum, else the best run per FLOPs budget. Robustness: with a constant LR, the lower envelope of all "
              "eval points along training (from the smallest final FLOPs up); otherwise the other final-point method. "
              "', E=0' in the method: the 3-parameter fit did not converge or put E at its bound, so a pure power law "
              "was fitted.", ""]
        L += _frontier_table(fits, alt=True)
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
                         f"{'yes' if b.trusted else 'no'} | {_cell(b.note)} |")
        L.append("")
    L += ["### Parametric L(N, D) = E + A/N^α + B/D^β (Chinchilla approach 3)", "",
          "N = non-embedding parameters (physical: a looped model's shared weights count once), D = training "
          "tokens; one final point per run.", "",
          "| family | points | E | A | B | α | β | N* ∝ C^a | converged | grad | starts agree | RMSE(log) | R² | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, p in fits.parametric.items():
        if not p.ok:
            L.append(f"| {fam} | {p.n_points} | — | — | — | — | — | — | — | — | — | — | — | {_cell(p.message)} |")
            continue
        d = p.diagnostics
        iv = lambda x: f"{fmt(x.estimate)} [{fmt(x.low)}, {fmt(x.high)}]"  # noqa: E731
        L.append(f"| {fam} | {p.n_points} | {iv(p.E)} | {iv(p.A)} | {iv(p.B)} | {iv(p.alpha)} | {iv(p.beta)} | "
                 f"{iv(p.N_exponent)} | {'yes' if d.converged else 'NO'} | {fmt(d.grad_norm)} | "
                 f"{d.n_starts_agree}/{d.n_starts} | {fmt(d.rmse_log)} | {fmt(d.r2_log)} | {_cell(p.message)} |")
    L += ["", "### Backtests (fit on smaller budgets, predict the largest)", "",
          "| family | law | held-out budget | train/test runs | predicted | observed | error | note |",
          "|---|---|---|---|---|---|---|---|"]
    for b in fits.backtests:
        err = "—" if b.rel_error_pct is None else f"{b.error_nats:+.4f} nats ({b.rel_error_pct:+.2f}%)"
        L.append(f"| {b.family} | {b.law} | {fmt(b.held_out_budget)} | {b.n_train}/{b.n_test} | {fmt(b.predicted, 4)} | "
                 f"{fmt(b.observed, 4)} | {err} | {_cell(b.message)} |")
    if not fits.backtests:
        L.append("| — | — | — | — | — | — | — | no budgets to hold out |")
    return L + [""]


SECTION_FIGS = {
    "multiplier": ["loss_vs_flops_6N_nonembed", "loss_vs_flops_6N_total", "loss_vs_flops_exact", "multiplier_vs_loss",
                   "isoflop_mdm", "isoflop_loopmdm", "training_curves"],
    "protocol": [],
    "deeper": ["isoflop_mdm_deeper"],
    "loop_scaling": ["nll_vs_loops"],
    "adaptive": ["adaptive_loops"],
    "task": ["score_vs_loops"],
}
SECTION_TITLES = {
    "multiplier": "1. Training-FLOPs multiplier from fitted frontiers",
    "protocol": "2. Multiplier by the paper's protocol (eval-point crossing)",
    "deeper": "3. LoopMDM vs deeper MDM at equal per-step compute",
    "loop_scaling": "4. Inference-loop scaling",
    "adaptive": "5. Adaptive loops",
    "task": "6. Task scores (GSM8K and others)",
}


def _claim_section(kind: str, claims: Sequence[Claim], figs: dict[str, FigureResult], study_dir: Path,
                   disagreements: Sequence[str]) -> list[str]:
    L = [f"## {SECTION_TITLES[kind]}", ""]
    cs = [c for c in claims if c.key.split("[")[0] == kind]
    if cs:
        L += [f"_Rule:_ {cs[0].rule}.", ""]
    for c in cs:
        L.append(f"**{c.name}** — {VERDICT_MARK.get(c.verdict, c.verdict)}: measured {_measured(c)}, 95% CI {_ci(c)}"
                 f" (paper: {c.paper_text}; vs the paper: {_vs_paper(c)}; detectable: {c.mde_text or '—'}).")
        for cv in c.caveats:
            L.append(f"- {cv}")
        L.append("")
        if kind == "protocol" and c.details.get("groups"):
            gs = sorted(c.details["groups"], key=lambda g: -(g.get("budget") or 0))[:12]
            L += ["| group | multiplier | 95% CI | seeds/pairs | status |", "|---|---|---|---|---|"]
            for g in gs:
                L.append(f"| {_cell(g['group'])} | {_cell(g['text'])} | {_cell(g['ci_text'])} | "
                         f"{g['n_pairs']} | {_cell(', '.join(g['status']))} |")
            if len(c.details["groups"]) > 12:
                L.append(f"| … {len(c.details['groups']) - 12} more in fits.json | | | | |")
            L.append("")
        if kind == "multiplier" and c.details.get("curve"):
            cv = c.details["curve"]
            n = len(cv["loss_levels"])
            pick = sorted({0, n // 2, n - 1}) if n else []
            if pick:
                lr = c.details.get("loopmdm_loss_range")
                L += ["| loss level | multiplier (fitted frontiers) | 95% CI | LoopMDM observed at this loss? |",
                      "|---|---|---|---|"]
                for i in pick:
                    lvl, est, lo, hi = cv["loss_levels"][i], cv["estimate"][i], cv["low"][i], cv["high"][i]
                    seen = "—" if not lr else ("yes" if lvl >= lr[0] else "no: extrapolated")
                    # None here = infinite or undefined (JSON has no inf): a frontier that never reaches the loss
                    ci = "—" if lo is None and hi is None else (
                        f"≥ {fmt(lo)} (upper end unbounded)" if hi is None else f"[{fmt(lo)}, {fmt(hi)}]")
                    L.append(f"| {fmt(lvl, 4)} | {'not defined' if est is None else fmt(est)} | {ci} | {seen} |")
                L.append("")
        if kind == "adaptive" and c.details.get("thresholds"):
            mg = c.details.get("margin")
            L += [f"| threshold | runs | mean loops / cap | saving | ΔNLL, nats/token [95% CI] | s.e. | "
                  f"equal quality (≤ {fmt(mg)}) |", "|---|---|---|---|---|---|---|"]
            for t in c.details["thresholds"]:
                eq = ("yes" if t["equal_quality"] else "no") if t["saving"] > 0 else "— (no loops saved)"
                L.append(f"| {t['threshold']:g} | {t['n_runs']} | {fmt(t['mean_loops'])} / {fmt(t['cap'])} | "
                         f"{100 * t['saving']:.1f}% | {t['delta']:+.4f} [{fmt(t['delta_low'])}, {fmt(t['delta_high'])}] | "
                         f"{t.get('se_method', '—')} | {eq} |")
            L.append("")
        if kind == "deeper" and c.details.get("groups"):
            L += ["| group | ΔNLL (deeper − loop), nats/token | s.e. | s.e. from | FLOPs ratio deeper/loop |",
                  "|---|---|---|---|---|"]
            for g in c.details["groups"][:12]:
                how = g.get("se_method", "—") + (f" ({g['n_seqs']} seqs)" if g.get("n_seqs") else "")
                br = g.get("bracket_ratios")
                ratio = fmt(g['flops_ratio_deeper_over_loop']) + (
                    f" (interpolated between {fmt(br[0])} and {fmt(br[1])})" if br else "")
                L.append(f"| {_cell(g['group'])} | {g['delta']:+.4f} | {fmt(g['se'])} | {how} | {ratio} |")
            if len(c.details["groups"]) > 12:
                L.append(f"| … {len(c.details['groups']) - 12} more in fits.json | | | | |")
            L.append("")
    if kind == "protocol" and disagreements:
        L += ["**Fitted and protocol multipliers disagree** (non-overlapping CIs):", ""]
        L += [f"- {d}" for d in disagreements] + [""]
    elif kind == "protocol" and cs:
        by = {c.key: c for c in claims}
        both = [c for c in cs if c.ci_low is not None and c.ci_high is not None
                and (m := by.get(c.key.replace("protocol[", "multiplier["))) is not None
                and m.ci_low is not None and m.ci_high is not None]
        if both:
            L += [f"The fitted (claim 1) and protocol multipliers have overlapping CIs under "
                  f"{'every' if len(both) == len(cs) else 'each'} convention where both exist "
                  f"({', '.join(c.details.get('convention', c.key) for c in both)}).", ""]
        else:
            L += ["No convention has both a fitted (claim 1) and a protocol multiplier: they cannot be compared.", ""]
    for name in SECTION_FIGS[kind]:
        f = figs.get(name)
        if f is None:
            continue
        if f.made:
            L += _figure_md(f, study_dir)
        elif f.note:
            L += [f"_Figure {name} skipped: {f.note}._", ""]
    return L


def _task_loops_md(tasks: pd.DataFrame | None) -> list[str]:
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


def _loop_md(sens: pd.DataFrame | None, states: pd.DataFrame | None, figs: dict[str, FigureResult],
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
            state = ("— (no loops.jsonl)", "—", "—", "—", "—")
        L.append(f"| {_cell(slug)} | {_cell(variant)} | {sens_t} | {inert} | {bey} | " + " | ".join(map(_cell, state)) + " |")
    L.append("")
    if sens is not None and not sens.empty and "variant" in sens:
        L += ["Per variant (mean over its runs):", "", "| variant | runs | sensitivity | inert runs | beyond s_max | state(s) |",
              "|---|---|---|---|---|---|"]
        for v, g in sens.groupby("variant", sort=False):
            kinds = sorted({st[r]["state"] for r in g["run"] if r in st}) or ["—"]
            bd = g["beyond_delta"].dropna() if "beyond_delta" in g else pd.Series(dtype=float)
            L.append(f"| {_cell(v)} | {len(g)} | {g['sensitivity'].mean():+.4f} | {int(g['inert'].sum())} | "
                     f"{'—' if bd.empty else f'{bd.mean():+.4f}'} | {', '.join(kinds)} |")
        L.append("")
    return L + _figure_md(figs.get("loop_state"), study_dir)


def _figure_md(f: FigureResult | None, study_dir: Path) -> list[str]:
    """A made figure's PNG embedded (path relative to the report) with its caption below."""
    png = [p for p in f.files if p.endswith(".png")] if f is not None and f.made else []
    return [f"![{f.caption}]({os.path.relpath(png[0], study_dir)})", "", f"_{f.caption}_", ""] if png else []


def _attention_md(att: pd.DataFrame | None, figs: dict[str, FigureResult], study_dir: Path) -> list[str]:
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
        L.append(f"| {_cell(x['slug'])} | {_cell(x['variant'])} | {x['layer']} | {x['first_loop']} → {x['last_loop']} "
                 f"| {x['delta']:+.4f}{ci} |")
    return L + [""] + _figure_md(figs.get("attention"), study_dir)


def render_markdown(study: str, study_dir: Path, summary: dict[str, Any], df: pd.DataFrame, fits: StudyFits | None,
                    claims: Sequence[Claim], figs: Sequence[FigureResult], missing: Sequence[str],
                    notes: Sequence[str], n_boot: int, seed: int, env: dict[str, str],
                    loop_sens: pd.DataFrame | None = None, loop_states: pd.DataFrame | None = None,
                    tasks: pd.DataFrame | None = None, attention: pd.DataFrame | None = None,
                    control: CT.ControlResult | None = None) -> str:
    n_runs = int(df["run"].nunique()) if "run" in df and not df.empty else 0
    s = summary or {}
    L = [f"# LoopMDM claims report — {study}", "",
         f"_{n_runs} runs with evaluations ({s.get('n_done', '?')} done, {len(s.get('partial', []))} unfinished, "
         f"{len(s.get('failed', []))} failed, {len(s.get('skipped_no_evals', []))} without evals"
         f"{f', {n_ft} fine-tuned, scored on tasks' if (n_ft := len(s.get('fine_tuned', []))) else ''}) · bootstrap "
         f"{n_boot} · seed {seed} · {env['date']}_", ""]
    for n in notes:
        L.append(f"> **Input problem:** {n}")
    if notes:
        L.append("")
    L += ["## Claims", "",
          "Two verdicts per claim: against no effect (the claim's rule) and against the paper's value where it states "
          "one; the last column is the smallest effect this study would detect at 80% power from its own errors, so "
          "an _inconclusive_ says whether more data would help.", "",
          "| claim | paper | measured | 95% CI | verdict (vs no effect) | vs the paper | detectable (80% power) | caveats |",
          "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        cav = "; ".join(c.caveats[:3]) + (f" (+{len(c.caveats) - 3} more)" if len(c.caveats) > 3 else "")
        L.append(f"| {_cell(c.name)} | {_cell(c.paper_text)} | {_cell(_measured(c))} | {_ci(c)} | "
                 f"{VERDICT_MARK.get(c.verdict, c.verdict)} | {_cell(_vs_paper(c))} | {_cell(c.mde_text or '—')} | "
                 f"{_cell(cav)} |")
    L.append("")
    inert = [c for c in claims if c.details.get("inert_runs")]
    if inert:
        L += [f"> **Inert looping:** {inert[0].details['inert_runs']} — see *Loop diagnostics*.", ""]
    L += CT.section_md(control)
    dis = multiplier_disagreements(claims)
    if dis:
        L += ["**The fitted multiplier and the paper-protocol multiplier disagree** (CIs do not overlap): "
              + "; ".join(dis), ""]
    figmap = {f.name: f for f in figs}
    for kind in SECTION_TITLES:
        L += _claim_section(kind, claims, figmap, study_dir, dis)
    try:
        seeds = seed_spread(df, fits.loops if fits is not None else None)
        L += ["## Training seeds", "", seeds["text"] + ".", ""]
    except Exception as e:  # never lose the report for a summary line
        L += ["## Training seeds", "", f"not computed: {e.__class__.__name__}: {e}", ""]
    L += _task_loops_md(tasks)
    L += _loop_md(loop_sens, loop_states, figmap, study_dir)
    L += _attention_md(attention, figmap, study_dir)
    L += _diagnostics_md(fits)
    L += ["## What is missing", ""]
    L += [f"- {m}" for m in missing] if missing else ["Nothing: every claim had its inputs."]
    skipped = [f for f in figs if not f.made]
    if skipped:
        L += [f"- figure {f.name} skipped: {f.note}" for f in skipped]
    L += ["", "<details><summary>Task-evaluation file contract (runs/*/evals/*.json)</summary>", "", "```",
          TASK_EVAL_CONTRACT.strip("\n"), "```", "</details>", "",
          "---", f"_Generated by `python -m analysis.report` on {env['machine']}; Python {env['python']}, numpy "
          f"{env['numpy']}, scipy {env['scipy']}, pandas {env['pandas']}, matplotlib {env['matplotlib']}, pyarrow "
          f"{env['pyarrow']}; {env['date']}; {n_runs} runs, {len(df)} table rows._", ""]
    return "\n".join(L)


def run_report(
    study_dir: str | Path, *, n_boot: int = 1000, conventions: Sequence[str] = CONVENTIONS, seed: int = 0,
    figures: bool = True, force_collect: bool = False, loops: int | None = None, weighted: bool = False,
    formats: Sequence[str] = ("png", "pdf"),
) -> ReportResult:
    """The whole pipeline; never raises on bad data (only on an unwritable study dir)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    study_dir = Path(study_dir)
    conventions = tuple(normalise_convention(c) for c in conventions)
    notes: list[str] = []
    summary: dict[str, Any] = {}
    if (study_dir / "runs").is_dir():
        df = load_or_collect(study_dir, force=force_collect)
        summary = dict(df.attrs.get("collect", {}))
    elif (study_dir / "runs.parquet").exists():
        df = pd.read_parquet(study_dir / "runs.parquet")
        summary = dict(df.attrs.get("collect", {}))
        notes.append("no runs/ directory: using runs.parquet as given")
    else:
        df = pd.DataFrame(columns=BASE_COLUMNS)
        notes.append(f"no runs/ directory and no runs.parquet in {study_dir}: nothing to analyse")
    timings["collect"] = time.perf_counter() - t0
    miss_core = missing_columns(df, CORE_COLUMNS)
    miss_all = missing_columns(df)
    if miss_core and len(df):
        notes.append(f"the table lacks required columns {', '.join(miss_core)}: claims cannot be evaluated")
    elif miss_all and len(df):
        notes.append(f"the table lacks columns {', '.join(miss_all)}: analyses that need them are skipped")
    if not miss_core or not len(df):
        df, cn = clean(df)
        notes += cn
    if len(df) == 0 and not notes:
        notes.append("the study has no evaluation rows yet")
    study = str(df["study"].dropna().iloc[0]) if "study" in df and df["study"].notna().any() else study_dir.name
    tasks, task_problems = (load_task_evals(study_dir) if (study_dir / "runs").is_dir() else (pd.DataFrame(), []))
    notes += task_problems
    fits = None
    t1 = time.perf_counter()
    if len(df) and not miss_core:
        try:
            fits = fit_study(df, conventions=[c for c in conventions if c in df.columns] or conventions,
                             n_boot=n_boot, seed=seed, loops=loops, weighted=weighted)
        except Exception as e:  # keep going: the report says what failed
            notes.append(f"fitting failed: {e.__class__.__name__}: {e}")
    timings["fits"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    if fits is None:
        fits_for_claims = StudyFits(loops=None, loops_note="no fits", conventions=conventions)
    else:
        fits_for_claims = fits
    claims = evaluate_claims(df if not miss_core else pd.DataFrame(columns=BASE_COLUMNS), fits_for_claims, tasks,
                             conventions=conventions, n_boot=n_boot, seed=seed)
    timings["claims"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    loop_diag = load_loop_diagnostics(study_dir) if (study_dir / "runs").is_dir() else pd.DataFrame()
    attention = load_attention(study_dir) if (study_dir / "runs").is_dir() else pd.DataFrame()
    try:
        loop_sens = LD.loop_sensitivity(df) if len(df) and not miss_core else pd.DataFrame()
        loop_states = LD.state_table(loop_diag)
    except Exception as e:  # diagnostics never take the report down
        notes.append(f"loop diagnostics failed: {e.__class__.__name__}: {e}")
        loop_sens = loop_states = pd.DataFrame()
    control = CT.control_for_study(study_dir, df, tasks, loop_sens, figures=figures, formats=formats, n_boot=n_boot,
                                   seed=seed)
    figs: list[FigureResult] = []
    if figures and len(df) and not miss_core:
        figs = make_figures(df, tasks, fits, claims, study_dir / "figures", formats, loop_diag=loop_diag,
                            attention=attention)
    timings["figures"] = time.perf_counter() - t1
    missing = _missing_list(summary, df if not miss_core else pd.DataFrame(), fits, claims, [])
    env = environment()
    md = render_markdown(study, study_dir, summary, df, fits, claims, figs, missing, notes, n_boot, seed, env,
                         loop_sens, loop_states, tasks, attention, control)
    payload = dict(study=study, generated=env, n_boot=n_boot, seed=seed, conventions=list(conventions),
                   input_problems=notes, collect=summary, fits=fits.to_dict() if fits else None,
                   claims=[c.to_dict() for c in claims], multiplier_disagreements=multiplier_disagreements(claims),
                   figures=[_relative(f.to_dict(), study_dir) for f in figs], missing=missing, timings_s=timings,
                   loop_sensitivity=loop_sens.to_dict("records"), loop_state=loop_states.to_dict("records"),
                   control=control.to_dict() if control is not None else None)
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_dir / "fits.json", dumps(payload))
    atomic_write_text(study_dir / "report.md", md)
    return ReportResult(study_dir / "report.md", study_dir / "fits.json", claims, figs, missing,
                        time.perf_counter() - t0, timings)


def _relative(fig: dict, study_dir: Path) -> dict:
    """Figure paths relative to the study: a report that moves (or is committed) keeps working."""
    return fig | {"files": [os.path.relpath(p, study_dir) for p in fig.get("files") or []]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("study_dir")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--convention", action="append", default=None,
                    help="FLOPs convention(s): 6N_nonembed, 6N_total, exact (repeatable; none given: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loops", type=int, default=None, help="inference S for LoopMDM (default: largest S>=6 <= s_max)")
    ap.add_argument("--weighted", action="store_true", help="weight fits by the MC standard error of each NLL")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--force-collect", action="store_true", help="rebuild runs.parquet even if fresh")
    a = ap.parse_args(argv)
    sd = Path(a.study_dir)
    if not sd.is_dir():
        print(f"error: {sd} is not a directory (run the study first, or pass its --out directory)", file=sys.stderr)
        return 2
    if not any(records.read_evals(rd).rows for rd in records.list_run_dirs(sd)):
        print(f"error: {sd} has no run with an evaluation yet (runs/*/evals.jsonl); nothing to report", file=sys.stderr)
        return 2
    convs = a.convention or list(CONVENTIONS)
    bad = [c for c in convs if normalise_convention(c) not in CONVENTIONS]
    if bad:
        print(f"error: unknown convention(s) {bad}; choose from 6N_nonembed, 6N_total, exact", file=sys.stderr)
        return 2
    res = run_report(sd, n_boot=a.bootstrap, conventions=convs, seed=a.seed, figures=not a.no_figures,
                     force_collect=a.force_collect, loops=a.loops, weighted=a.weighted)
    for c in res.claims:
        vs = f" — {c.paper_verdict}" if c.paper_verdict else ""
        print(f"{c.verdict:>14}  {c.name}: {_measured(c)} {_ci(c)}{vs}")
    if res.missing:
        print(f"{len(res.missing)} item(s) missing — see the report")
    print(f"wrote {res.report_path} and {res.fits_path} in {res.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
