"""Every command line of the study, in one place (``python -m study.<name>`` are thin entry points):

    python -m study.sweep [submit|status|collect|report] SPEC [key=value ...]   a study: plan, run, watch
    python -m study.run [CONFIG.yaml] [key=value ...] [--out DIR]              one run, in the foreground
    python -m study.sft PARENT_RUN CORPUS --steps N [key=value ...]           fine-tune a pretrained run
    python -m study.eval TARGET --tasks ... | --scan | --attention | --sudoku | --automaton   evaluate runs

Bad input exits 2 with one line ``error: FIELD-OR-FILE: what is wrong and what to do``, before anything is
written or submitted; a run stopped by a signal exits 3 after checkpointing (run the same command again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import records
from model.config import ConfigError

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 3
ENV_RESULTS = "LOOPMDM_RESULTS"


class Parser(argparse.ArgumentParser):
    """argparse with every option's default shown in --help, and usage errors as one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


class RaisingParser(Parser):
    """The same options parsed from a spec (a sweep's ``evaluate:`` args): an error names the spec field."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError("args", message)


def _errors() -> tuple[type[Exception], ...]:
    """What a user's input or a run's state can raise, as opposed to bugs (tracebacks). Every input error is a
    ConfigError; RunError is added only once the trainer is loaded, so planning never imports torch."""
    trainer = sys.modules.get("study.train.distributed")
    return (ConfigError, records.Locked) + ((trainer.RunError,) if trainer is not None else ())


# ---------------------------------------------------------------------------------------------- sweep
SWEEP_VERBS = ("submit", "status", "collect", "report")


def results_root(root: Path | None) -> Path:
    return Path(root or os.environ.get(ENV_RESULTS) or "results")


def study_dir(spec, out: Path | None, root: Path | None) -> Path:
    return (out if out is not None else results_root(root) / spec.study).resolve()


def sweep_parser(verb: str) -> Parser:
    ap = Parser(prog=f"python -m study.sweep {verb}",
                description="Studies: expand a spec into runs with matched baselines, plan, run or submit, watch, "
                            f"report. Verbs: {', '.join(SWEEP_VERBS)} (default submit).")
    ap.add_argument("spec", type=Path, help="a study spec, e.g. sweeps/demo.yaml")
    ap.add_argument("overrides", nargs="*", default=[],
                    help="key=value overrides of the spec's base config (optim.lr=1e-3), recorded in plan.json")
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
    import shutil

    if resources.resolved_executor() == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("resources.executor", "slurm was asked for but `sbatch` is not on PATH on this machine; "
                          "run where SLURM is installed, or use --executor local")


def sweep_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = "submit"
    if argv and not argv[0].startswith("-"):
        if argv[0] in SWEEP_VERBS:
            verb = argv.pop(0)
        elif not (argv[0].endswith((".yaml", ".yml")) or Path(argv[0]).is_file()):
            print(f"error: {argv[0]!r} is neither a verb ({', '.join(SWEEP_VERBS)}) nor a spec file "
                  f"(e.g. sweeps/demo.yaml)", file=sys.stderr)
            return EXIT_BAD_INPUT
    ns = sweep_parser(verb).parse_intermixed_args(argv)
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
            return cmd_report(sdir)
        if verb == "status":
            return cmd_status(ns, sdir, runs)
        if verb == "collect":
            return cmd_collect(sdir)
        _check_executor(resources)
        return cmd_submit(ns, spec, runs, resources, sdir)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_submit(ns, spec, runs, resources, sdir: Path) -> int:
    from study.launch import sweep as run_mod
    from study.plan.spec import expand

    slurm = resources.resolved_executor() == "slurm"
    with run_mod.submission_lock(sdir) if slurm else contextlib.nullcontext():
        todo, counts = run_mod.to_submit(sdir, runs, ns.retry)
        print(f"{spec.study}: {len(runs)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
              f"{len(todo)} to {'submit' if slurm else 'run'} -> {sdir}", flush=True)
        sdir.mkdir(parents=True, exist_ok=True)
        run_mod.write_plan(sdir, spec, expand(spec) if ns.only else runs, ns.overrides)
        run_mod.write_run_configs(sdir, spec, todo)
        rc = 0
        if todo:
            rc = run_mod.submit_slurm(sdir, spec, todo, resources, ns.wait) if slurm else \
                run_mod.run_locally(sdir, spec, todo, quiet=ns.quiet)
        if spec.evaluate and slurm:
            evals = run_mod.submit_evaluations(sdir, spec, runs, resources)
            for s in evals:
                print(f"submitted {s.name} as job {s.job_id}")
            if ns.wait:
                rc = max(rc, run_mod.wait_for(evals))
    if spec.evaluate and not slurm and rc in (0, 1):
        rc = max(rc, run_mod.run_evaluations(sdir, spec, runs, quiet=ns.quiet))
    if rc == EXIT_STOPPED:
        print("stopped: every started run is checkpointed; run the same command again to resume", flush=True)
        return rc
    if rc in (0, 1) and ns.report and (not slurm or ns.wait):
        rc = max(rc, cmd_report(sdir))
    return rc


def cmd_report(sdir: Path) -> int:
    from analysis import report

    print(f"collecting and reporting {sdir} ...", flush=True)
    rc = report.main([str(sdir)])
    if rc == 0:
        print(f"report: {sdir / 'report.md'}")
    return rc


def cmd_status(ns, sdir: Path, runs) -> int:
    from study.launch.sweep import statuses

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


def cmd_collect(sdir: Path) -> int:
    from analysis.collect import collect

    if not (sdir / records.RUNS_DIR).is_dir():
        print(f"error: {sdir} has no runs yet (nothing to collect); run the study first", file=sys.stderr)
        return EXIT_BAD_INPUT
    df = collect(sdir)
    print(f"{len(df)} rows from {df['run'].nunique() if len(df) else 0} runs -> {sdir / 'runs.parquet'}")
    return 0


# ---------------------------------------------------------------------------------------------- run
def default_out(cfg) -> Path:
    from study.plan import config as config_mod

    return records.run_dir(results_root(None) / "local", config_mod.slug(cfg), cfg.hash)


def _describe(row: dict) -> str:
    setting = f"S={row['eval_loops']}" + ("" if row.get("exit_threshold") is None else f" eps={row['exit_threshold']}")
    return f"{setting}: {row['nll']:.4f}±{row['nll_se']:.4f}"


def _train_foreground(cfg, out: Path, quiet: bool) -> dict:
    """SIGTERM / SIGUSR2 / Ctrl-C ask for a checkpoint at the next step boundary (the one stop flag,
    `study.launch.preempt.PREEMPT`); a second Ctrl-C interrupts at once."""
    from study.launch.preempt import install_preemption_flag
    from study.train import train

    flag = install_preemption_flag(interactive=True)
    try:
        return train(cfg, out, stop=flag.is_set, quiet=quiet)
    finally:
        flag.uninstall()


def run_main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.run", description="Train one point locally (the function every sweep "
                "point runs on SLURM); a signal checkpoints and stops, running the command again resumes.")
    ap.add_argument("args", nargs="*", help="an optional CONFIG.yaml, then key=value overrides (optim.lr=1e-3)")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default ROOT/local/runs/<slug>-<hash>)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-step log lines")
    ns = ap.parse_intermixed_args(argv)
    from study.plan import config as config_mod

    path = ns.args[0] if ns.args and "=" not in ns.args[0] else None
    overrides = ns.args[1:] if path else ns.args
    return _train_command(lambda: config_mod.load(path, overrides), ns)


def _train_command(make_config, ns) -> int:
    """The shared tail of `study.run` and `study.sft`: resolve the config (or print it), train in the
    foreground, say how it ended."""
    from study.plan import config as config_mod

    try:
        cfg = make_config()
        if ns.print_config:
            print(config_mod.dump_yaml(cfg), end="")
            return 0
        out = ns.out or default_out(cfg)
        summary = _train_foreground(cfg, out, ns.quiet)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun: rank 0 speaks for the run
        return EXIT_STOPPED if summary["status"] == "preempted" else 0
    if summary["status"] == "preempted":
        print(f"stopped at step {summary['step']}; run the same command again to resume ({out})")
        return EXIT_STOPPED
    finals = ", ".join(_describe(r) for r in summary.get("final_eval", []))
    print(f"done: {summary['step']} steps, {summary['flops_exact']:.3g} FLOPs (exact)"
          + (f"; val NLL (nats/token) {finals}" if finals else "") + f"; {out}")
    return 0


# ---------------------------------------------------------------------------------------------- sft
def sft_main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.sft", description="Fine-tune a pretrained run on question/answer data "
                "(question never masked, loss on the answer).")
    ap.add_argument("parent", help="the pretrained run directory")
    ap.add_argument("corpus", help="GSM8K-style jsonl, gsm8k-synth[:DIFFICULTY[:N]] or hf:openai/gsm8k:main")
    ap.add_argument("overrides", nargs="*", help="key=value (optim.lr=1e-4, batch.global_batch=64, ...)")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps (or give budget.tokens=... as an override)")
    ap.add_argument("--seq-len", type=int, default=None, help="default: the parent's")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default ROOT/local/runs/<slug>-<hash>)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-step log lines")
    ns = ap.parse_intermixed_args(argv)
    from study.plan.finetune import sft_config

    return _train_command(lambda: sft_config(ns.parent, ns.corpus, steps=ns.steps, seq_len=ns.seq_len,
                                             overrides=ns.overrides), ns)


# ---------------------------------------------------------------------------------------------- eval
def _list(text: str | None, conv, arg: str) -> list | None:
    from study.evaluate.loading import EvalError

    if text is None:
        return None
    try:
        return [conv(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvalError(arg, f"{text!r} is not a comma-separated list of numbers") from None


def eval_request(ns: argparse.Namespace):
    from study.evaluate.loading import DEFAULT_ATTENTION_TS, EvalError, check_loops, check_thresholds
    from study.evaluate.automaton_eval import check_orders as automaton_orders
    from study.evaluate.tasks import EvalRequest

    loops = _list(ns.loops, float, "loops")
    if loops is not None:
        loops = check_loops(loops, "loops")
    thresholds = check_thresholds(_list(ns.exit_thresholds, float, "exit_thresholds") or [], "exit_thresholds")
    model_args = {k: getattr(ns, k) for k in ("mc_num", "gen_length", "steps", "block_length", "remasking",
                                              "temperature", "seed") if getattr(ns, k) is not None}
    tasks = [t for t in (ns.tasks or "").split(",") if t.strip()]
    if not (tasks or ns.scan or ns.attention or ns.sudoku or ns.automaton):
        raise EvalError("tasks", "nothing to do: give --tasks, --scan, --attention, --sudoku and/or --automaton")
    return EvalRequest(tasks=tasks, loops=loops, exit_thresholds=thresholds, limit=ns.limit, ckpt=ns.ckpt,
                       num_fewshot=ns.num_fewshot, model_args=model_args, batch_size=ns.batch_size, device=ns.device,
                       gsm8k_dir=ns.gsm8k_dir, cache_dir=ns.cache_dir, metric=ns.metric, force=ns.force,
                       scan=ns.scan, scan_draws=ns.scan_draws, attention=ns.attention,
                       ts=_list(ns.ts, float, "ts") or list(DEFAULT_ATTENTION_TS), attention_loops=ns.attention_loops,
                       sudoku=ns.sudoku, sudoku_blanks=ns.sudoku_blanks, sudoku_order=ns.sudoku_order,
                       sudoku_puzzles=ns.sudoku_puzzles, automaton=ns.automaton,
                       automaton_records=ns.automaton_records,
                       automaton_orders=automaton_orders(ns.automaton_orders.split(",")), quiet=ns.quiet)


def eval_parser(parser_cls: type[Parser] = Parser) -> Parser:
    from study.evaluate.tasks import EXECUTORS

    ap = parser_cls(prog="python -m study.eval", description="Evaluate trained runs: lm-eval tasks, loop scans of "
                "validation NLL, attention statistics; results already on disk are not recomputed.")
    ap.add_argument("target", help="a run directory, or a study directory (all finished runs)")
    ap.add_argument("--tasks", default=None, help="comma-separated: gsm8k-local, gsm8k-synth[:DIFF[:N]], gsm8k-synth-mc[:DIFF[:N]], "
                                    "or lm-eval task names")
    ap.add_argument("--loops", default=None, help="comma-separated inference S (default: s_max for tasks; 1,2,4,6,8,12,16,24 for --scan)")
    ap.add_argument("--exit-thresholds", default=None, help="comma-separated adaptive-exit thresholds (S capped at max --loops)")
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each task")
    ap.add_argument("--ckpt", default="latest", help="checkpoint step, or 'latest'")
    ap.add_argument("--num-fewshot", type=int, default=None, help="default: the task's own (0 for the local GSM8K tasks)")
    ap.add_argument("--mc-num", type=int, default=None, help="Monte-Carlo draws per loglikelihood (default 32)")
    ap.add_argument("--gen-length", type=int, default=None, help="generated tokens (default 128)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default gen_length)")
    ap.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block (default gen_length)")
    ap.add_argument("--remasking", default=None, help="low_confidence | random | ancestral")
    ap.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0: greedy)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the sampler's and the MC estimator's noise (default 0)")
    ap.add_argument("--metric", default=None, help="lm-eval 'metric,filter' key to report as the score")
    ap.add_argument("--batch-size", type=int, default=16, help="requests per forward (speed only, not hashed)")
    ap.add_argument("--device", default="auto", help="auto (cuda if visible), cpu, cuda or cuda:N")
    ap.add_argument("--gsm8k-dir", default=None, help="folder with GSM8K test.jsonl (+ train.jsonl); default $LOOPMDM_GSM8K_DIR")
    ap.add_argument("--cache-dir", default=None, help="where generated task data and YAMLs go (default $LOOPMDM_CACHE)")
    ap.add_argument("--force", action="store_true", help="recompute results already on disk")
    ap.add_argument("--scan", action="store_true", help="loop scan of validation NLL into evals.jsonl")
    ap.add_argument("--scan-draws", type=int, default=None, help="noise draws per sequence in the scan (default: the run's)")
    ap.add_argument("--attention", action="store_true", help="masked-to-masked attention shares per layer and loop")
    ap.add_argument("--ts", default=None, help="noise levels for --attention (default 0.25,0.5,0.75)")
    ap.add_argument("--attention-loops", type=int, default=None, help="S for --attention (default s_max)")
    ap.add_argument("--sudoku", action="store_true", help="Sudoku positive control: fill held-out puzzles at each "
                    "--loops (default 1,2,4,8,16), for runs trained on data.corpus: sudoku")
    ap.add_argument("--sudoku-blanks", type=int, default=30, help="blank cells per puzzle (difficulty)")
    ap.add_argument("--sudoku-order", default="random", help="cell order: random | raster (restricted) | confidence")
    ap.add_argument("--sudoku-puzzles", type=int, default=100, help="held-out puzzles")
    ap.add_argument("--automaton", action="store_true", help="positive control: accuracy per row (eca) or hop "
                    "(pointer) of held-out records at each --loops (default 1,2,4,8,16), for runs trained on "
                    "data.corpus: eca:... or pointer:...")
    ap.add_argument("--automaton-records", type=int, default=200, help="held-out records")
    ap.add_argument("--automaton-orders", default="parallel", help="comma-separated: parallel (every masked cell "
                    "in one step: sees depth) and/or confidence | raster | random (one row/hop per step)")
    ap.add_argument("--executor", default="local", choices=EXECUTORS,
                    help="local: here, one run after another; slurm: one job per run (study.launch)")
    ap.add_argument("--partition", default=None, help="SLURM partition for --executor slurm (default: the cluster's)")
    ap.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per evaluation job")
    ap.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per evaluation job (default: the cluster's)")
    ap.add_argument("--time-min", type=int, default=120, help="time limit per evaluation job, minutes")
    ap.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the jobs and print results")
    ap.add_argument("--allow-unfinished", action="store_true", help="evaluate runs that have not finished (newest checkpoint)")
    ap.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return ap


def eval_main(argv: list[str] | None = None) -> int:
    from study.evaluate import tasks as T

    ns = eval_parser().parse_args(argv)
    try:
        req = eval_request(ns)
        runs = T.targets(ns.target, allow_unfinished=ns.allow_unfinished)
        if ns.executor != "local":
            subs = T.submit(runs, req, ns)
            for sub in subs:
                print(f"submitted {sub.name}: job {sub.job_id} ({sub.executor})")
            if ns.wait or ns.executor == "debug":  # debug jobs run in this process, when asked for their result
                for sub in subs:
                    for r in sub.job.result().get("tasks", []):
                        print(T.describe(Path(r["run_dir"]), r, "already done" if r.get("cached") else "done"))
            return 0
        failed = 0
        for rd in runs:
            try:
                res = T.evaluate_run(rd, req)
            except _errors() as exc:
                if len(runs) == 1:
                    raise
                print(f"[{rd.name}] skipped: {exc}", file=sys.stderr)
                failed += 1
                continue
            for r in res.get("tasks", []):
                if r.get("cached") and not ns.quiet:
                    print(T.describe(rd, r, "already done"))
            if res.get("attention") and not ns.quiet:
                print(f"[{rd.name}] attention: {records.attention_path(rd, res['attention']['attention_hash'])}")
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 1 if failed else 0


def lm_eval_main() -> None:
    """lm-eval's own command line with the ``loopmdm`` model registered (see study/lm_eval_cli.py)."""
    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


