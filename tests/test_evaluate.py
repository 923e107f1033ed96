"""Loop scans, the attention statistic, SFT configs and bad input, on a tiny looped model trained here."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from helpers_eval import tiny_runs
from model import LoopMDM, ModelConfig
from model.transformer import LoopOutput, LoopStats
import records
from model.config import ConfigError
from study.cli import eval_main
from study.evaluate import DEFAULT_SCAN_LOOPS, EvalError, attention_shares, attention_stats, load_run
from study.evaluate.loop_scan import loop_scan
from study.cli import sft_main
from study.plan.finetune import sft_config


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_runs(tmp_path_factory.getbasetemp() / "eval_runs")


@pytest.mark.slow
def test_loop_scan_covers_S_1_to_24_adaptive_exit_and_is_idempotent(runs):
    pre, _ = runs
    rows = loop_scan(pre, loops=DEFAULT_SCAN_LOOPS, exit_thresholds=[0.05])
    fixed, adaptive = rows[:-1], rows[-1]
    assert [r["eval_loops"] for r in fixed] == list(DEFAULT_SCAN_LOOPS)
    for r in rows:
        assert r["scan"] is True and r["is_final"] is False and math.isfinite(r["nll"]) and r["nll_se"] > 0
    assert all(r["mean_loops"] == r["eval_loops"] for r in fixed)
    flops = [r["infer_flops_per_token_exact"] for r in fixed]
    assert flops == sorted(flops) and flops[-1] > 5 * flops[0]  # compute grows with S
    # adaptive exit: capped at the largest S, and stops early on a model trained with S <= 3
    assert adaptive["exit_threshold"] == 0.05 and adaptive["eval_loops"] == 24
    assert 1 <= adaptive["mean_loops"] < 24
    assert adaptive["infer_flops_per_token_exact"] < fixed[-1]["infer_flops_per_token_exact"]
    # same eval sequences and noise as the trainer: its own S=1 row at the last step comes back exactly
    evals = records.read_jsonl(pre / "evals.jsonl")
    final_step = max(r["step"] for r in evals)
    trainer = {r["eval_loops"]: r["nll"] for r in evals if not r.get("scan") and r["step"] == final_step
               and r["exit_threshold"] is None}
    assert set(trainer) == {1, 3}
    scan = {r["eval_loops"]: r["nll"] for r in fixed}
    assert scan[1] == pytest.approx(trainer[1], rel=1e-6)
    # a second scan appends nothing and returns the same rows
    n_lines = len((pre / "evals.jsonl").read_text().splitlines())
    assert loop_scan(pre, loops=DEFAULT_SCAN_LOOPS, exit_thresholds=[0.05]) == rows
    assert len((pre / "evals.jsonl").read_text().splitlines()) == n_lines


def test_attention_statistic_is_computed_stored_and_not_recomputed(runs):
    pre, _ = runs
    res = attention_stats(pre, ts=[0.25, 0.75], loops=3, n_seqs=4)
    path = pre / "evals" / f"attention-{res['attention_hash']}.json"
    assert path.is_file() and json.loads(path.read_text())["rows"] == res["rows"]
    assert len(res["rows"]) == 2 * 3 * 1  # ts x loops x mid layers
    for r in res["rows"]:
        assert 0 <= r["masked_to_masked"] <= 1 and 0 <= r["unmasked_to_masked"] <= 1
        assert r["masked_key_frac"] == pytest.approx(r["t"], abs=0.15)  # ~t of the keys are masked
        # per-sequence shares (CIs over sequences): one per sequence with a masked query, averaging to the row's
        # value when weighted by each sequence's masked queries
        assert 1 <= len(r["seq_masked_to_masked"]) == len(r["seq_masked_key_frac"]) <= 4
        assert min(r["seq_masked_to_masked"]) <= r["masked_to_masked"] <= max(r["seq_masked_to_masked"])
    mtime = path.stat().st_mtime_ns
    assert attention_stats(pre, ts=[0.25, 0.75], loops=3, n_seqs=4) == res
    assert path.stat().st_mtime_ns == mtime


def _tiny_model(**over) -> LoopMDM:
    torch.manual_seed(0)
    return LoopMDM(ModelConfig(vocab_size=20, d_model=16, n_heads=2, n_head_layers=0, n_mid_layers=2,
                               n_tail_layers=0, s_max=2, max_seq_len=24, **over))


def test_attention_share_equals_masked_fraction_under_uniform_attention():
    """Zero query/key weights make every query attend uniformly: the share on masked keys is then exactly
    the fraction of keys masked, which is the baseline the statistic is read against."""
    model = _tiny_model()
    with torch.no_grad():
        for blk in model.mid_layers:
            blk.attn.qkv.weight[: 2 * 16].zero_()
    tokens = torch.randint(0, 19, (6, 24), generator=torch.Generator().manual_seed(0))
    rows = attention_shares(model, tokens, ts=[0.5], loops=2, seed=0)
    assert len(rows) == 2 * 2
    for r in rows:
        assert r["masked_to_masked"] == pytest.approx(r["masked_key_frac"], abs=1e-6)
        assert r["masked_to_masked"] == pytest.approx(0.5, abs=0.15)


def test_attention_share_is_one_when_masked_queries_attend_only_to_themselves():
    model = _tiny_model()

    def self_attention(x, t=None, loops=None, return_attention=False, **kw):
        B, L = x.shape
        eye = torch.eye(L).expand(B, 2, L, L)
        stats = LoopStats(loops_used=torch.full((B,), loops), last_rel_change=torch.full((B,), float("nan")))
        return LoopOutput(logits=torch.zeros(B, L, 20), stats=stats, attention=[[eye, eye] for _ in range(loops)])

    model.forward = self_attention
    tokens = torch.randint(0, 19, (4, 24), generator=torch.Generator().manual_seed(1))
    for r in attention_shares(model, tokens, ts=[0.5], loops=2, seed=0):
        assert r["masked_to_masked"] == pytest.approx(1.0) and r["unmasked_to_masked"] == pytest.approx(0.0)


def test_sft_config_keeps_the_parent_network(runs, capsys):
    pre, sft = runs
    parent = load_run(pre, device="cpu").cfg
    cfg = sft_config(pre, "gsm8k-synth:easy", steps=10)
    assert cfg.kind == "sft" and cfg.init_from == str(pre.resolve()) and cfg.model == parent.model
    assert cfg.data.tokenizer == parent.data.tokenizer and cfg.data.seq_len == parent.data.seq_len
    assert cfg.data.corpus == "gsm8k-synth:easy" and cfg.steps == 10
    with pytest.raises(ConfigError, match="^budget: .*--steps"):
        sft_config(pre, "gsm8k-synth:easy")
    assert sft_main([str(pre), "gsm8k-synth:easy", "--steps", "5", "optim.lr=1e-3", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "kind: sft" in printed and "lr: 0.001" in printed
    assert sft_main([str(pre), "gsm8k-synth:easy", "--steps", "5", "model.d_model=32"]) == 2
    assert "model: a fine-tuning run keeps its parent's network" in capsys.readouterr().err
    assert (sft / "DONE.json").is_file()  # the fixture's SFT run trained end to end
    loss = [r["loss"] for r in records.read_jsonl(sft / "metrics.jsonl")]
    assert loss[-1] < loss[0]


def test_bad_input_fails_with_a_message_naming_the_argument(runs, tmp_path, capsys):
    pre, sft = runs
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    shutil.copy(pre / "config.yaml", empty / "config.yaml")
    with pytest.raises(ConfigError, match=r"^run: .*no complete checkpoint"):  # the plan stage's lookup
        loop_scan(empty, loops=[1])
    with pytest.raises(ConfigError, match=r"^run: .*does not exist"):
        loop_scan(tmp_path / "nowhere", loops=[1])
    with pytest.raises(EvalError, match=r"^loops: got 0"):
        loop_scan(pre, loops=[1, 0])
    with pytest.raises(EvalError, match=r"^exit_thresholds: "):
        loop_scan(pre, loops=[1], exit_thresholds=[-0.1])
    with pytest.raises(ConfigError, match=r"^ckpt: no complete checkpoint at step 7.*available steps"):
        loop_scan(pre, loops=[1], ckpt=7)
    with pytest.raises(EvalError, match=r"^run: a sft run has no held-out"):
        loop_scan(sft, loops=[1])
    assert eval_main([str(empty), "--scan", "--quiet"]) == 2
    assert "has not finished training" in capsys.readouterr().err  # not done: refused unless asked for
    assert eval_main([str(empty), "--scan", "--quiet", "--allow-unfinished"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert eval_main([str(pre), "--scan", "--loops", "0"]) == 2
    assert "loops: got 0" in capsys.readouterr().err
