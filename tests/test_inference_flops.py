"""Quality vs inference compute: every point of the figure sits at the FLOPs ``model.flops`` gives for the run's
own config. The figure used to rebuild a model from a table row and read the vocabulary off the embedding's
parameter count, which the loop-index embedding (``loop_embed``: s_max x d more parameters) inflated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.axes import Axes

from analysis import figures
from analysis.collect import collect
from model import ModelConfig, flops

SEQ = 64
LOOPED = dict(vocab_size=258, d_model=64, n_heads=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=1, s_max=6,
              max_seq_len=SEQ, loop_embed=True, loop_input="add")
PLAIN = dict(vocab_size=258, d_model=64, n_heads=4, n_head_layers=0, n_mid_layers=4, n_tail_layers=0, s_max=1,
             loop_dist="fixed", max_seq_len=SEQ)


def _run(study: Path, name: str, model: dict, role: str, evals: list[dict]) -> None:
    d = study / "runs" / name
    d.mkdir(parents=True)
    meta = {"study": "flops", "slug": name, "hash": f"{name:0<12}", "groups": [{"group": "g", "role": role}],
            "params": flops.param_counts(ModelConfig(**model)).to_dict(ModelConfig(**model).expected_loops)}
    cfg = {"meta": meta, "model": model, "data": {"seq_len": SEQ}, "batch": {"global_batch": 8},
           "budget": {"flops": 1e12, "convention": "exact"}, "seed": 0}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "evals.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    (d / "DONE.json").write_text("{}")


def _eval(loops: int, nll: float, threshold: float | None = None, mean_loops: float | None = None) -> dict:
    return {"step": 100, "tokens": 1e5, "flops_6N_nonembed": 1e12, "flops_6N_total": 1.1e12, "flops_exact": 1e12,
            "eval_loops": loops, "exit_threshold": threshold, "nll": nll, "nll_se": 0.01, "n_seqs": 8, "n_draws": 2,
            "mean_loops": float(loops if mean_loops is None else mean_loops), "is_final": True}


@pytest.fixture()
def table(tmp_path: Path):
    study = tmp_path / "study"
    _run(study, "looped", LOOPED, "looped",
         [_eval(1, 3.0), _eval(2, 2.9), _eval(6, 2.8), _eval(6, 2.85, threshold=0.05, mean_loops=3.5)])
    _run(study, "plain", PLAIN, "baseline_same", [_eval(1, 2.95)])
    return collect(study, write=False)


def test_figure_points_sit_at_the_configs_inference_flops(table, tmp_path, monkeypatch) -> None:
    drawn: list[np.ndarray] = []
    for name in ("plot", "scatter", "errorbar"):  # points drawn with their error bars too
        original = getattr(Axes, name)

        def record(self, x, *args, _original=original, **kwargs):
            xs = np.atleast_1d(np.asarray(x, float))
            if xs.size:
                drawn.append(xs)
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(Axes, name, record)
    res = figures.fig_nll_vs_inference_flops(table, tmp_path / "figs", formats=("png",))
    assert res.made, res.note
    looped, plain = ModelConfig(**LOOPED), ModelConfig(**PLAIN)
    fixed = [flops.inference_flops_per_token(looped, SEQ, s) for s in (1, 2, 6)]
    adaptive = flops.inference_flops_per_token(looped, SEQ, 3.5)
    baseline = flops.inference_flops_per_token(plain, SEQ, 1)
    seen = np.concatenate(drawn)
    for want in fixed + [adaptive, baseline]:
        assert np.isclose(seen, want, rtol=1e-9).any(), (want, sorted(set(seen.tolist())))
    assert np.allclose(drawn[0], fixed, rtol=1e-9)  # the fixed-S line, in order


def test_the_table_carries_the_cost_per_token(table) -> None:
    """collect writes each run's cost per token as base + per_loop * S, from its config, for training and
    inference under every convention; reading it back at any S (fractional under adaptive exit) is exact."""
    from analysis.collect import flops_per_token

    row = table[table["run"].str.startswith("looped")].iloc[0]
    looped = ModelConfig(**LOOPED)
    for conv in flops.CONVENTIONS:
        for s in (1, 3.5, 6, 12):
            assert flops_per_token(row, s, "infer", conv) == pytest.approx(
                flops.inference_flops_per_token(looped, SEQ, s, conv), rel=1e-12)
            assert flops_per_token(row, s, "train", conv) == pytest.approx(
                flops.train_flops_per_token(looped, SEQ, s, conv), rel=1e-12)
