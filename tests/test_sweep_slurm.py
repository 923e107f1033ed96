"""The user's path against a real SLURM: `python -m study.sweep SPEC` sends a job array, one run is requeued
mid-training and still ends bit-identical to an uninterrupted twin, `status` tells the truth, re-submitting
submits nothing, `collect` yields every run."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import slurm_unusable, wait_for
import records
from study import cli
from study.plan import spec as sweep
from records import latest_checkpoint
from study.train import train

SLURM_SKIP = slurm_unusable()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SLURM_SKIP is not None, reason=str(SLURM_SKIP))]

SPEC = {
    "study": "slurm-it",
    "base": {
        "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 3},
        "data": {"corpus": "gsm8k-synth:easy", "tokenizer": "byte", "seq_len": 32},
        "batch": {"global_batch": 4},
        "eval": {"points": 2, "n_seqs": 4, "n_draws": 2},
        "system": {"log_every": 1, "ckpt_every": 1000, "num_threads": 1},
    },
    "axes": {"budget.steps": [150, 160]},
    "baselines": ["same_size"],
    "resources": {"executor": "slurm", "time_min": 15, "cpus_per_task": 1, "mem_gb": 2, "signal_delay_s": 60},
}


def _states(study: Path) -> dict[str, str]:
    return {Path(s.run_dir).name: s.state for s in records.scan_study(study)}


def _last_step(run_dir: Path) -> int:
    rows = records.tail_jsonl(run_dir / "metrics.jsonl", 1) if (run_dir / "metrics.jsonl").exists() else []
    return rows[-1]["step"] if rows else 0


@pytest.mark.slow
def test_sweep_on_slurm_with_a_requeue(tmp_path, capsys, monkeypatch):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    study = tmp_path / "study"
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOOPMDM_CACHE", str(cache))  # jobs inherit the submitting environment
    # ...including what a process that ran torch.distributed itself leaves behind: a MASTER_PORT that is
    # taken. Jobs must set up their own distributed environment, not reuse the submitter's.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(busy.getsockname()[1]), "RANK": "0",
                       "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    runs = sweep.expand(sweep.load_spec(spec_path))
    assert len(runs) == 4

    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted ") == 4
    jobs = records.known_jobs(study)
    assert len(jobs) == 4 and len({j.job_id.split("_")[0] for j in jobs.values()}) == 1  # one job array
    # status right after submission: nothing is done, every run is queued or running
    assert set(_states(study).values()) <= {"running", "pending"}

    victim = next(r for r in runs if r.role == "looped" and r.cfg.steps == 160)
    vdir = victim.run_dir(study)
    wait_for(lambda: _last_step(vdir) >= 10, 240, "the victim run to pass step 10", every=0.3)
    job_id = jobs[victim.hash[:12]].job_id
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60, capture_output=True)
    wait_for(lambda: (vdir / records.PREEMPTED).exists(), 120, "the victim to checkpoint and stop", every=0.3)
    assert _states(study)[vdir.name] in ("running", "preempted")  # requeued: in the queue again

    capsys.readouterr()
    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report"]) == 0  # re-submitting mid-flight
    assert "0 to submit" in capsys.readouterr().out

    wait_for(lambda: set(_states(study).values()) == {"done"}, 420, "every run to finish", every=1.0)
    assert cli.sweep_main(["status", str(spec_path), "--out", str(study)]) == 0
    assert "4 done" in capsys.readouterr().out
    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report"]) == 0
    assert "0 to submit" in capsys.readouterr().out

    # the requeued run: no step done twice or skipped, and the same final weights as an uninterrupted twin
    pre = records.last_preemption(vdir)
    assert 10 <= pre["step"] < 160
    steps = [m["step"] for m in records.read_jsonl(vdir / "metrics.jsonl")]
    assert steps == list(range(1, 161))
    busy.close()
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key)
    twin = tmp_path / "twin"
    cfg = victim.final_config("slurm-it")
    train(cfg, twin, quiet=True)
    a = load_file(str(latest_checkpoint(vdir) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(twin) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    assert cli.sweep_main(["collect", str(spec_path), "--out", str(study)]) == 0
    import pandas as pd

    df = pd.read_parquet(study / "runs.parquet")
    assert df["run"].nunique() == 4 and bool(df["done"].all())
