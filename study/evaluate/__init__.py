"""Evaluating trained runs. What to evaluate is data (`request`: `EvalRequest`, its parser and checks; torch-free,
so a spec's evaluation stages are checked while planning); `dispatch` carries a request out on runs: lm-eval
task scores (`task_scores`, with the `loopmdm` lm-eval model in `lm_eval_model` and the offline task
definitions in `lm_tasks`), loop scans of validation NLL (`loop_scan`), the mask-to-mask attention statistic
(`attention`), the Sudoku positive control (`sudoku_eval`); `loading` loads a run for inference and
`provenance` records what produced each number.

The names below load on first use: importing `study.evaluate.request` must not import torch.
"""

import importlib

_PUBLIC = {
    "EvalError": "request", "EvalRequest": "request", "DEFAULT_ATTENTION_TS": "request",
    "DEFAULT_SCAN_LOOPS": "request", "check_loops": "request", "check_thresholds": "request",
    "evaluate_run": "dispatch", "targets": "dispatch",
    "LoadedRun": "loading", "load_run": "loading", "checkpoint_identity": "loading", "eval_tokens": "loading",
    "resolve_device": "loading",
    "attention_shares": "attention", "attention_stats": "attention", "evaluate_tasks": "task_scores",
}  # loop_scan and sudoku_eval share their module's name: import them from `.loop_scan` / `.sudoku_eval`

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
