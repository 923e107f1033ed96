"""Study specs: loading and expanding into runs with their matched baselines (the plan table: `table.py`).

A spec (``sweeps/*.yaml``) is a base RunConfig plus axes. Expansion is pure: spec -> list of ``PlannedRun``
(each a resolved, hashed RunConfig with its comparison groups), every looped config joined by its matched
baselines — the same-size MDM (mid block applied once) and the deeper MDM with equal expected per-step
compute (the integer depth closest in per-step FLOPs to n_head + E[S] * n_mid + n_tail, or both bracketing
depths when none is within 5%: `ModelConfig.deeper_depths`). Nothing is written or submitted until every run of the
grid has validated. Re-running a spec skips done and running runs; failed ones come back only with --retry.

Spec keys:
  study: name                 # results/<name>/ unless --out
  description: text
  base: {RunConfig sections}  # as in a study.run YAML
  axes: {dotted.key: [values]}            # full product
  zip: [{dotted.key: [..], other: [..]}]  # each group varies together, crossed with the axes
  seeds: [0, 1, 2]                         # optional: every config (and its baselines) once per training seed
  baselines: [same_size, deeper]          # matched baselines for every looped run
  scaling: {lr: RULE, batch: RULE, warmup: RULE}   # study/scaling.py
  resources: {executor, partition, gpus_per_node, time_min, ...}   # study/launch.py ResourceSpec
  resource_classes: {NAME: {overrides}}  # chosen per run by the axis/base key `resource_class`
  estimate: {tflops_per_gpu: 989, mfu: 0.4, cpu_gflops: 37}   # the plan's GPU-hours and CPU-time columns
  finetune: {corpus: SOURCE, roles: [looped, baseline_same], budget: {steps: N}, optim: {...}}
                              # a second stage: each selected pretraining run gets a fine-tuned child
                              # (kind: sft, init_from: its parent), submitted after the parent (SLURM
                              # dependency afterok); `only: GLOB` keeps the parents whose slug matches
  evaluate:                   # a third stage: `python -m study.eval` arguments run on selected finished runs
    - {runs: finetuned, args: "--tasks gsm8k-synth:easy:200 --loops 1,4"}   # finetuned|pretrained|all|GLOB
                              # (after training when local; SLURM jobs with afterok on the run's job)
  control: {gate: {...}, criteria: {...}, inert: {...}}   # a positive control's pre-registered tests
                              # (analysis/control; the report states each with its measured value)
  control_study: control_small.yaml   # a positive control's spec (relative to this one), run first into
                              # <out>/control; this study's report cites it beside each claim
  tune: {lr: [1.0e-3, 3.0e-3, 1.0e-2], budget: {flops: 2.0e+11}}
                              # a stage before the grid: the LR per (family, width) chosen on a small grid at
                              # a small budget; the grid trains at it (study/plan/tuning.py)
The run-dict key ``layout: {n_layers: 12, looped: [1, 2]}`` is a readable way to place the looped block.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import ConfigError, reject_unknown_keys
import records
from study.evaluate.request import AUTOMATON_ORDERS, EvalRequest, parse_stage_args
from study.plan import config as config_mod
from study.plan import tuning
from study.plan.finetune import sft_raw, study_relative_parent
from study.plan.planned import PlannedRun
from study.plan.scaling import RULES

SPEC_KEYS = ["study", "description", "base", "axes", "zip", "seeds", "baselines", "scaling", "resources",
             "resource_classes", "estimate", "finetune", "evaluate", "tune", "control",
             "control_study"]
EVAL_RUNS = ("finetuned", "pretrained", "all")  # or a slug glob
ROLES = ("looped", "baseline_same", "baseline_deeper", "single")
BASELINES = ("same_size", "deeper")
ROLE_OF = {"same_size": "baseline_same", "deeper": "baseline_deeper"}
#: end-to-end rate of the embedded default on 2 idle CPU cores (training and evaluations, exact FLOPs per
#: second of wall time: 4.85e13 FLOPs in 22 min, results/demo/MACHINE.md): the plan's CPU-time column
CPU_GFLOPS = 37.0


@dataclass
class Spec:
    study: str
    description: str
    base: dict
    axes: dict
    zip: list
    baselines: tuple
    scaling: dict
    resources: dict
    resource_classes: dict
    estimate: dict
    finetune: dict | None = None
    path: Path | None = None
    evaluate: list["EvalStage"] = field(default_factory=list)
    tune: tuning.TuneSpec | None = None
    control: Any = None  # analysis.control.Preregistration: what a positive control counts, fixed before it runs
    control_study: Path | None = None  # a control spec run first into <out>/control; the report cites it


@dataclass
class EvalStage:
    """One post-training evaluation: ``study.eval`` arguments (one way to say what to evaluate, on the
    command line and in a spec alike) and which runs they apply to."""

    runs: str
    args: list[str]
    request: EvalRequest  # validated when the spec loads

    @property
    def key(self) -> str:
        """Names the stage's SLURM jobs: the same arguments on the same run are one job, however often the
        sweep is submitted."""
        return hashlib.sha256(json.dumps([self.runs, self.args]).encode()).hexdigest()[:8]

    def selects(self, run: PlannedRun) -> bool:
        if self.runs == "all":
            return True
        if self.runs in ("finetuned", "pretrained"):
            return (run.parent is not None) == (self.runs == "finetuned")
        return fnmatch.fnmatch(run.slug, self.runs)  # slugs only: a group glob would take the baselines too


# -- loading ---------------------------------------------------------------------------------------
def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """A spec file; ``key=value`` overrides apply to its base config (``optim.lr=1e-3``)."""
    raw = config_mod.load_yaml_mapping(path, "SPEC", "study:, base:, axes:, ... - e.g. sweeps/demo.yaml")
    refuse_swept_overrides(raw, overrides)
    if overrides:
        base = raw.get("base") or {}
        if not isinstance(base, dict):
            raise ConfigError("base", "must be a mapping of RunConfig sections")
        raw["base"] = config_mod.apply_overrides(base, list(overrides))
    return parse_spec(raw, Path(path))


def refuse_swept_overrides(raw: dict, overrides: list[str]) -> None:
    """An override changes the base config, and every key the spec sweeps (``axes``, ``zip``, ``seeds``) is set
    per run on top of it: overriding one would change nothing, so it is refused rather than ignored."""
    zips = [g for g in (raw.get("zip") if isinstance(raw.get("zip"), list) else []) if isinstance(g, dict)]
    swept = {str(k): "axes" for k in (raw.get("axes") if isinstance(raw.get("axes"), dict) else {})} | \
        {str(k): f"zip[{i}]" for i, g in enumerate(zips) for k in g} | ({"seed": "seeds"} if raw.get("seeds") else {})
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        for s, where in swept.items():
            if key == s or key.startswith(s + ".") or s.startswith(key + "."):
                raise ConfigError(key, f"is swept by the spec ({where}: {s}), so an override of the base config "
                                       f"would be ignored; edit {where} in the spec, or select runs with --only")


def parse_spec(raw: dict, path: Path | None = None) -> Spec:
    reject_unknown_keys("", raw, SPEC_KEYS)
    study = raw.get("study") or (path.stem if path else None)
    if not study or records.safe_slug(str(study)) != str(study):
        raise ConfigError("study", f"{study!r}: use a plain name of [a-z0-9._-] (it names results/<study>/)")
    axes = raw.get("axes") or {}
    zips = raw.get("zip") or []
    if not isinstance(axes, dict):
        raise ConfigError("axes", "must map dotted keys to lists of values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{key}", "must be a non-empty list of values (one value: put it in base)")
    seeds = raw.get("seeds")
    if seeds is not None:  # training seeds for every config, each seed with its own matched baselines
        if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds) or \
                not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
            raise ConfigError("seeds", f"got {seeds!r}; a list of distinct non-negative integers, e.g. [0, 1, 2]")
        if "seed" in axes:
            raise ConfigError("seeds", "given both as `seeds:` and as `axes.seed`; keep one")
        axes = {**axes, "seed": list(seeds)}
    if not isinstance(zips, list):
        raise ConfigError("zip", "must be a list of groups, each mapping keys to equal-length lists")
    for i, group in enumerate(zips):
        if not isinstance(group, dict) or not group:
            raise ConfigError(f"zip[{i}]", "must be a non-empty mapping of keys to lists")
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in group.items()}
        if min(lengths.values()) < 1 or len(set(lengths.values())) != 1:
            raise ConfigError(f"zip[{i}]", f"every key needs a non-empty list, all the same length (got {lengths})")
    baselines = tuple(raw.get("baselines") or ())
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError("baselines", f"{b!r} unknown; allowed: {', '.join(BASELINES)}")
    scaling = raw.get("scaling") or {}
    reject_unknown_keys("scaling", scaling, list(RULES))
    for knob, rule in scaling.items():
        RULES[knob](str(rule))  # validates the rule name now
    classes = raw.get("resource_classes") or {}
    estimate = {"tflops_per_gpu": 989.0, "mfu": 0.4, "cpu_gflops": CPU_GFLOPS} | (raw.get("estimate") or {})
    reject_unknown_keys("estimate", estimate, ["tflops_per_gpu", "mfu", "cpu_gflops"])
    for k, v in estimate.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"estimate.{k}", f"got {v!r}; must be a positive number")
    finetune = raw.get("finetune")
    if finetune is not None:
        if not isinstance(finetune, dict) or not finetune.get("corpus"):
            raise ConfigError("finetune", "needs at least `corpus:` (a GSM8K-style jsonl, gsm8k-synth[:difficulty], "
                              "hf:openai/gsm8k:main) and a budget, e.g. budget: {steps: 500}")
        roles = finetune.get("roles", ["looped", "baseline_same"])
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ConfigError("finetune.roles", f"{bad} unknown; allowed: {', '.join(ROLES)}")
        if "only" in finetune and not (isinstance(finetune["only"], str) and finetune["only"].strip()):
            raise ConfigError("finetune.only", f"got {finetune['only']!r}; a slug glob, e.g. 'd128-*-c5e12'")
    return Spec(study=str(study), description=str(raw.get("description", "")), base=raw.get("base") or {},
                axes=axes, zip=zips, baselines=baselines, scaling=scaling, resources=raw.get("resources") or {},
                resource_classes=classes, estimate=estimate, finetune=finetune, path=path,
                evaluate=_eval_stages(raw.get("evaluate")), tune=tuning.parse_tune(raw.get("tune"), axes, zips, scaling),
                control=_preregistration(raw.get("control")), control_study=_control_study(raw.get("control_study"), path))


def _control_study(raw: Any, path: Path | None) -> Path | None:
    """``control_study: control_small.yaml`` (relative to this spec): the positive control run with it."""
    if raw is None:
        return None
    where = (path.parent if path is not None else Path()) / str(raw)
    if not isinstance(raw, str) or not where.is_file() or (path is not None and where.resolve() == path.resolve()):
        raise ConfigError("control_study", f"{raw!r}: name another spec file, relative to this one "
                                           f"(e.g. control_small.yaml beside sweeps/demo.yaml)")
    return where


def _preregistration(raw: Any):
    """``control:`` (a positive control's gate and criteria, `analysis.control`), checked when the spec loads."""
    if raw is None:
        return None
    from analysis.control import Preregistration, PreregistrationError

    try:
        return Preregistration.from_spec(raw, orders=AUTOMATON_ORDERS)
    except PreregistrationError as exc:
        raise ConfigError(exc.field, str(exc).split(": ", 1)[-1]) from None


def _eval_stages(raw: Any) -> list[EvalStage]:
    """``evaluate:`` entries, each checked by study.eval's own parser now, before anything is trained."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("evaluate", "must be a list of {runs: finetuned|pretrained|all|GLOB, args: '--tasks ...'}")
    stages = []
    for i, entry in enumerate(raw):
        where = f"evaluate[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a mapping {runs: ..., args: '...'}")
        reject_unknown_keys(where, entry, ["runs", "args"])
        runs = str(entry.get("runs", "all")).strip()
        args = entry.get("args")
        if not runs:
            raise ConfigError(f"{where}.runs", f"empty; one of {', '.join(EVAL_RUNS)} or a slug glob")
        if not isinstance(args, str) or not args.strip():
            raise ConfigError(f"{where}.args", "give study.eval arguments as one string, e.g. '--tasks gsm8k-synth:easy'")
        argv, request = parse_stage_args(args, f"{where}.args")
        stages.append(EvalStage(runs=runs, args=argv, request=request))
    return stages


# -- expansion ---------------------------------------------------------------------------------------
def _assignments(spec: Spec) -> list[dict[str, Any]]:
    """Every combination: the product of the axes, crossed with each zip group's rows."""
    keys = list(spec.axes)
    product = [dict(zip(keys, combo)) for combo in itertools.product(*(spec.axes[k] for k in keys))] or [{}]
    for group in spec.zip:
        rows = [dict(zip(group, vals)) for vals in zip(*group.values())]
        product = [a | r for a in product for r in rows]
    return product


def _set(run: dict, dotted: str, value: Any) -> None:
    node = run
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"'{p}' is not a section")
    node[parts[-1]] = config_mod.copy_tree(value)


