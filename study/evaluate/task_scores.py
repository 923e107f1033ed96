"""Scores of lm-eval tasks on one run, filed as task-evaluation JSON (the ``loopmdm`` model in `lm_eval_model`,
the offline task definitions in `lm_tasks`).

Each (task, loop setting) result is a JSON file ``run_dir/evals/<task>-<eval_hash>.json``, where ``eval_hash``
is a hash of (run hash, checkpoint step, evaluation config): every knob that can change a score is in the
config, so an evaluation already on disk is never recomputed (``--force`` to redo one), and a changed knob is
a new file. Batch size and device are recorded but not hashed: they change speed, not scores.

The result file (read by analysis/):
``{"task", "metric", "score", "loops", "exit_threshold", "per_sample": [0/1 per problem in doc order], "n",
"run_hash", "ckpt_step", "eval_hash", "config": {...}, "versions": {...}, "device", ...}``
plus ``step`` (= ckpt_step) and ``sample_ids`` (a hash of each problem, in per_sample's order) for
analysis.claims' pairing, every metric lm-eval reported (``metrics``), its per-sample values for each
(``per_sample_metrics``),
the loops the mid block actually ran on average (``mean_loops``: < loops under adaptive exit) and timings.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import records
from study.data.hub import cache_only_unless_reachable

from .loading import checkpoint_identity, load_run, short_hash
from .provenance import device_name, versions
from .request import EvalError, EvalRequest

GENERATION_KINDS = ("gsm8k-local", "gsm8k-synth")  # local tasks that generate (checked before loading weights)


def cache_dir(req: EvalRequest) -> Path:
    from study.data import default_cache_dir

    return Path(req.cache_dir).expanduser() if req.cache_dir else default_cache_dir()


def _hub_access(task_specs) -> str | None:
    """Local tasks need no hub: say so before `datasets` is imported, so it never waits on the network. Other
    tasks read the local cache only where the hub cannot be used; returns why it cannot (None: it can)."""
    if task_specs and all(t.local for t in task_specs):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return None
    return cache_only_unless_reachable()


def not_cached(task: str | None, reason: str, exc: Exception) -> EvalError:
    """A hub task's dataset missing from the local cache while the hub cannot be used: one line, what to do."""
    return EvalError("tasks", f"{task + ': ' if task else ''}a dataset is not in the local cache and the hub cannot be "
                              f"used ({reason}; {exc}). Pre-download it where the hub is reachable (HF_HOME on shared "
                              f"storage), or use the packaged tasks (gsm8k-local, gsm8k-synth, gsm8k-synth-mc)")


def task_manager(task_specs, include_path: Path | None):
    """A TaskManager over our local YAMLs only when nothing else is asked (milliseconds instead of the ~12 s
    lm-eval takes to index its own ~10,000 YAMLs); one per process and folder."""
    need_defaults = any(not t.local for t in task_specs)
    return _task_manager(str(include_path) if include_path else None, need_defaults)


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: str | None, include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _primary(results: dict, wanted: str | None) -> str:
    keys = [k for k in results if "," in k and "_stderr" not in k]
    if wanted and wanted in keys:
        return wanted
    if wanted:
        raise EvalError("metric", f"{wanted!r} is not among the task's metrics: {', '.join(keys)}")
    for k in ("acc,none", "exact_match,strict-match", "exact_match,none"):
        if k in keys:
            return k
    return keys[0]


def _samples(samples: list[dict], metric_key: str) -> list[dict]:
    """lm-eval's logged samples of one 'metric,filter', in document order (stable across models)."""
    metric, _, filt = metric_key.partition(",")
    return sorted((s for s in samples if s.get("filter", "none") == filt and metric in s), key=lambda s: s["doc_id"])


def _per_sample(samples: list[dict], metric_key: str) -> list:
    out = []
    for s in _samples(samples, metric_key):
        v = float(s[metric_key.partition(",")[0]])
        out.append(int(v) if v in (0.0, 1.0) else v)
    return out


def run_task(lm, task, tm, req: EvalRequest) -> dict:
    """One task through lm-eval's simple_evaluate; returns lm-eval's numbers for it (not yet filed)."""
    import lm_eval

    lm.stats.clear()
    t0 = time.perf_counter()
    r = lm_eval.simple_evaluate(model=lm, tasks=[task.name], limit=req.limit, num_fewshot=req.num_fewshot,
                                task_manager=tm, log_samples=True, bootstrap_iters=1000, verbosity="WARNING")
    wall = time.perf_counter() - t0
    results = {k: v for k, v in r["results"][task.name].items() if k not in ("name", "alias")}
    metric = _primary(results, req.metric or task.primary_metric)
    samples = r["samples"][task.name]
    metric_keys = [k for k in results if "," in k and "_stderr" not in k]
    per_sample_metrics = {k: _per_sample(samples, k) for k in metric_keys}
    # problem ids for pairing across models: a hash of the document, so a reordered data file still pairs
    sample_ids = [str(x.get("doc_hash") or x["doc_id"])[:16] for x in _samples(samples, metric)]
    return {"metric": metric, "score": float(results[metric]), "sample_ids": sample_ids,
            "stderr": results.get(metric.replace(",", "_stderr,", 1)),
            "per_sample": per_sample_metrics[metric], "n": len(per_sample_metrics[metric]),
            "metrics": {k: results[k] for k in metric_keys}, "per_sample_metrics": per_sample_metrics,
            "num_fewshot": r.get("n-shot", {}).get(task.name), "mean_loops": lm.mean_loops,
            "forwards": int(lm.stats["forwards"]), "wall_s": wall,
            "lm_eval": {"results": r["results"][task.name], "task_config": r["configs"].get(task.name),
                        "task_version": r.get("versions", {}).get(task.name)}}


