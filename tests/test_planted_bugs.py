"""Two bugs that once passed the whole suite, each pinned by a test that fails when it comes back:

- the deeper MDM's bracketing depths must be floor and ceiling of the equal-compute depth (rounding lost the
  lower one for every E[S] x n_mid above x.5: 9 of 72 configs of the paper-shaped grid below);
- a checkpoint whose bytes changed but not its size must fail verification (only sizes were compared, and the
  one damage test truncated files, which the size check catches first).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

import records
from model import ModelConfig, flops


def _equal_compute_depth(cfg: ModelConfig, seq_len: int) -> float:
    """The real-valued plain depth whose forward FLOPs equal the looped model's at E[S], from model.flops
    alone (plain FLOPs are affine in depth, so two depths fix the line)."""
    one, two = (flops.forward_flops(cfg.plain_stack(n), seq_len, 1) for n in (1, 2))
    return 1 + (flops.forward_flops(cfg, seq_len, cfg.expected_loops) - one) / (two - one)


GRID = [dict(d_model=d, n_heads=4, n_head_layers=h, n_mid_layers=m, n_tail_layers=t, s_max=s, max_seq_len=64)
        for d, (h, m, t), s in itertools.product((64, 128), ((1, 1, 1), (1, 2, 1), (2, 3, 1), (0, 5, 2)),
                                                 (2, 3, 4, 5, 6, 8, 12, 16, 24))]


@pytest.mark.parametrize("loop_input", ["none", "concat"])
def test_bracketing_depths_are_floor_and_ceiling(loop_input: str) -> None:
    """Over a grid of widths, placements and s_max (plain: equal-compute depths at x.0 and x.5; with the concat
    adapter: any fraction, above and below .5): whenever no integer depth is within 5% of the looped model's
    per-step FLOPs, the two depths returned are exactly floor and ceiling of the equal-compute depth; when one
    depth is returned it is within 5% of it."""
    seen_fractions, pairs = set(), 0
    for kw in GRID:
        cfg = ModelConfig(**kw, loop_input=loop_input)
        exact = _equal_compute_depth(cfg, 32)
        depths = cfg.deeper_depths(32)
        seen_fractions.add(round(exact % 1, 2))
        if len(depths) == 2:
            pairs += 1
            assert [n for n, _ in depths] == [math.floor(exact), math.floor(exact) + 1], (kw, exact, depths)
            assert depths[0][1] < 1 < depths[1][1]
        else:
            (n, ratio), = depths
            assert abs(math.log(ratio)) <= math.log1p(0.05) + 1e-12, (kw, exact, depths)
            assert n in (math.floor(exact), math.ceil(exact)), (kw, exact, depths)
    assert pairs >= 5  # the grid does exercise the bracketing case
    if loop_input == "concat":  # the cases rounding gets wrong are there
        assert any(0.5 < f < 1 for f in seen_fractions) and any(0 < f < 0.5 for f in seen_fractions)


def test_bracketing_depths_above_one_half() -> None:
    """The plain recurrence only ever lands on x.0 or x.5 layers; the concat adapter's matmuls move it off:
    1 + 1.5 + 1 layers plus the adapter is 3.73 plain layers at width 64. Rounding gave [4] alone (6.7% dearer
    than the looped model); the bracket is [3, 4]."""
    cfg = ModelConfig(d_model=64, n_heads=4, n_head_layers=1, n_mid_layers=1, n_tail_layers=1, s_max=2,
                      max_seq_len=64, loop_input="concat")
    exact = _equal_compute_depth(cfg, 32)
    assert exact == pytest.approx(3.7308, abs=1e-4)
    assert [n for n, _ in cfg.deeper_depths(32)] == [3, 4]


# ------------------------------------------------------------------------------ checkpoint hashes
def _sealed_checkpoint(tmp_path: Path, size: int = 4096) -> Path:
    ckpt = records.ckpt_root(tmp_path) / records.ckpt_name(7)
    ckpt.mkdir(parents=True)
    records.atomic_write_json(ckpt / records.CKPT_META, {"step": 7})
    (ckpt / "model.safetensors").write_bytes(bytes(range(256)) * (size // 256))
    records.write_manifest(ckpt)
    return ckpt


def test_same_size_byte_flip_fails_verification(tmp_path: Path) -> None:
    ckpt = _sealed_checkpoint(tmp_path)
    assert records.verify_checkpoint(ckpt) is None
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the hash can see it
    f.write_bytes(bytes(data))
    why = records.verify_checkpoint(ckpt)
    assert why is not None and "model.safetensors" in why and "SHA-256" in why
    # the cheap listing still counts it as complete: finished is not intact
    assert records.complete_checkpoints(tmp_path) == [ckpt]


def test_changed_meta_fails_verification_too(tmp_path: Path) -> None:
    """Every file of the checkpoint is sealed, the small JSON ones included."""
    ckpt = _sealed_checkpoint(tmp_path)
    meta = ckpt / records.CKPT_META
    meta.write_text(meta.read_text().replace("7", "8"))
    assert records.verify_checkpoint(ckpt) is not None