def _apply_layout(run: dict) -> None:
    """``layout: {n_layers: L, looped: [i, j]}`` -> head/mid/tail counts, refusing blocks outside the stack."""
    layout = run.pop("layout", None)
    if layout is None:
        return
    reject_unknown_keys("layout", layout, ["n_layers", "looped"])
    n, looped = layout.get("n_layers"), layout.get("looped")
    if not isinstance(n, int) or n < 1:
        raise ConfigError("layout.n_layers", f"got {n!r}; the number of layers in the stack, >= 1")
    if not isinstance(looped, list) or not looped or any(not isinstance(i, int) for i in looped):
        raise ConfigError("layout.looped", f"got {looped!r}; a list of layer indices such as [1, 2]")
    lo, hi = min(looped), max(looped)
    if lo < 0 or hi >= n:
        raise ConfigError("layout.looped", f"layers {looped} are outside the {n}-layer stack (indices 0..{n - 1})")
    if sorted(looped) != list(range(lo, hi + 1)):
        raise ConfigError("layout.looped", f"layers {looped} must be contiguous")
    model = run.setdefault("model", {})
    model.update(n_head_layers=lo, n_mid_layers=hi - lo + 1, n_tail_layers=n - hi - 1)


class Where:
    """Names a grid point in error messages; formatted only when an error is raised."""

    def __init__(self, assignment: dict, note: str = ""):
        self.assignment, self.note = assignment, note

    def __str__(self) -> str:
        text = json.dumps(self.assignment, default=str) if self.assignment else "base"
        return f"{text} {self.note}".strip()


