"""collect() on a hand-written run-directory tree: right rows, right flags, partial sweeps tolerated."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.collect import BASE_COLUMNS, collect, load_or_collect, load_task_evals

ROOT = Path(__file__).resolve().parents[1]


def write_run(study: Path, name: str, *, groups, s_max=1, evals=(), done=True, failed=False, params=True,
              axes=None, torn_line=False, tasks=(), eval_cfg=None, optim=None):
    d = study / "runs" / name
    d.mkdir(parents=True)
    meta = {"study": "fake", "slug": name.rsplit("-", 1)[0], "hash": f"h_{name}", "groups": groups,
            "axes": axes or {"size": "s"}}
    if params:
        meta["params"] = {"embedding": 1000, "nonembedding": 5000, "total": 6000, "effective": 6000 + 1000 * s_max}
    cfg = {"meta": meta,
           "model": {"d_model": 32, "n_heads": 2, "n_head_layers": 1, "n_mid_layers": 2, "n_tail_layers": 1,
                     "s_max": s_max, "loop_dist": "uniform", "vocab_size": 100},
           "data": {"seq_len": 64}, "batch": {"global_batch": 8},
           "budget": {"flops": 1e12, "convention": "6N_nonembed"}, "seed": 3}
    if eval_cfg is not None:
        cfg["eval"] = eval_cfg
    if optim is not None:
        cfg["optim"] = optim
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if evals:
        lines = [json.dumps(e) for e in evals]
        text = "\n".join(lines) + "\n"
        if torn_line:
            text += '{"step": 99, "nll": 2.'  # a run killed mid-write
        (d / "evals.jsonl").write_text(text)
    if done:
        (d / "DONE.json").write_text("{}")
    if failed:
        (d / "FAILED.json").write_text('{"error": "oom"}')
    if tasks:
        (d / "evals").mkdir()
        for i, t in enumerate(tasks):
            (d / "evals" / f"gsm8k-{i}.json").write_text(json.dumps(t))
    return d


def ev(step, loops=1, nll=3.0, final=False, thr=None):
    return {"step": step, "tokens": step * 512, "flops_6N_nonembed": step * 1e9, "flops_6N_total": step * 1.2e9,
            "flops_exact": step * 1.3e9, "eval_loops": loops, "exit_threshold": thr, "nll": nll, "nll_bits": nll / 0.69,
            "ppl": 20.0, "nll_se": 0.01, "n_draws": 4, "mean_loops": float(loops), "is_final": final}


@pytest.fixture()
def study(tmp_path):
    s = tmp_path / "study"
    # a baseline shared by two comparison groups (two looped configs with different s_max)
    write_run(s, "base-aaa", groups=[{"group": "g4", "role": "baseline_same"}, {"group": "g8", "role": "baseline_same"}],
              evals=[ev(10), ev(20, final=True)])
    write_run(s, "loop4-bbb", groups=[{"group": "g4", "role": "looped"}], s_max=4,
              evals=[ev(10, 1), ev(10, 4), ev(20, 1, final=True), ev(20, 4, final=True), ev(20, 4, final=True, thr=0.1)],
              torn_line=True, axes={"size": "s", "s_max": 4, "grid": [1, 2]})
    # partial: still running, no DONE, no final eval yet
    write_run(s, "loop8-ccc", groups=[{"group": "g8", "role": "looped"}], s_max=8, evals=[ev(10, 8)], done=False)
    # failed after one eval
    write_run(s, "deep-ddd", groups=[{"group": "g8", "role": "baseline_deeper"}], evals=[ev(10)], done=False,
              failed=True, params=False)
    # configured but never evaluated
    write_run(s, "loop12-eee", groups=[{"group": "g12", "role": "looped"}], s_max=12, done=False)
    # task evals
    write_run(s, "loopt-fff", groups=[{"group": "g4", "role": "looped"}], s_max=4, evals=[ev(20, 4, final=True)],
              tasks=[{"task": "gsm8k", "metric": "exact_match", "loops": 4, "per_sample": [1, 0, 1, 1], "score": 0.75},
                     {"metric": "acc", "per_sample": [1]}])
    return s


def test_rows_columns_and_flags(study):
    df = collect(study)
    axis_cols = [c for c in df.columns if c.startswith("axis_")]
    assert [c for c in df.columns if not c.startswith("axis_")] == BASE_COLUMNS
    assert sorted(axis_cols) == ["axis_grid", "axis_s_max", "axis_size"]
    # base: 2 evals x 2 groups; loop4: 5 evals (torn line skipped); loop8: 1; deep: 1; loopt: 1; loop12: none
    assert len(df) == 4 + 5 + 1 + 1 + 1
    base = df[df["run"] == "h_base-aaa"]
    assert set(base["group"]) == {"g4", "g8"} and set(base["family"]) == {"mdm"}
    assert base["params_total"].iloc[0] == 6000 and base["n_layers"].iloc[0] == 4
    loop = df[df["run"] == "h_loop4-bbb"]
    assert set(loop["family"]) == {"loopmdm"} and loop["s_max"].iloc[0] == 4
    assert loop["exit_threshold"].notna().sum() == 1 and loop["is_final"].sum() == 3
    assert loop["axis_grid"].iloc[0] == "[1, 2]"
    part = df[df["run"] == "h_loop8-ccc"]
    assert not part["done"].any() and not part["is_final"].any()
    deep = df[df["run"] == "h_deep-ddd"]
    assert deep["family"].iloc[0] == "mdm_deeper" and deep["params_total"].isna().all()
    assert df.loc[df["run"] == "h_base-aaa", "done"].all()
    assert df["seed"].iloc[0] == 3 and df["budget_flops"].iloc[0] == 1e12
    s = df.attrs["collect"]
    assert s["n_run_dirs"] == 6 and s["skipped_no_evals"] == ["loop12-eee"]
    assert s["partial"] == ["loop8-ccc"] and s["failed"] == ["deep-ddd"]
    assert s["bad_lines"] == {"loop4-bbb": 1} and s["no_params"] == ["deep-ddd"]


def test_parquet_written_atomically_and_reused(study):
    collect(study)
    pq = study / "runs.parquet"
    assert pq.exists()
    assert not [p for p in study.iterdir() if p.name.endswith(".tmp")]
    back = pd.read_parquet(pq)
    assert len(back) == 12 and back.attrs["collect"]["failed"] == ["deep-ddd"]
    t = pq.stat().st_mtime
    again = load_or_collect(study)
    assert pq.stat().st_mtime == t and len(again) == 12  # fresh: not rebuilt
    # a new eval line makes it stale
    f = study / "runs" / "loop8-ccc" / "evals.jsonl"
    f.write_text(f.read_text() + json.dumps(ev(20, 8, final=True)) + "\n")
    os.utime(f, (t + 10, t + 10))
    assert len(load_or_collect(study)) == 13


def test_per_sequence_nlls_and_eval_set(tmp_path):
    s = tmp_path / "s"
    ev_cfg = {"n_seqs": 3, "n_draws": 2, "seed": 1234, "batch_size": 16, "points": 4}

    def evp(step, seqs, final=False):
        e = ev(step, 1, nll=float(sum(seqs) / len(seqs)), final=final)
        e.update(nll_per_seq=seqs, nll_data_se=0.2, n_seqs=len(seqs))
        return e

    write_run(s, "a-1", groups=[{"group": "g", "role": "baseline_same"}], eval_cfg=ev_cfg,
              optim={"lr": 3e-3, "schedule": "cosine"},
              evals=[evp(10, [3.0, 2.0, 4.0]), evp(20, [2.5, 1.5, 3.5], final=True)])
    # same eval set, only a non-semantic eval knob differs
    write_run(s, "b-2", groups=[{"group": "g", "role": "baseline_deeper"}], eval_cfg={**ev_cfg, "batch_size": 4},
              evals=[evp(20, [2.4, 1.6, 3.6], final=True)])
    # another eval seed: other masking noise, must not be paired with the two above
    write_run(s, "c-3", groups=[{"group": "g", "role": "looped"}], s_max=4, eval_cfg={**ev_cfg, "seed": 7},
              evals=[evp(20, [2.0, 1.0, 3.0], final=True)])
    # an older run: no per-sequence NLLs, no eval section
    write_run(s, "d-4", groups=[{"group": "h", "role": "baseline_same"}], evals=[ev(20, final=True)])
    df = collect(s)
    assert [c for c in df.columns if not c.startswith("axis_")] == BASE_COLUMNS
    by = {r: g for r, g in df.groupby("run")}
    a = by["h_a-1"].sort_values("step")
    assert list(a["nll_per_seq"].iloc[1]) == [2.5, 1.5, 3.5] and a["n_seqs"].iloc[1] == 3
    assert a["nll_data_se"].iloc[1] == 0.2
    assert by["h_a-1"]["eval_set"].iloc[0] == by["h_b-2"]["eval_set"].iloc[0] is not None
    assert by["h_c-3"]["eval_set"].iloc[0] != by["h_a-1"]["eval_set"].iloc[0]
    assert by["h_d-4"]["nll_per_seq"].iloc[0] is None and by["h_d-4"]["eval_set"].iloc[0] is None
    # optim.schedule -> lr_schedule; None when the config does not say
    assert set(by["h_a-1"]["lr_schedule"]) == {"cosine"} and by["h_d-4"]["lr_schedule"].iloc[0] is None
    # the list column survives the parquet round trip
    back = load_or_collect(s)
    got = back.loc[(back["run"] == "h_a-1") & (back["step"] == 20), "nll_per_seq"].iloc[0]
    assert np.allclose(got, [2.5, 1.5, 3.5])
    assert back.loc[back["run"] == "h_d-4", "nll_per_seq"].iloc[0] is None


def test_empty_and_missing(tmp_path):
    (tmp_path / "s" / "runs").mkdir(parents=True)
    df = collect(tmp_path / "s")
    assert len(df) == 0 and [c for c in df.columns] == BASE_COLUMNS


def test_task_evals_contract(study):
    t, problems = load_task_evals(study)
    assert len(t) == 1 and t["task"].iloc[0] == "gsm8k" and t["loops"].iloc[0] == 4
    assert list(t["per_sample"].iloc[0]) == [1, 0, 1, 1] and t["family"].iloc[0] == "loopmdm"
    assert len(problems) == 1 and "missing task" in problems[0]


def test_cli(study):
    r = subprocess.run([sys.executable, "-m", "analysis.collect", str(study)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "12 rows" in r.stdout and "without evaluations" in r.stdout
    r = subprocess.run([sys.executable, "-m", "analysis.collect", str(study / "nope")], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
