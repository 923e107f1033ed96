"""``python -m study.sweep [submit|status|collect|report] SPEC [key=value ...]``: a study — plan, run or submit
its runs and evaluation stages, watch them, collect and report.

With a tuning stage (``tune:``) the grid's runs take the LR their tuning runs chose, so the grid is known only once
its tuning is done. Locally the sweep trains the tuning runs, then the grid. On SLURM it submits the tuning jobs and
the grid runs of every key already tuned; the rest of the grid is submitted by the next submission after its tuning
finished (``--wait`` waits for the tuning jobs and submits the grid in the same command). Why not grid jobs waiting
on the tuning jobs (afterok): a grid job's config — and so its run directory, its ledger key, its hash — depends on
the chosen LR, so it cannot be defined at submission time; every job this sweep submits is fully defined."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import records
from model.config import ConfigError

from .common import (EXIT_BAD_INPUT, ENV_RESULTS, Parser, check_sbatch, check_writable, input_errors, results_root,
                     say_error)

VERBS = ("submit", "status", "collect", "report")


def study_dir(spec, out: Path | None, root: Path | None) -> Path:
    return (out if out is not None else results_root(root) / spec.study).resolve()


DESCRIPTIONS = {
    "submit": "Plan a study (--dry-run: nothing written) or run it: its runs with their matched baselines, then its "
              "fine-tune and evaluate stages; locally in this process or as SLURM jobs. Done, queued and running "
              "runs are skipped; failed ones come back with --retry. Other verbs: status, collect, report "
              "(each has its own --help).",
    "status": "Where every run of a study stands: pending / running / done / failed / preempted, its step, last loss "
              "and job, and the FLOPs done of those planned.",
    "collect": f"Gather every run directory of a study into the tidy table ({records.RUNS_TABLE}).",
    "report": f"Collect, fit, draw the figures and write {records.REPORT} for a study (python -m analysis.report "
              f"STUDY_DIR does the same with more options).",
}


def parser(verb: str) -> Parser:
    """Each verb its own --help: only the options it reads."""
    ap = Parser(prog=f"python -m study.sweep {verb}", description=DESCRIPTIONS[verb])
    ap.add_argument("spec", type=Path, help="a study spec, e.g. sweeps/demo.yaml")
    if verb in ("submit", "status"):  # overrides change the runs' hashes, so status must see them too
        ap.add_argument("overrides", nargs="*", default=[], help="key=value overrides of the spec's base config "
                        f"(optim.lr=1e-3), recorded in {records.PLAN}; a key the spec sweeps is refused")
    ap.add_argument("--out", type=Path, default=None, help="study directory (default: ROOT/<study>)")
    ap.add_argument("--root", type=Path, default=None,
                    help=f"where study directories go (default: ${ENV_RESULTS}, else ./results)")
    if verb in ("submit", "status"):
        ap.add_argument("--only", default=None, help="only the runs whose slug matches this glob, or whose hash "
                        "starts with it (their baselines are runs of their own: select them by their slugs)")
        ap.add_argument("--json", action="store_true",
                        help="one JSON object per run, typed" + (" (with --dry-run)" if verb == "submit" else ""))
    if verb == "submit":
        ap.add_argument("--dry-run", action="store_true", help="print the plan and where it writes; write and "
                        "submit nothing")
        ap.add_argument("--retry", action="store_true", help="resubmit failed runs too")
        ap.add_argument("--executor", choices=("auto", "slurm", "local", "debug"), default=None,
                        help="override resources.executor of the spec")
        ap.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then report (with a tuning "
                        "stage: wait for the tuning jobs, then submit the grid at the chosen LRs and wait for it)")
        ap.add_argument("--no-report", dest="report", action="store_false",
                        help="skip collect + report after local runs")
        ap.add_argument("--quiet", action="store_true", help="no per-step log lines from the runs")
    return ap


def _resources(spec, executor: str | None):
    """The spec's resources and every resource class, validated exactly as a submission validates them."""
    from study.launch.resources import ResourceSpec

    res_dict = dict(spec.resources) | ({"executor": executor} if executor else {})
    resources = ResourceSpec.from_dict(res_dict).validate()
    for name, over in spec.resource_classes.items():
        try:
            ResourceSpec.from_dict(res_dict | over).validate()
        except ConfigError as exc:
            raise ConfigError(f"resource_classes.{name}.{exc.field}", str(exc).split(": ", 1)[-1]) from None
    return resources


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = "submit"
    if argv and not argv[0].startswith("-"):
        if argv[0] in VERBS:
            verb = argv.pop(0)
        elif not (argv[0].endswith((".yaml", ".yml")) or Path(argv[0]).is_file()):
            print(f"error: {argv[0]!r} is neither a verb ({', '.join(VERBS)}) nor a spec file "
                  f"(e.g. sweeps/demo.yaml)", file=sys.stderr)
            return EXIT_BAD_INPUT
    ns = parser(verb).parse_intermixed_args(argv)
    from study.plan import spec as spec_mod

    try:
        spec = spec_mod.load_spec(ns.spec, getattr(ns, "overrides", []))
        sdir = study_dir(spec, ns.out, ns.root)
        if verb != "status":  # everything but status writes into the study directory (and its tuning stage's)
            homes = (sdir, records.tune_dir(sdir)) if spec.tune is not None else (sdir,)
            for place in (p for home in homes for p in (home, home / records.RUNS_DIR)):
                check_writable(place, "--out" if ns.out is not None else "--root",
                               "pass --out (or --root) to a writable place")
        if verb == "report":
            return report(sdir)
        if verb == "collect":
            return collect(sdir)
        tune_runs, runs = plan(spec, sdir, ns.only)
        if ns.only and not runs:
            raise ConfigError("--only", f"{ns.only!r} matches no run slug or hash of {spec.study} (see --dry-run)")
        if verb == "status":
            return status(ns, sdir, tune_runs + runs)
        resources = _resources(spec, ns.executor)
        if resources.resolved_executor() == "slurm":  # the dry run refuses it too
            check_sbatch("resources.executor", " (with --dry-run: the same plan, to see it on this machine)"
                         if ns.dry_run else "")
        if ns.dry_run:
            return dry_run(ns, spec, tune_runs, runs, sdir, resources)
        return submit(ns, spec, runs, tune_runs, resources, sdir)
    except input_errors() as exc:
        return say_error(exc)


