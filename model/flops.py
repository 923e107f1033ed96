"""FLOPs and parameter counts, under the conventions the literature mixes up.

The paper's headline ("matched with 3.3x fewer training FLOPs") depends on how FLOPs are counted, and at small
scale the conventions differ by up to ~1.7x, so every number is available under each:

- ``6N_nonembed``: 6 * non-embedding parameters * tokens (Kaplan et al.; SMDM). For a looped model N is the
  *effective* count N_head + S * N_mid + N_tail (+ the final norm etc.): weights are shared, compute is not.
- ``6N_total``: the same with the embedding (and an untied output head) included.
- ``exact``: every matmul of the forward pass — QKV and output projections, bidirectional attention scores
  and values (L^2 terms), the MLP, the output head, adaLN modulation when present, the concat adapter of
  ``loop_input: concat`` (once per loop) — at 2 FLOPs per
  multiply-add; backward = 2x forward. Norms, softmax and elementwise ops are not counted (as in
  ``torch.utils.flop_counter``, which the tests check this against).

``exact`` counts the output head at every position over the real vocabulary: the model's FLOPs, whatever the
implementation runs. It is what budgets, the compute axis of every fit and MFU (``metrics.jsonl``, the bench)
use. What the device actually runs differs in two ways: the training loss runs the head only on the masked
rows (half of them on average: `model.diffusion`), and ``model.pad_vocab`` adds columns that are computed and
thrown away. `executed_forward_flops` counts that, for hardware utilisation next to MFU; it is never a budget.

Parameter counts are those of the real vocabulary too: padding rows are allocated but are not parameters of
the model (zero, never used, never predicted).

All functions are pure and cheap: the sweep planner calls them for 10,000-run grids.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # annotations only: model.config imports this module (deeper_depths), never the reverse
    from .config import ModelConfig

CONVENTIONS = ("6N_nonembed", "6N_total", "exact")
TIME_FREQS = 256  # sinusoidal features of t (model.transformer.TimeEmbedding)


def _check(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"FLOPs convention {convention!r} unknown; allowed: {', '.join(CONVENTIONS)}")


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they sit; ``effective(S)`` counts the mid block S times."""

    embedding: int  # token embedding (+ untied output head, + the loop-index embedding: lookups, no matmul)
    per_layer: int
    head: int
    mid: int  # the looped block's layers plus what runs once per loop (concat adapter, state norm)
    tail: int
    other: int  # final norm, time embedding: non-embedding, outside the layer stack

    @property
    def nonembedding(self) -> int:
        return self.head + self.mid + self.tail + self.other

    @property
    def total(self) -> int:
        return self.embedding + self.nonembedding

    def effective_nonembedding(self, loops: float) -> float:
        return self.head + loops * self.mid + self.tail + self.other

    def to_dict(self, loops: float | None = None) -> dict:
        d = asdict(self) | {"nonembedding": self.nonembedding, "total": self.total}
        if loops is not None:
            d["effective"] = self.effective_nonembedding(loops)
        return d


@functools.lru_cache(maxsize=4096)  # configs are frozen (hashable); a 10,000-run plan asks many times
def param_counts(cfg: ModelConfig) -> ParamCounts:
    d = cfg.d_model
    if cfg.time_cond:  # affine-free LayerNorms; adaLN Linear(d, 6d) with bias
        norms, ada = 0, 6 * d * d + 6 * d
        time_embed = TIME_FREQS * d + d + d * d + d
    else:
        norms, ada, time_embed = 4 * d, 0, 0
    per_layer = 4 * d * d + 2 * d * cfg.d_mlp + norms + ada
    embedding = cfg.vocab_size * d * (1 if cfg.tie_weights else 2) + (cfg.s_max * d if cfg.loop_embed else 0)
    per_loop = (2 * d * d if cfg.loop_input == "concat" else 0) + (2 * d if cfg.loop_norm else 0)
    return ParamCounts(embedding=embedding, per_layer=per_layer, head=cfg.n_head_layers * per_layer,
                       mid=cfg.n_mid_layers * per_layer + per_loop, tail=cfg.n_tail_layers * per_layer,
                       other=2 * d + time_embed)


def forward_flops(cfg: ModelConfig, seq_len: int, loops: int | float, batch: int = 1) -> float:
    """Exact matmul FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` with S = ``loops``."""
    d, L = cfg.d_model, seq_len
    per_layer = 2 * L * (4 * d * d + 2 * d * cfg.d_mlp) + 4 * L * L * d
    per_seq = cfg.effective_layers(loops) * per_layer + 2 * L * d * cfg.vocab_size
    if cfg.loop_input == "concat":
        per_seq += loops * 2 * L * (2 * d) * d
    if cfg.time_cond:
        per_seq += cfg.effective_layers(loops) * 2 * d * 6 * d + 2 * (TIME_FREQS * d + d * d)
    return float(batch * per_seq)


def executed_forward_flops(cfg: ModelConfig, seq_len: int, loops: int | float, batch: int = 1,
                           head_rows: float = 1.0) -> float:
    """Matmul FLOPs the device runs in one forward pass: as `forward_flops`, but with the output head over a
    fraction ``head_rows`` of the positions (the masked ones, in training) and the padded vocabulary."""
    head = 2 * seq_len * cfg.d_model
    return forward_flops(cfg, seq_len, loops, batch) + batch * head * (head_rows * cfg.padded_vocab - cfg.vocab_size)


def train_flops_per_token(cfg: ModelConfig, seq_len: int, loops: int | float, convention: str = "exact") -> float:
    """Training (forward + backward) FLOPs per token at S = ``loops``."""
    _check(convention)
    if convention == "exact":
        return 3 * forward_flops(cfg, seq_len, loops) / seq_len
    p = param_counts(cfg)
    n = p.effective_nonembedding(loops) + (p.embedding if convention == "6N_total" else 0)
    return 6.0 * n


def inference_flops_per_token(cfg: ModelConfig, seq_len: int, loops: int | float, convention: str = "exact") -> float:
    """One denoising step's forward FLOPs per token (a third of training, under every convention)."""
    return train_flops_per_token(cfg, seq_len, loops, convention) / 3


def expected_train_flops_per_token(cfg: ModelConfig, seq_len: int, convention: str = "exact") -> float:
    """E over the training distribution of S: what a FLOPs budget buys in tokens, before the draws.
    Every convention is linear in S, so the expectation is the cost at E[S]."""
    return train_flops_per_token(cfg, seq_len, cfg.expected_loops, convention)


def train_flops(cfg: ModelConfig, seq_len: int, tokens_per_step: int, loops_per_step: Iterable[int],
                convention: str = "exact") -> float:
    """FLOPs actually spent over steps whose S were ``loops_per_step``."""
    return sum(tokens_per_step * train_flops_per_token(cfg, seq_len, s, convention) for s in loops_per_step)


def all_conventions(fn, *args, **kwargs) -> dict[str, float]:
    """``{convention: fn(..., convention=c)}`` — the shape every log line and plan row uses."""
    return {c: fn(*args, convention=c, **kwargs) for c in CONVENTIONS}
