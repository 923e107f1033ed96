"""The LoopMDM network: a bidirectional pre-norm transformer whose mid block is applied S times.

    tokens -> embed -> [head layers] -> [mid layers] x S (shared weights) -> [tail layers] -> norm -> logits

The looped block has three optional variants (``ModelConfig.loop_input / loop_embed / loop_norm``), all off
by default (the plain weight-tied recurrence). A plain pre-norm recurrence with nothing re-injected tends to
drift rather than settle (its state norm grows with every loop); these are the field's usual remedies:

    e   = output of the head layers (the token embedding when there are none)
    h_0 = e                                   (loop_input none)   |  h_0 = 0  (add, concat)
    u_k = h_{k-1}                             (none)
        = h_{k-1} + e                         (add: Huginn-style input injection, additive)
        = W [h_{k-1}; e]                      (concat: Huginn's concat + adapter; W starts as [I, I])
    u_k += P[min(k, s_max)]                   (loop_embed: learned loop-index embedding, clamped past s_max)
    h_k = mid_block(u_k);  h_k = LN(h_k)      (loop_norm: a norm on the state between loops)

The head output is re-injected rather than the raw embedding because it is what the block sees at S = 1 in
the plain model: re-injection keeps every loop anchored to the same input representation. With h_0 = 0 the
first loop of ``add`` sees exactly e (no doubled input), and ``concat`` starts out equal to ``add``.

With ``s_max=1`` it is an ordinary masked-diffusion transformer (MDLM-style, no causal mask), so the
same class gives the looped model and both baselines. Attention goes through
``F.scaled_dot_product_attention`` so CUDA picks flash / memory-efficient kernels. Linear layers have no
bias: the FLOPs module counts every matmul and nothing else, and norms/biases would only blur that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


@dataclass
class LoopStats:
    """What the mid block actually did: loops run per sequence, and the last relative change per sequence."""

    loops_used: torch.Tensor  # (B,) int
    last_rel_change: torch.Tensor  # (B,) float; nan where only one loop ran


@dataclass
class Positions:
    """What attention needs besides the activations. ``keep`` is None for an unpadded batch. A left-padded
    batch (generation from prompts of unequal lengths) keeps its padding out of attention and numbers each
    row's positions from its first real token, so every row computes what it would alone."""

    cos: torch.Tensor  # RoPE tables: (L, hd), or (B, 1, L, hd) when rows are numbered differently
    sin: torch.Tensor
    keep: torch.Tensor | None = None  # (B, 1, 1, L) bool, True on real tokens

    def rows(self, idx: torch.Tensor) -> "Positions":
        """The same positions for a subset of the batch (adaptive exit drops finished rows)."""
        if self.keep is None:
            return self
        return Positions(self.cos[idx], self.sin[idx], self.keep[idx])

    @property
    def token_mask(self) -> torch.Tensor | None:
        """(B, L, 1) float: 1 on real tokens, for per-sequence norms that must ignore padding."""
        return None if self.keep is None else self.keep[:, 0, 0, :, None].float()


