"""The tuning stage against a real SLURM: the first submission sends the tuning jobs only (the grid's configs depend
on their result), `status` shows both stages, the next submission after they finished sends the grid at the chosen
LR, and a third sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import slurm_unusable, wait_for
import records
from study import cli

SLURM_SKIP = slurm_unusable()
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(SLURM_SKIP is not None, reason=str(SLURM_SKIP))]

SPEC = {
    "study": "slurm-tune",
    "base": {
        "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 3},
        "data": {"corpus": "gsm8k-synth:easy", "tokenizer": "byte", "seq_len": 32},
        "optim": {"warmup_steps": 2},
        "batch": {"global_batch": 4},
        "eval": {"points": 2, "n_seqs": 4, "n_draws": 2},
        "budget": {"steps": 8},
        "system": {"log_every": 1, "ckpt_every": 1000, "num_threads": 1},
    },
    "resources": {"executor": "slurm", "time_min": 15, "cpus_per_task": 1, "mem_gb": 2, "signal_delay_s": 60},
    "tune": {"lr": [1e-3, 4e-3, 1.6e-2], "budget": {"steps": 6}},
}


def test_tuning_jobs_first_then_the_grid(tmp_path, capsys, monkeypatch):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    study = tmp_path / "study"
    monkeypatch.setenv("LOOPMDM_CACHE", str(tmp_path / "cache"))
    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted ") == 3 and "1 grid run(s) wait for the tuning of loopmdm-d32" in out
    tdir = records.tune_dir(study)
    assert len(records.known_jobs(tdir)) == 3 and records.known_jobs(study) == {}  # the stage's own ledger
    assert records.list_run_dirs(study) == []  # no grid run exists before its LR does
    assert cli.sweep_main(["status", str(spec_path), "--out", str(study)]) == 0
    assert "awaiting tuning" in capsys.readouterr().out

    wait_for(lambda: [s.state for s in records.scan_study(tdir)] == ["done"] * 3, 420, "the tuning runs to finish", 1.0)
    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "3 done); 0 to submit" in out and out.count("submitted ") == 1
    chosen = records.read_json(records.tuned_path(study))["keys"]["loopmdm-d32"]["lr"]
    (grid,) = records.list_run_dirs(study)
    assert records.done_summary(grid) is not None and records.read_config(grid)["optim"]["lr"] == chosen

    assert cli.sweep_main([str(spec_path), "--out", str(study), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "submitted " not in out and out.count("0 to submit") == 2
    assert Path(records.read_config(grid)["meta"]["lr"]["record"]) == Path("tune") / "tuned_lr.json"