def evaluate_tasks(run_dir: str | Path, req: EvalRequest) -> list[dict]:
    """Every (task, loop setting) of ``req`` on one run; results already on disk are read, not recomputed.
    Everything that can be checked without weights is checked before any are loaded."""
    from study.evaluate import lm_tasks as tasks_mod
    from study.evaluate.lm_eval_model import LoopMDMLM, check_room, resolve_knobs

    run_dir = Path(run_dir)
    cfg, run_hash, ckpt, meta, weights = checkpoint_identity(run_dir, req.ckpt)
    step = int(meta["step"])
    specs, include = tasks_mod.prepare(req.tasks, cache_dir(req), req.gsm8k_dir, req.num_fewshot or 0)
    if req.limit is not None and req.limit < 1:
        raise EvalError("limit", f"got {req.limit}; must be >= 1 (or left out for the whole task)")
    plan = []  # (task, knobs, config, eval_hash, path)
    for loops, eps in req.settings(cfg.model.s_max):
        knobs = resolve_knobs(cfg.model, weights=weights, loops=loops, exit_threshold=eps, **req.model_args)
        if any(t.kind in GENERATION_KINDS for t in specs):
            check_room(knobs["gen_length"], cfg.model.max_seq_len)
        for t in specs:
            config = {"task": t.name, "task_kind": t.kind, "task_data": t.fingerprint, "limit": req.limit,
                      "num_fewshot": req.num_fewshot, "metric": req.metric or t.primary_metric, **knobs}
            eval_hash = short_hash({"run_hash": run_hash, "ckpt_step": step, "config": config})
            plan.append((t, knobs, config, eval_hash, records.task_eval_path(run_dir, t.name, eval_hash)))
    out, todo = [], []
    for item in plan:
        done = records.read_json(item[4]) if not req.force else None
        if done is not None:
            out.append(done | {"cached": True})
        else:
            todo.append(item)
    if not todo:
        return out
    hub_reason = _hub_access(specs)
    tm = task_manager(specs, include)
    tasks_mod.check_exist(specs, tm)
    loaded = load_run(run_dir, records.ckpt_step(ckpt), req.device, prefer_ema=(weights == "ema"))
    lm_by_knobs: dict[str, LoopMDMLM] = {}
    for t, knobs, config, eval_hash, path in todo:
        key = short_hash(knobs)
        if key not in lm_by_knobs:
            lm_by_knobs[key] = LoopMDMLM(loaded=loaded, batch_size=req.batch_size,
                                         **{k: v for k, v in knobs.items() if k != "weights"})
        try:
            res = run_task(lm_by_knobs[key], t, tm, req)
        except ConnectionError as exc:  # `datasets` reports a cache miss offline as a ConnectionError
            if hub_reason is None:
                raise
            raise not_cached(t.name, hub_reason, exc) from None
        record = {"task": t.name, "metric": res.pop("metric"), "score": res.pop("score"), "loops": knobs["loops"],
                  "exit_threshold": knobs["exit_threshold"], "per_sample": res.pop("per_sample"), "n": res.pop("n"),
                  "run_hash": run_hash, "ckpt_step": step, "step": step, "eval_hash": eval_hash, "config": config,
                  "config_hash": short_hash(config), "versions": versions(), "device": device_name(loaded.device),
                  "batch_size": req.batch_size, "run_dir": str(run_dir), "task_spec": t.spec, **res}
        records.atomic_write_json(path, record)
        if not req.quiet:
            print(describe(run_dir, record, f"{res['wall_s']:.1f} s"), flush=True)
        out.append(record | {"cached": False})
    return out


def describe(run_dir: Path, record: dict, note: str) -> str:
    eps = record["exit_threshold"]
    setting = f"S={record['loops']}" + ("" if eps is None else f" eps={eps} (mean loops {record['mean_loops']:.2f})")
    return f"[{Path(run_dir).name}] {record['task']} {setting}: {record['metric']} = {record['score']:.4f} " \
           f"(n={record['n']}, {note})"