class LoopOutput(NamedTuple):
    """What ``forward(..., return_stats=True | return_attention=True)`` returns: the logits, the loop
    statistics, and (analysis only) the mid layers' attention maps per loop — a list over loops of lists over
    mid layers of (B, H, L, L) tensors, None unless asked for.

    A NamedTuple, not a dataclass: DeepSpeed finds the tensors of a module's output by walking tuples, lists
    and dicts, and hooks its backward prologue onto them (the bf16 optimizer clears its bf16 gradients there
    before each micro-step adds them into the fp32 accumulator); behind a dataclass it finds none."""

    logits: torch.Tensor | None
    stats: LoopStats
    attention: list[list[torch.Tensor]] | None = None
    nll: torch.Tensor | None = None  # (n,) fp32 per-row cross-entropy, when forward was given rows/targets


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (L, hd/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, pos: Positions,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        cos, sin = pos.cos.to(q.dtype), pos.sin.to(q.dtype)  # fp32 tables, bf16 activations: one dtype
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        probs = None
        if return_probs:  # analysis path only: materialise the attention matrix
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if pos.keep is not None:
                scores = scores.masked_fill(~pos.keep, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            y = probs @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=pos.keep, is_causal=False)
        return self.out(y.transpose(1, 2).reshape(B, L, D)), probs


class Block(nn.Module):
    """Pre-norm block; with time conditioning, adaLN-zero style shift/scale/gate from the t embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, elementwise_affine=not cfg.time_cond)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, elementwise_affine=not cfg.time_cond)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_mlp, bias=False), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.d_mlp, cfg.d_model, bias=False))
        self.ada = None
        if cfg.time_cond:
            self.ada = nn.Linear(cfg.d_model, 6 * cfg.d_model)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, pos: Positions, c: torch.Tensor | None = None,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.ada is None:
            a, probs = self.attn(self.norm1(x), pos, return_probs)
            x = x + a
            return x + self.mlp(self.norm2(x)), probs
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None, :].chunk(6, dim=-1)
        a, probs = self.attn(self.norm1(x) * (1 + scale1) + shift1, pos, return_probs)
        x = x + (1 + gate1) * a
        return x + (1 + gate2) * self.mlp(self.norm2(x) * (1 + scale2) + shift2), probs


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a small MLP (used only when ``time_cond``)."""

    def __init__(self, d_model: int, n_freq: int = 256):
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(n_freq, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.n_freq // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class LoopMDM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = _pad_rows(nn.Embedding(cfg.vocab_size, cfg.d_model), cfg.padded_vocab)
        self.head_layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_head_layers))
        self.mid_layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_mid_layers))
        self.loop_adapter = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=False) if cfg.loop_input == "concat" else None
        self.loop_index = nn.Embedding(cfg.s_max, cfg.d_model) if cfg.loop_embed else None
        self.loop_state_norm = nn.LayerNorm(cfg.d_model) if cfg.loop_norm else None
        self.tail_layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_tail_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = None if cfg.tie_weights else _pad_rows(nn.Linear(cfg.d_model, cfg.vocab_size, bias=False),
                                                              cfg.padded_vocab)
        self.time_embed = TimeEmbedding(cfg.d_model) if cfg.time_cond else None
        cos, sin = rope_tables(cfg.max_seq_len, cfg.d_model // cfg.n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # columns the model never predicts: the mask token and the padding of the vocabulary (SUBS)
        forbidden = torch.zeros(cfg.padded_vocab)
        forbidden[cfg.mask_id] = float("-inf")
        forbidden[cfg.vocab_size:] = float("-inf")
        self.register_buffer("column_bias", forbidden, persistent=False)
        self._head_nll = head_nll  # compile_blocks() swaps in a compiled copy
        self.apply(self._init_weights)
        # GPT-2 style: scale residual projections by depth so deep (and deeply looped) stacks start stable.
        depth = cfg.effective_layers(max(1, round(cfg.expected_loops)))
        for name, p in self.named_parameters():
            if name.endswith("attn.out.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))
        if self.loop_adapter is not None:  # [I, I]: concat starts as additive injection, not a random squeeze
            with torch.no_grad():
                eye = torch.eye(cfg.d_model)
                self.loop_adapter.weight.copy_(torch.cat([eye, eye], dim=1))

    def compile_blocks(self, **kwargs) -> "LoopMDM":
        """``torch.compile`` every transformer block in place (weights and state_dict keys unchanged). The
        loop over S stays in Python, so one compiled block graph serves every loop count: S ~ U{1..s_max}
        costs no recompilation (modules are inlined, so all blocks share the graph too); new graphs come only
        with new shapes (training vs evaluation batches) and options (attention maps, padding)."""
        for blk in [*self.head_layers, *self.mid_layers, *self.tail_layers]:
            blk.compile(**kwargs)
        # the output head and loss over the masked rows: their number changes every step, so the row dimension
        # is marked dynamic (see `_row_nll`) and one graph serves every count
        self._head_nll = torch.compile(head_nll, **kwargs)
        return self

    def _init_weights(self, m: nn.Module) -> None:
        """N(0, 0.02) for every matmul and lookup; padded vocabulary rows start (and, never used nor
        predicted, stay) at zero. Only the real rows are drawn, so a padded model starts from the same
        weights as the unpadded one (the generator draws the same numbers in the same order)."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            if m is self.embed or m is self.lm_head:
                nn.init.normal_(m.weight[:self.cfg.vocab_size], mean=0.0, std=0.02)
                nn.init.zeros_(m.weight[self.cfg.vocab_size:])
            else:
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, loops: int | None = None,
                exit_threshold: float | None = None, return_stats: bool = False,
                return_attention: bool = False, pad: torch.Tensor | None = None,
                rows: torch.Tensor | None = None, targets: torch.Tensor | None = None):
        """Logits over the vocabulary for every position of ``x`` (B, L) — or, with ``return_stats`` /
        ``return_attention``, a `LoopOutput` holding them with what the mid block did.

        With ``rows`` (n,) — flat positions b * L + i — and their clean tokens ``targets`` (n,), the output
        head runs on those rows only and the `LoopOutput` holds ``nll`` (n,) fp32, the cross-entropy of each
        row with the mask token and the vocabulary padding excluded, instead of logits: the training loss
        weights every unmasked position by 0, so the head (most of a narrow model's FLOPs with a 50k
        vocabulary) and the loss need not run there (`model.diffusion.sequence_nelbo`).

        ``loops`` is S, the mid-block repetitions (default ``s_max``; any S >= 1 works, S > s_max too).
        With ``exit_threshold`` a sequence stops looping once ||h_k - h_{k-1}|| / ||h_k|| < threshold,
        ``loops`` then being the cap; finished sequences are dropped from the batch so the savings are real.
        ``return_attention`` (analysis only) also returns the mid layers' attention probabilities per loop.
        ``pad`` (B, L) bool marks padding (left-padded prompts of unequal lengths): it is kept out of
        attention and of the exit criterion, and positions count from each row's first real token.
        """
        loops = self.cfg.s_max if loops is None else int(loops)
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        B = x.shape[0]
        h, pos, c = self._prelude(x, t, pad)
        attn_maps: list[list[torch.Tensor]] | None = [] if return_attention else None
        if exit_threshold is None:
            h = self._loop(h, pos, c, loops, attn_maps)
            stats = LoopStats(loops_used=torch.full((B,), loops, dtype=torch.long, device=x.device),
                              last_rel_change=torch.full((B,), float("nan"), device=x.device))
        else:
            h, stats = self._loop_until_settled(h, pos, c, loops, exit_threshold, attn_maps)
        for blk in self.tail_layers:
            h, _ = blk(h, pos, c)
        if targets is not None:
            return LoopOutput(logits=None, stats=stats, attention=attn_maps, nll=self._row_nll(h, rows, targets))
        h = self.norm(h)
        logits = F.linear(h, self._head_weight())
        if self.cfg.padded_vocab != self.cfg.vocab_size:
            logits = logits[..., :self.cfg.vocab_size]
        if not (return_stats or return_attention):
            return logits
        return LoopOutput(logits=logits, stats=stats, attention=attn_maps)

    def _head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def _row_nll(self, h: torch.Tensor, rows: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """Final norm, output head and cross-entropy on the rows ``rows`` of h (B, L, d) only."""
        if rows is None or rows.shape != targets.shape:
            raise ValueError("rows and targets go together: one flat position (b * L + i) per target token")
        h_rows = self.norm(h.flatten(0, 1).index_select(0, rows))
        torch._dynamo.maybe_mark_dynamic(h_rows, 0)  # the masked-row count differs every step
        torch._dynamo.maybe_mark_dynamic(targets, 0)
        return self._head_nll(h_rows, self._head_weight(), self.column_bias, targets)

    def _positions(self, x: torch.Tensor, pad: torch.Tensor | None) -> Positions:
        L = x.shape[1]
        if pad is None:
            return Positions(self.rope_cos[:L].to(x.device), self.rope_sin[:L].to(x.device))
        if pad.shape != x.shape or pad.dtype != torch.bool:
            raise ValueError(f"pad must be a bool tensor shaped like x {tuple(x.shape)}, got {pad.dtype} {tuple(pad.shape)}")
        real = ~pad.to(x.device)
        idx = (real.long().cumsum(1) - 1).clamp_min(0)  # each row numbered from its first real token
        cos, sin = self.rope_cos.to(x.device)[idx], self.rope_sin.to(x.device)[idx]
        return Positions(cos[:, None], sin[:, None], real[:, None, None, :])

    def _prelude(self, x: torch.Tensor, t: torch.Tensor | None, pad: torch.Tensor | None = None):
        """Embedding and head layers: the head output e, with the positions and the t conditioning."""
        B, L = x.shape
        if L > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {L} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        pos = self._positions(x, pad)
        c = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this model is time-conditioned (model.time_cond=true): pass t")
            c = self.time_embed(t.expand(B) if t.dim() == 0 else t)
        h = self.embed(x)
        for blk in self.head_layers:
            h, _ = blk(h, pos, c)
        return h, pos, c

    def _mid(self, h, pos, c, attn_maps) -> torch.Tensor:
        """One application of the looped block (its layers in order), recording attention when asked."""
        loop_maps = []
        for blk in self.mid_layers:
            h, probs = blk(h, pos, c, attn_maps is not None)
            if probs is not None:
                loop_maps.append(probs)
        if attn_maps is not None:
            attn_maps.append(loop_maps)
        return h

    def _start(self, e: torch.Tensor) -> torch.Tensor:
        """h_0: the head output itself, or zeros when the head output is re-injected into every loop."""
        return e if self.cfg.loop_input == "none" else torch.zeros_like(e)

    def _step(self, h, e, k: int, pos, c, attn_maps) -> torch.Tensor:
        """Loop k (1-based): h_{k-1} -> h_k, with the configured variants (see the module docstring)."""
        if self.cfg.loop_input == "add":
            h = h + e
        elif self.cfg.loop_input == "concat":
            h = self.loop_adapter(torch.cat([h, e], dim=-1))
        if self.loop_index is not None:
            h = h + self.loop_index.weight[min(k, self.cfg.s_max) - 1].to(h.dtype)
        h = self._mid(h, pos, c, attn_maps)
        return h if self.loop_state_norm is None else self.loop_state_norm(h)

    def _loop(self, h, pos, c, loops: int, attn_maps, trace: list | None = None) -> torch.Tensor:
        """The recurrence: the mid block applied ``loops`` times with shared weights. ``trace`` (analysis only)
        receives the state after every loop, for the loop diagnostics."""
        e, h = h, self._start(h)
        for k in range(1, loops + 1):
            h = self._step(h, e, k, pos, c, attn_maps)
            if trace is not None:
                trace.append(h)
        return h

    def _loop_until_settled(self, h, pos, c, cap: int, threshold: float, attn_maps):
        """Adaptive exit: each sequence stops once its relative change falls under ``threshold`` (at most
        ``cap`` loops). Finished sequences leave the batch (their state is kept as it was when they stopped),
        so the compute saved is real. The first loop's change is measured from h_0 (the head output, or 0
        with input injection, where it is 1 by construction)."""
        B = h.shape[0]
        loops_used = torch.full((B,), cap, dtype=torch.long, device=h.device)
        last_change = torch.full((B,), float("nan"), device=h.device)
        active = torch.arange(B, device=h.device)  # sequences still looping
        e, h = h, self._start(h)
        for k in range(1, cap + 1):
            whole = active.numel() == B
            h_act, e_act = (h, e) if whole else (h[active], e[active])
            c_act = c if c is None or whole else c[active]
            pos_act = pos if whole else pos.rows(active)
            new = self._step(h_act, e_act, k, pos_act, c_act, attn_maps)
            rel = relative_change(new, h_act, pos_act.token_mask)
            last_change[active] = rel
            done = rel < threshold
            loops_used[active[done]] = k
            h = new if whole else h.index_copy(0, active, new)
            active = active[~done]
            if active.numel() == 0:
                break
        return h, LoopStats(loops_used=loops_used, last_rel_change=last_change)

    @torch.no_grad()
    def loop_trace(self, x: torch.Tensor, t: torch.Tensor | None, loops: int) -> list[torch.Tensor]:
        """The state after each of ``loops`` loops, h_0 first (analysis only: the loop diagnostics)."""
        h, pos, c = self._prelude(x, t)
        trace = [self._start(h)]
        self._loop(h, pos, c, loops, None, trace)
        return trace


def _pad_rows(m: nn.Embedding | nn.Linear, rows: int):
    """The vocabulary-sized module with zero rows appended up to ``rows``. Built at the real size first, so
    constructing it draws the same random numbers as the unpadded model does (and every later module starts
    from the same weights)."""
    extra = rows - m.weight.shape[0]
    if extra:
        m.weight = nn.Parameter(torch.cat([m.weight.data, m.weight.data.new_zeros(extra, m.weight.shape[1])]))
        if isinstance(m, nn.Embedding):
            m.num_embeddings = rows
        else:
            m.out_features = rows
    return m


def head_nll(h: torch.Tensor, weight: torch.Tensor, column_bias: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (n,) in fp32 of the logits h @ weight.T, with forbidden columns (mask token, vocabulary
    padding) pushed to -inf by an additive bias rather than written in place, so that under ``torch.compile``
    the fp32 upcast, the bias and the log-softmax fuse into one pass over the logits."""
    logits = F.linear(h, weight).float() + column_bias.float()
    return F.cross_entropy(logits, targets, reduction="none")


def relative_change(new: torch.Tensor, old: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """||h_k - h_{k-1}|| / ||h_k|| per sequence (B,), in fp32: the adaptive-exit criterion. ``token_mask``
    (B, L, 1) leaves padding out of both norms."""
    if token_mask is not None:
        new, old = new * token_mask.to(new.dtype), old * token_mask.to(old.dtype)
    return ((new - old).flatten(1).norm(dim=1) / new.flatten(1).norm(dim=1).clamp_min(1e-12)).float()
