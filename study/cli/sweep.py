"""``python -m study.sweep [submit|status|collect|report] SPEC [key=value ...]``: a study — plan, run or submit
its runs and evaluation stages, watch them, collect and report."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import records
from model.config import ConfigError

from .common import EXIT_BAD_INPUT, ENV_RESULTS, Parser, input_errors, results_root, say_error

VERBS = ("submit", "status", "collect", "report")


def study_dir(spec, out: Path | None, root: Path | None) -> Path:
    return (out if out is not None else results_root(root) / spec.study).resolve()


def parser(verb: str) -> Parser:
    ap = Parser(prog=f"python -m study.sweep {verb}",
                description="Studies: expand a spec into runs with matched baselines, plan, run or submit, watch, "
                            f"report. Verbs: {', '.join(VERBS)} (default submit).")
    ap.add_argument("spec", type=Path, help="a study spec, e.g. sweeps/demo.yaml")
    ap.add_argument("overrides", nargs="*", default=[],
                    help=f"key=value overrides of the spec's base config (optim.lr=1e-3), recorded in {records.PLAN}")
    ap.add_argument("--out", type=Path, default=None, help="study directory (default: ROOT/<study>)")
    ap.add_argument("--root", type=Path, default=None,
                    help=f"where study directories go (default ${ENV_RESULTS}, else ./results)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and where it writes; write and submit nothing")
    ap.add_argument("--json", action="store_true", help="with --dry-run or status: one JSON object per run, typed")
    ap.add_argument("--retry", action="store_true", help="resubmit failed runs too")
    ap.add_argument("--only", default=None, help="select runs by slug/group glob or hash prefix")
    ap.add_argument("--executor", choices=("auto", "slurm", "local", "debug"), default=None,
                    help="override resources.executor of the spec")
    ap.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then report")
    ap.add_argument("--no-report", dest="report", action="store_false", help="skip collect + report after local runs")
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


def _check_executor(resources) -> None:
    if resources.resolved_executor() == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("resources.executor", "slurm was asked for but `sbatch` is not on PATH on this machine; "
                          "run where SLURM is installed, or use --executor local")


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
        spec = spec_mod.load_spec(ns.spec, ns.overrides)
        runs = spec_mod.select(spec_mod.expand(spec), ns.only)
        if ns.only and not runs:
            raise ConfigError("--only", f"{ns.only!r} matches no run of {spec.study}")
        resources = _resources(spec, ns.executor)
        sdir = study_dir(spec, ns.out, ns.root)
        if verb == "submit" and ns.dry_run:
            rows = [spec_mod.plan_row(r, spec) for r in runs]
            if ns.json:
                for row in rows:
                    print(json.dumps(row, default=str))
            else:
                print(spec_mod.format_plan(rows))
                print(f"writes to {sdir} ({resources.resolved_executor()} executor)")
            return 0
        if verb == "report":
            return report(sdir)
        if verb == "status":
            return status(ns, sdir, runs)
        if verb == "collect":
            return collect(sdir)
        _check_executor(resources)
        return submit(ns, spec, runs, resources, sdir)
    except input_errors() as exc:
        return say_error(exc)


def submit(ns, spec, runs, resources, sdir: Path) -> int:
    from study.launch import EXIT_STOPPED, evaluations, training, wait_for
    from study.plan.spec import expand

    slurm = resources.resolved_executor() == "slurm"
    with training.submission_lock(sdir) if slurm else contextlib.nullcontext():
        todo, counts = training.to_submit(sdir, runs, ns.retry)
        print(f"{spec.study}: {len(runs)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
              f"{len(todo)} to {'submit' if slurm else 'run'} -> {sdir}", flush=True)
        sdir.mkdir(parents=True, exist_ok=True)
        training.write_plan(sdir, spec, expand(spec) if ns.only else runs, ns.overrides)
        training.write_run_configs(sdir, spec, todo)
        rc = 0
        if todo:
            rc = training.submit_slurm(sdir, spec, todo, resources, ns.wait) if slurm else \
                training.run_locally(sdir, spec, todo, quiet=ns.quiet)
        if spec.evaluate and slurm:
            evals = evaluations.submit_stages(sdir, spec, runs, resources)
            for s in evals:
                print(f"submitted {s.name} as job {s.job_id}")
            if ns.wait:
                rc = max(rc, wait_for(evals))
    if spec.evaluate and not slurm and rc in (0, 1):
        rc = max(rc, evaluations.run_stages_locally(sdir, spec, runs, quiet=ns.quiet))
    if rc == EXIT_STOPPED:
        print("stopped: every started run is checkpointed; run the same command again to resume", flush=True)
        return rc
    if rc in (0, 1) and ns.report and (not slurm or ns.wait):
        rc = max(rc, report(sdir))
    return rc


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
        (r["slug"], r["hash"], r["state"], f"{r['step']}/{r['steps']}",
         "-" if r["last_loss"] is None else f"{r['last_loss']:.4f}", r["job"] or "") for r in rows]
    widths = [max(len(str(x[i])) for x in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(f"{', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; FLOPs (exact, expected) "
          f"{spent:.3g} of {planned:.3g} planned ({100 * spent / max(planned, 1):.0f}%)")
    return 0


def collect(sdir: Path) -> int:
    from analysis.collect import collect as collect_table

    if not (sdir / records.RUNS_DIR).is_dir():
        print(f"error: {sdir} has no runs yet (nothing to collect); run the study first", file=sys.stderr)
        return EXIT_BAD_INPUT
    df = collect_table(sdir)
    print(f"{len(df)} rows from {df['run'].nunique() if len(df) else 0} runs -> {sdir / records.RUNS_TABLE}")
    return 0
