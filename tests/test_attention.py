"""The mask-to-mask attention analysis: CIs over sequences, the report section and its figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.attention import rise, share_by_loop
from analysis.collect import load_attention


def _rows(rising: bool, n_seqs: int = 24, loops: int = 4, seed: int = 0) -> list[dict]:
    """Rows as study.evaluate.attention writes them: per (t, loop, layer), with per-sequence shares."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.4, 0.6, n_seqs)  # each sequence's own level, shared by its loops (pairing matters)
    out = []
    for t in (0.25, 0.75):
        for k in range(1, loops + 1):
            seq = base + (0.02 * (k - 1) if rising else 0.0) + rng.normal(0, 0.005, n_seqs)
            out.append({"t": t, "loop": k, "layer": 0, "masked_to_masked": float(seq.mean()),
                        "unmasked_to_masked": 0.3, "masked_key_frac": t, "n_masked_queries": 100,
                        "n_unmasked_queries": 100, "seq_masked_to_masked": seq.tolist(),
                        "seq_masked_key_frac": [t] * n_seqs})
    return out


def _study(tmp: Path, rising: bool) -> Path:
    run = tmp / "runs" / "d64-l1.1.1-s4-abc"
    (run / "evals").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "model": {"d_model": 64, "s_max": 4}, "budget": {"flops": 1e12},
        "meta": {"slug": "d64-l1.1.1-s4", "hash": "abc" * 8}}))
    (run / "evals" / "attention-0001.json").write_text(json.dumps(
        {"ckpt_step": 10, "settings": {"loops": 4}, "rows": _rows(rising)}))
    return tmp


def test_a_rise_over_loops_has_a_ci_above_zero_and_a_flat_share_does_not(tmp_path):
    up = load_attention(_study(tmp_path / "up", rising=True))
    flat = load_attention(_study(tmp_path / "flat", rising=False))
    r_up, r_flat = rise(up).iloc[0], rise(flat).iloc[0]
    assert abs(r_up["delta"] - 0.06) < 0.005 and 0 < r_up["low"] < 0.06 < r_up["high"]  # built: +0.02 a loop
    assert r_flat["low"] < 0 < r_flat["high"]
    table = share_by_loop(up)
    assert list(table["loop"]) == [1, 2, 3, 4] and (table["low"] < table["share"]).all()
    assert table["n_seqs"].iloc[0] == 24 and table["uniform"].iloc[0] == 0.5  # mean of t = 0.25 and 0.75


def test_report_has_the_attention_section_and_figure(tmp_path):
    from analysis.figures import fig_attention
    from analysis.report.sections import attention_md

    study = _study(tmp_path, rising=True)
    att = load_attention(study)
    fig = fig_attention(att, study / "figures", formats=("png",))
    assert fig.made and (study / "figures" / "attention.png").stat().st_size > 5000
    md = "\n".join(attention_md(att, {"attention": fig}, study))
    assert "## Mask-to-mask attention" in md and "| d64-l1.1.1-s4 | plain | 0 | 1 → 4 | +0.05" in md
    assert "](figures/attention.png)" in md
    assert not fig_attention(pd.DataFrame(), tmp_path).made  # nothing measured: skipped with a note