def plan(spec, sdir: Path, only: str | None, tuned: dict | None = None) -> tuple[list, list]:
    """(tuning runs, grid runs): the grid at the LRs its tuning runs in ``sdir`` chose so far (read, never
    written; ``tuned`` if given), pending where a key is not tuned yet; ``--only`` selects grid runs, and the tuning
    runs they wait for come along."""
    from study.plan import spec as spec_mod
    from study.plan import tuning

    tune_runs = spec_mod.tuning_runs(spec)
    if tune_runs and tuned is None:
        tuned = tuning.choices(spec.tune, tune_runs, sdir)
    runs = spec_mod.select(spec_mod.expand(spec, tuned), only)
    if tune_runs and only:
        tune_runs = tuning.needed(tune_runs, runs, spec.tune.by)
    return tune_runs, runs


def dry_run(ns, spec, tune_runs, runs, sdir: Path, resources) -> int:
    """The plan, tuning stage first, with what each stage costs; nothing is written or submitted."""
    from study.plan import table

    tune_rows = [table.plan_row(r, spec) for r in tune_runs]
    rows = [table.plan_row(r, spec) for r in runs]
    if ns.json:
        for row in tune_rows + rows:
            print(json.dumps(row, default=str))
        return 0
    if tune_rows:
        t = spec.tune
        keys = list(dict.fromkeys(r.tune["key"] for r in tune_runs))
        print(f"tuning stage: {len(tune_rows)} runs — {len(t.lr)} LRs"
              + (f" x {len(t.warmup_steps)} warm-ups" if t.warmup_steps else "")
              + f" for each of {len(keys)} keys (one LR per {'(family, width)' if t.by == 'width' else 'architecture'}: "
              f"{', '.join(keys)}), at budget {t.budget}; the best at the grid's edge: {t.on_edge}")
        print(table.format_plan(tune_rows))
        print()
    print(table.format_plan(rows))
    pending = sum(r.pending for r in runs)
    if pending:
        print(f"{pending} grid runs wait for their tuning: their hashes (and run directories) are known only once it "
              f"finished — the LR is part of each run's config; their FLOPs, steps and cost do not depend on it")
    if tune_rows:
        tc, gc = (sum(r["flops_exact"] for r in x) for x in (tune_rows, rows))
        print(f"tuning adds {tc:.3g} FLOPs (exact) to the grid's {gc:.3g} ({100 * tc / max(gc, 1):.0f}%); "
              f"~{sum(r['est_gpu_hours'] for r in tune_rows + rows):.3g} GPU-hours, "
              f"~{sum(r['est_cpu_minutes'] for r in tune_rows + rows):.3g} CPU-minutes in all")
    print(f"writes to {sdir} ({resources.resolved_executor()} executor)")
    if spec.control_study is not None and not ns.only:
        print(f"first, its positive control {spec.control_study} -> {records.control_dir(sdir)} (dry run: "
              f"python -m study.sweep {spec.control_study} --dry-run)")
    return 0