def _build(run: dict, spec: Spec, where) -> config_mod.RunConfig:
    """A run dict -> validated RunConfig, scaling rules applied; errors say which grid point failed."""
    try:
        _apply_layout(run)
        for knob in ("batch", "lr"):
            if knob in spec.scaling:
                RULES[knob](str(spec.scaling[knob]))(run)
        cfg = config_mod.from_dict(run)
        if "warmup" in spec.scaling:
            RULES["warmup"](str(spec.scaling["warmup"]))(run, cfg.steps)
            cfg = config_mod.from_dict(run)
        return cfg
    except ConfigError as exc:
        raise ConfigError(exc.field, f"{str(exc).split(': ', 1)[-1]} (in grid point {where})") from None


def expand(spec: Spec, tuned: dict[str, tuning.Choice] | None = None) -> list[PlannedRun]:
    """The whole grid with matched baselines, deduplicated by hash (a baseline shared by several looped
    configs is one run listed in each of their groups). With a ``tune:`` stage every run takes its key's LR
    from ``tuned`` (`tuning.choices`); a run whose key is not tuned yet is pending (`PlannedRun.pending`)."""
    pretrain = _pretraining_grid(spec)
    if spec.tune is not None:
        pretrain = tuning.with_tuned_lr(spec.tune, pretrain, tuned or {})
    else:
        source = {"source": "scaling.lr", "rule": str(spec.scaling["lr"])} if "lr" in spec.scaling else {"source": "spec"}
        pretrain = [dataclasses.replace(r, lr_source=source) for r in pretrain]
    planned = pretrain + (_finetune_children(spec, pretrain) if spec.finetune else [])
    _check_stages_select(spec, planned)
    return planned


