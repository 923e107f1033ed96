"""Train one point locally: ``python -m study.run [CONFIG.yaml] [key=value ...] [--out DIR]``.

The same function runs every point of a sweep on SLURM; here it runs in the foreground. SIGTERM / SIGUSR2 /
Ctrl-C ask for a checkpoint at the next step boundary and a clean exit; running the command again resumes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from model.config import ConfigError
from study import config as config_mod
from study.store import run_dir as make_run_dir

EXIT_PREEMPTED = 3


def default_out(cfg: config_mod.RunConfig) -> Path:
    return make_run_dir(Path("results") / "local", config_mod.slug(cfg), cfg.hash)


def install_stop_flag() -> threading.Event:
    """A flag set by SIGTERM, SIGUSR2 or SIGINT that the training loop polls between steps."""
    flag = threading.Event()

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        flag.set()
        print(f"received signal {signum}: checkpointing at the next step boundary", file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, handler)
    return flag


def _describe(row: dict) -> str:
    setting = f"S={row['eval_loops']}" + ("" if row.get("exit_threshold") is None else f" eps={row['exit_threshold']}")
    return f"{setting}: {row['nll']:.4f}±{row['nll_se']:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.splitlines()[0])
    ap.add_argument("args", nargs="*", help="an optional CONFIG.yaml, then key=value overrides (optim.lr=1e-3)")
    ap.add_argument("--out", type=Path, help="run directory (default results/local/runs/<slug>-<hash>)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--quiet", action="store_true")
    ns = ap.parse_intermixed_args(argv)
    path = ns.args[0] if ns.args and "=" not in ns.args[0] else None
    overrides = ns.args[1:] if path else ns.args
    from study.data import DataError
    from study.train import RunError, train

    try:
        cfg = config_mod.load(path, overrides)
        if ns.print_config:
            print(config_mod.dump_yaml(cfg), end="")
            return 0
        out = ns.out or default_out(cfg)
        flag = install_stop_flag()
        summary = train(cfg, out, stop=flag.is_set, quiet=ns.quiet)
    except (ConfigError, DataError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary["status"] == "preempted":
        print(f"stopped at step {summary['step']}; run the same command again to resume ({out})")
        return EXIT_PREEMPTED
    finals = ", ".join(_describe(r) for r in summary.get("final_eval", []))
    print(f"done: {summary['step']} steps, {summary['flops_exact']:.3g} FLOPs (exact); val NLL (nats/token) {finals}; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
