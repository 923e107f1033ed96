"""The report as markdown: the claims table, one section per claim (`analysis.claims.SECTIONS`: each claim's
unit brings its own table), the sections beside the claims (`sections`), and what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

import records

from ..claims import (INCONCLUSIVE, NOT_IN_PAPER, NOT_SUPPORTED, SECTIONS, SUPPORTED, TASK_EVAL_CONTRACT, Claim, Section,
                      multiplier_disagreements)
from ..claims.common import (CONSISTENT, LARGER, NOT_MEASURED, SMALLER, UNDETERMINED, cell)
from ..control import ControlResult
from ..figures import FigureResult
from ..select import seed_spread
from ..study_fits import StudyFits
from .cite import ControlCitation
from .control import control_md
from .lr import headline as lr_headline
from .lr import lr_section_md
from .sections import attention_md, figure_md, fit_diagnostics_md, loop_diagnostics_md, task_loops_md

VERDICT_MARK = {SUPPORTED: "✅ supported", NOT_SUPPORTED: "❌ not supported", INCONCLUSIVE: "❔ inconclusive",
                NOT_MEASURED: "⬜ not measured"}
CELL_MAX = 120  # characters a headline cell may take: the table fits a screen
HEADLINE_CONVENTION = "flops_exact"  # claims 1-2 in the headline: this FLOPs convention (all of them in sections)
SHORT_VS_PAPER = {CONSISTENT: "consistent", SMALLER: "smaller", LARGER: "larger", UNDETERMINED: "undetermined"}


def vs_paper(c: Claim) -> str:
    if c.paper_verdict is None:
        return "— (not a claim of the paper)" if c.paper_text == NOT_IN_PAPER else "— (the paper states a direction)"
    return f"{c.paper_verdict} ({c.paper_text})" if c.paper_verdict != "undetermined" else "undetermined"


def clip(text: str, limit: int = CELL_MAX) -> str:
    """A headline cell: at most ``limit`` characters, cut at a word (the claim's section has the whole text)."""
    text = cell(text)
    return text if len(text) <= limit else text[:limit - 1].rsplit(" ", 1)[0] + "…"


def verdict_cell(c: Claim) -> str:
    return VERDICT_MARK.get(c.verdict_text(), c.verdict_text())


def vs_paper_cell(c: Claim) -> str:
    if not c.measured_at_all:
        return "—"
    if c.paper_verdict is None:
        return "— (not in the paper)" if c.paper_text == NOT_IN_PAPER else f"— (direction only: {c.paper_text})"
    return f"{SHORT_VS_PAPER.get(c.paper_verdict, c.paper_verdict)} (paper: {c.paper_text})"


def power_cell(c: Claim) -> str:
    return (c.mde_text or "—").replace(" at 80% power", "")


#: the headline table's columns, (header, cell of a claim): a study-wide column (e.g. what a positive control
#: detected) is one more entry here
HEADLINE_COLUMNS: list[tuple[str, Callable[[Claim], str]]] = [
    ("claim", lambda c: c.name),
    ("measured", lambda c: c.measured_str() if c.measured_at_all else "—"),
    ("95% CI", lambda c: c.ci_str() if c.measured_at_all else "—"),
    ("verdict (vs no effect)", verdict_cell),
    ("vs the paper", vs_paper_cell),
    ("power: smallest effect detectable (80%)", power_cell),
]


def headline_claims(claims: Sequence[Claim]) -> list[Claim]:
    """Every claim once: claims 1-2 under one FLOPs convention (exact if the study has it), the others as they are."""
    convs = [c.details.get("convention") for c in claims if c.details.get("convention")]
    head = HEADLINE_CONVENTION if HEADLINE_CONVENTION in convs else (convs[0] if convs else None)
    return [c for c in claims if c.details.get("convention") in (None, head)
            and not (c.key.startswith(("multiplier[", "protocol[")) and head and not c.key.endswith(f"[{head}]"))]


def headline_table(claims: Sequence[Claim],
                   columns: Sequence[tuple[str, Callable[[Claim], str]]] = HEADLINE_COLUMNS) -> list[str]:
    """The claims at a glance: one row a claim, no caveats (they are in each claim's section), every cell at
    most CELL_MAX characters."""
    L = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for c in headline_claims(claims):
        L.append("| " + " | ".join(clip(f(c)) for _, f in columns) + " |")
    return L


def missing_list(summary: dict[str, Any], df: pd.DataFrame, fits: StudyFits | None, claims: Sequence[Claim],
                  notes: Sequence[str]) -> list[str]:
    out = list(notes)
    s = summary or {}
    if s.get("partial"):
        out.append(f"{len(s['partial'])} run(s) still running/unfinished (no {records.DONE}; their final points are not "
                   f"used): {', '.join(s['partial'][:8])}{' …' if len(s['partial']) > 8 else ''}")
    if s.get("failed"):
        out.append(f"{len(s['failed'])} failed run(s) ({records.FAILED}): {', '.join(s['failed'][:8])}")
    if s.get("skipped_no_evals"):
        out.append(f"{len(s['skipped_no_evals'])} run(s) without any evaluation (skipped): "
                   f"{', '.join(s['skipped_no_evals'][:8])}{' …' if len(s['skipped_no_evals']) > 8 else ''}")
    if s.get("skipped_other"):
        out.append(f"{len(s['skipped_other'])} run dir(s) unreadable: " +
                   "; ".join(f"{k}: {v}" for k, v in list(s["skipped_other"].items())[:5]))
    if s.get("bad_lines"):
        out.append(f"{sum(s['bad_lines'].values())} unreadable {records.EVALS} line(s) in {len(s['bad_lines'])} run(s)")
    if s.get("no_params"):
        out.append(f"{len(s['no_params'])} run(s) without meta.params in {records.CONFIG} (N-based fits lack them)")
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
        out += grouped("frontier", bad, len(fits.frontier), "every frontier fit (family × FLOPs convention)")
        for k, f in fits.isoflop.items():
            edges = [b.budget for b in f.budgets if b.edge]
            if edges:
                out.append(f"IsoFLOP {k}: optimum at the edge of the sizes tried for budget(s) "
                           f"{', '.join(f'{e:.2g}' for e in edges)} — extend the size grid there")
        bad_iso = [(k, f.message) for k, f in fits.isoflop.items() if not f.ok]
        out += grouped("IsoFLOP", bad_iso, len(fits.isoflop), "IsoFLOP, every family")
        bad_par = [(k, f.message) for k, f in fits.parametric.items() if not f.ok]
        out += grouped("parametric L(N,D)", bad_par, len(fits.parametric), "parametric L(N,D), every family")
        messages = [m for _, m in bad + bad_iso + bad_par if m]
    for c in claims:
        if c.details.get("missing_input") and c.caveats:
            if any(m in c.caveats[0] for m in messages):
                continue  # the fit failure that caused it is listed above
            out.append(f"claim {c.key}: {c.caveats[0]}")
    return out


def grouped(what: str, items: Sequence[tuple[str, str]], total: int, all_label: str) -> list[str]:
    """One line per distinct message, naming every fit that failed with it."""
    by: dict[str, list[str]] = {}
    for name, msg in items:
        by.setdefault(msg, []).append(name)
    return [f"{all_label}: {msg}" if len(names) == total and total > 1 else f"{what} {', '.join(names)}: {msg}"
            for msg, names in by.items()]


def claim_section(section: Section, claims: Sequence[Claim], figs: dict[str, FigureResult],
                  study_dir: Path, cite: ControlCitation | None = None) -> list[str]:
    """One claim's section: its rule, each claim of its kind with verdict and caveats and what the claim adds
    below it (a table), what it adds after them all, and its figures."""
    L = [f"## {section.title}", ""]
    cs = [c for c in claims if c.key.split("[")[0] == section.key]
    if cs:
        L += [f"_Rule:_ {cs[0].rule}.", ""]
    for c in cs:
        if not c.measured_at_all:
            L.append(f"**{c.name}** — {verdict_cell(c)} (paper: {c.paper_text}).")
        else:
            L.append(f"**{c.name}** — {verdict_cell(c)}: measured {c.measured_str()}, 95% CI {c.ci_str()} (paper: "
                     f"{c.paper_text}; vs the paper: {vs_paper(c)}; detectable: {c.mde_text or '—'}).")
        for cv in c.caveats:
            L.append(f"- {cv}")
        L.append("")
        if cite is not None:
            L += cite.section_lines(c)
        if section.details is not None:
            L += section.details(c)
    if section.closing is not None:
        L += section.closing(cs, claims)
    for name in section.figures:
        f = figs.get(name)
        if f is None:
            continue
        if f.made:
            L += figure_md(f, study_dir)
        elif f.note:
            L += [f"_Figure {name} skipped: {f.note}._", ""]
    return L


def render_markdown(study: str, study_dir: Path, summary: dict[str, Any], df: pd.DataFrame, fits: StudyFits | None,
                    claims: Sequence[Claim], figs: Sequence[FigureResult], missing: Sequence[str],
                    notes: Sequence[str], n_boot: int, seed: int, env: dict[str, str],
                    loop_sens: pd.DataFrame | None = None, loop_states: pd.DataFrame | None = None,
                    tasks: pd.DataFrame | None = None, attention: pd.DataFrame | None = None,
                    lr: tuple[dict | None, dict] = (None, {}), control: ControlResult | None = None,
                    cite: ControlCitation | None = None) -> str:
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
    L += ["## Claims at a glance", "",
          "Two verdicts per claim: against no effect (the claim's rule) and against the paper's value where it states "
          "one; _power_ is the smallest effect this study would detect at 80% power from its own errors, so an "
          "_inconclusive_ says whether more data would help. Each claim's rule, caveats and details are in its "
          "section below.", ""]
    cols = list(HEADLINE_COLUMNS) + ([("detected on the control", cite.cell)] if cite is not None else [])
    L += headline_table(claims, cols)
    L.append("")
    L += cite.headline() if cite is not None else []
    others = [c for c in claims if c not in headline_claims(claims)]
    if others:
        convs = ", ".join(sorted({str(c.details.get("convention")) for c in others}))
        L += [f"_Claims 1–2 under the other FLOPs conventions ({convs}): sections 1 and 2._", ""]
    L += [lr_headline(*lr), ""]
    inert = [c for c in claims if c.details.get("inert_runs")]
    if inert:
        L += [f"> **Inert looping:** {inert[0].details['inert_runs']} — see *Loop diagnostics*.", ""]
    figmap = {f.name: f for f in figs}
    L += control_md(control, figmap.get("control_depth"), study_dir)
    dis = multiplier_disagreements(claims)
    if dis:
        L += ["**The fitted multiplier and the paper-protocol multiplier disagree** (CIs do not overlap): "
              + "; ".join(dis), ""]
    for section in SECTIONS:
        L += claim_section(section, claims, figmap, study_dir, cite)
    L += lr_section_md(*lr, figmap, study_dir)
    try:
        seeds = seed_spread(df, fits.loops if fits is not None else None)
        L += ["## Training seeds", "", seeds["text"] + ".", ""]
    except Exception as e:  # never lose the report for a summary line
        L += ["## Training seeds", "", f"not computed: {e.__class__.__name__}: {e}", ""]
    L += task_loops_md(tasks)
    L += loop_diagnostics_md(loop_sens, loop_states, figmap, study_dir)
    L += attention_md(attention, figmap, study_dir)
    L += fit_diagnostics_md(fits)
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
