"""The harness under attack: divergence, damaged checkpoints, kill -9, concurrent sweeps, bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import records
from model.config import ConfigError
from study import cli
from study.plan import config as C
from study.train import Diverged, train
from test_train import corpus, tiny_cfg  # noqa: F401  (the module-scoped corpus fixture)

ROOT = Path(__file__).resolve().parents[1]
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in DIST_VARS} | {"OMP_NUM_THREADS": "1"}


def _weights(run: Path) -> dict:
    return load_file(str(records.latest_checkpoint(run) / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _unique(rows: list[dict], key) -> bool:
    keys = [key(r) for r in rows]
    return len(keys) == len(set(keys))


# ----------------------------------------------------------------------------------------- divergence
def test_nan_from_the_last_update_fails_the_run(tmp_path, corpus):
    out = tmp_path / "blowup"
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"optim.lr": 1e6, "optim.warmup_steps": 0, "budget.steps": 1,
                                                  "optim.grad_clip": 0})
    with pytest.raises(Diverged, match="step 1"):
        train(cfg, out, quiet=True)
    assert not (out / records.DONE).exists()
    failed = records.read_json(out / records.FAILED)
    assert failed and "step 1" in failed["reason"]
    assert records.run_status(out, queue=None).state == "failed"


def test_config_rejects_infinite_lr_and_a_single_noise_draw(tmp_path, corpus):
    with pytest.raises(ConfigError, match="^optim.lr: .*finite"):
        tiny_cfg(corpus, tmp_path, **{"optim.lr": ".inf"})
    with pytest.raises(ConfigError, match="^eval.n_draws: .*>= 2"):
        tiny_cfg(corpus, tmp_path, **{"eval.n_draws": 1})
    with pytest.raises(ConfigError, match="^data.seq_len: "):
        tiny_cfg(corpus, tmp_path, **{"data.seq_len": 0})


def test_finished_run_shows_one_marker(tmp_path, corpus):
    out = tmp_path / "run"
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 6})
    assert train(cfg, out, stop=lambda: True, quiet=True)["status"] == "preempted"
    assert (out / records.PREEMPTED).exists()
    train(cfg, out, quiet=True)
    markers = sorted(p.name for p in out.iterdir() if p.name in records.rundir.MARKERS)
    assert markers == [records.DONE]
    assert records.last_preemption(out) is not None  # the preemption is remembered inside DONE.json


# ---------------------------------------------------------------------------------------- checkpoints
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, corpus, capsys):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 30, "system.ckpt_every": 10, "system.keep_last": 3})
    ref = tmp_path / "ref"
    train(cfg, ref, quiet=True)
    out = tmp_path / "cut"
    n = {"calls": 0}

    def stop():
        n["calls"] += 1
        return n["calls"] > 25

    assert train(cfg, out, stop=stop, quiet=True)["step"] == 25
    newest = records.latest_checkpoint(out)
    assert newest.name == "step_00000025"
    for f in sorted(p for p in newest.rglob("*") if p.is_file() and p.suffix in (".pt", ".safetensors")):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated, as by a full disk or a killed copy
    assert records.verify_checkpoint(newest) is not None
    summary = train(cfg, out)
    said = capsys.readouterr().out
    assert "step_00000025 is damaged" in said and "resuming from step 20" in said
    assert summary["status"] == "done" and _same(_weights(ref), _weights(out))
    steps = [m["step"] for m in records.read_jsonl(out / records.METRICS)]
    assert steps == [m["step"] for m in records.read_jsonl(ref / records.METRICS)]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 12, "system.ckpt_every": 5})
    out = tmp_path / "run"
    train(cfg, out, stop=lambda: records.has_checkpoint(out), quiet=True)
    for ck in records.complete_checkpoints(out):
        (ck / "model.safetensors").write_bytes(b"")
    with pytest.raises(Exception, match="every checkpoint .* is damaged.*delete"):
        train(cfg, out, quiet=True)


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_every_step_once(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 60, "system.log_every": 1, "system.ckpt_every": 7,
                                                  "eval.points": 6})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(C.dump_yaml(cfg))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "study.run", str(cfg_path), "--out", str(out), "--quiet"]

    ref = tmp_path / "ref"
    assert subprocess.run(cmd(ref), cwd=ROOT, env=_env(), capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(cmd(out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = len(records.read_jsonl(out / records.METRICS))
        target = start + rng.randint(1, 9)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(records.read_jsonl(out / records.METRICS)) < target:
            time.sleep(rng.uniform(0.01, 0.1))
        if proc.poll() is not None:
            break  # it finished before the kill: fine, the checks below still hold
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    assert subprocess.run(cmd(out), cwd=ROOT, env=_env(), capture_output=True, timeout=300).returncode == 0
    assert kills >= 3
    metrics = records.read_jsonl(out / records.METRICS)
    assert [m["step"] for m in metrics] == list(range(1, 61))
    evals = records.read_jsonl(out / records.EVALS)
    assert _unique(evals, lambda r: (r["step"], r["eval_loops"], r["exit_threshold"]))
    assert sorted({e["step"] for e in evals}) == sorted({e["step"] for e in records.read_jsonl(ref / records.EVALS)})
    assert _same(_weights(ref), _weights(out))


# ---------------------------------------------------------------------------------------- concurrency
def test_a_run_held_by_a_live_process_is_refused_at_once(tmp_path, corpus):
    out = tmp_path / "run"
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 4})
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, records; records.RunLock(sys.argv[1]).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(records.Locked, match=f"pid {holder.pid}"):
            train(cfg, out, quiet=True)
        assert time.time() - t0 < 10
    finally:
        holder.kill()
        holder.wait()
    assert train(cfg, out, quiet=True)["status"] == "done"  # the lock went with its process


@pytest.mark.slow
def test_two_local_sweeps_started_together_train_each_run_once(tmp_path, corpus):
    base = yaml.safe_load(C.dump_yaml(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 15})))
    base["data"]["cache_dir"] = str(tmp_path / "cache")
    spec = {"study": "twice", "base": {k: base[k] for k in ("model", "data", "optim", "batch", "budget", "eval", "system")},
            "axes": {"model.d_model": [32, 48, 64]}, "resources": {"executor": "local"}}
    p = tmp_path / "twice.yaml"
    p.write_text(yaml.safe_dump(spec))
    train(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 1}), tmp_path / "warm", quiet=True)  # token cache
    cmd = [sys.executable, "-m", "study.sweep", str(p), "--out", str(tmp_path / "study"), "--no-report", "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [pr.communicate(timeout=600)[0] for pr in procs]
    assert all(pr.returncode == 0 for pr in procs), outs
    runs = records.list_run_dirs(tmp_path / "study")
    assert len(runs) == 3 and all((rd / records.DONE).is_file() for rd in runs)
    for rd in runs:
        steps = [m["step"] for m in records.read_jsonl(rd / records.METRICS)]
        assert steps == sorted(set(steps)) and steps[-1] == 15
    trained = sum(o.count("    done in") for o in outs)
    assert trained == 3, outs  # each run trained by exactly one of the two sweeps


# ----------------------------------------------------------------------------------------- bad input
def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=_env() | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text, where", [
    ("model:\n  n_heads: [4\n", "bad.yaml:3:1: invalid YAML"),
    ("model: !!python/object/apply:os.system ['echo pwned']\n", "bad.yaml:1:"),
    ("", "bad.yaml: the file is empty"),
])
def test_bad_config_files_are_one_line_errors_and_write_nothing(tmp_path, text, where):
    (tmp_path / "bad.yaml").write_text(text)
    r = _run_cli(["study.run", "bad.yaml"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "pwned" not in r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and where in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_bad_override_and_spec_yaml_are_one_line_errors(tmp_path):
    r = _run_cli(["study.run", "model.n_heads=[4"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: override 'model.n_heads=[4'") and "Traceback" not in r.stderr
    (tmp_path / "s.yaml").write_text("study: s\nbase: {model: {d_model: 32}\n")
    r = _run_cli(["study.sweep", "s.yaml", "--dry-run"], tmp_path)
    assert r.returncode == 2 and "s.yaml:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _run_cli(["study.sweep", "nonsense"], tmp_path)
    assert r.returncode == 2 and "neither a verb" in r.stderr


def _spec(tmp_path: Path, resources: dict) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"study": "r", "base": {"model": {"d_model": 32, "n_heads": 2}, "budget": {"steps": 2}},
                                 "resources": resources}))
    return p


@pytest.mark.parametrize("resources, field", [({"gpus_per_node": -1}, "resources.gpus_per_node"),
                                              ({"gpus": 1}, "resources.gpus")])
def test_dry_run_validates_what_a_submission_validates(tmp_path, capsys, resources, field):
    assert cli.sweep_main([str(_spec(tmp_path, resources)), "--dry-run", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {field}: ")
    assert not (tmp_path / "s").exists()


def test_slurm_executor_without_sbatch_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("sbatch", "srun") else real(name, *a, **k))
    assert cli.sweep_main([str(_spec(tmp_path, {"executor": "slurm"})), "--out", str(tmp_path / "s")]) == 2
    assert "sbatch" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_fit_rejects_bad_rows_with_their_numbers(tmp_path, capsys):
    from analysis.fit import main as fit_main

    csv = tmp_path / "p.csv"
    csv.write_text("C,loss\n1e10,3.0\n1e11,oops\n-1e12,2.5\n1e13,0\n1e14,2.1\n1e15,2.0\n")
    assert fit_main([str(csv), "--law", "frontier", "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "loss is not a number: rows 2" in err and "C is missing, infinite or not > 0: rows 3" in err
    assert "rows 2, 4" in err or "rows 4" in err
    fit_main([str(csv), "--law", "frontier", "--bootstrap", "10", "--drop-bad-rows"])
    assert "dropped 3 of 6 rows" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ many ranks
@pytest.mark.slow
def test_two_ranks_every_zero_stage_and_precision_resume_bit_exactly(tmp_path, corpus):
    """2 gloo ranks x ZeRO {0, 2, 3} x {fp32, bf16}: train, go back to a mid-run checkpoint, resume; the final
    full weights (gathered under ZeRO-3) and EMA equal the uninterrupted run's. Then a 1-rank start on a
    2-rank checkpoint is refused (the batch split, and so the sums, would differ)."""
    train(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 1}), tmp_path / "warm", quiet=True)  # token cache
    out = tmp_path / "cases.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "multirank_worker.py"), str(out), corpus, str(tmp_path / "cache"), str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=ROOT, env=_env() | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cases = records.read_jsonl(out)
    assert {(c["zero"], c["precision"]) for c in cases} == {(z, p) for z in (0, 2, 3) for p in ("fp32", "bf16")}
    for c in cases:
        assert c["identical"] and c["status"] == "done" and c["world"] == 2, c
        assert c["steps"] == [1, 2, 3, 4, 5, 6] and all(v == v for v in c["final_nll"]), c
    assert len({c["n_params"] for c in cases}) == 1  # ZeRO-3's safetensors hold the full weights too
    from analysis.collect import read_run

    rows, _ = read_run(tmp_path / "w" / "z3-bf16")
    assert rows and {(r["world_size"], r["grad_accum"]) for r in rows} == {(2, 1)}  # in the tidy table
    at3 = tmp_path / "w" / "z2-fp32-at3"
    raw = records.read_config(at3)
    cfg = C.from_dict({k: v for k, v in raw.items() if k != "meta"})
    with pytest.raises(Exception, match="world size 2 .* this start has 1"):
        train(cfg, at3, quiet=True)


# ------------------------------------------------------------------------------------ a newcomer's path
@pytest.mark.slow
def test_ctrl_c_in_a_local_sweep_checkpoints_and_the_rerun_finishes_identically(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 300, "system.log_every": 1, "system.ckpt_every": 1000})
    base = yaml.safe_load(C.dump_yaml(cfg))
    spec = {"study": "ctrlc", "base": {k: base[k] for k in ("model", "data", "optim", "batch", "budget", "eval", "system")},
            "resources": {"executor": "local"}}
    p = tmp_path / "ctrlc.yaml"
    p.write_text(yaml.safe_dump(spec))
    ref = tmp_path / "ref"
    train(cfg, ref, quiet=True)
    cmd = [sys.executable, "-m", "study.sweep", str(p), "--out", str(tmp_path / "study"), "--no-report", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = records.run_dir(tmp_path / "study", "x", cfg.hash).parent  # runs/
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        rds = records.list_run_dirs(tmp_path / "study")
        if rds and len(records.read_jsonl(rds[0] / records.METRICS)) >= 5:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, out
    assert "KeyboardInterrupt" not in out and "run the same command again" in out
    (rd,) = records.list_run_dirs(tmp_path / "study")
    assert rd.parent == run and records.has_checkpoint(rd) and 5 <= records.ckpt_step(records.latest_checkpoint(rd)) < 300
    assert records.run_status(rd, queue=None).state == "preempted"
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _same(_weights(ref), _weights(rd))
    assert [m["step"] for m in records.read_jsonl(rd / records.METRICS)] == list(range(1, 301))


def test_report_on_missing_or_empty_study_exits_non_zero(tmp_path, capsys):
    from analysis.report import main as report_main

    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report.md").exists() and not (tmp_path / "empty" / "fits.json").exists()
    spec = _spec(tmp_path, {"executor": "local"})
    assert cli.sweep_main(["report", str(spec), "--out", str(tmp_path / "never")]) == 2
    out = capsys.readouterr()
    assert "error:" in out.err and "report:" not in out.out
