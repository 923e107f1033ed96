"""The tuning stage (a spec's ``tune:``): the learning rate — and optionally the warm-up — of every (family, width),
chosen on a small grid at a small budget before the grid's runs start. A looped block sums its weights' gradient
over S applications, so its best LR can differ from its baselines'; a multiplier measured at one shared LR can then
be the LR's doing, in either direction (Porian et al. 2024 traced much of the Kaplan-Chinchilla gap to untuned
per-size LRs; OLMo's ladders and marin sweep the LR per size).

    tune:
      lr: [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3]   # the LRs tried: >= 3, log-spaced is the habit
      warmup_steps: [10, 30]                # optional, crossed with lr
      budget: {flops: 2.0e+11}              # the tuning budget, as a run's: flops | tokens | steps
      by: width                             # one LR per (family, width); model: per distinct architecture
      on_edge: warn                         # a best LR at the grid's edge: warn (flagged everywhere) | refuse

How it works (docs/DESIGN.md, "What changed"):
- Tuning runs are ordinary runs with hashes, kept in the study's tuning directory (`records.tune_dir`): a done one
  is skipped like any run, so re-running a sweep never re-tunes. One per (key, LR[, warm-up]): the key's
  representative — its first grid run in plan order — at the tuning budget, evaluated once, at the end, at the S
  the claims read (s_max for a looped model, 1 otherwise), without adaptive exits.
- The choice is a pure function of their final NLLs (`choose`): the smallest, ties to the smaller LR. A diverged
  run (FAILED as `Diverged`: a NaN or inf) counts as the worst; any other failure leaves the key untuned until
  `--retry`. Only LRs that were tried are chosen (no interpolation): the grid trains at an LR with a measured NLL.
- The grid's runs take their key's LR (and warm-up). The LR is part of a run's config, so a grid run's hash exists
  only once its key is tuned; until then the run is *pending* (a placeholder config that is never written or
  trained). `meta.lr` in a grid run's config says where its LR came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import records
from model.config import ConfigError, reject_unknown_keys
from study.plan import config as config_mod
from study.plan.planned import PlannedRun
from study.plan.scaling import RULES

FAMILY_OF_ROLE = {"looped": "loopmdm", "baseline_same": "mdm", "baseline_deeper": "mdm_deeper"}
ROLE_OF_FAMILY = {f: r for r, f in FAMILY_OF_ROLE.items()}
BY = ("width", "model")
ON_EDGE = ("warn", "refuse")
TUNE_KEYS = ("lr", "warmup_steps", "budget", "by", "on_edge")
#: how study.train records a NaN/inf (FAILED.json reason "<exception name>: ..."): a diverged LR, the worst NLL
DIVERGED = "Diverged"
#: a tuning run must spend at least half its steps past warm-up, or the LR under test hardly acts
MIN_STEPS_PER_WARMUP = 2
TUNED, UNFINISHED, FAILED = "tuned", "unfinished", "failed"


@dataclass(frozen=True)
class TuneSpec:
    lr: tuple[float, ...]
    budget: dict
    warmup_steps: tuple[int, ...] = ()
    by: str = "width"
    on_edge: str = "warn"

    def to_dict(self) -> dict[str, Any]:
        return {"lr": list(self.lr), "warmup_steps": list(self.warmup_steps), "budget": dict(self.budget),
                "by": self.by, "on_edge": self.on_edge}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_tune(raw: Any, axes: Mapping[str, Any], zips: Sequence[Mapping[str, Any]],
               scaling: Mapping[str, Any]) -> TuneSpec | None:
    """The ``tune:`` section, checked with the rest of the spec: nothing is written before it passes."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("tune", "must be a mapping, e.g. {lr: [1.0e-3, 3.0e-3, 1.0e-2], budget: {flops: 2.0e+11}}")
    reject_unknown_keys("tune", raw, list(TUNE_KEYS))
    lr = raw.get("lr")
    if not isinstance(lr, list) or len(lr) < 3 or not all(_number(x) and x > 0 for x in lr) or \
            len({float(x) for x in lr}) != len(lr):
        raise ConfigError("tune.lr", f"got {lr!r}; give >= 3 distinct positive LRs (a best at either end of a grid "
                                     f"cannot be told from one beyond it), e.g. [1.0e-3, 3.0e-3, 1.0e-2]")
    warm = raw.get("warmup_steps", [])
    if not isinstance(warm, list) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in warm) \
            or len(set(warm)) != len(warm):
        raise ConfigError("tune.warmup_steps", f"got {warm!r}; a list of distinct non-negative step counts, or leave "
                                               f"it out to keep the spec's warm-up")
    budget = raw.get("budget")
    if not isinstance(budget, dict) or not budget:
        raise ConfigError("tune.budget", "give the tuning budget as a run's budget: exactly one of flops, tokens, "
                                         "steps, e.g. {flops: 2.0e+11}")
    reject_unknown_keys("tune.budget", budget, ["flops", "tokens", "steps", "convention"])
    by, on_edge = raw.get("by", "width"), raw.get("on_edge", "warn")
    if by not in BY:
        raise ConfigError("tune.by", f"got {by!r}; allowed: width (one LR per family and width), model (per "
                                     f"distinct architecture)")
    if on_edge not in ON_EDGE:
        raise ConfigError("tune.on_edge", f"got {on_edge!r}; allowed: warn, refuse")
    # the stage owns what it tunes: set another way too, which one wins would be a guess
    if "lr" in scaling:
        raise ConfigError("scaling.lr", "the tune: stage chooses every (family, width)'s LR; drop scaling.lr (or tune:)")
    if warm and "warmup" in scaling:
        raise ConfigError("scaling.warmup", "tune.warmup_steps chooses the warm-up; drop scaling.warmup (or "
                                            "tune.warmup_steps)")
    for owned in ["optim.lr"] + (["optim.warmup_steps"] if warm else []):
        where = [f"axes.{owned}"] * (owned in axes) + [f"zip[{i}].{owned}" for i, g in enumerate(zips) if owned in g]
        if where:
            raise ConfigError(where[0], f"the tune: stage chooses {owned}; drop it here and list the values under tune:")
    return TuneSpec(lr=tuple(sorted(float(x) for x in lr)), budget=dict(budget),
                    warmup_steps=tuple(sorted(warm)), by=by, on_edge=on_edge)


