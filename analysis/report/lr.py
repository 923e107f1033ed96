"""The report's learning-rate section: the LR each (family, width) trained at and where it came from, NLL vs LR at
the tuning budget (a figure), and whether the comparisons behind the verdicts would come out otherwise had every
family used the baseline's LR — with what the tuning runs can and cannot say about that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bootstrap import Z95
from ..claims.common import cell
from ..figures import FigureResult
from ..tuning import delta_text, lr_text
from ..util import fmt
from .sections import FAMILY_LABEL, figure_md

NOT_KNOWN = ("Not known from these runs: the multipliers at the grid's budgets under one shared LR (the grid was "
             "trained at the tuned LRs only; re-running it at the baseline's LR would tell), and whether the best LR at "
             "the tuning budget is still the best at the grid's larger budgets (the best constant LR usually falls as "
             "training lengthens).")


def headline(sens: dict[str, Any] | None, grid_lrs: dict[str, list[float]]) -> str:
    """One line under the claims table: tuned or not, and whether the verdicts at the tuning budget move."""
    if not sens or not sens.get("rows"):
        lrs = ", ".join(fmt(x) for x in sorted({x for v in grid_lrs.values() for x in v})) or "the spec's LR"
        return (f"> **Learning rate:** not tuned — every family trained at {lrs}; "
                f"whether a verdict is the LR's doing is not known (see *Learning rate*).")
    changed = sens.get("changed")
    what = ("would change had every family used the same-size MDM's LR" if changed else
            "would not change had every family used the same-size MDM's LR" if changed is False else
            "could not be compared under one shared LR (a family or its tuning is missing)")
    return f"> **Learning rate:** tuned per {'(family, width)' if sens.get('by') == 'width' else 'architecture'}; at the " \
           f"tuning budget the comparisons {what} (see *Learning rate*)."


def _runner_up_text(u: dict[str, Any] | None) -> str:
    if not u:
        return "—"
    ci = "" if u["se"] is None else f" ± {Z95 * u['se']:.4f}" + ("" if u["resolved"] else " (not resolved)")
    return f"{lr_text(u['lr'])}: {u['delta']:+.4f}{ci}"


def lr_section_md(sens: dict[str, Any] | None, grid_lrs: dict[str, list[float]], figs: dict[str, FigureResult],
                  study_dir: Path) -> list[str]:
    L = ["## Learning rate: tuned per family and width", ""]
    if not sens or not sens.get("rows"):
        shared = ", ".join(f"{FAMILY_LABEL.get(f, f)} {', '.join(fmt(x) for x in v)}" for f, v in sorted(grid_lrs.items()))
        return L + [f"No tuning stage: every run trained at the LR its spec set ({shared or 'none recorded'}). A looped "
                    f"block sums its weights' gradient over S applications, so its best LR can differ from its "
                    f"baselines'; with one shared LR a multiplier can be the LR's doing, in either direction. Add a "
                    f"`tune:` stage to the spec (study/plan/tuning.py) to measure it.", ""]
    budget = sens.get("budget") or {}
    shown = ", ".join(f"{k} {fmt(v)}" for k, v in budget.items())
    L += [f"Each key's LR is the one with the smallest final NLL among those tried at the tuning budget ({shown}; "
          f"LoopMDM at the S the claims read); a diverged LR counts as worst; a best at the edge of the grid is flagged. "
          f"The grid's runs trained at these LRs (their configs' `meta.lr` say so)."
          + ("" if "flops" in budget else f" The tuning budget is not in FLOPs: the families differ in compute there, so "
                                          f"the differences below are at equal {', '.join(budget)}, not at equal compute."),
          "",
          "| key | family | width | LR | final NLL at the tuning budget (± MC s.e.) | next best LR: ΔNLL (paired, ± 95%) "
          "| LRs tried (diverged) | at the grid's edge |", "|---|---|---|---|---|---|---|---|"]
    for r in sens["rows"]:
        if r["status"] != "tuned":
            L.append(f"| {r['key']} | {FAMILY_LABEL.get(r['family'], r['family'])} | {r['width']} | — ({r['status']}) "
                     f"| — | — | {r['n_lrs']} ({r['n_diverged']}) | — |")
            continue
        L.append(f"| {r['key']} | {FAMILY_LABEL.get(r['family'], r['family'])} | {r['width']} | {lr_text(r['lr'])} | "
                 f"{fmt(r['nll'], 4)} ± {fmt(r['nll_se'])} | {_runner_up_text(r.get('runner_up'))} | "
                 f"{r['n_lrs']} ({r['n_diverged']}) | "
                 f"{cell('; '.join(r['edge'])) if r['edge'] else 'no'} |")
    L.append("")
    comps = sens.get("comparisons") or []
    if comps:
        L += ["Would the verdicts change had every family used the same-size MDM's LR? At the tuning budget, "
              "ΔNLL = NLL(other) − NLL(LoopMDM) (> 0: LoopMDM better) between the keys' tuning runs (each key's "
              "representative: its first grid run's architecture — for the deeper MDM one of its depths, where claim 3 "
              "interpolates between two), paired over the shared evaluation sequences, ± its 95% half-width. One "
              "training seed per LR: the half-widths hold evaluation noise only, not seed-to-seed variation.", "",
              "| width | comparison (tuning runs of) | LRs (LoopMDM / other) tuned | ΔNLL, tuned LRs | ΔNLL, all at the "
              "same-size MDM's LR | verdict changes? |", "|---|---|---|---|---|---|"]
        for c in comps:
            ch = "—" if c["changed"] is None else ("**yes**" if c["changed"] else "no")
            runs = f" ({c.get('loop_run')} vs {c.get('other_run')})" if c.get("other_run") else ""
            L.append(f"| {c['width']} | {c['comparison']}{cell(runs)} | {lr_text(c['loop_lr'])} / {lr_text(c['other_lr'])} | "
                     f"{delta_text(c['tuned'])} | {delta_text(c['shared'])} (LR {lr_text(c['baseline_lr'])}) | {ch} |")
        L.append("")
        verdict = {True: "at the tuning budget at least one comparison comes out otherwise under one shared LR: the "
                         "verdicts are LR-sensitive there.",
                   False: "at the tuning budget no comparison comes out otherwise under one shared LR.",
                   None: "no comparison could be made under both policies."}[sens.get("changed")]
        L += [f"Known: {verdict} {NOT_KNOWN}", ""]
    else:
        L += [f"No comparison could be made (a family or its tuning is missing). {NOT_KNOWN}", ""]
    return L + figure_md(figs.get("nll_vs_lr"), study_dir)