def control_study(ns, spec, sdir: Path) -> int:
    """A spec's ``control_study`` (a positive control), run first as a study of its own in ``<out>/control`` with
    this command's options, so this study's report can cite what it detected (`analysis.report.cite`). Not with
    ``--only`` (that selects this study's runs); its failures leave this study to run."""
    if spec.control_study is None or ns.only:
        return 0
    out = records.control_dir(sdir)
    print(f"{spec.study}: its positive control first, {spec.control_study} -> {out}", flush=True)
    return main([str(spec.control_study), "--out", str(out)] + ["--quiet"] * ns.quiet + ["--retry"] * ns.retry
                + ["--wait"] * ns.wait + ["--no-report"] * (not ns.report)
                + (["--executor", ns.executor] if ns.executor else []))


def submit(ns, spec, runs, tune_runs, resources, sdir: Path) -> int:
    from study.launch import EXIT_STOPPED, evaluations, training, wait_for

    rc_control = control_study(ns, spec, sdir)
    if rc_control not in (0, 1):
        return rc_control  # bad input or stopped: say so before this study starts
    slurm = resources.resolved_executor() == "slurm"
    with training.submission_lock(sdir) if slurm else contextlib.nullcontext():
        sdir.mkdir(parents=True, exist_ok=True)
        rc = 0
        eta = None
        if tune_runs:
            # the ETA covers both stages: a grid run's FLOPs do not depend on its LR
            eta = training.Eta(training.to_submit(sdir, tune_runs, ns.retry)[0] + training.to_submit(sdir, runs, ns.retry)[0]
                               + [r for r in runs if r.pending])
            rc = tune(ns, spec, tune_runs, resources, sdir, slurm, eta)
            if rc == EXIT_STOPPED:
                print("stopped: every started run is checkpointed; run the same command again to resume", flush=True)
                return rc
            tune_runs, runs = after_tuning(ns, spec, sdir)
        ready = [r for r in runs if not r.pending]
        todo, counts = training.to_submit(sdir, ready, ns.retry)
        print(f"{spec.study}: {len(runs)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
              f"{len(todo)} to {'submit' if slurm else 'run'} -> {sdir}", flush=True)
        whole = plan(spec, sdir, None) if ns.only else (tune_runs, runs)  # plan.json lists every run
        training.write_plan(sdir, spec, whole[1], ns.overrides, whole[0])
        training.write_run_configs(sdir, spec, todo)
        if todo:
            if eta is not None:
                eta.plan(todo)
            rc = training.submit_slurm(sdir, spec, todo, resources, ns.wait) if slurm else \
                training.run_locally(sdir, spec, todo, quiet=ns.quiet, eta=eta, workers=resources.local_workers)
        if spec.evaluate and slurm:
            evals = evaluations.submit_stages(sdir, spec, ready, resources)
            for s in evals:
                print(f"submitted {s.name} as job {s.job_id}")
            if ns.wait:
                rc = max(rc, wait_for(evals))
    if spec.evaluate and not slurm and rc in (0, 1):
        rc = max(rc, evaluations.run_stages_locally(sdir, spec, ready, quiet=ns.quiet))
    if rc == EXIT_STOPPED:
        print("stopped: every started run is checkpointed; run the same command again to resume", flush=True)
        return rc
    if len(ready) < len(runs) and not slurm:
        rc = max(rc, 1)  # a key whose tuning failed: its grid runs were not trained
    if rc in (0, 1) and ns.report and (not slurm or ns.wait):
        rc = max(rc, report(sdir))
    return max(rc, rc_control) if rc in (0, 1) else rc


