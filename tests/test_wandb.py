"""system.wandb, offline: the run's W&B files are written, every restart continues the same W&B run, and after
a kill -9 the steps replayed from the checkpoint are not logged twice (read back from W&B's own files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import records
from study.plan import config as C
from test_reliability import DIST_VARS
from test_train import corpus, tiny_cfg  # noqa: F401  (the module-scoped corpus fixture)

wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb, or '.[dev]')")

from study.train import wandb_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def offline_env(tmp: Path) -> dict:
    """A fresh single process (no rank variables an earlier in-process run left behind), W&B offline in tmp."""
    return {k: v for k, v in os.environ.items() if k not in DIST_VARS} | {
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", "WANDB_DIR": str(tmp), "WANDB_CACHE_DIR": str(tmp / "cache"),
            "WANDB_CONFIG_DIR": str(tmp / "config"), "WANDB_PROJECT": "loopmdm-test"}


def history(run_dir: Path) -> tuple[str, list[Path], list[int]]:
    rid = (records.wandb_dir(run_dir) / records.WANDB_RUN_ID).read_text().strip()
    files = sorted(records.wandb_dir(run_dir).glob(f"offline-run-*-{rid}/run-{rid}.wandb"))
    return rid, files, wandb_log.logged_steps(run_dir, rid)


def test_off_by_default_and_refused_when_missing(tmp_path, corpus, monkeypatch):
    assert C.RunConfig().system.wandb is False
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(C.ConfigError, match="^system.wandb: needs the wandb package"):
        tiny_cfg(corpus, tmp_path, **{"system.wandb": True}).validate()


@pytest.mark.slow
def test_offline_run_resumes_the_same_wandb_run_without_duplicate_steps_after_kill_9(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 400, "system.log_every": 1,
                                                  "system.ckpt_every": 50, "system.wandb": True})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(C.dump_yaml(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "study.run", str(cfg_path), "--out", str(out), "--quiet"]
    env = offline_env(tmp_path)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # kill -9 once W&B's files hold steps past the newest checkpoint: those are replayed on resume
    while time.time() < deadline and proc.poll() is None:
        ckpts = records.complete_checkpoints(out)
        if (records.wandb_dir(out) / records.WANDB_RUN_ID).is_file() and ckpts:
            steps = history(out)[2]
            if steps and max(steps) > max(records.ckpt_step(c) for c in ckpts):
                break
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rid, files, before = history(out)
    ckpt = max(records.ckpt_step(c) for c in records.complete_checkpoints(out))
    assert len(files) == 1 and max(before) > ckpt  # W&B holds steps that the resume will replay
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rid2, files, steps = history(out)
    assert rid2 == rid and len(files) == 2  # two starts, one W&B run id
    assert len(steps) == len(set(steps)), sorted(s for s in steps if steps.count(s) > 1)
    metric_steps = {m["step"] for m in records.read_jsonl(out / records.METRICS)}
    eval_steps = {e["step"] for e in records.read_jsonl(out / records.EVALS)}
    assert metric_steps | eval_steps == set(steps)  # every step of the record, once
    assert (out / records.DONE).is_file() and (records.wandb_dir(out) / records.WANDB_RUN_ID).is_file()
