"""Carrying out an evaluation request (`study.evaluate.request`) on trained runs: which runs a target names, and
everything a request asks of one run — lm-eval task scores (`task_scores`), loop scans of validation NLL into
the run's eval log (`loop_scan`), the mask-to-mask attention statistic (`attention`), the Sudoku positive
control (`sudoku_eval`), the iterated-computation control (`automaton_eval`). Each kind is idempotent: what is on disk is not recomputed.

``evaluate_run`` is the function an evaluation job runs (`study.launch.evaluations` submits it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import records

from .attention import attention_stats
from .automaton_eval import DEFAULT_LOOPS as AUTOMATON_LOOPS
from .automaton_eval import automaton_eval
from .loop_scan import loop_scan
from .request import DEFAULT_SCAN_LOOPS, EvalError, EvalRequest
from .sudoku_eval import DEFAULT_LOOPS as SUDOKU_LOOPS
from .sudoku_eval import sudoku_eval
from .task_scores import evaluate_tasks


def evaluate_run(run_dir: str | Path, req: EvalRequest) -> dict[str, Any]:
    """Everything ``req`` asks of one run (the function a SLURM job runs). The results go into the run, so a run
    that cannot be written is refused before any work."""
    for place in (Path(run_dir), Path(run_dir) / records.EVALS_DIR):
        why = records.unwritable(place, "dir")
        if why is not None:
            raise EvalError("target", f"cannot write results into {run_dir}: {why}; evaluate a writable copy of "
                                      f"the run (its {records.CONFIG} and {records.CKPT_DIR}/)")
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    if req.tasks:
        out["tasks"] = evaluate_tasks(run_dir, req)
    if req.scan:
        out["scan"] = loop_scan(run_dir, loops=req.loops or DEFAULT_SCAN_LOOPS, exit_thresholds=req.exit_thresholds,
                                ckpt=req.ckpt, n_draws=req.scan_draws, device=req.device, quiet=req.quiet)
    if req.sudoku:
        out["tasks"] = out.get("tasks", []) + sudoku_eval(
            run_dir, loops=req.loops or SUDOKU_LOOPS, n_puzzles=req.sudoku_puzzles, blanks=req.sudoku_blanks,
            order=req.sudoku_order, device=req.device, quiet=req.quiet)
    if req.automaton:
        out["tasks"] = out.get("tasks", []) + automaton_eval(
            run_dir, loops=req.loops or AUTOMATON_LOOPS, n_records=req.automaton_records, orders=req.automaton_orders,
            device=req.device, ckpt=req.ckpt, force=req.force, quiet=req.quiet)
    if req.attention:
        out["attention"] = attention_stats(run_dir, ts=req.ts, loops=req.attention_loops, ckpt=req.ckpt,
                                           device=req.device, force=req.force)
    return out



def targets(target: str | Path, allow_unfinished: bool = False) -> list[Path]:
    """A run directory, or every finished run of a study directory. A run that is not done is refused
    unless ``allow_unfinished`` (then its newest checkpoint is evaluated, and the result says which step)."""
    target = Path(target)
    if (target / records.CONFIG).is_file():
        if not allow_unfinished and records.done_summary(target) is None:
            st = records.run_status(target, queue=None)
            if st.state == "failed":
                reason = (records.read_json(target / records.FAILED) or {}).get("reason") or "no reason recorded"
                raise EvalError("target", f"{target} FAILED at step {st.step if st.step is not None else '?'}: {reason} "
                                          f"({records.FAILED}); fix the cause and train it again (study.sweep --retry, "
                                          f"or the same study.run command), or pass --allow-unfinished to evaluate "
                                          f"its newest checkpoint")
            raise EvalError("target", f"{target} has not finished training ({st.state}: {st.detail}; no "
                                      f"{records.DONE}); wait for it, or pass --allow-unfinished to evaluate its "
                                      f"newest checkpoint")
        return [target]
    if (target / records.RUNS_DIR).is_dir():
        runs = [rd for rd in records.list_run_dirs(target)
                if (rd / records.DONE).is_file() or (allow_unfinished and records.has_checkpoint(rd))]
        if not runs:
            states = {}
            for st in records.scan_study(target, queue=None):
                states[st.state] = states.get(st.state, 0) + 1
            found = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no run directory"
            raise EvalError("target", f"study {target} has no finished run yet ({found}; none has "
                                      f"{records.RUNS_DIR}/*/{records.DONE}): see python -m study.sweep status")
        return runs
    raise EvalError("target", f"{target} is neither a run directory ({records.CONFIG}) nor a study directory "
                              f"({records.RUNS_DIR}/)")
