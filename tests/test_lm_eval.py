"""lm-eval end to end, offline, on a tiny model fine-tuned here: the multiple-choice and GSM8K-format tasks,
the real GSM8K file when present, reproducibility, idempotence, and the loglikelihood estimator itself."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers_eval import tiny_runs
from study import cli
from study.evaluate import task_scores as eval_tasks
from study.evaluate import lm_tasks as tasks_mod
from study.evaluate.request import EvalRequest
from study.evaluate.task_scores import evaluate_tasks
from model.config import ConfigError
from study.evaluate import EvalError, load_run
from study.evaluate.lm_eval_model import LoopMDMLM

ROOT = Path(__file__).resolve().parents[1]
GSM8K_DIR = Path(__file__).resolve().parent / "data" / "gsm8k"  # 50 real problems per split, MIT
CONTRACT = {"task", "metric", "score", "loops", "exit_threshold", "per_sample", "n", "run_hash", "ckpt_step",
            "eval_hash", "config", "versions", "device"}
MC_N = 500  # problems in the above-chance check: all the task's 500
# P(acc >= 0.30 | n=500, chance 0.25) = 0.6 %. The fixture's model is deterministic but its training is chaotic
# (lr 5e-3, loss spikes): across SFT seeds it scores 0.32-0.43 on all 500 problems, and changes at the level of
# rounding (issue #22's loss path) move it within that range; on 100 problems one seed's score was a lottery
# around the old 0.35 threshold (0.33-0.43).
MC_PASS = 0.30


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_runs(tmp_path_factory.getbasetemp() / "eval_runs")


@pytest.fixture(scope="session")
def sft_lm(runs) -> LoopMDMLM:
    return LoopMDMLM(loaded=load_run(runs[1], device="cpu"), mc_num=4, gen_length=32, steps=16)


def request(tmp: Path, **kw) -> EvalRequest:
    base = dict(cache_dir=str(tmp), model_args={"mc_num": 3, "gen_length": 48, "steps": 24}, quiet=True)
    return EvalRequest(**(base | kw))


def test_multiple_choice_beats_chance_reproducibly_and_is_filed(runs, tmp_path_factory):
    _, sft = runs
    cache = tmp_path_factory.getbasetemp() / "eval_cache"
    [res] = evaluate_tasks(sft, request(cache, tasks=["gsm8k-synth-mc:easy"], limit=MC_N))
    assert CONTRACT <= set(res) and not res["cached"]
    assert len(set(res["sample_ids"])) == MC_N and res["step"] == res["ckpt_step"]
    assert res["task"] == "gsm8k-synth-mc-easy-500" and res["metric"] == "acc,none" and res["n"] == MC_N
    assert set(res["per_sample"]) <= {0, 1} and res["score"] == pytest.approx(sum(res["per_sample"]) / MC_N)
    assert res["score"] >= MC_PASS, f"accuracy {res['score']:.3f} on n={MC_N} is not above chance (0.25)"
    assert res["loops"] == 3 and res["exit_threshold"] is None and res["mean_loops"] == 3
    assert res["versions"]["torch"] == torch.__version__ and res["versions"]["lm_eval"]
    assert res["config"]["mc_num"] == 3 and res["device"].startswith("cpu")
    path = sft / "evals" / f"gsm8k-synth-mc-easy-500-{res['eval_hash']}.json"
    assert json.loads(path.read_text())["per_sample"] == res["per_sample"]
    # same numbers again, from scratch, whatever the batch size: the MC draws are seeded by each request
    again = evaluate_tasks(sft, request(cache, tasks=["gsm8k-synth-mc:easy"], limit=20, batch_size=5))[0]
    assert again["per_sample"] == res["per_sample"][:20]
    assert again["per_sample_metrics"]["acc_norm,none"] == res["per_sample_metrics"]["acc_norm,none"][:20]


def test_generation_task_in_gsm8k_format_and_adaptive_exit(runs, tmp_path_factory):
    _, sft = runs
    cache = tmp_path_factory.getbasetemp() / "eval_cache"
    req = request(cache, tasks=["gsm8k-synth:easy"], limit=6, loops=[3], exit_thresholds=[0.05])
    fixed, adaptive = evaluate_tasks(sft, req)
    for res in (fixed, adaptive):
        assert res["n"] == 6 and set(res["per_sample"]) <= {0, 1}
        assert set(res["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
        assert res["metric"] == "exact_match,strict-match"
        filters = [f["name"] for f in res["lm_eval"]["task_config"]["filter_list"]]
        assert filters == ["strict-match", "flexible-extract"]  # lm-eval's own gsm8k configuration
    assert fixed["exit_threshold"] is None and fixed["mean_loops"] == 3
    assert adaptive["exit_threshold"] == 0.05 and adaptive["loops"] == 3 and 1 <= adaptive["mean_loops"] <= 3
    assert adaptive["eval_hash"] != fixed["eval_hash"]


def test_an_evaluation_on_disk_is_not_recomputed(runs, tmp_path_factory, monkeypatch):
    _, sft = runs
    cache = tmp_path_factory.getbasetemp() / "eval_cache"
    req = request(cache, tasks=["gsm8k-synth-mc:easy"], limit=8)
    [first] = evaluate_tasks(sft, req)
    path = sft / "evals" / f"gsm8k-synth-mc-easy-500-{first['eval_hash']}.json"
    mtime = path.stat().st_mtime_ns

    def no_loading(*a, **k):
        raise AssertionError("weights loaded for an evaluation already on disk")

    monkeypatch.setattr(eval_tasks, "load_run", no_loading)
    [second] = evaluate_tasks(sft, req)
    assert second["cached"] and second["per_sample"] == first["per_sample"]
    assert path.stat().st_mtime_ns == mtime
    # a knob that changes scores is a different evaluation
    with pytest.raises(AssertionError, match="weights loaded"):
        evaluate_tasks(sft, dataclasses.replace(req, model_args={"mc_num": 5}))


@pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").is_file(), reason="tests/data/gsm8k is missing")
def test_real_gsm8k_through_lm_eval_by_model_name(runs, tmp_path):
    """lm-eval's simple_evaluate finds the model by its registered name and runs lm-eval's gsm8k config on
    the real test file; a few problems, so exact match itself is not checked, only lm-eval's output."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    _, sft = runs
    specs, include = tasks_mod.prepare(["gsm8k-local"], tmp_path, GSM8K_DIR)
    tm = TaskManager(include_path=str(include), include_defaults=False)
    out = lm_eval.simple_evaluate(model="loopmdm", model_args=f"run={sft},loops=2,gen_length=32,steps=16,device=cpu",
                                  tasks=["gsm8k-local"], limit=3, task_manager=tm, log_samples=True)
    res = out["results"]["gsm8k-local"]
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(res)
    assert out["configs"]["gsm8k-local"]["metadata"]["gsm8k_dir"] == str(GSM8K_DIR.resolve())
    assert len(out["samples"]["gsm8k-local"]) == 3 * 2  # 3 problems x 2 filters
    assert out["n-shot"]["gsm8k-local"] == 0


