"""``python -m study.run [CONFIG.yaml] [key=value ...] [--out DIR]``: train one point in the foreground — the
function every sweep point runs on SLURM; a signal checkpoints and stops, the same command resumes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import records

from .common import Parser, input_errors, results_root, say_error


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
        return train(cfg, out, stop=flag.stop_requested, quiet=quiet)
    finally:
        flag.uninstall()


def add_train_options(ap: Parser) -> None:
    ap.add_argument("--out", type=Path, default=None, help="run directory (default ROOT/local/runs/<slug>-<hash>)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-step log lines")


def train_command(make_config: Callable, ns) -> int:
    """The shared tail of `study.run` and `study.sft`: resolve the config (or print it), train in the
    foreground, say how it ended."""
    from study.launch.preempt import EXIT_STOPPED
    from study.plan import config as config_mod

    try:
        cfg = make_config()
        if ns.print_config:
            print(config_mod.dump_yaml(cfg), end="")
            return 0
        out = ns.out or default_out(cfg)
        summary = _train_foreground(cfg, out, ns.quiet)
    except input_errors() as exc:
        return say_error(exc)
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun: rank 0 speaks for the run
        return EXIT_STOPPED if summary["status"] == "preempted" else 0
    if summary["status"] == "preempted":
        print(f"stopped at step {summary['step']}; run the same command again to resume ({out})")
        return EXIT_STOPPED
    finals = ", ".join(_describe(r) for r in summary.get("final_eval", []))
    print(f"done: {summary['step']} steps, {summary['flops_exact']:.3g} FLOPs (exact)"
          + (f"; val NLL (nats/token) {finals}" if finals else "") + f"; {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.run", description="Train one point locally (the function every sweep "
                "point runs on SLURM); a signal checkpoints and stops, running the command again resumes.")
    ap.add_argument("args", nargs="*", help="an optional CONFIG.yaml, then key=value overrides (optim.lr=1e-3)")
    add_train_options(ap)
    ns = ap.parse_intermixed_args(argv)
    from study.plan import config as config_mod

    path = ns.args[0] if ns.args and "=" not in ns.args[0] else None
    overrides = ns.args[1:] if path else ns.args
    return train_command(lambda: config_mod.load(path, overrides), ns)
