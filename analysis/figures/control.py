"""The positive control's figure: accuracy per depth at its headline budget, LoopMDM per inference loop count S
beside the same-size and the deeper MDM and the majority-value baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..control import ControlResult
from .style import COLORS, LABELS, STYLE, FigureResult, plt, save

FAMILY_ORDER = {"mdm": 0, "mdm_deeper": 1, "loopmdm": 2}


def fig_control_depth(res: ControlResult | None, figdir: Path, formats: Sequence[str] = ("png", "pdf")) -> FigureResult:
    name = "control_depth"
    tab = [] if res is None else [r for r in res.depth_table
                                  if r["order"] == res.prereg.order and r["budget"] == res.budget
                                  and res.prereg.width in (None, r["width"])]
    if not tab:
        return FigureResult(name, note="no automaton-scorer evaluations at the control's budget")
    unit = res.depth_unit
    cap = (f"Accuracy per {unit} ({res.prereg.order} fill: every masked {unit} in one step) at {res.budget:.3g} "
           f"FLOPs: LoopMDM at each S (solid, darker = more loops), the same-size MDM (dashed), the deeper MDM "
           f"(dotted); grey: always the majority value")
    loop_s = sorted({r["loops"] for r in tab if r["family"] == "loopmdm"})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        cmap = plt.get_cmap("Oranges")
        for r in sorted(tab, key=lambda r: (FAMILY_ORDER.get(r["family"], 9), r["loops"])):
            k = np.arange(1, len(r["accuracy"]) + 1)
            y = 100 * np.asarray(r["accuracy"])
            if r["family"] == "loopmdm":
                shade = 0.35 + 0.65 * loop_s.index(r["loops"]) / max(1, len(loop_s) - 1)
                ax.plot(k, y, "-o", ms=3, color=cmap(shade), label=f"LoopMDM, S={r['loops']}")
            else:
                ax.plot(k, y, "--" if r["family"] == "mdm" else ":", marker="s", ms=3, color=COLORS[r["family"]],
                        label=LABELS[r["family"]])
        maj = tab[0]["majority"]
        if maj:
            ax.plot(np.arange(1, len(maj) + 1), 100 * np.asarray(maj), color="0.6", lw=1, label="majority value")
        ax.set_xlabel(f"{unit} k (k rule steps from the given {unit} 0)")
        ax.set_xticks(np.arange(1, max(len(r["accuracy"]) for r in tab) + 1))
        ax.set_ylabel("% of masked cells right")
        ax.legend(ncol=2)
        return FigureResult(name, save(fig, figdir, name, formats), caption=cap)
