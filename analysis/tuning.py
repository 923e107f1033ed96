"""The tuning stage in the report: each (family, width)'s LR, NLL vs LR at the tuning budget, and whether the
comparisons behind the verdicts would come out otherwise had every family used the baseline's LR.

What the tuning runs can and cannot say. They train every family at every LR of the grid at one small budget, so at
that budget the two policies — each family at its own best LR (what the grid does) and every family at the
same-size MDM's best LR (the shared-LR habit) — can both be compared, paired over the shared evaluation sequences:
LoopMDM against the same-size MDM (the direction of claims 1-2) and against the deeper MDM (claim 3). What they
cannot say: the multiplier at the grid's budgets under the shared LR (the grid was trained at the tuned LRs only),
and whether the best LR at the tuning budget is still the best at the grid's larger budgets (the best constant LR
usually falls as training lengthens).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import records

from . import paired as PA
from .bootstrap import Z95
from .collect import read_run
from .util import fmt

BASELINE = "mdm"
#: (other family, what the comparison stands for): NLL(other) − NLL(LoopMDM), > 0 when LoopMDM is better
COMPARISONS = (("mdm", "LoopMDM vs same-size MDM (claims 1-2)"), ("mdm_deeper", "LoopMDM vs deeper MDM (claim 3)"))
BETTER, WORSE, UNRESOLVED = "LoopMDM better", "LoopMDM worse", "not resolved"


def load_tuning(study_dir: str | Path) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """(the tuning record, one row per tuning run: key, family, width, lr, warmup_steps, state, final nll, nll_se,
    nll_per_seq, eval_set, chosen). (None, empty) for a study without a tuning stage."""
    rec = records.read_json(records.tuned_path(study_dir))
    if rec is None:
        return None, pd.DataFrame()
    dirs = {d.name: d for d in records.list_run_dirs(records.tune_dir(study_dir))}
    rows = []
    for key, c in (rec.get("keys") or {}).items():
        for p in c.get("points") or []:
            row = dict(key=key, family=c.get("family"), width=c.get("width"), lr=p["lr"],
                       warmup_steps=p.get("warmup_steps"), state=p["state"], nll=p.get("nll"), nll_se=p.get("nll_se"),
                       nll_per_seq=None, eval_set=None, run=p.get("run"),
                       chosen=c.get("status") == "tuned" and p["lr"] == c.get("lr")
                       and p.get("warmup_steps") == c.get("warmup_steps"))
            final = [r for r in (read_run(dirs[p["run"]])[0] if p.get("run") in dirs else [])
                     if r.get("is_final") and r.get("exit_threshold") is None and r.get("eval_loops") == c.get("eval_loops")]
            if final:
                row.update(nll_per_seq=final[-1].get("nll_per_seq"), eval_set=final[-1].get("eval_set"))
            rows.append(row)
    t = pd.DataFrame(rows)
    if not t.empty:  # every LR against its key's chosen one, paired: what the choice among them rests on
        t["se_vs_chosen"] = [_se_vs_chosen(t, r) for _, r in t.iterrows()]
    return rec, t


def _se_vs_chosen(t: pd.DataFrame, r: pd.Series) -> float | None:
    ch = t[(t["key"] == r["key"]) & t["chosen"]]
    if ch.empty or r["state"] != "done":
        return None
    c = ch.iloc[0]
    return PA.diff_se(r["nll_per_seq"], c["nll_per_seq"], r["nll_se"], c["nll_se"], r["eval_set"], c["eval_set"])[0]


def _point(t: pd.DataFrame, key: str, lr: float, warmup: Any) -> pd.Series | None:
    m = t[(t["key"] == key) & np.isclose(t["lr"], lr) & ((t["warmup_steps"] == warmup) | pd.isna(warmup))]
    return None if m.empty else m.iloc[0]


def _delta(other: pd.Series | None, loop: pd.Series | None) -> dict[str, Any]:
    """NLL(other) − NLL(loop) with its paired s.e. and the sign it resolves at 95%; a diverged run is the worse."""
    if other is None or loop is None:
        return dict(delta=None, se=None, verdict=None, note="not tried")
    states = (other["state"], loop["state"])
    if "diverged" in states:
        if states == ("diverged", "diverged"):
            return dict(delta=None, se=None, verdict=UNRESOLVED, note="both diverged")
        return dict(delta=math.inf if states[0] == "diverged" else -math.inf, se=0.0,
                    verdict=BETTER if states[0] == "diverged" else WORSE, note="one diverged")
    if any(s != "done" for s in states):
        return dict(delta=None, se=None, verdict=None, note="not finished")
    d = float(other["nll"]) - float(loop["nll"])
    se, method, _ = PA.diff_se(other["nll_per_seq"], loop["nll_per_seq"], other["nll_se"], loop["nll_se"],
                               other["eval_set"], loop["eval_set"])
    verdict = BETTER if d - Z95 * se > 0 else WORSE if d + Z95 * se < 0 else UNRESOLVED
    return dict(delta=d, se=se, verdict=verdict, note=method)


def lr_sensitivity(rec: dict[str, Any] | None, t: pd.DataFrame) -> dict[str, Any]:
    """Per width: each family's chosen LR, and for each comparison the paired difference at the tuning budget under
    the tuned LRs and with every family at the same-size MDM's LR; whether the 95% verdict differs."""
    if rec is None or t.empty:
        return dict(rows=[], comparisons=[], changed=None)
    keys = rec.get("keys") or {}
    rows = [dict(key=k, family=c["family"], width=c["width"], status=c["status"], lr=c.get("lr"),
                 representative=c.get("representative"),
                 warmup_steps=c.get("warmup_steps"), nll=c.get("nll"), nll_se=c.get("nll_se"), edge=c.get("edge") or [],
                 n_lrs=len(c.get("points") or []), n_diverged=sum(p["state"] == "diverged" for p in c.get("points") or []))
            for k, c in keys.items()]
    for r in rows:
        r["runner_up"] = _runner_up(t[t["key"] == r["key"]]) if r["status"] == "tuned" else None
    comps = []
    for width in sorted({r["width"] for r in rows}):
        at = {r["family"]: r for r in rows if r["width"] == width}
        base, loops = at.get(BASELINE), [r for r in rows if r["width"] == width and r["family"] == "loopmdm"]
        if base is None or base["status"] != "tuned":
            continue
        for loop in (r for r in loops if r["status"] == "tuned"):
            for fam, what in COMPARISONS:
                other = at.get(fam)
                if other is None or other["status"] != "tuned":
                    continue
                own = _delta(_point(t, other["key"], other["lr"], other["warmup_steps"]),
                             _point(t, loop["key"], loop["lr"], loop["warmup_steps"]))
                shared = _delta(_point(t, other["key"], base["lr"], other["warmup_steps"]),
                                _point(t, loop["key"], base["lr"], loop["warmup_steps"]))
                comps.append(dict(width=width, comparison=what, loop_key=loop["key"], other_key=other["key"],
                                  loop_run=loop["representative"], other_run=other["representative"],
                                  baseline_lr=base["lr"], loop_lr=loop["lr"], other_lr=other["lr"], tuned=own,
                                  shared=shared, changed=None if None in (own["verdict"], shared["verdict"])
                                  else own["verdict"] != shared["verdict"]))
    flags = [c["changed"] for c in comps if c["changed"] is not None]
    return dict(rows=rows, comparisons=comps, changed=any(flags) if flags else None,
                budget=(rec.get("tune") or {}).get("budget"), by=(rec.get("tune") or {}).get("by"))


