"""The positive control: on data where depth must help, does the harness see looping help?

A control study trains LoopMDM, the same-size and the deeper MDM on an iterated-computation corpus (an
elementary cellular automaton: row k needs k rule steps from row 0) and scores them with
the automaton scorer (`study.eval --automaton`): row 0 given, every later row masked and filled in one parallel step, accuracy
per record and depth (row) at each inference loop count S. What counts was fixed in the spec's ``control:``
section before the final study ran (``Preregistration``):

- the **gate**: the same-size MDM has learned the one-step rule (accuracy at depth 1 >= 95%); otherwise the
  control is not yet a test of depth and no verdict is drawn from it;
- the **criteria**: LoopMDM at S = s_max beats its own S = 1 and beats the same-size MDM on depths >= 3 by at
  least 10 points, with the 95% CI above 0; its NLL loop sensitivity NLL(S=1) − NLL(S=s_max) is at least
  0.02 nats/token, CI above 0;
- **looping is inert here** when the deeper MDM gains (deeper − same-size on depths >= 3: at least the
  criteria's gain, CI above 0) while LoopMDM's gain over its own S = 1 stays within ±3 points (95% CI).

All of it is read at the largest FLOPs budget that has all three families (every width and seed there); the
differences are paired on the same held-out records and their CIs come from resampling records (jointly for
every model: they saw the same records) and comparison groups. The accuracy tables and the NLL gap to the
generator's floor are reported whichever way the criteria fall. Pure functions but ``load_depth_evals``,
``control_for_study`` and ``detected_effects`` (which read files).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

import records

from .preregistration import Preregistration, PreregistrationError, read_preregistration
from ..bootstrap import Z95, group_draws, percentile_ci, record_group_draws

DETECTED, NOT_DETECTED, INERT, NO_GATE, NO_DATA = (
    "looping effect detected", "not detected", "looping inert here", "not yet a test of depth (gate not met)",
    "no data")


@dataclass
class Criterion:
    """One pre-registered test: the measured value with its 95% CI and whether it passed."""

    key: str
    name: str
    rule: str
    unit: str
    measured: float | None = None
    low: float | None = None
    high: float | None = None
    met: bool | None = None  # None: could not be measured
    detail: str = ""

    def text(self) -> str:
        if self.measured is None:
            return "—"
        ci = "" if self.low is None else f" [{fmt_signed(self.low, self.unit)}, {fmt_signed(self.high, self.unit)}]"
        return f"{fmt_signed(self.measured, self.unit)}{ci} {self.unit}"


def fmt_signed(x: float | None, unit: str) -> str:
    """A measured value in its unit: points signed to one decimal, accuracy as a percentage, nats signed."""
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:+.1f}" if unit == "points" else (f"{100 * x:.1f}%" if unit == "accuracy" else f"{x:+.4f}")


@dataclass
class ControlResult:
    prereg: Preregistration
    verdict: str
    budget: float | None = None
    n_groups: int = 0
    gate: Criterion | None = None
    criteria: list[Criterion] = field(default_factory=list)
    inert: Criterion | None = None
    extra: list[Criterion] = field(default_factory=list)  # measured whichever way they fall (looped vs deeper)
    depth_table: list[dict] = field(default_factory=list)  # per order, family, S: accuracy per depth (mean of runs)
    nll: list[dict] = field(default_factory=list)  # per family: final NLL at the budget and its gap to the floor
    floor: float | None = None
    depth_unit: str = "row"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -------------------------------------------------------------------------------------------- inputs
def load_depth_evals(study_dir: str | Path, tasks: pd.DataFrame) -> pd.DataFrame:
    """The automaton scorer's rows of ``tasks`` (`analysis.collect.load_task_evals`), each with its per-record
    accuracy per depth (``per_depth``, n × K) and the generator's numbers read from its file."""
    if tasks is None or tasks.empty or "file" not in tasks:
        return pd.DataFrame()
    extra = {}
    for f in tasks["file"].drop_duplicates():
        try:
            obj = json.loads((Path(study_dir) / records.RUNS_DIR / f).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if "per_depth" in obj:
            extra[f] = dict(order=obj.get("order"), per_depth=np.asarray(obj["per_depth"], float),
                            depth_unit=obj.get("depth_unit", "row"), nll_floor=obj.get("nll_floor"),
                            chance=obj.get("chance"), majority=obj.get("majority_per_depth"))
    rows = tasks[tasks["file"].isin(extra)]
    if rows.empty:
        return pd.DataFrame()
    widths = {}
    for f in rows["file"].drop_duplicates():  # the model width, for a pre-registered width: from the run's config
        cfg = records.read_config(Path(study_dir) / records.RUNS_DIR / Path(f).parts[0]) or {}
        widths[f] = (cfg.get("model") or {}).get("d_model")
    return pd.concat([rows.reset_index(drop=True),
                      pd.DataFrame([extra[f] | {"d_model": widths[f]} for f in rows["file"]])], axis=1)


# -------------------------------------------------------------------------------------------- statistics
def _aligned(rows: Sequence[pd.Series]) -> list[np.ndarray] | None:
    """The per_depth matrices of ``rows`` restricted to the records they share, in one order (by sample id)."""
    ids = [list(r["sample_ids"]) if isinstance(r.get("sample_ids"), (list, np.ndarray)) else None for r in rows]
    if any(i is None for i in ids):
        mats = [r["per_depth"] for r in rows]
        return mats if len({m.shape for m in mats}) == 1 else None
    common = sorted(set(ids[0]).intersection(*map(set, ids[1:])))
    if not common:
        return None
    return [r["per_depth"][[i.index(c) for c in common]] for r, i in zip(rows, ids)]


def deep_mean(mat: np.ndarray, from_depth: int) -> np.ndarray:
    """Per record, the mean accuracy over depths >= from_depth (1-based)."""
    return mat[:, from_depth - 1:].mean(axis=1)


def paired_ci(per_group: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
              level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean over groups of each group's mean over records, with a percentile CI from resampling records (the
    same resampled records for every group: they share the records) and, with >= 2 groups, groups."""
    m = np.vstack([np.asarray(g, float) for g in per_group])  # (G, n)
    if m.shape[1] < 2:
        return float(m.mean()), None, None
    lo, hi = percentile_ci(record_group_draws(m, n_boot, rng), level)
    return float(m.mean()), lo, hi


def _gain_criterion(key: str, name: str, rule: str, diffs: list[np.ndarray], minimum: float, n_boot: int,
                    rng: np.random.Generator, detail: str) -> Criterion:
    c = Criterion(key, name, rule, "points", detail=detail)
    if not diffs:
        c.detail = detail or "no comparison group has both evaluations"
        return c
    est, lo, hi = paired_ci([100 * d for d in diffs], n_boot, rng)
    c.measured, c.low, c.high = est, lo, hi
    c.met = bool(est >= minimum and lo is not None and lo > 0)
    return c


def _pick_budget(ev: pd.DataFrame) -> float | None:
    """The largest FLOPs budget with a looped run and a same-size MDM scored: the headline of the control."""
    ok = []
    for b, d in ev.groupby("budget_flops"):
        if {"loopmdm", "mdm"} <= set(d["family"]):
            ok.append(float(b))
    return max(ok) if ok else None


def evaluate_control(depth: pd.DataFrame, sens: pd.DataFrame | None, nll: pd.DataFrame | None,
                     prereg: Preregistration, *, n_boot: int = 1000, seed: int = 0) -> ControlResult:
    """The gate, the criteria, the inert test, the accuracy tables and the NLL gap (module docstring).

    ``depth``: `load_depth_evals` rows; ``sens``: `analysis.loop_diagnostics.loop_sensitivity` (one row per
    looped run); ``nll``: the tidy table (final NLLs)."""
    if depth is None or depth.empty:
        return ControlResult(prereg, NO_DATA, notes=["no automaton-scorer evaluations (study.eval --automaton)"])
    rng = np.random.default_rng([seed, 0xC0271])  # the control's own stream: its CIs do not move with other claims
    res = ControlResult(prereg, NO_DATA, depth_unit=str(depth["depth_unit"].iloc[0]),
                        floor=_num(depth["nll_floor"].dropna().iloc[0]) if depth["nll_floor"].notna().any() else None)
    if not prereg.registered:
        res.notes.append("the spec pre-registers no `control:` section: the default gate and criteria are applied")
    res.depth_table = _depth_table(depth)
    ev = depth[(depth["order"] == prereg.order) & depth["exit_threshold"].isna()]
    if prereg.width is not None:
        ev = ev[pd.to_numeric(ev["d_model"], errors="coerce") == prereg.width] if "d_model" in ev else ev.iloc[:0]
    budget = _pick_budget(ev) if not ev.empty else None
    if budget is None:
        res.notes.append(f"no FLOPs budget has both a LoopMDM and a same-size MDM scored in the {prereg.order!r} order"
                         + ("" if prereg.width is None else f" at width {prereg.width}"))
        return res
    res.budget = budget
    ev = ev[ev["budget_flops"] == budget]
    K = min(m.shape[1] for m in ev["per_depth"])
    if prereg.from_depth > K or prereg.gate_depth > K:
        res.notes.append(f"the records have {K} depths: depth {max(prereg.from_depth, prereg.gate_depth)} "
                         f"(pre-registered) does not exist")
        return res
    gate_vals, same_vs_s1, loop_vs_same, deeper_vs_same, loop_vs_deeper = [], [], [], [], []
    smax_seen, n_groups = set(), 0
    for g, dg in ev.groupby("group", sort=True):
        looped = dg[dg["family"] == "loopmdm"]
        same = dg[dg["family"] == "mdm"]
        deeper = dg[dg["family"] == "mdm_deeper"]
        if looped.empty or same.empty:
            continue
        s_max = int(pd.to_numeric(looped["s_max"], errors="coerce").max())
        top, one = looped[looped["loops"] == s_max], looped[looped["loops"] == 1]
        b = same.sort_values("loops").iloc[0]
        if top.empty or one.empty:
            continue
        parts = [top.iloc[-1], one.iloc[-1], b] + [r for _, r in deeper.iterrows()]
        mats = _aligned(parts)
        if mats is None:
            res.notes.append(f"group {g}: the models were scored on different records; left out")
            continue
        n_groups += 1
        smax_seen.add(s_max)
        t, o, s, dps = mats[0], mats[1], mats[2], mats[3:]
        f = prereg.from_depth
        gate_vals.append(s[:, prereg.gate_depth - 1])
        same_vs_s1.append(deep_mean(t, f) - deep_mean(o, f))
        loop_vs_same.append(deep_mean(t, f) - deep_mean(s, f))
        if dps:
            d = np.mean([deep_mean(x, f) for x in dps], axis=0)  # bracketing depths, if two: their mean
            deeper_vs_same.append(d - deep_mean(s, f))
            loop_vs_deeper.append(deep_mean(t, f) - d)
    res.n_groups = n_groups
    if not n_groups:
        res.notes.append("no comparison group has LoopMDM scored at S=1 and S=s_max and its same-size MDM scored")
        return res
    S = "/".join(map(str, sorted(smax_seen)))
    depths = f"{res.depth_unit}s >= {prereg.from_depth}"
    where = (f"{n_groups} group(s) at {budget:.3g} FLOPs" + ("" if prereg.width is None else f", width {prereg.width}")
             + f", {prereg.order} fill, paired over {len(gate_vals[0])} records")
    gate = Criterion("gate", f"gate: same-size MDM has learned one rule step ({res.depth_unit} {prereg.gate_depth})",
                     f"accuracy >= {100 * prereg.gate_min_accuracy:g}%", "accuracy", detail=where)
    gate.measured, gate.low, gate.high = paired_ci(gate_vals, n_boot, rng)
    gate.met = bool(gate.measured >= prereg.gate_min_accuracy)
    res.gate = gate
    rule = f">= {prereg.min_gain_points:g} points and 95% CI above 0"
    res.criteria = [
        _gain_criterion("loop_vs_s1", f"LoopMDM at S=s_max ({S}) − its own S=1, {depths}", rule, same_vs_s1,
                        prereg.min_gain_points, n_boot, rng, where),
        _gain_criterion("loop_vs_same", f"LoopMDM at S=s_max ({S}) − same-size MDM, {depths}", rule, loop_vs_same,
                        prereg.min_gain_points, n_boot, rng, where),
        _sensitivity_criterion(sens, nll, budget, prereg, n_boot, rng),
    ]
    deeper_gain = _gain_criterion("deeper_vs_same", f"deeper MDM − same-size MDM, {depths}", rule, deeper_vs_same,
                                  prereg.min_gain_points, n_boot, rng, where)
    loop_gain = res.criteria[0]
    inert = Criterion("inert", "looping inert here: the deeper MDM gains while LoopMDM stays near its S=1",
                      f"deeper − same-size {rule}, and LoopMDM s_max − S=1 within ±{prereg.inert_within_points:g} "
                      f"points (95% CI)", "points")
    if deeper_gain.measured is not None and loop_gain.low is not None:
        within = -prereg.inert_within_points <= loop_gain.low and loop_gain.high <= prereg.inert_within_points
        inert.measured, inert.low, inert.high = deeper_gain.measured, deeper_gain.low, deeper_gain.high
        inert.met = bool(deeper_gain.met and within)
        inert.detail = (f"deeper − same-size {deeper_gain.text()}; LoopMDM s_max − S=1 {loop_gain.text()}"
                        f" ({'within' if within else 'not within'} ±{prereg.inert_within_points:g})")
    else:
        inert.detail = "no deeper MDM scored at this budget" if deeper_gain.measured is None else "no CI for the loop gain"
    res.inert = inert
    res.extra = [deeper_gain, _gain_criterion("loop_vs_deeper", f"LoopMDM at S=s_max − deeper MDM, {depths}",
                                              "measured, no threshold", loop_vs_deeper, float("inf"), n_boot, rng, where)]
    res.extra[1].met = None
    res.nll = _nll_gap(nll, budget, res.floor, prereg.width)
    if not gate.met:
        res.verdict = NO_GATE
    elif all(c.met for c in res.criteria):
        res.verdict = DETECTED
    elif inert.met:
        res.verdict = INERT
    else:
        res.verdict = NOT_DETECTED
    return res


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _sensitivity_criterion(sens: pd.DataFrame | None, nll: pd.DataFrame | None, budget: float,
                           prereg: Preregistration, n_boot: int, rng: np.random.Generator) -> Criterion:
    """Mean NLL(S=1) − NLL(S=s_max) over the budget's looped runs; CI from each run's paired standard error
    and resampling runs (as claim 3 does for its groups)."""
    c = Criterion("nll_sensitivity", "NLL loop sensitivity NLL(S=1) − NLL(S=s_max), LoopMDM",
                  f">= {prereg.min_nll_sensitivity:g} nats/token and 95% CI above 0", "nats/token")
    if sens is None or sens.empty or nll is None or nll.empty or "budget_flops" not in nll:
        c.detail = "no loop sensitivity (final evals at S=1 and S=s_max) for any looped run"
        return c
    at = pd.to_numeric(nll["budget_flops"], errors="coerce") == budget
    if prereg.width is not None and "d_model" in nll:
        at &= pd.to_numeric(nll["d_model"], errors="coerce") == prereg.width
    runs = set(nll.loc[at, "run"])
    s = sens[sens["run"].isin(runs)]
    if s.empty:
        c.detail = f"no looped run at {budget:.3g} FLOPs has final evals at S=1 and S=s_max"
        return c
    d = s["sensitivity"].to_numpy(float)
    draws, _ = group_draws(d, ((s["sens_high"] - s["sens_low"]) / (2 * Z95)).to_numpy(float), n_boot, rng)
    c.measured = float(d.mean())
    c.low, c.high = percentile_ci(draws.mean(1))
    c.met = bool(c.measured >= prereg.min_nll_sensitivity and c.low is not None and c.low > 0)
    c.detail = f"{d.size} looped run(s) at {budget:.3g} FLOPs"
    return c


def _depth_table(depth: pd.DataFrame) -> list[dict]:
    """Per (order, budget, family, S): mean accuracy per depth over runs (and records)."""
    out = []
    d = depth[depth["exit_threshold"].isna()].drop_duplicates("file")
    d = d.assign(d_model=pd.to_numeric(d["d_model"], errors="coerce").fillna(0).astype(int) if "d_model" in d else 0)
    for (order, budget, w, fam, S), g in d.groupby(["order", "budget_flops", "d_model", "family", "loops"], sort=True):
        K = min(m.shape[1] for m in g["per_depth"])
        acc = np.mean([m[:, :K].mean(0) for m in g["per_depth"]], axis=0)
        out.append(dict(order=order, budget=float(budget), width=int(w), family=fam, loops=int(S), n_runs=len(g),
                        accuracy=acc.tolist(), majority=list(g["majority"].iloc[0] or [])[:K]))
    return out


def _nll_gap(df: pd.DataFrame | None, budget: float, floor: float | None, width: int | None) -> list[dict]:
    """Final validation NLL per family at the budget (and width; LoopMDM at S=1 and S=s_max) and its gap to the
    floor."""
    if df is None or df.empty or "is_final" not in df:
        return []
    d = df[df["is_final"].astype(bool) & (pd.to_numeric(df["budget_flops"], errors="coerce") == budget)]
    if width is not None and "d_model" in d:
        d = d[pd.to_numeric(d["d_model"], errors="coerce") == width]
    d = d[d["exit_threshold"].isna()] if "exit_threshold" in d else d
    out = []
    for fam, label, pick in (("mdm", "MDM (same size)", None), ("mdm_deeper", "MDM (deeper)", None),
                             ("loopmdm", "LoopMDM, S=1", "one"), ("loopmdm", "LoopMDM, S=s_max", "top")):
        f = d[d["family"] == fam].drop_duplicates(["run", "eval_loops"])
        if pick == "one":
            f = f[f["eval_loops"] == 1]
        elif pick == "top":
            f = f[f["eval_loops"] == pd.to_numeric(f["s_max"], errors="coerce")]
        if f.empty:
            continue
        v = float(f["nll"].mean())
        out.append(dict(family=label, runs=int(f["run"].nunique()), nll=v, gap=None if floor is None else v - floor))
    return out


def control_for_study(study_dir: str | Path, df: pd.DataFrame, tasks: pd.DataFrame, sens: pd.DataFrame | None,
                      *, n_boot: int = 1000, seed: int = 0) -> ControlResult | None:
    """The control's result for a study directory, or None when it is no control study (no `control:` in its
    spec and no automaton-scorer evaluations). Never raises on bad data: what failed becomes a note, as
    everywhere in the report."""
    try:
        prereg = read_preregistration(study_dir)
    except (PreregistrationError, yaml.YAMLError) as e:
        return ControlResult(Preregistration(registered=False), NO_DATA, notes=[f"{records.SPEC}: {e}"])
    try:
        depth = load_depth_evals(study_dir, tasks)
        if depth.empty and not prereg.registered:
            return None
        return evaluate_control(depth, sens, df, prereg, n_boot=n_boot, seed=seed)
    except Exception as e:  # the control never takes the report down
        return ControlResult(prereg, NO_DATA, notes=[f"the control analysis failed: {e.__class__.__name__}: {e}"])


def detected_effects(study_dir: str | Path) -> dict[str, Any]:
    """What a control study detected, per claim, with the same estimators as any study (its ``fits.json``):
    ``{claim key: {verdict, measured, low, high, unit, name, text}}`` plus ``control`` (the pre-registered verdict
    and each criterion, with its ``text``). For citing the control beside another study's verdicts
    (`analysis.report.cite`); ``text`` is the value with its CI as the control's own report writes it."""
    from ..claims import Claim

    fits = json.loads((Path(study_dir) / records.FITS).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for c in fits.get("claims", []):
        cl = Claim(**({"statement": "", "paper_value": None, "paper_text": "", "rule": ""}
                      | {f: c[f] for f in Claim.__dataclass_fields__ if f in c}))
        out[c["key"]] = dict(verdict=cl.verdict_text(), measured=c.get("measured"), low=c.get("ci_low"),
                             high=c.get("ci_high"), unit=c.get("unit"), name=c.get("name"),
                             text=f"{cl.measured_str()} {cl.ci_str()}" if cl.measured_at_all else "—")
    ctl = fits.get("control")
    if ctl:
        crit = {}
        for c in [ctl.get("gate"), *ctl.get("criteria", []), ctl.get("inert"), *ctl.get("extra", [])]:
            if c:
                crit[c["key"]] = c | dict(text=Criterion(**{f: c[f] for f in Criterion.__dataclass_fields__
                                                            if f in c}).text())
        out["control"] = dict(verdict=ctl["verdict"], budget=ctl.get("budget"), study=fits.get("study"),
                              prereg=ctl.get("prereg"), criteria=crit)
    return out
