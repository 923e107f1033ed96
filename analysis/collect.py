"""Run directories -> the tidy table (docs/INTERFACES.md, "The tidy table").

One row per (run, group membership, evaluation point). A run shared by several comparison groups (a
baseline reused by looped configs with different s_max) appears once per group, so every analysis
that pools runs must de-duplicate on (run, step, eval_loops, exit_threshold) first
(``analysis.claims.unique_points`` does).

Partial sweeps are normal: a run without DONE.json is kept with ``done=False``; a run without any
evaluation is skipped and counted; a truncated last JSONL line (a run killed mid-write) is skipped and
counted. What was skipped is returned in ``df.attrs['collect']`` and so reaches the report.

Parameter counts come from ``meta.params`` in config.yaml (the plan's record of the run). What a run's model
costs per token — training, and one denoising step at inference, under every FLOPs convention, as
``base + per_loop * S`` — is computed here from the config's model section through ``model.flops`` (torch-free),
so no analysis ever rebuilds a model from a table row (`flops_per_token` reads it back).

``python -m analysis.collect STUDY_DIR`` writes STUDY_DIR/runs.parquet atomically.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

import records
from model import flops
from model.config import ConfigError, ModelConfig

from .paired import as_seq_array

ROLE_TO_FAMILY = {"looped": "loopmdm", "baseline_same": "mdm", "baseline_deeper": "mdm_deeper"}

BASE_COLUMNS = [
    "study", "run", "slug", "group", "role", "family",
    "d_model", "n_heads", "n_head_layers", "n_mid_layers", "n_tail_layers", "s_max", "n_layers",
    "params_embedding", "params_nonembedding", "params_total", "params_effective",
    "seq_len", "global_batch", "budget_flops", "budget_convention", "lr_schedule",
    "step", "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact",
    "eval_loops", "exit_threshold", "nll", "nll_se", "mean_loops", "is_final", "done", "seed",
    # for paired comparisons (analysis.paired): the spread over sequences, how many, each sequence's NLL
    # (a list column; None for runs written before it existed) and which eval set produced them
    "nll_data_se", "n_seqs", "nll_per_seq", "eval_set",
    # how the run was split over processes (system.json; None for runs written before it existed)
    "world_size", "grad_accum",
    # the looped block's variant ("plain" = the weight-tied recurrence; model.loop_input/loop_embed/loop_norm)
    "variant",
    # per-token FLOPs of the run's model, affine in the loop count S (see flops_per_token)
    *(f"{kind}_flops_per_token_{part}_{conv}" for kind in ("train", "infer") for part in ("base", "per_loop")
      for conv in flops.CONVENTIONS),
]
EVAL_FIELDS = ["step", "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact", "eval_loops",
               "exit_threshold", "nll", "nll_se", "mean_loops", "is_final", "nll_data_se", "n_seqs", "nll_per_seq"]
FLOAT_COLUMNS = ["params_embedding", "params_nonembedding", "params_total", "params_effective", "budget_flops",
                 "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact", "exit_threshold", "nll",
                 "nll_se", "mean_loops", "nll_data_se", *(c for c in BASE_COLUMNS if "_flops_per_token_" in c)]
INT_COLUMNS = ["d_model", "n_heads", "n_head_layers", "n_mid_layers", "n_tail_layers", "s_max", "n_layers",
               "seq_len", "global_batch", "step", "eval_loops", "seed", "n_seqs", "world_size", "grad_accum"]
#: config sections that decide which eval sequences and which masking noise a run's evals see
EVAL_SET_KEYS = {"data": None, "eval": ("n_seqs", "n_draws", "seed")}
EVAL_SET_SKIP = {"cache_dir"}


def _num(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f


def _axis_value(v: Any) -> Any:
    """Axis values are scalars in the table; lists/dicts are stored as canonical JSON text."""
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return v


def eval_set_key(cfg: dict[str, Any]) -> str | None:
    """A short fingerprint of the settings that fix the eval sequences and noise (``data`` minus paths,
    ``eval.n_seqs/n_draws/seed``): two runs' ``nll_per_seq`` are paired only when these agree."""
    data, ev = cfg.get("data"), cfg.get("eval")
    if not isinstance(data, dict) or not isinstance(ev, dict):
        return None
    key = {"data": {k: v for k, v in data.items() if k not in EVAL_SET_SKIP},
           "eval": {k: ev.get(k) for k in EVAL_SET_KEYS["eval"]}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def per_token_flops(cfg: dict[str, Any]) -> dict[str, float]:
    """The run's model cost per token as ``base + per_loop * S`` (every convention is affine in S): training
    (forward + backward) and one denoising step at inference, from the config through ``model.flops``. NaN
    when the config's model section is not a valid model."""
    cols = [c for c in BASE_COLUMNS if "_flops_per_token_" in c]
    try:
        model = ModelConfig.from_dict(dict(cfg.get("model") or {}))
        seq_len = int((cfg.get("data") or {})["seq_len"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return dict.fromkeys(cols, math.nan)
    out = {}
    for kind, fn in (("train", flops.train_flops_per_token), ("infer", flops.inference_flops_per_token)):
        for conv in flops.CONVENTIONS:
            base = fn(model, seq_len, 0, conv)
            out[f"{kind}_flops_per_token_base_{conv}"] = base
            out[f"{kind}_flops_per_token_per_loop_{conv}"] = fn(model, seq_len, 1, conv) - base
    return out


def flops_per_token(table: pd.DataFrame | pd.Series, loops: Any, kind: str = "infer",
                    convention: str = "exact") -> Any:
    """FLOPs per token of the rows' models at ``loops`` (a number, or a column of them): ``kind`` 'train' for a
    training step, 'infer' for one denoising step."""
    conv = convention.removeprefix("flops_")
    if isinstance(loops, pd.Series):  # nullable integer columns: a missing S is NaN FLOPs, not pd.NA
        loops = pd.to_numeric(loops, errors="coerce").astype("float64")
    return table[f"{kind}_flops_per_token_base_{conv}"] + loops * table[f"{kind}_flops_per_token_per_loop_{conv}"]


FINE_TUNED = "fine-tuned: task scores only"  # a sft run has no held-out token set (load_task_evals reads it)


def variant_label(model: dict[str, Any]) -> str:
    """'plain', or the looped-block variants joined by '+': 'inject=concat+loop-embed+loop-norm'."""
    parts = []
    if (model.get("loop_input") or "none") != "none":
        parts.append(f"inject={model['loop_input']}")
    if model.get("loop_embed"):
        parts.append("loop-embed")
    if model.get("loop_norm"):
        parts.append("loop-norm")
    return "+".join(parts) or "plain"


def _config_or_none(run_dir: Path) -> dict | None:
    """A run's config.yaml as a dict, or None when unreadable (a side table then skips the run)."""
    try:
        return records.read_config(run_dir) or {}
    except (OSError, yaml.YAMLError):
        return None


def load_loop_diagnostics(study_dir: str | Path) -> pd.DataFrame:
    """Per-loop state diagnostics of looped runs (``runs/*/loops.jsonl``, written at every eval point by
    the trainer): one row per (run, eval step) with the per-loop lists of ``model.diagnostics``."""
    rows = []
    for run_dir in records.list_run_dirs(study_dir):
        log = records.read_loop_diagnostics(run_dir)
        if not log.rows or (cfg := _config_or_none(run_dir)) is None:
            continue
        meta, model = cfg.get("meta") or {}, cfg.get("model") or {}
        for r in log.rows:
            rows.append({"run": str(meta.get("hash") or run_dir.name), "slug": meta.get("slug") or run_dir.name,
                         "variant": variant_label(model), "s_max": model.get("s_max"),
                         "n_head_layers": model.get("n_head_layers"), "n_mid_layers": model.get("n_mid_layers"),
                         "n_tail_layers": model.get("n_tail_layers"), **r})
    return pd.DataFrame(rows)


def load_attention(study_dir: str | Path) -> pd.DataFrame:
    """Mask-to-mask attention statistics (``runs/*/evals/attention-*.json``, written by ``study.eval
    --attention``): one row per (run, noise level t, loop, mid layer), from each run's newest checkpoint, with
    the per-sequence shares when the file has them (format 2)."""
    rows = []
    for run_dir in records.list_run_dirs(study_dir):
        files = sorted((run_dir / records.EVALS_DIR).glob("attention-*.json"))
        loaded = []
        for fp in files:
            try:
                loaded.append(json.loads(fp.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
        if not loaded or (cfg := _config_or_none(run_dir)) is None:
            continue
        meta, model = cfg.get("meta") or {}, cfg.get("model") or {}
        newest = max(obj.get("ckpt_step", -1) for obj in loaded)
        for obj in loaded:
            if obj.get("ckpt_step", -1) != newest:
                continue
            for r in obj.get("rows", []):
                rows.append({"run": str(meta.get("hash") or run_dir.name), "slug": meta.get("slug") or run_dir.name,
                             "variant": variant_label(model), "width": model.get("d_model"),
                             "budget_flops": _num((cfg.get("budget") or {}).get("flops")), "step": newest,
                             "S": (obj.get("settings") or {}).get("loops"), **r})
    return pd.DataFrame(rows)


def _infer_groups(cfg: dict[str, Any], model: dict[str, Any]) -> list[dict[str, str]]:
    """A run without ``meta.groups`` is in no comparison group; its family is guessed from s_max so it
    still counts for the frontier fits (a deeper baseline cannot be told apart: it becomes 'mdm')."""
    s_max = int(_num(model.get("s_max", 1)) or 1)
    looped = s_max > 1 and int(_num(model.get("n_mid_layers", 0)) or 0) > 0
    return [{"group": "", "role": "looped" if looped else "baseline_same", "inferred": True}]


def read_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of one run (one per group membership x eval point) and a status record."""
    status: dict[str, Any] = {"dir": run_dir.name, "done": (run_dir / records.DONE).exists(),
                              "failed": (run_dir / records.FAILED).exists(), "bad_lines": 0, "n_evals": 0}
    try:
        cfg = records.read_config(run_dir)
    except yaml.YAMLError as e:
        status["problem"] = f"unreadable {records.CONFIG}: {e.__class__.__name__}"
        return [], status
    if cfg is None:
        status["problem"] = f"no {records.CONFIG}"
        return [], status
    meta = cfg.get("meta") or {}
    model = cfg.get("model") or {}
    data = cfg.get("data") or {}
    batch = cfg.get("batch") or {}
    budget = cfg.get("budget") or {}
    params = meta.get("params") or {}
    status["run"] = str(meta.get("hash") or run_dir.name)
    if not params:
        status["problem_params"] = f"no meta.params in {records.CONFIG} (parameter counts are NaN)"
    system = records.read_json(run_dir / records.SYSTEM) or {}
    log = records.read_evals(run_dir)
    evals, status["bad_lines"] = log.rows, log.bad_lines
    status["n_evals"] = len(evals)
    if not evals:
        # a fine-tuned run has no held-out token set: its scores are task evaluations (load_task_evals)
        status["problem"] = FINE_TUNED if cfg.get("kind") == "sft" else "no evaluations"
        return [], status
    groups = meta.get("groups") or _infer_groups(cfg, model)
    status["groups_inferred"] = not meta.get("groups")
    n_layers = sum(int(_num(model.get(k, 0)) or 0) for k in ("n_head_layers", "n_mid_layers", "n_tail_layers"))
    base = {
        "study": meta.get("study"), "run": status["run"], "slug": meta.get("slug") or run_dir.name,
        "d_model": model.get("d_model"), "n_heads": model.get("n_heads"),
        "n_head_layers": model.get("n_head_layers"), "n_mid_layers": model.get("n_mid_layers"),
        "n_tail_layers": model.get("n_tail_layers"), "s_max": model.get("s_max"), "n_layers": n_layers,
        "params_embedding": _num(params.get("embedding")), "params_nonembedding": _num(params.get("nonembedding")),
        "params_total": _num(params.get("total")), "params_effective": _num(params.get("effective")),
        "seq_len": data.get("seq_len"), "global_batch": batch.get("global_batch"),
        "budget_flops": _num(budget.get("flops")), "budget_convention": budget.get("convention"),
        "lr_schedule": (cfg.get("optim") or {}).get("schedule"),
        "done": status["done"], "seed": cfg.get("seed"), "eval_set": eval_set_key(cfg),
        "world_size": system.get("world_size"), "grad_accum": system.get("grad_accum"),
        "variant": variant_label(model), **per_token_flops(cfg),
    }
    for k, v in (meta.get("axes") or {}).items():
        base[f"axis_{k}"] = _axis_value(v)
    rows = []
    for g in groups:
        role = g.get("role")
        gb = dict(base, group=g.get("group", ""), role=role, family=ROLE_TO_FAMILY.get(role, role))
        for ev in evals:
            r = dict(gb)
            for k in EVAL_FIELDS:
                r[k] = ev.get(k)
            rows.append(r)
    return rows, status


def empty_table() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in BASE_COLUMNS})
    return _coerce(df)


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes so that parquet files from partial and full sweeps have one schema."""
    for c in FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in INT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in ("is_final", "done"):
        df[c] = df[c].map(lambda v: bool(v) if v is not None and not (isinstance(v, float) and math.isnan(v))
                          else False).astype(bool)
    for c in ("study", "run", "slug", "group", "role", "family", "budget_convention", "lr_schedule", "eval_set", "variant"):
        df[c] = df[c].astype("object").where(df[c].notna(), None)
    df["nll_per_seq"] = pd.Series([as_seq_array(v) for v in df["nll_per_seq"]], index=df.index, dtype="object")
    return df


def collect(study_dir: str | Path, write: bool = True) -> pd.DataFrame:
    """Build the tidy table from ``study_dir/runs/*``; write ``runs.parquet`` atomically when ``write``.

    ``df.attrs['collect']`` summarises what was read and what was skipped (for "what is missing")."""
    study_dir = Path(study_dir)
    rows: list[dict[str, Any]] = []
    statuses = []
    for run_dir in records.list_run_dirs(study_dir):
        r, st = read_run(run_dir)
        rows.extend(r)
        statuses.append(st)
    df = pd.DataFrame(rows) if rows else empty_table()
    for c in BASE_COLUMNS:
        if c not in df.columns:
            df[c] = None
    axis_cols = sorted(c for c in df.columns if c.startswith("axis_"))
    df = _coerce(df[BASE_COLUMNS[:6] + axis_cols + BASE_COLUMNS[6:]].copy())
    df = df.sort_values(["run", "group", "step", "eval_loops", "exit_threshold"], na_position="first",
                        kind="stable").reset_index(drop=True)
    summary = {
        "study_dir": study_dir.name,  # a name, not a path: a committed study must not depend on where it ran
        "n_run_dirs": len(statuses),
        "n_runs_with_evals": sum(1 for s in statuses if s["n_evals"] > 0),
        "n_done": sum(1 for s in statuses if s["done"]),
        "skipped_no_evals": [s["dir"] for s in statuses if s.get("problem") == "no evaluations"],
        "fine_tuned": [s["dir"] for s in statuses if s.get("problem") == FINE_TUNED],
        "skipped_other": {s["dir"]: s["problem"] for s in statuses
                          if s.get("problem") and s.get("problem") not in ("no evaluations", FINE_TUNED)},
        "partial": [s["dir"] for s in statuses if s["n_evals"] > 0 and not s["done"] and not s["failed"]],
        "failed": [s["dir"] for s in statuses if s["failed"]],
        "bad_lines": {s["dir"]: s["bad_lines"] for s in statuses if s["bad_lines"]},
        "no_params": [s["dir"] for s in statuses if s.get("problem_params") and s["n_evals"] > 0],
        "groups_inferred": [s["dir"] for s in statuses if s.get("groups_inferred")],
    }
    df.attrs["collect"] = summary
    if write:
        write_table(df, study_dir)
    return df


def write_table(df: pd.DataFrame, study_dir: Path) -> None:
    """``runs.parquet``, atomically."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    records.atomic_write_bytes(study_dir / records.RUNS_TABLE, buf.getvalue())


def newest_input_mtime(study_dir: str | Path) -> float:
    """Latest modification time among the files ``collect`` reads (to decide if runs.parquet is stale)."""
    t = 0.0
    runs_dir = Path(study_dir) / records.RUNS_DIR
    if not runs_dir.is_dir():
        return t
    t = runs_dir.stat().st_mtime
    for run_dir in records.list_run_dirs(study_dir):
        t = max(t, run_dir.stat().st_mtime)
        for name in (records.CONFIG, records.EVALS, records.DONE, records.FAILED):
            p = run_dir / name
            try:
                t = max(t, p.stat().st_mtime)
            except FileNotFoundError:
                pass
    return t


def load_or_collect(study_dir: str | Path, force: bool = False) -> pd.DataFrame:
    """Read runs.parquet unless it is missing, older than any input, or has an old schema."""
    study_dir = Path(study_dir)
    pq = study_dir / records.RUNS_TABLE
    if not force and pq.exists() and pq.stat().st_mtime >= newest_input_mtime(study_dir):
        try:
            df = pd.read_parquet(pq)
            if set(BASE_COLUMNS) <= set(df.columns) and "collect" in df.attrs:
                return df
        except Exception:  # unreadable file: rebuild it
            pass
    return collect(study_dir, write=True)


# --------------------------------------------------------------------------------- task evals
TASK_EVAL_FIELDS = ("task", "metric", "loops", "per_sample", "score")


def load_task_evals(study_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Task evaluations from ``runs/*/evals/*.json`` (contract in ``analysis.claims.TASK_EVAL_CONTRACT``).

    Returns one row per file with the run's group memberships joined in, and a list of problems
    (files skipped and why) for the report."""
    study_dir = Path(study_dir)
    rows, problems = [], []
    for run_dir in records.list_run_dirs(study_dir):
        ev_dir = run_dir / records.EVALS_DIR
        if not ev_dir.is_dir():
            continue
        files = sorted(f for f in ev_dir.glob("*.json") if records.is_task_eval_file(f))
        if not files:
            continue
        try:
            cfg = records.read_config(run_dir) or {}
        except (OSError, yaml.YAMLError):
            problems.append(f"{run_dir.name}: task evals present but {records.CONFIG} unreadable")
            continue
        meta = cfg.get("meta") or {}
        model = cfg.get("model") or {}
        groups = meta.get("groups") or _infer_groups(cfg, model)
        params = meta.get("params") or {}
        for fp in files:
            try:
                obj = json.loads(fp.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{run_dir.name}/evals/{fp.name}: unreadable ({e.__class__.__name__})")
                continue
            missing = [k for k in ("task", "per_sample") if k not in obj]
            if missing:
                problems.append(f"{run_dir.name}/evals/{fp.name}: missing {', '.join(missing)}")
                continue
            ps = np.asarray(obj.get("per_sample") or [], dtype=float)
            score = obj.get("score")
            for g in groups:
                rows.append({
                    "run": str(meta.get("hash") or run_dir.name), "slug": meta.get("slug") or run_dir.name,
                    "group": g.get("group", ""), "role": g.get("role"),
                    "family": ROLE_TO_FAMILY.get(g.get("role"), g.get("role")),
                    "s_max": model.get("s_max"), "params_total": _num(params.get("total")),
                    "budget_flops": _num((cfg.get("budget") or {}).get("flops")), "seed": cfg.get("seed"),
                    "task": str(obj["task"]), "metric": str(obj.get("metric", "acc")),
                    "loops": obj.get("loops"), "exit_threshold": obj.get("exit_threshold"),
                    "step": obj.get("step"), "score": _num(score) if score is not None else float(ps.mean())
                    if ps.size else math.nan, "n": int(ps.size), "per_sample": ps,
                    "sample_ids": obj.get("sample_ids"), "file": f"{run_dir.name}/evals/{fp.name}",
                    "cell_accuracy": _num(obj.get("cell_accuracy")),  # Sudoku: share of cells right
                })
    return pd.DataFrame(rows), problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.collect", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("study_dir")
    ap.add_argument("--no-write", action="store_true", help="print the summary only")
    a = ap.parse_args(argv)
    sd = Path(a.study_dir)
    why = None if a.no_write else records.unwritable(sd / records.RUNS_TABLE, "file")
    if not (sd / records.RUNS_DIR).is_dir() or why:
        print(f"error: {sd}/runs does not exist (is this a study directory?)" if not (sd / records.RUNS_DIR).is_dir()
              else f"error: study_dir: cannot write {records.RUNS_TABLE} into {sd}: {why}; make it writable, or pass "
              f"--no-write", file=sys.stderr)
        return 2
    df = collect(sd, write=False)
    if df.empty:
        print(f"error: {sd} has no run with an evaluation yet ({records.RUNS_DIR}/*/{records.EVALS}); nothing to "
              f"collect", file=sys.stderr)
        return 2
    s = df.attrs["collect"]
    print(f"{len(df)} rows from {s['n_runs_with_evals']} runs with evals ({s['n_run_dirs']} run dirs, "
          f"{s['n_done']} done, {len(s['partial'])} partial, {len(s['failed'])} failed)")
    for n, what in ((len(s["skipped_no_evals"]), "run(s) without evaluations skipped"),
                    (sum(s["bad_lines"].values()), f"unreadable {records.EVALS} line(s) skipped"),
                    (len(s["no_params"]), "run(s) without meta.params: parameter counts are NaN")):
        if n:
            print(f"warning: {n} {what}")
    if not a.no_write:
        write_table(df, sd)
        print(f"wrote {sd / records.RUNS_TABLE}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