# -- keys and tuning runs -------------------------------------------------------------------------------
def family(run: PlannedRun) -> str:
    """loopmdm | mdm | mdm_deeper: from the run's role in its comparison groups (the tidy table's families)."""
    roles = sorted({g["role"] for g in run.groups} & set(FAMILY_OF_ROLE))
    if roles:
        return FAMILY_OF_ROLE[roles[0]]
    return "loopmdm" if run.cfg.model.is_looped else "mdm"


def key_of(run: PlannedRun, by: str) -> str:
    """What shares one LR: the family and the width, or (``by: model``) the family and the whole architecture."""
    m = run.cfg.model
    if by == "width":
        return f"{family(run)}-d{m.d_model}"
    arch = hashlib.sha256(json.dumps(m.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{family(run)}-{config_mod.slug(run.cfg).rsplit('-', 1)[0]}-{arch}"


def representatives(tune: TuneSpec, grid: Sequence[PlannedRun]) -> dict[str, PlannedRun]:
    """Each key's first pretraining run in plan order: the config its LR is tuned on."""
    reps: dict[str, PlannedRun] = {}
    for r in grid:
        if r.parent is None:
            reps.setdefault(key_of(r, tune.by), r)
    return reps


def tuning_config(cfg: config_mod.RunConfig, tune: TuneSpec, scaling: Mapping[str, Any], lr: float,
                  warmup: int | None, key: str) -> config_mod.RunConfig:
    """A representative's config at the tuning budget and one (LR, warm-up): one final evaluation, at the S the
    claims read. A warm-up rule of the spec (scaling.warmup) applies to the tuning run's own length."""
    raw = cfg.to_dict()
    raw.pop("meta", None)
    raw["budget"] = dict(tune.budget)
    raw["optim"] = {**raw["optim"], "lr": lr, **({} if warmup is None else {"warmup_steps": warmup})}
    raw["eval"] = {**raw["eval"], "points": 1, "loops": [cfg.model.s_max if cfg.model.is_looped else 1],
                   "exit_thresholds": []}
    try:
        out = config_mod.from_dict(raw)
        if warmup is None and "warmup" in scaling:
            RULES["warmup"](str(scaling["warmup"]))(raw, out.steps)
            out = config_mod.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"tune.{exc.field}", f"{str(exc).split(': ', 1)[-1]} (tuning {key})") from None
    if out.steps < MIN_STEPS_PER_WARMUP * out.optim.warmup_steps:
        raise ConfigError("tune.budget", f"{out.steps} steps for {key} at the tuning budget, under "
                          f"{MIN_STEPS_PER_WARMUP}x optim.warmup_steps={out.optim.warmup_steps}: the LR under test "
                          f"would act for under half the run; raise tune.budget or shorten the warm-up "
                          f"(tune.warmup_steps)")
    return out


def planned_tuning(tune: TuneSpec, scaling: Mapping[str, Any], grid: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The tuning runs: per key, its representative at every (LR[, warm-up]) of the grid."""
    out = []
    for key, rep in representatives(tune, grid).items():
        fam = family(rep)
        for lr in tune.lr:
            for warmup in tune.warmup_steps or (None,):
                cfg = tuning_config(rep.cfg, tune, scaling, lr, warmup, key)
                name = f"tune-lr{lr:.3g}" + ("" if warmup is None else f"-w{warmup}") + f"-{config_mod.slug(cfg)}"
                out.append(PlannedRun(
                    cfg=cfg, slug=records.safe_slug(name), groups=[{"group": f"tune-{key}", "role": ROLE_OF_FAMILY[fam]}],
                    axes={"tune.lr": lr, **({} if warmup is None else {"tune.warmup_steps": warmup})},
                    resource_class=rep.resource_class,
                    tune={"key": key, "family": fam, "width": cfg.model.d_model, "lr": lr,
                          "warmup_steps": cfg.optim.warmup_steps, "representative": rep.slug}))
    return out


def needed(tuning: Sequence[PlannedRun], grid: Sequence[PlannedRun], by: str) -> list[PlannedRun]:
    """The tuning runs the given grid runs wait for (``--only`` selects grid runs; their keys come along)."""
    keys = {key_of(r, by) for r in grid if r.parent is None} | {key_of(r.parent, by) for r in grid if r.parent}
    return [t for t in tuning if t.tune["key"] in keys]


# -- results and the choice --------------------------------------------------------------------------------
@dataclass
class TunePoint:
    """One tuning run's outcome: done (its final NLL), diverged (the worst), failed or unfinished (no choice)."""

    lr: float
    warmup_steps: int
    state: str
    nll: float | None = None
    nll_se: float | None = None
    run: str = ""
    detail: str = ""


@dataclass
class Choice:
    key: str
    family: str
    width: int
    status: str  # tuned | unfinished | failed
    lr: float | None = None
    warmup_steps: int | None = None
    nll: float | None = None
    nll_se: float | None = None
    eval_loops: int | None = None
    edge: list[str] = field(default_factory=list)
    points: list[TunePoint] = field(default_factory=list)
    representative: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_point(run: PlannedRun, study_dir: Path) -> TunePoint:
    """A tuning run's outcome from its directory (records): the final NLL at its one evaluated S."""
    rd = run.run_dir(study_dir)
    base = dict(lr=run.tune["lr"], warmup_steps=run.tune["warmup_steps"], run=rd.name)
    if records.done_summary(rd) is not None:
        loops = run.cfg.eval_loops[0]
        final = [r for r in records.read_evals(rd).rows if r.get("is_final") and r.get("exit_threshold") is None
                 and r.get("eval_loops") == loops]
        if final and _number(final[-1].get("nll")):
            return TunePoint(**base, state="done", nll=float(final[-1]["nll"]), nll_se=final[-1].get("nll_se"))
        return TunePoint(**base, state="failed", detail=f"done without a final evaluation at S={loops}")
    failed = records.read_json(rd / records.FAILED)
    if failed is not None:
        reason = str(failed.get("reason", ""))
        return TunePoint(**base, state="diverged" if reason.startswith(DIVERGED) else "failed", detail=reason[:200])
    return TunePoint(**base, state="unfinished")


def choose(key: str, family_: str, width: int, points: Sequence[TunePoint], lrs: Sequence[float],
           warmups: Sequence[int] = (), eval_loops: int | None = None, representative: str = "") -> Choice:
    """The key's LR from its tuning runs, deterministically: the smallest final NLL (ties: the smaller LR, then
    the shorter warm-up); a diverged run is the worst; a failed or unfinished run leaves the key untuned (the
    choice could still change). A best at the edge of the LR grid (or of a warm-up grid) is flagged."""
    c = Choice(key, family_, width, TUNED, points=list(points), eval_loops=eval_loops, representative=representative)
    waiting = [p for p in points if p.state in ("unfinished", "failed")]
    if waiting:
        bad = [p for p in waiting if p.state == "failed"]
        c.status = FAILED if bad else UNFINISHED
        c.detail = (f"{len(bad)} tuning run(s) failed (not diverged): {bad[0].detail or bad[0].run} — rerun with "
                    f"--retry" if bad else f"{len(waiting)} of {len(points)} tuning run(s) not finished")
        return c
    ok = [p for p in points if p.state == "done"]
    if not ok:
        c.status, c.detail = FAILED, "every LR tried diverged: lower tune.lr"
        return c
    best = min(ok, key=lambda p: (p.nll, p.lr, p.warmup_steps))
    c.lr, c.warmup_steps, c.nll, c.nll_se = best.lr, best.warmup_steps, best.nll, best.nll_se
    lrs = sorted(lrs)
    if best.lr == lrs[0]:
        c.edge.append(f"lr={best.lr:g} is the smallest LR tried")
    if best.lr == lrs[-1]:
        c.edge.append(f"lr={best.lr:g} is the largest LR tried")
    if len(warmups) > 1 and best.warmup_steps in (min(warmups), max(warmups)):
        end = "fewest" if best.warmup_steps == min(warmups) else "most"
        c.edge.append(f"warmup_steps={best.warmup_steps} is the {end} tried")
    return c


def choices(tune: TuneSpec, tuning: Sequence[PlannedRun], study_dir: Path) -> dict[str, Choice]:
    """Every key's choice from what its tuning runs left in the study directory (nothing is written)."""
    by_key: dict[str, list[PlannedRun]] = {}
    for t in tuning:
        by_key.setdefault(t.tune["key"], []).append(t)
    out = {}
    for key, runs in by_key.items():
        t = runs[0].tune
        out[key] = choose(key, t["family"], t["width"], [read_point(r, study_dir) for r in runs], tune.lr,
                          tune.warmup_steps, runs[0].cfg.eval_loops[0], t["representative"])
    return out


def with_tuned_lr(tune: TuneSpec, grid: Sequence[PlannedRun], tuned: Mapping[str, Choice]) -> list[PlannedRun]:
    """The grid's runs at their key's chosen LR (and warm-up); a run whose key is not tuned yet is pending."""
    record = str(records.tuned_path(Path(".")))
    out = []
    for r in grid:
        key = key_of(r, tune.by)
        c = tuned.get(key)
        if c is None or c.status != TUNED:
            out.append(dataclasses.replace(r, lr_source={"source": "tune", "key": key, "status": "pending"}))
            continue
        optim = dataclasses.replace(r.cfg.optim, lr=c.lr, **({"warmup_steps": c.warmup_steps} if tune.warmup_steps else {}))
        source = {"source": "tune", "key": key, "lr": c.lr, "warmup_steps": optim.warmup_steps, "tuning_nll": c.nll,
                  "tuning_budget": dict(tune.budget), "edge": list(c.edge), "record": record}
        out.append(dataclasses.replace(r, cfg=r.cfg.replace(optim=optim).validate(), lr_source=source))
    return out


def record(study: str, tune: TuneSpec, tuned: Mapping[str, Choice]) -> dict[str, Any]:
    """What `records.tuned_path` holds: the stage as specified and every key's choice with its grid."""
    return {"study": study, "tune": tune.to_dict(),
            "rule": "per key, the LR (and warm-up) of the smallest final NLL at the tuning budget, at the S the claims "
                    "read; diverged runs count as worst; a best at the grid's edge is flagged",
            "keys": {k: c.to_dict() for k, c in tuned.items()}}


def refusals(tune: TuneSpec, tuned: Mapping[str, Choice]) -> list[str]:
    """With ``on_edge: refuse``: one line per key whose best LR lies at the edge of its grid."""
    if tune.on_edge != "refuse":
        return []
    return [f"{k}: {'; '.join(c.edge)}" for k, c in tuned.items() if c.status == TUNED and c.edge]


def summary(tuned: Mapping[str, Choice]) -> list[str]:
    """One line per key for the command line."""
    lines = []
    for k, c in tuned.items():
        if c.status == TUNED:
            warm = f", warmup {c.warmup_steps}" if c.warmup_steps is not None else ""
            edge = f" — at the grid's edge: {'; '.join(c.edge)}" if c.edge else ""
            lines.append(f"  {k}: lr {c.lr:g}{warm} (final NLL {c.nll:.4f} at S={c.eval_loops}){edge}")
        else:
            lines.append(f"  {k}: {c.status} — {c.detail}")
    return lines