def test_packaged_gsm8k_format_task_is_lm_evals_own_gsm8k_config():
    """The packaged YAML repeats lm-eval's gsm8k prompt, stop strings, metric and filters (a static file cannot
    include lm-eval's by path); this keeps the copy true to the installed lm-eval."""
    import lm_eval

    ours = yaml.load((tasks_mod.PACKAGED / "gsm8k_synth.yaml").read_text(), Loader=tasks_mod._IgnoreTags)
    theirs = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    for key in ("output_type", "doc_to_text", "doc_to_target", "metric_list", "generation_kwargs", "filter_list",
                "test_split", "fewshot_split"):
        assert ours[key] == theirs[key], key


def test_packaged_tasks_run_in_lm_evals_own_entry_points_without_study_eval(runs, tmp_path):
    """Right after install: lm-eval's simple_evaluate finds the packaged tasks with --include_path
    and the model by name; problems chosen with --metadata. No study.eval call has written anything."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    _, sft = runs
    tm = TaskManager(include_path=str(tasks_mod.PACKAGED), include_defaults=False,
                     metadata={"difficulty": "easy", "n": 6})
    out = lm_eval.simple_evaluate(model="loopmdm", model_args=f"run={sft},loops=2,gen_length=32,steps=16,"
                                  f"mc_num=2,device=cpu", tasks=["gsm8k-synth", "gsm8k-synth-mc"],
                                  task_manager=tm, log_samples=True)
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(out["results"]["gsm8k-synth"])
    assert "acc,none" in out["results"]["gsm8k-synth-mc"]
    assert len(out["samples"]["gsm8k-synth-mc"]) == 6
    docs = [smp["doc"]["question"] for smp in out["samples"]["gsm8k-synth"]]
    from study.data import gsm8k_synth

    assert docs[:6] == [p["question"] for p in gsm8k_synth.generate(6, seed=0, difficulty="easy", split="test")]


def lm_eval_command() -> str:
    """The documented command line: the console script next to this interpreter (pip install puts it there)."""
    script = Path(sys.executable).parent / "loopmdm-lm-eval"
    assert script.is_file(), f"{script} missing: reinstall the package (pip install -e .)"
    return str(script)


@pytest.mark.slow
def test_documented_lm_eval_command_line_scores_a_run(runs, tmp_path):
    """The command the README and the task YAMLs give, as a real subprocess against a tiny trained run: it
    scores, and --output_path gets a folder named after the run (lm-eval names it after ``pretrained=``), the
    same on a second call, whether the run is given as pretrained= or run=."""
    _, sft = runs
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    folders = []
    for key in ("pretrained", "run"):
        cmd = [lm_eval_command(), "run", "--model", "loopmdm", "--model_args", f"{key}={sft},gen_length=16,steps=8",
               "--device", "cpu", "--include_path", str(tasks_mod.PACKAGED), "--tasks", "gsm8k-synth",
               "--metadata", '{"difficulty": "tiny", "n": 2}', "--batch_size", "4", "--output_path", str(tmp_path / "out")]
        res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "gsm8k-synth" in res.stdout and "exact_match" in res.stdout
        folders.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
    assert folders[0] == folders[1] == [str(sft).replace("/", "__")]
    [result] = {p.parent for p in (tmp_path / "out").rglob("results_*.json")}
    scores = json.loads(sorted(result.glob("results_*.json"))[-1].read_text())["results"]["gsm8k-synth"]
    assert 0 <= scores["exact_match,strict-match"] <= 1


def test_unknown_or_malformed_model_args_are_refused_in_one_line(runs, tmp_path):
    """A typo in --model_args is not silently ignored: one line naming the key (and the likely knob), exit 2,
    before any weights are loaded."""
    _, sft = runs
    with pytest.raises(EvalError, match="^model_args: unknown key 'loop' \\(did you mean loops\\?\\)"):
        LoopMDMLM.create_from_arg_string(f"pretrained={sft},loop=2")
    with pytest.raises(EvalError, match="^model_args: unknown key 'mcnum' \\(did you mean mc_num\\?\\)"):
        LoopMDMLM.create_from_arg_string(f"pretrained={sft},mcnum=4")
    with pytest.raises(EvalError, match="^ema: got 'maybe'; expected true or false"):
        LoopMDMLM.create_from_arg_string(f"pretrained={sft},ema=maybe")
    with pytest.raises(EvalError, match="^seed: "):
        LoopMDMLM.create_from_arg_string(f"pretrained={sft},seed=abc")
    cmd = [lm_eval_command(), "run", "--model", "loopmdm", "--model_args", f"pretrained={sft},loop=2,mcnum=4",
           "--device", "cpu", "--tasks", "hellaswag"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model_args: unknown key 'loop' (did you mean loops?)"], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_default_generation_length_leaves_room_for_a_prompt(sft_lm):
    """Without gen_length the model generates: the default is capped at half the model's positions."""
    lm = LoopMDMLM(loaded=sft_lm.loaded)
    assert lm.gen_length == min(128, lm.max_length // 2) and lm.gen_length < lm.max_length
    assert lm._gen_settings({"until": ["Q"]})[1] == lm.gen_length  # check_room passes


def test_unequal_prompts_batched_equal_batch_size_one(sft_lm):
    """Generation batches prompts of different lengths (left padding kept out of attention); greedy output is
    the same token for token as one prompt at a time, and the batched run makes fewer forward passes."""
    class Req:
        def __init__(self, context, kw):
            self.args = (context, kw)

    from study.data import format_prompt, gsm8k_synth

    problems = gsm8k_synth.generate(8, seed=3, difficulty="easy", split="test")
    reqs = [Req(format_prompt(p["question"]), {"until": ["Question:"], "do_sample": False}) for p in problems]
    assert len({len(r.args[0]) for r in reqs}) > 4  # genuinely unequal lengths
    lm = sft_lm
    lm.stats.clear()
    batched = lm.generate_until(reqs)
    forwards_batched = lm.stats["forwards"]
    lm.batch_size = 1
    lm.stats.clear()
    try:
        alone = lm.generate_until(reqs)
    finally:
        lm.batch_size = 16
    assert batched == alone
    assert forwards_batched * 8 == lm.stats["forwards"]
    assert any(t.strip() for t in alone)


def test_generation_kwargs_are_honoured_or_refused(sft_lm):
    class Req:
        def __init__(self, kw):
            self.args = ("Question: Ann has 3 apples. She buys 4 more. How many now?\nAnswer:", kw)

    lm = sft_lm
    assert lm._gen_settings({"until": "Q", "max_gen_toks": 16, "do_sample": False, "temperature": 0.7}) == \
        (["Q"], 16, 16, 0.0)  # do_sample false means greedy whatever the temperature
    assert lm._gen_settings({"temperature": 0.5})[-1] == 0.5
    lm.stats.clear()
    lm.generate_until([Req({"max_gen_toks": 16})])
    assert lm.stats["forwards"] == 8  # steps scale with the length: 16 steps for 32 tokens, 8 for 16
    with pytest.raises(EvalError, match="^gen_kwargs: .*top_p"):
        lm.generate_until([Req({"top_p": 0.9})])
    with pytest.raises(EvalError, match="^gen_length: 300 leaves no room"):
        lm.generate_until([Req({"max_gen_toks": 300})])
    # a generation length longer than the model is no obstacle to loglikelihood (multiple-choice) requests
    long = LoopMDMLM(loaded=lm.loaded, gen_length=512, mc_num=2)
    [(ll, _)] = long._score([long._encode_pair("Question: 1 + 1?\nAnswer:", " 2")])
    assert math.isfinite(ll) and ll < 0


@pytest.mark.slow
def test_bad_task_loops_and_run_fail_before_any_work(runs, tmp_path, monkeypatch):
    _, sft = runs

    def no_loading(*a, **k):
        raise AssertionError("weights loaded before the arguments were checked")

    monkeypatch.setattr(eval_tasks, "load_run", no_loading)
    with pytest.raises(EvalError, match="^tasks: task 'no-such-task' does not exist"):
        evaluate_tasks(sft, request(tmp_path, tasks=["no-such-task"], limit=2))
    with pytest.raises(EvalError, match="^tasks: .*gsm8k-synth"):
        evaluate_tasks(sft, request(tmp_path, tasks=["gsm8k-synth:impossible"], limit=2))
    with pytest.raises(EvalError, match="^loops: got 0"):
        evaluate_tasks(sft, request(tmp_path, tasks=["gsm8k-synth-mc"], loops=[0]))
    with pytest.raises(EvalError, match="^gen_length: "):
        evaluate_tasks(sft, request(tmp_path, tasks=["gsm8k-synth"], model_args={"gen_length": 500}))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((sft / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="^run: .*no complete checkpoint"):
        LoopMDMLM(run=str(bare))
    with pytest.raises(ConfigError, match="^run: "):
        LoopMDMLM.create_from_arg_string("loops=2")
    assert cli.eval_main([str(sft), "--tasks", "no-such-task", "--quiet", "--cache-dir", str(tmp_path)]) == 2


# -- the estimator -----------------------------------------------------------------------------------
def test_loglikelihood_is_exact_for_one_token_and_independent_of_batching(sft_lm):
    lm = sft_lm
    ctx, cont = lm._encode_pair("Question: Ann has 3 apples.\nAnswer:", " 7")
    assert lm.tok.decode(cont) == " 7"
    # one-token continuation: every draw masks that token, so the bound is log p(token | context)
    one = lm._score([(ctx + cont[:1], cont[1:])])[0][0]
    x = torch.tensor([ctx + cont[:1] + [lm.mask_id]])
    with torch.no_grad():
        logits = lm.model(x, torch.ones(1), loops=lm.loops).float()
    logits[..., lm.mask_id] = float("-inf")
    exact = torch.log_softmax(logits[0, -1], -1)[cont[1]].item()
    assert one == pytest.approx(exact, abs=1e-5)
    pairs = [lm._encode_pair(f"Question: x = {i}\nAnswer:", f" {i * 7}") for i in range(6)]
    a = lm._score(pairs)
    lm.batch_size = 1
    try:
        b = lm._score(pairs[::-1])[::-1]
    finally:
        lm.batch_size = 16
    assert [s for s, _ in a] == pytest.approx([s for s, _ in b], abs=1e-5)
    assert all(s < 0 and math.isfinite(s) for s, _ in a)


def test_generation_stops_at_eos_and_until_strings(sft_lm):
    lm = sft_lm
    ids = lm.tok.encode(" 12 apples\nQuestion: more") + [lm.tok.eos_id] + lm.tok.encode("junk")
    assert lm._decode(ids, ["Question:"]) == " 12 apples\n"
    assert lm._decode(ids, []) == " 12 apples\nQuestion: more"


def test_rolling_loglikelihood_covers_text_longer_than_the_model(sft_lm):
    class Req:
        def __init__(self, text):
            self.args = (text,)

    text = "Sofia has 20 eggs. " * 30  # 570 bytes > 208 positions
    [a] = sft_lm.loglikelihood_rolling([Req(text)])
    assert math.isfinite(a) and a < 0 and sft_lm.loglikelihood_rolling([Req(text)]) == [a]
    short = sft_lm.loglikelihood_rolling([Req(text[:100])])[0]
    assert a < short  # more text, more nats


def test_cli_submits_through_study_launch(runs, tmp_path_factory, capsys):
    """--executor debug takes the SLURM path (study.launch.submit, a pickled job per run) in this process."""
    _, sft = runs
    cache = tmp_path_factory.getbasetemp() / "eval_cache"
    argv = [str(sft), "--tasks", "gsm8k-synth-mc:easy", "--limit", "4", "--mc-num", "3", "--executor", "debug",
            "--cache-dir", str(cache)]
    assert cli.eval_main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted eval-sft" in out and "gsm8k-synth-mc-easy-500 S=3: acc,none" in out
    assert (sft / "eval_jobs").is_dir()
