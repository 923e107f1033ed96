"""Power beside every verdict: what the positive control detected, cited next to another study's claims.

A "not supported" on natural text means little until the harness has shown, on data where depth must help, that
the same estimator sees an effect there (issue 27). A study's report therefore reads a reported control study
(``--control DIR``, else the study's own ``control/`` folder, where ``study.sweep`` runs a spec's
``control_study``) and puts, beside each claim the control can test, what the control measured with the same
estimator (`analysis.control.detected_effects`): the same claim key for the compute claims (1, 1b, 2, 3, 4, 5);
for a task claim (LoopMDM − same-size MDM in points, paired per item) the control's per-record paired gain of
LoopMDM at s_max over the same-size MDM on its deep rows. "—" where the control cannot test a claim.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import records

from ..claims import Claim

TASK_COUNTERPART = "loop_vs_same"  # the control criterion a task claim is cited with (paired, points)
#: control criteria added to a claim's section line (besides the claim of the same key)
SECTION_EXTRAS = {"loop_scaling": ("nll_sensitivity", "loop_vs_s1"), "deeper": ("loop_vs_deeper",)}


@dataclass
class ControlCitation:
    where: Path
    effects: dict[str, Any]  # analysis.control.detected_effects
    shown: str = ""  # where, as the report names it (relative to the study citing it)

    @property
    def control(self) -> dict[str, Any]:
        return self.effects.get("control") or {}

    def counterpart(self, key: str) -> dict[str, Any] | None:
        """The control's measurement for a claim key: its claim of the same key, or for a task claim its
        paired per-record gain over the same-size MDM (None: the control cannot test the claim)."""
        if key.startswith("task["):
            return self.control.get("criteria", {}).get(TASK_COUNTERPART)
        return self.effects.get(key)

    def cell(self, c: Claim) -> str:
        e = self.counterpart(c.key)
        if e is None or e.get("text") in (None, "—"):
            return "—"
        return f"{e['verdict']}: {e['text']}" if "verdict" in e else f"{e['name']}: {e['text']}"

    def section_lines(self, c: Claim) -> list[str]:
        e = self.counterpart(c.key)
        extras = [self.control.get("criteria", {}).get(k) for k in SECTION_EXTRAS.get(c.key.split("[")[0], ())]
        parts = []
        if e is not None and e.get("text") not in (None, "—"):
            parts.append(f"{e['name']}: " + (f"{e['verdict']}, " if "verdict" in e else "") + e["text"])
        parts += [f"{x['name']}: {x['text']}" for x in extras if x and x.get("text") not in (None, "—")]
        if not parts:
            return [f"_Detected on the control ({self.shown}): — (the control cannot test this claim)._", ""]
        return [f"_Detected on the control ({self.shown}, the same estimator): " + "; ".join(parts) + "._", ""]

    def headline(self) -> list[str]:
        ctl = self.control
        verdict = (f" (its pre-registered verdict: **{ctl['verdict']}** at {ctl['budget']:.3g} FLOPs)"
                   if ctl.get("verdict") and ctl.get("budget") else "")
        return [f"_Power: the column 'detected on the control' is what the same estimators measured on the positive "
                f"control `{self.shown}`{verdict}, data where depth must help: a claim found without effect here "
                f"says more where the control detects the effect than where it does not. Its report: `{Path(self.shown) / records.REPORT}`._", ""]


def find_control(study_dir: Path, explicit: str | Path | None) -> tuple[ControlCitation | None, str | None]:
    """The control to cite and a note for the report when one was asked for but cannot be read: ``explicit``
    (``--control``) or the study's own ``control/`` folder when it holds a report's fits file."""
    from ..control import detected_effects

    where = Path(explicit) if explicit is not None else records.control_dir(study_dir)
    if not (where / records.FITS).is_file():
        return None, (None if explicit is None else
                      f"--control {where}: no {records.FITS} there (report the control study first: "
                      f"python -m analysis.report {where})")
    try:
        return ControlCitation(where, detected_effects(where), os.path.relpath(where, study_dir)), None
    except Exception as e:  # a broken control never takes the report down
        return None, f"control {where} unreadable: {e.__class__.__name__}: {e}"