def tuning_runs(spec: Spec) -> list[PlannedRun]:
    """The tuning stage's runs (none without ``tune:``): they do not depend on any result, so they are planned
    like the grid, and come before it."""
    if spec.tune is None:
        return []
    return tuning.planned_tuning(spec.tune, spec.scaling, _pretraining_grid(spec))


def _pretraining_grid(spec: Spec) -> list[PlannedRun]:
    runs: dict[str, PlannedRun] = {}

    def add(cfg: config_mod.RunConfig, axes: dict, rclass: str | None, group: dict | None) -> None:
        pr = runs.get(cfg.hash)
        if pr is None:
            pr = runs[cfg.hash] = PlannedRun(cfg=cfg, slug=records.safe_slug(config_mod.slug(cfg)), axes=axes,
                                             resource_class=rclass)
        if group is not None and group not in pr.groups:
            pr.groups.append(group)

    for assignment in _assignments(spec):
        run = config_mod.copy_tree(spec.base)
        rclass = run.pop("resource_class", None)
        for key, value in assignment.items():
            if key == "resource_class":
                rclass = value
            else:
                _set(run, key, value)
        where = Where(assignment)
        axes = dict(assignment)
        raw = config_mod.copy_tree(run) if spec.baselines else None
        cfg = _build(run, spec, where)
        if rclass is not None and rclass not in spec.resource_classes:
            raise ConfigError("resource_class", f"{rclass!r} is not defined under resource_classes "
                              f"({', '.join(spec.resource_classes) or 'none defined'})")
        if not cfg.model.is_looped or not spec.baselines:
            add(cfg, axes, rclass, None)
            continue
        group_id = f"{records.safe_slug(config_mod.slug(cfg))}-{cfg.hash[:8]}"
        add(cfg, axes, rclass, {"group": group_id, "role": "looped"})
        for b in spec.baselines:
            if b == "same_size":
                models = [(cfg.model.non_looped(), None)]
            else:  # one depth within 5% of the looped model's per-step FLOPs, else the two bracketing depths
                models = [(cfg.model.plain_stack(n), ratio) for n, ratio in cfg.model.deeper_depths(cfg.data.seq_len)]
            for model, ratio in models:
                braw = config_mod.copy_tree(raw)
                _apply_layout(braw)
                braw["model"] = dict(model.to_dict())
                braw.setdefault("eval", {}).pop("loops", None)
                bcfg = _build(braw, spec, Where(assignment, f"({b} baseline)"))
                member = {"group": group_id, "role": ROLE_OF[b]}
                if ratio is not None:
                    member["flops_ratio"] = round(ratio, 4)  # per-step FLOPs, deeper / looped at E[S]
                add(bcfg, axes, rclass, member)
    return list(runs.values())


