"""How many times the mid block runs: the training draw of S, replayable from (seed, step)."""

from __future__ import annotations

import numpy as np

from .config import ModelConfig


def train_loops(cfg: ModelConfig, seed: int, step: int) -> int:
    """S for training step ``step``: a pure function of (seed, step), so a resumed run replays the same S.

    Every rank calls this with the same arguments and so runs the same graph — no broadcast needed.
    """
    if cfg.loop_dist == "fixed" or cfg.s_max == 1:
        return cfg.s_max
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step), 0x5EED_100B]))
    return int(rng.integers(1, cfg.s_max + 1))


def loop_distribution(cfg: ModelConfig) -> dict[int, float]:
    """P(S = s) under the training distribution; the FLOPs module takes expectations over it."""
    if cfg.loop_dist == "fixed" or cfg.s_max == 1:
        return {cfg.s_max: 1.0}
    return {s: 1.0 / cfg.s_max for s in range(1, cfg.s_max + 1)}
