"""Evaluating trained runs: loading them (`loading`), loop scans of validation NLL (`loop_scan`), the
mask-to-mask attention statistic (`attention`), lm-eval task runs (`tasks`, with the `loopmdm` lm-eval model
in `lm_eval_model` and the offline task definitions in `lm_tasks`), and provenance of every number."""

from .attention import attention_shares, attention_stats
from .loading import (DEFAULT_ATTENTION_TS, DEFAULT_SCAN_LOOPS, EvalError, LoadedRun, check_loops, check_thresholds,
                      checkpoint_identity, eval_tokens, find_checkpoint, inference_flops, load_run, resolve_device,
                      run_config, short_hash)
from .loop_scan import loop_scan
from .provenance import device_name, versions

__all__ = [n for n in dir() if not n.startswith("_")]