def tune(ns, spec, tune_runs, resources, sdir: Path, slurm: bool, eta) -> int:
    """The tuning stage: its runs that are not done yet, trained here or submitted (with ``--wait``: and waited
    for); done ones are skipped like any run, so a study is never tuned twice."""
    from study.launch import training

    todo, counts = training.to_submit(sdir, tune_runs, ns.retry)
    print(f"{spec.study} tuning stage: {len(tune_runs)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
          f"{len(todo)} to {'submit' if slurm else 'run'} -> {records.tune_dir(sdir)}", flush=True)
    training.write_run_configs(sdir, spec, todo)
    if not todo:
        return 0
    if slurm:
        return training.submit_slurm(sdir, spec, todo, resources, ns.wait)
    return training.run_locally(sdir, spec, todo, quiet=ns.quiet, eta=eta, workers=resources.local_workers)


def after_tuning(ns, spec, sdir: Path) -> tuple[list, list]:
    """The choice the tuning runs lead to, recorded and printed; the grid at it. A best LR at the grid's edge
    stops the sweep here when the spec says ``on_edge: refuse`` (before any grid run is written)."""
    from study.launch import training
    from study.plan import spec as spec_mod
    from study.plan import tuning

    tuned = tuning.choices(spec.tune, spec_mod.tuning_runs(spec), sdir)
    training.write_tuned(sdir, spec, tuned)
    print(f"tuning stage -> {records.tuned_path(sdir)}:", *tuning.summary(tuned), sep="\n", flush=True)
    refused = tuning.refusals(spec.tune, tuned)
    if refused:
        raise ConfigError("tune.lr", f"the best LR lies at the edge of the grid for {'; '.join(refused)}: extend "
                                     f"tune.lr past it and run again (or set tune.on_edge: warn)")
    tune_runs, runs = plan(spec, sdir, ns.only, tuned)
    waiting = sorted({r.lr_source["key"] for r in runs if r.pending and r.lr_source})
    if waiting:
        print(f"{sum(r.pending for r in runs)} grid run(s) wait for the tuning of {', '.join(waiting)}: run the same "
              f"command again once it finished{' (or add --wait)' if not ns.wait else ''}", flush=True)
    return tune_runs, runs


def report(sdir: Path) -> int:
    from analysis import report as report_mod

    print(f"collecting and reporting {sdir} ...", flush=True)
    rc = report_mod.main([str(sdir)])
    if rc == 0:
        print(f"report: {sdir / records.REPORT}")
    return rc


def status(ns, sdir: Path, runs) -> int:
    from study.launch.training import statuses

    st = statuses(sdir, runs)
    planned = spent = 0.0
    rows = []
    for r in runs:
        if r.pending:
            per_step = r.cfg.flops_per_step("exact")
            planned += per_step * r.cfg.steps
            rows.append({"slug": r.slug, "hash": None, "state": "awaiting tuning", "step": 0, "steps": r.cfg.steps,
                         "last_loss": None, "job": None, "detail": f"its LR comes from tuning {r.lr_source['key']}"})
            continue
        s = st.get(r.hash)
        step = (s.step or 0) if s else 0
        per_step = r.cfg.flops_per_step("exact")
        planned += per_step * r.cfg.steps
        spent += per_step * min(step, r.cfg.steps)
        rows.append({"slug": r.slug, "hash": r.hash[:12], "state": s.state if s else "pending", "step": step,
                     "steps": r.cfg.steps, "last_loss": s.last_loss if s else None,
                     "job": (s.job_id or None) if s else None, "detail": s.detail if s else "not started"})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    if ns.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = [("slug", "hash", "state", "progress", "loss", "job")] + [
        (r["slug"], r["hash"] or "—", r["state"], f"{r['step']}/{r['steps']}",
         "-" if r["last_loss"] is None else f"{r['last_loss']:.4f}", r["job"] or "") for r in rows]
    widths = [max(len(str(x[i])) for x in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(f"{', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; FLOPs (exact, expected) "
          f"{spent:.3g} of {planned:.3g} planned ({100 * spent / max(planned, 1):.0f}%)")
    return 0


def collect(sdir: Path) -> int:
    from analysis.collect import main as collect_main

    return collect_main([str(sdir)])