def _runner_up(g: pd.DataFrame) -> dict[str, Any] | None:
    """The second-best LR of a key and how far behind the chosen one it is (paired): is the choice resolved?"""
    ok = g[(g["state"] == "done") & ~g["chosen"]].sort_values("nll")
    if ok.empty or "se_vs_chosen" not in g:
        return None
    r, best = ok.iloc[0], g[g["chosen"]]["nll"].iloc[0]
    se = r["se_vs_chosen"]
    return dict(lr=float(r["lr"]), delta=float(r["nll"] - best), se=None if se is None else float(se),
                resolved=None if se is None else bool(r["nll"] - best > Z95 * se))


def grid_lrs(study_dir: str | Path) -> dict[str, list[float]]:
    """The LRs the grid's runs trained at, per family (read from their configs): what a study without a tuning
    stage can say about its LRs."""
    fam_of = {"looped": "loopmdm", "baseline_same": "mdm", "baseline_deeper": "mdm_deeper"}
    out: dict[str, set] = {}
    for rd in records.list_run_dirs(study_dir):
        cfg = records.read_config(rd) or {}
        if cfg.get("kind", "pretrain") != "pretrain":
            continue
        lr = (cfg.get("optim") or {}).get("lr")
        for g in (cfg.get("meta") or {}).get("groups") or []:
            out.setdefault(fam_of.get(g.get("role"), str(g.get("role"))), set()).add(lr)
    return {f: sorted(v for v in s if v is not None) for f, s in out.items()}


def delta_text(d: dict[str, Any]) -> str:
    if d.get("delta") is None:
        return f"— ({d.get('note')})" if d.get("note") else "—"
    if not math.isfinite(d["delta"]):
        return f"{d['verdict']} ({d['note']})"
    return f"{d['delta']:+.4f} ± {Z95 * d['se']:.4f}: {d['verdict']}"


def lr_text(x: Any) -> str:
    return fmt(x) if x is not None else "—"
