"""Model configuration: one dataclass describes a LoopMDM, a same-size MDM and a deeper MDM.

A non-looped MDM is simply a config with ``s_max=1, loop_dist='fixed'``; the deeper MDM with equal
per-step compute puts ``k * n_mid_layers`` physical layers where the looped model re-uses ``n_mid_layers``.
Keeping all three in one shape is what lets the FLOPs module and the analysis treat them uniformly.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .flops import forward_flops

LOOP_DISTS = ("uniform", "fixed")
LOOP_INPUTS = ("none", "add", "concat")
MAX_PAD_VOCAB = 1024


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def reject_unknown_keys(section: str, given: dict, allowed) -> None:
    """Fail on keys a dataclass does not have, suggesting the closest real one (typos are the usual cause)."""
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{section}.{key}" if section else str(key),
                              f"unknown key.{hint} Allowed: {', '.join(sorted(allowed))}")


@functools.lru_cache(maxsize=None)
def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class ModelConfig:
    """The network: embedding -> head layers -> mid block applied S times -> tail layers -> output head."""

    vocab_size: int = 258  # includes the mask token
    d_model: int = 128
    n_heads: int = 4
    mlp_ratio: float = 4.0
    n_head_layers: int = 1
    n_mid_layers: int = 2
    n_tail_layers: int = 1
    s_max: int = 4
    loop_dist: str = "uniform"  # training distribution of S: uniform over 1..s_max, or fixed at s_max
    max_seq_len: int = 256
    time_cond: bool = False  # adaLN conditioning on t; off by default, as in MDLM
    tie_weights: bool = True
    mask_token_id: int | None = None  # None -> vocab_size - 1
    # Looped-block variants (defaults = the plain weight-tied recurrence; see model/transformer.py's docstring):
    loop_input: str = "none"  # re-inject the head output into every loop: none | add | concat (+ projection)
    loop_embed: bool = False  # a learned loop-index embedding added before each loop (index clamped at s_max)
    loop_norm: bool = False  # a LayerNorm on the state after each loop
    # Embedding and output head padded to a multiple of this many rows (1: none; 128 suits GPU matmul tiles).
    # Padded rows start at zero and are never used nor predicted: the model is the same function, with the
    # same initial weights; parameter and FLOPs counts are those of the real vocabulary (model/flops.py).
    pad_vocab: int = 1

    def __post_init__(self) -> None:
        self.validate()

    # -- derived ---------------------------------------------------------------------------------
    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1 if self.mask_token_id is None else self.mask_token_id

    @property
    def padded_vocab(self) -> int:
        """Rows of the embedding and the output head: vocab_size rounded up to a multiple of pad_vocab."""
        return -(-self.vocab_size // self.pad_vocab) * self.pad_vocab

    @property
    def n_layers_physical(self) -> int:
        return self.n_head_layers + self.n_mid_layers + self.n_tail_layers

    @property
    def is_looped(self) -> bool:
        return self.s_max > 1

    @property
    def expected_loops(self) -> float:
        """E[S] under the training distribution; sets the depth of the equal-compute deeper MDM."""
        return (1 + self.s_max) / 2 if self.loop_dist == "uniform" else float(self.s_max)

    @property
    def has_loop_variant(self) -> bool:
        return self.loop_input != "none" or self.loop_embed or self.loop_norm

    @property
    def d_mlp(self) -> int:
        return int(round(self.mlp_ratio * self.d_model))

    def effective_layers(self, loops: int) -> int:
        return self.n_head_layers + loops * self.n_mid_layers + self.n_tail_layers

    # -- construction ----------------------------------------------------------------------------
    def validate(self) -> None:
        positive = ("vocab_size", "d_model", "n_heads", "n_mid_layers", "s_max", "max_seq_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                what = "the looped block needs at least one layer" if name == "n_mid_layers" else "must be >= 1"
                raise ConfigError(f"model.{name}", f"got {value!r}; {what} (a positive integer)")
        for name in ("n_head_layers", "n_tail_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"model.{name}", f"got {value!r}; must be an integer >= 0")
        if self.d_model % self.n_heads:
            raise ConfigError("model.d_model", f"{self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                              f"pick a width that is a multiple of the head count")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError("model.d_model", f"head dim {self.d_model // self.n_heads} must be even for RoPE")
        if not self.mlp_ratio > 0:
            raise ConfigError("model.mlp_ratio", f"got {self.mlp_ratio!r}; must be > 0")
        if self.loop_dist not in LOOP_DISTS:
            raise ConfigError("model.loop_dist", f"got {self.loop_dist!r}; allowed: {', '.join(LOOP_DISTS)}")
        if self.loop_input not in LOOP_INPUTS:
            raise ConfigError("model.loop_input", f"got {self.loop_input!r}; allowed: {', '.join(LOOP_INPUTS)}")
        for name in ("loop_embed", "loop_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model.{name}", f"got {getattr(self, name)!r}; must be true or false")
        if self.has_loop_variant and not self.is_looped:
            raise ConfigError("model.loop_input" if self.loop_input != "none" else
                              ("model.loop_embed" if self.loop_embed else "model.loop_norm"),
                              "a looped-block variant needs a looped model (model.s_max > 1); set it back to its "
                              "default (loop_input: none, loop_embed: false, loop_norm: false) or raise s_max")
        p = self.pad_vocab
        if not isinstance(p, int) or isinstance(p, bool) or p < 1 or p & (p - 1) or p > MAX_PAD_VOCAB:
            raise ConfigError("model.pad_vocab", f"got {p!r}; must be 1 (no padding) or a power of two up to "
                              f"{MAX_PAD_VOCAB} (128 suits GPU matmul tiles)")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ConfigError("model.mask_token_id", f"{self.mask_id} is outside the vocabulary [0, {self.vocab_size})")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        reject_unknown_keys("model", d, field_names(cls))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plain_stack(self, n_layers: int) -> "ModelConfig":
        """A non-looped MDM of ``n_layers``, written canonically (all layers in the 'mid' slot, S = 1): where a
        looped block sat makes no difference once nothing loops, so baselines of different placements are
        one and the same run (and, as blocks are built in order, the same initial weights)."""
        return self.replace(n_head_layers=0, n_mid_layers=n_layers, n_tail_layers=0, s_max=1, loop_dist="fixed",
                            loop_input="none", loop_embed=False, loop_norm=False)

    def non_looped(self) -> "ModelConfig":
        """The same-size MDM: the same layers, the mid block applied once."""
        return self.plain_stack(self.n_layers_physical)

    def deeper_depths(self, seq_len: int, tolerance: float = 0.05) -> list[tuple[int, float]]:
        """The deeper MDM at equal expected per-step compute: [(layers, per-step FLOPs ratio deeper/looped)].

        The depth is the integer whose exact forward FLOPs (at ``seq_len``, the looped variant's extra
        matmuls included) lie closest to the looped model's at E[S], in ratio. When that one is more than
        ``tolerance`` away (E[S] x n_mid not integral: 1 + 2.5 + 1 = 4.5 layers), both bracketing depths are
        returned, lower first, so the comparison can be interpolated to equal compute instead of resting on
        a model 10% cheaper or dearer than the looped one."""
        target = forward_flops(self, seq_len, self.expected_loops)
        ratio = lambda n: forward_flops(self.plain_stack(n), seq_len, 1) / target  # noqa: E731
        per_layer = forward_flops(self.plain_stack(2), seq_len, 1) - forward_flops(self.plain_stack(1), seq_len, 1)
        exact = 1 + (target - forward_flops(self.plain_stack(1), seq_len, 1)) / per_layer  # plain FLOPs are linear in depth
        lo = max(1, math.floor(exact + 1e-9))
        if ratio(lo) >= 1 - 1e-12:  # an integer depth at equal compute (or the looped model is below one layer)
            return [(lo, ratio(lo))]
        hi = lo + 1
        best = min((lo, hi), key=lambda n: abs(math.log(ratio(n))))
        if abs(math.log(ratio(best))) <= math.log1p(tolerance):
            return [(best, ratio(best))]
        return [(lo, ratio(lo)), (hi, ratio(hi))]

    def unrolled(self, loops: int) -> "ModelConfig":
        """The non-looped MDM that runs the same layers as this model at a fixed S = ``loops``, unrolled."""
        return self.plain_stack(self.effective_layers(loops))

    def deeper(self, seq_len: int | None = None) -> "ModelConfig":
        """The deeper MDM closest in per-step FLOPs (see `deeper_depths`; ``seq_len`` defaults to max_seq_len)."""
        depths = self.deeper_depths(seq_len or self.max_seq_len, tolerance=float("inf"))
        return self.plain_stack(depths[0][0])

    def replace(self, **changes: Any) -> "ModelConfig":
        return type(self)(**{**asdict(self), **changes})