# ---------------------------------------------------------------------------------------------- data
def data_main(argv: list[str] | None = None) -> int:
    """``python -m study.data prepare TARGET``: tokenise corpora into the token cache ahead of training, so
    the runs of a sweep (all sharing one cache key per data setting) never tokenise."""
    ap = Parser(prog="python -m study.data", description="Tokenise corpora into the token cache ahead of training "
                "(resumable: rerun after an interruption; parallel: --workers).")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("prepare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="tokenise every corpus a spec (or one run config, or one corpus) trains on")
    p.add_argument("target", help="a study spec (sweeps/*.yaml), a run config.yaml, or a corpus (lm1b, hf:NAME@REV, PATH)")
    p.add_argument("overrides", nargs="*", default=[], help="key=value on a spec's base / a config (data.cache_dir=...)")
    p.add_argument("--tokenizer", default="byte", help="with a corpus target: the tokenizer")
    p.add_argument("--val-fraction", type=float, default=0.05, help="with a corpus target: every k-th document held out")
    p.add_argument("--val-split", default=None, help="with a corpus target: the corpus's own held-out split (hub)")
    p.add_argument("--max-tokens", type=int, default=None, help="with a corpus target: tokens read at most")
    p.add_argument("--cache-dir", default=None, help="token cache (default: data.cache_dir, else $LOOPMDM_CACHE or "
                                                      "~/.cache/loopmdm: where the runs will look)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="tokenising processes")
    ns = ap.parse_args(argv)
    from study import data as data_mod

    try:
        settings = _data_settings(ns)
        for corpus, tokenizer, cache, val_fraction, max_tokens, val_split in settings:
            td = data_mod.prepare_tokens(corpus, tokenizer, cache, val_fraction=val_fraction, max_tokens=max_tokens,
                                         val_split=val_split, workers=ns.workers)
            m = td.meta
            print(f"{corpus} / {tokenizer}: {m['n_train']:,} train + {m['n_val']:,} held-out tokens "
                  f"({m['split_rule']}) in {td.path}", flush=True)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _data_settings(ns) -> list[tuple]:
    """The distinct token caches a target needs: (corpus, tokenizer, cache dir, val_fraction, max_tokens,
    val_split) — for a spec, over its pretraining runs (fine-tuning reads question/answer sets instead)."""
    from study import data as data_mod
    from study.plan import config as config_mod
    from study.plan import spec as spec_mod

    target = Path(ns.target)
    if target.suffix in (".yaml", ".yml") and target.is_file():
        raw = config_mod.load_yaml_mapping(target, "TARGET", "a spec (study:, base:) or a run config (model:, data:)")
        overrides = list(ns.overrides) + ([f"data.cache_dir={ns.cache_dir}"] if ns.cache_dir else [])
        if "study" in raw or "base" in raw:
            cfgs = [r.cfg for r in spec_mod.expand(spec_mod.load_spec(target, overrides))]
        else:
            cfgs = [config_mod.from_dict(config_mod.apply_overrides(raw, overrides))]
        out = []
        for c in cfgs:
            if c.kind != "pretrain":
                continue
            d = c.data
            cache = Path(d.cache_dir) if d.cache_dir else data_mod.default_cache_dir()
            key = (d.corpus, d.tokenizer, cache, d.val_fraction, d.max_tokens, d.val_split)
            if key not in out:
                out.append(key)
        return out
    if ns.overrides:
        raise ConfigError("overrides", "key=value overrides apply to a spec or config target, not to a corpus")
    cache = Path(ns.cache_dir) if ns.cache_dir else data_mod.default_cache_dir()
    return [(ns.target, ns.tokenizer, cache, ns.val_fraction, ns.max_tokens, ns.val_split)]
