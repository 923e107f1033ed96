"""What to evaluate, as data: the options ``python -m study.eval`` and a spec's ``evaluate:`` stages accept, their
one parser and their validation. Torch-free, so planning a spec with evaluation stages checks every stage's
arguments in milliseconds, before anything is written (the engine that carries a request out is
`study.evaluate.dispatch`).

Options come in two groups: what to evaluate (the `EvalRequest`; a spec's stage may set these) and how
``study.eval`` runs it (executor, resources, ``--force``, ...; in a sweep those belong to the sweep).
One more evaluation kind (like ``--sudoku``) is a flag in `add_request_options`, a field of `EvalRequest`, its
entry in `KINDS`, and a branch in `study.evaluate.dispatch.evaluate_run`.
"""

from __future__ import annotations

import argparse
import math
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable

from model.config import ConfigError

DEFAULT_SCAN_LOOPS = (1, 2, 4, 6, 8, 12, 16, 24)
DEFAULT_ATTENTION_TS = (0.25, 0.5, 0.75)
EXECUTORS = ("local", "slurm", "debug")  # study.eval: here, one job per run on SLURM, or submitit in-process
#: the request fields that each ask for one kind of evaluation (a request must ask for at least one)
KINDS = ("tasks", "scan", "attention", "sudoku", "automaton")
#: how the iterated-computation control fills the masked cells: all at once (the order that sees depth), or one
#: depth's worth per step in one of `model.diffusion.INFILL_ORDERS` (study.evaluate.automaton_eval checks they match)
AUTOMATON_ORDERS = ("parallel", "confidence", "raster", "random")
#: the model knobs an lm-eval task run takes from the command line (study.evaluate.lm_eval_model.resolve_knobs)
MODEL_ARGS = ("mc_num", "gen_length", "steps", "block_length", "remasking", "temperature", "seed")


class EvalError(ConfigError):
    """An evaluation cannot run as asked; the message starts with the argument (or task) to change."""


@dataclass
class EvalRequest:
    """What to evaluate on each run (picklable: it travels to SLURM jobs)."""

    tasks: list[str] = field(default_factory=list)
    loops: list[int] | None = None  # None: the model's s_max for tasks, DEFAULT_SCAN_LOOPS for --scan
    exit_thresholds: list[float] = field(default_factory=list)  # adaptive exit, S capped at max(loops)
    limit: int | None = None
    ckpt: str = "latest"
    num_fewshot: int | None = None  # None: the task's default (0 for the local GSM8K tasks)
    model_args: dict[str, Any] = field(default_factory=dict)  # MODEL_ARGS given on the command line
    batch_size: int = 16
    device: str = "auto"
    gsm8k_dir: str | None = None
    cache_dir: str | None = None
    metric: str | None = None  # 'metric,filter' to report as the score; None: the task's primary
    force: bool = False
    scan: bool = False
    scan_draws: int | None = None
    attention: bool = False
    ts: list[float] = field(default_factory=lambda: list(DEFAULT_ATTENTION_TS))
    attention_loops: int | None = None
    sudoku: bool = False  # the Sudoku positive control (study.evaluate.sudoku_eval), for runs trained on grids
    sudoku_blanks: int = 30
    sudoku_order: str = "random"
    sudoku_puzzles: int = 100
    automaton: bool = False  # the iterated-computation control (study.evaluate.automaton_eval): accuracy per depth
    automaton_records: int = 200
    automaton_orders: list[str] = field(default_factory=lambda: ["parallel"])
    quiet: bool = False

    def settings(self, s_max: int) -> list[tuple[int, float | None]]:
        """(loops, exit_threshold) pairs for the tasks: each fixed S, then each threshold capped at max S.
        A non-looped model (s_max = 1: the MDM baselines) is evaluated once, as trained, whatever is asked:
        a study-wide ``--loops 1,4,12`` then costs the baselines one evaluation, not three."""
        if s_max == 1:
            return [(1, None)]
        loops = self.loops or [s_max]
        return [(s, None) for s in loops] + [(max(loops), eps) for eps in self.exit_thresholds]


# ------------------------------------------------------------------------------------------ checks
def check_loops(loops: Iterable[int], arg: str = "loops") -> list[int]:
    out = []
    for s in loops:
        try:
            ok = not isinstance(s, bool) and float(s).is_integer() and int(float(s)) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EvalError(arg, f"got {s!r}; every loop count must be an integer >= 1")
        out.append(int(float(s)))
    return out


