"""The report's *Positive control* section: the pre-registered gate and criteria with their measured values, 95%
CIs and met / not met, the verdict, the NLL gap to the generator's floor, and accuracy per depth vs S."""

from __future__ import annotations

from pathlib import Path

from ..control import ControlResult
from ..figures import FigureResult
from ..figures.style import LABELS
from ..util import fmt
from .sections import figure_md

FAMILY_ORDER = {"mdm": 0, "mdm_deeper": 1, "loopmdm": 2}


def control_md(res: ControlResult | None, fig: FigureResult | None, study_dir: Path) -> list[str]:
    if res is None:
        return []
    p, unit = res.prereg, res.depth_unit
    L = ["## Positive control (pre-registered)", "",
         f"**Verdict: {res.verdict}.** " + (
             f"Read at the largest FLOPs budget with every family scored ({res.budget:.3g} FLOPs, {res.n_groups} "
             f"comparison group(s)), {p.order} fill: every masked {unit} in one step, so {unit} k needs k rule "
             f"steps inside one forward pass." if res.budget else ""), ""]
    L += [f"- {n}" for n in res.notes] + ([""] if res.notes else [])
    rows = [c for c in [res.gate, *res.criteria, res.inert] if c is not None]
    if rows:
        L += ["| pre-registered test | rule | measured [95% CI] | met |", "|---|---|---|---|"]
        for c in rows:
            met = "—" if c.met is None else ("**yes**" if c.met else "no")
            L.append(f"| {c.name} | {c.rule} | {c.text()} | {met} |")
        L += [""] + [f"- {c.name}: {c.detail}" for c in rows if c.detail] + [""]
    if res.extra:
        L += ["Measured whichever way they fall:", ""]
        L += [f"- {c.name}: {c.text()}" + ("" if c.measured is not None else f" ({c.detail})") for c in res.extra]
        L.append("")
    if res.nll:
        L += [f"Final validation NLL at {res.budget:.3g} FLOPs against the generator's floor ({fmt(res.floor)} "
              f"nats/token: the entropy of a record's random part per token):", "",
              "| model | runs | NLL, nats/token | gap to the floor |", "|---|---|---|---|"]
        L += [f"| {r['family']} | {r['runs']} | {r['nll']:.4f} | {fmt(r['gap'])} |" for r in res.nll]
        L.append("")
    for order in sorted({r["order"] for r in res.depth_table}, key=lambda o: (o != p.order, o)):
        tab = [r for r in res.depth_table if r["order"] == order and r["budget"] == res.budget
               and (p.width is None or r["width"] == p.width)]
        if not tab:
            continue
        K = max(len(r["accuracy"]) for r in tab)
        L += [f"% of masked cells right per {unit} ({order} fill, {res.budget:.3g} FLOPs, mean over runs):", "",
              "| model | S | " + " | ".join(f"{unit} {k}" for k in range(1, K + 1)) + " |", "|---|---|" + "---|" * K]
        for r in sorted(tab, key=lambda r: (FAMILY_ORDER.get(r["family"], 9), r["loops"])):
            L.append(f"| {LABELS.get(r['family'], r['family'])} | {r['loops']} | "
                     + " | ".join(f"{100 * a:.1f}" for a in r["accuracy"]) + " |")
        if tab[0]["majority"]:
            L.append("| always the majority value | — | " + " | ".join(f"{100 * a:.1f}" for a in tab[0]["majority"])
                     + " |")
        L.append("")
    return L + figure_md(fig, study_dir)