def _finetune_children(spec: Spec, parents: list[PlannedRun]) -> list[PlannedRun]:
    """One fine-tuning run per selected parent (`study.plan.finetune.sft_raw`: the parent's network and
    tokenizer, its weights through a study-relative ``init_from``, the finetune section's data, budget and
    optimisation)."""
    ft = dict(spec.finetune)
    corpus = ft.pop("corpus")
    roles = set(ft.pop("roles", ["looped", "baseline_same"]))
    only = ft.pop("only", None)
    children = []
    for parent in (p for p in parents if only is None or fnmatch.fnmatch(p.slug, only)):
        if not ({g["role"] for g in parent.groups} or {"single"}) & roles:
            continue
        try:
            raw = sft_raw(parent.cfg.to_dict(), corpus, study_relative_parent(parent.run_dir(Path("."))), ft)
        except ConfigError as exc:
            raise ConfigError(f"finetune.{exc.field}", str(exc).split(": ", 1)[-1]) from None
        cfg = _build(raw, spec, f"fine-tuning {parent.slug}")
        source = {"source": "finetune.optim.lr"} if "lr" in (ft.get("optim") or {}) else parent.lr_source
        children.append(PlannedRun(cfg=cfg, slug=records.safe_slug(config_mod.slug(cfg)), groups=list(parent.groups),
                                   axes=parent.axes, resource_class=parent.resource_class, parent=parent,
                                   lr_source=source))
    if not children:  # a stage that fine-tunes nothing is a typo in the spec, never what was meant
        slugs = _listing(sorted({p.slug for p in parents}))
        if only is not None and not any(fnmatch.fnmatch(p.slug, only) for p in parents):
            raise ConfigError("finetune.only", f"{only!r} matches no pretraining run (their slugs: {slugs}); fix the glob "
                                               f"or remove only:")
        present = sorted({g["role"] for p in parents for g in p.groups} or {"single"})
        raise ConfigError("finetune.roles", f"{sorted(roles)} selects no pretraining run"
                                            f"{'' if only is None else f' matching {only!r}'} (their roles: "
                                            f"{', '.join(present)}; slugs: {slugs}); list one of those roles")
    return children


def _listing(names: list[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _check_stages_select(spec: Spec, runs: list[PlannedRun]) -> None:
    """Every ``evaluate:`` stage selects at least one run of the expanded study: a stage that evaluates nothing is
    a typo in the spec (a glob that matches no slug, ``finetuned`` without a finetune stage)."""
    for i, stage in enumerate(spec.evaluate):
        if not any(stage.selects(r) for r in runs):
            raise ConfigError(f"evaluate[{i}].runs", f"{stage.runs!r} selects no run of {spec.study} (slugs: "
                                                     f"{_listing(sorted(r.slug for r in runs))}); use "
                                                     f"{', '.join(EVAL_RUNS)} or a glob over those slugs")


def select(runs: list[PlannedRun], only: str | None) -> list[PlannedRun]:
    """``--only``: runs whose slug matches the glob, or whose hash starts with it. Slugs only, as in an
    ``evaluate:`` stage: a comparison group is named after its looped run, so a group glob would take the
    baselines of every matching looped run too."""
    if not only:
        return runs
    return [r for r in runs if fnmatch.fnmatch(r.slug, only) or r.hash.startswith(only)]