def check_orders(orders: Iterable[str], arg: str = "automaton_orders") -> list[str]:
    out = [o.strip() for o in orders if o.strip()]
    bad = [o for o in out if o not in AUTOMATON_ORDERS]
    if bad or not out:
        raise EvalError(arg, f"got {','.join(bad) or 'nothing'}; allowed: {', '.join(AUTOMATON_ORDERS)}")
    return out


def check_thresholds(thresholds: Iterable[float], arg: str = "exit_thresholds") -> list[float]:
    out = []
    for eps in thresholds:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise EvalError(arg, f"got {eps!r}; an exit threshold must be a number > 0")
        out.append(float(eps))
    return out


# ------------------------------------------------------------------------------------------ options
def add_request_options(ap: argparse.ArgumentParser) -> None:
    """What to evaluate: the options a spec's ``evaluate:`` stage may give too."""
    ap.add_argument("--tasks", default=None, help="comma-separated: gsm8k-local, gsm8k-synth[:DIFF[:N]], "
                    "gsm8k-synth-mc[:DIFF[:N]], or lm-eval task names")
    ap.add_argument("--loops", default=None, help="comma-separated inference S (default: s_max for tasks; "
                    "1,2,4,6,8,12,16,24 for --scan)")
    ap.add_argument("--exit-thresholds", default=None,
                    help="comma-separated adaptive-exit thresholds (S capped at max --loops)")
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each task")
    ap.add_argument("--ckpt", default="latest", help="checkpoint step, or 'latest'")
    ap.add_argument("--num-fewshot", type=int, default=None,
                    help="default: the task's own (0 for the local GSM8K tasks)")
    ap.add_argument("--mc-num", type=int, default=None, help="Monte-Carlo draws per loglikelihood (default 32)")
    ap.add_argument("--gen-length", type=int, default=None, help="generated tokens (default 128, at most half the model's positions)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default gen_length)")
    ap.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block (default gen_length)")
    ap.add_argument("--remasking", default=None, help="low_confidence | random | ancestral")
    ap.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0: greedy)")
    ap.add_argument("--seed", type=int, default=None,
                    help="seed of the sampler's and the MC estimator's noise (default 1234)")
    ap.add_argument("--metric", default=None, help="lm-eval 'metric,filter' key to report as the score")
    ap.add_argument("--batch-size", type=int, default=16, help="requests per forward (speed only, not hashed)")
    ap.add_argument("--device", default="auto", help="auto (cuda if visible), cpu, cuda or cuda:N")
    ap.add_argument("--gsm8k-dir", default=None,
                    help="folder with GSM8K test.jsonl (+ train.jsonl); default $LOOPMDM_GSM8K_DIR")
    ap.add_argument("--cache-dir", default=None,
                    help="where generated task data and YAMLs go (default $LOOPMDM_CACHE)")
    ap.add_argument("--scan", action="store_true", help="loop scan of validation NLL into the run's eval log")
    ap.add_argument("--scan-draws", type=int, default=None,
                    help="noise draws per sequence in the scan (default: the run's)")
    ap.add_argument("--attention", action="store_true", help="masked-to-masked attention shares per layer and loop")
    ap.add_argument("--ts", default=None, help="noise levels for --attention (default 0.25,0.5,0.75)")
    ap.add_argument("--attention-loops", type=int, default=None, help="S for --attention (default s_max)")
    ap.add_argument("--sudoku", action="store_true", help="Sudoku positive control: fill held-out puzzles at each "
                    "--loops (default 1,2,4,8,16), for runs trained on data.corpus: sudoku")
    ap.add_argument("--sudoku-blanks", type=int, default=30, help="blank cells per puzzle (difficulty)")
    ap.add_argument("--sudoku-order", default="random", help="cell order: random | raster (restricted) | confidence")
    ap.add_argument("--sudoku-puzzles", type=int, default=100, help="held-out puzzles")
    ap.add_argument("--automaton", action="store_true", help="iterated-computation control: accuracy per row (eca) "
                    "or hop (pointer) of held-out records at each --loops (default 1,2,4,8,16), for runs trained on "
                    "data.corpus: eca:... or pointer:...")
    ap.add_argument("--automaton-records", type=int, default=200, help="held-out records")
    ap.add_argument("--automaton-orders", default="parallel", help="comma-separated: parallel (every masked cell "
                    "in one step: sees depth) and/or confidence | raster | random (one row / hop per step)")


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """How ``study.eval`` runs a request (in a sweep, the sweep's executor and resources decide)."""
    ap.add_argument("--force", action="store_true", help="recompute results already on disk")
    ap.add_argument("--executor", default="local", choices=EXECUTORS,
                    help="local: here, one run after another; slurm: one job per run (study.launch)")
    ap.add_argument("--partition", default=None, help="SLURM partition for --executor slurm (default: the cluster's)")
    ap.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per evaluation job")
    ap.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per evaluation job (default: the cluster's)")
    ap.add_argument("--time-min", type=int, default=120, help="time limit per evaluation job, minutes")
    ap.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the jobs and print results")
    ap.add_argument("--allow-unfinished", action="store_true",
                    help="evaluate runs that have not finished (newest checkpoint)")
    ap.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _numbers(text: str | None, conv, arg: str) -> list | None:
    if text is None:
        return None
    try:
        return [conv(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvalError(arg, f"{text!r} is not a comma-separated list of numbers") from None


def request_from_args(ns: argparse.Namespace) -> EvalRequest:
    """The validated request from parsed options (run options absent, as in a spec, read as their defaults)."""
    loops = _numbers(ns.loops, float, "loops")
    if loops is not None:
        loops = check_loops(loops, "loops")
    thresholds = check_thresholds(_numbers(ns.exit_thresholds, float, "exit_thresholds") or [], "exit_thresholds")
    model_args = {k: getattr(ns, k) for k in MODEL_ARGS if getattr(ns, k) is not None}
    tasks = [t for t in (ns.tasks or "").split(",") if t.strip()]
    req = EvalRequest(tasks=tasks, loops=loops, exit_thresholds=thresholds, limit=ns.limit, ckpt=ns.ckpt,
                      num_fewshot=ns.num_fewshot, model_args=model_args, batch_size=ns.batch_size, device=ns.device,
                      gsm8k_dir=ns.gsm8k_dir, cache_dir=ns.cache_dir, metric=ns.metric,
                      force=getattr(ns, "force", False), scan=ns.scan, scan_draws=ns.scan_draws,
                      attention=ns.attention, ts=_numbers(ns.ts, float, "ts") or list(DEFAULT_ATTENTION_TS),
                      attention_loops=ns.attention_loops, sudoku=ns.sudoku, sudoku_blanks=ns.sudoku_blanks,
                      sudoku_order=ns.sudoku_order, sudoku_puzzles=ns.sudoku_puzzles, automaton=ns.automaton,
                      automaton_records=ns.automaton_records,
                      automaton_orders=check_orders(ns.automaton_orders.split(",")), quiet=getattr(ns, "quiet", False))
    if req.automaton_records < 1:
        raise EvalError("automaton_records", f"got {req.automaton_records}; must be >= 1")
    if not any(getattr(req, kind) for kind in KINDS):
        raise EvalError("tasks", "nothing to do: give " + ", ".join(f"--{k}" for k in KINDS[:-1])
                        + f" and/or --{KINDS[-1]}")
    return req


class _SpecParser(argparse.ArgumentParser):
    """The same options read from a spec string: a usage error is a ConfigError, not an exit."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError("args", message)


def parse_stage_args(args: str, where: str) -> tuple[list[str], EvalRequest]:
    """A spec's ``evaluate[i].args`` string -> (argv, request), every error naming ``where``: a bad flag, or one
    that belongs to the sweep (how evaluations run is the sweep's executor and resources) — refused whenever
    it is given, its default value included."""
    argv = shlex.split(args)
    ap = _SpecParser(prog="evaluate stage", add_help=False)
    add_request_options(ap)
    try:
        ns, rest = ap.parse_known_args(argv)
        run_only = _SpecParser(prog="evaluate stage", add_help=False)
        add_run_options(run_only)
        _, unknown = run_only.parse_known_args(rest)
        if unknown:
            ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    except ConfigError as exc:
        raise ConfigError(where, f"{args!r}: {str(exc).split(': ', 1)[-1]}") from None
    owned = [a for a in rest if a.startswith("-")]
    if owned:
        raise ConfigError(where, f"{owned[0].split('=')[0]} belongs to the sweep (its executor and resources "
                          f"apply to the evaluations too); remove it from args")
    try:
        return argv, request_from_args(ns)
    except ConfigError as exc:
        raise ConfigError(where, f"{args!r}: {exc}") from None
