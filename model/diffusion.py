"""Masked (absorbing-state) diffusion: forward noising, the NELBO loss, its validation estimate, sampling.

The continuous-time NELBO of an absorbing-mask process with schedule alpha_t (probability a token is still
clean at time t) is   E_t [ w(t) * sum_{masked i} -log p_theta(x_i | z_t) ],  w(t) = -alpha'(t) / (1 - alpha(t))
(MDLM, Sahoo et al. 2024; Shi et al. 2024). For the linear schedule alpha_t = 1 - t this is 1/t. The model never
predicts the mask token (its logit is set to -inf: the "SUBS" parameterisation), and unmasked positions carry
no loss. Everything here is per token: a sequence's bound is divided by its number of loss positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "cosine")
MAX_EXP = math.log(2.0 ** 1023 * (2 - 2.0 ** -52))  # ~709.78: exp of anything larger overflows a float


@dataclass(frozen=True)
class Schedule:
    """alpha_t and the NELBO weight; t is clamped to [eps, 1] so w(t) stays finite."""

    name: str = "linear"
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"diffusion schedule {self.name!r} unknown; allowed: {', '.join(SCHEDULES)}")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "linear":
            return 1 - t
        return 1 - torch.cos(0.5 * math.pi * (1 - t))

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "linear":
            return 1 / t
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * (1 - t))

    def sample_t(self, n: int, generator: torch.Generator | None = None, antithetic: bool = True) -> torch.Tensor:
        """n times in [eps, 1]; antithetic = evenly spaced with one random offset (MDLM's low-discrepancy
        sampler), which cuts the variance of the batch loss without biasing it."""
        u = torch.rand(1 if antithetic else n, generator=generator)
        if antithetic:
            u = (u + torch.arange(n) / n) % 1
        return self.eps + (1 - self.eps) * u


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without stalling the host: a copy from pageable memory waits for the GPU to
    finish everything queued before it, so on CUDA the tensor is pinned and copied asynchronously."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def draw_mask(shape: torch.Size | tuple[int, int], t: torch.Tensor, schedule: Schedule,
              generator: torch.Generator | None = None, keep: torch.Tensor | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """Which positions z_t masks (bool (B, L), on the CPU): each independently with probability 1 - alpha_t;
    ``keep`` ((B, L), or (L,) for every sequence) marks positions never masked (an SFT prompt, a corpus's given
    part). Drawn on the CPU (or from uniform ``noise`` passed in) so a seed gives the same masks on any device and any batch size, and the loss can pick its
    rows without asking the device anything."""
    p_mask = (1 - schedule.alpha(t.cpu()))[:, None]
    u = torch.rand(shape, generator=generator) if noise is None else noise.cpu()
    masked = u < p_mask
    if keep is not None:
        masked &= ~keep.cpu()
    return masked


def forward_mask(x: torch.Tensor, t: torch.Tensor, mask_id: int, schedule: Schedule,
                 generator: torch.Generator | None = None, keep: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None):
    """z_t and the mask (both on x's device): see `draw_mask`."""
    masked = to_device(draw_mask(x.shape, t, schedule, generator, keep, noise), x.device)
    return torch.where(masked, torch.full_like(x, mask_id), x), masked


def _masked_logits(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    logits[..., mask_id] = float("-inf")
    return logits


def sequence_nelbo(model, x: torch.Tensor, t: torch.Tensor, loops: int | None, schedule: Schedule,
                   generator: torch.Generator | None = None, keep: torch.Tensor | None = None,
                   exit_threshold: float | None = None, noise: torch.Tensor | None = None,
                   full_head: bool = False):
    """Per-sequence NELBO estimate (nats per loss position) for given times t (B,).
    Returns (nelbo (B,), LoopStats, masked (B, L) on the CPU).

    The output head and the cross-entropy run on the masked rows only (the others weigh 0): their indices
    come from the CPU mask, so nothing waits for the device. ``full_head`` is the reference it replaced —
    logits at every position, the mask column overwritten, CE weighted by the mask — kept for the test that
    the two agree and for the bench that times them."""
    mask_id = model.cfg.mask_id
    B, L = x.shape
    masked_cpu = draw_mask(x.shape, t, schedule, generator, keep, noise)
    masked = to_device(masked_cpu, x.device)
    z = torch.where(masked, torch.full_like(x, mask_id), x)
    t_dev = to_device(t, x.device)
    if full_head:
        out = model(z, t_dev, loops=loops, exit_threshold=exit_threshold, return_stats=True)
        logits = _masked_logits(out.logits, mask_id)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), x.flatten(), reduction="none").view_as(x) * masked
    else:
        rows = to_device(masked_cpu.flatten().nonzero().squeeze(1), x.device)
        out = model(z, t_dev, loops=loops, exit_threshold=exit_threshold, rows=rows,
                    targets=x.flatten().index_select(0, rows))
        ce = out.nll.new_zeros(B * L).index_put((rows,), out.nll).view(B, L)
    n_positions = L if keep is None else to_device((~keep.cpu()).expand(B, L).sum(1).clamp_min(1), x.device)
    nelbo = schedule.weight(t_dev) * ce.sum(1) / n_positions
    return nelbo, out.stats, masked_cpu


def masked_diffusion_loss(model, x: torch.Tensor, loops: int | None = None,
                          generator: torch.Generator | None = None, schedule: Schedule = Schedule(),
                          keep: torch.Tensor | None = None, antithetic: bool = True, full_head: bool = False):
    """The training loss (mean NELBO per token over the batch) and a small dict of diagnostics. Nothing here
    waits for the device (no ``.item()``, no copy from pageable memory): a training step syncs once per log
    window, not once per micro-step."""
    t = schedule.sample_t(x.shape[0], generator, antithetic)
    nelbo, stats, masked = sequence_nelbo(model, x, t, loops, schedule, generator, keep, full_head=full_head)
    return nelbo.mean(), {"mask_frac": masked.float().mean().item(), "loops": loops}


@dataclass
class NLLEstimate:
    """A validation NLL bound with its Monte-Carlo error.

    ``se_nats`` is the MC standard error given the fixed eval tokens (the noise that differs between two
    models evaluated on the same set); ``data_se_nats`` also counts the spread across sequences.
    """

    nats: float
    se_nats: float
    data_se_nats: float
    n_seqs: int
    n_draws: int
    mean_loops: float
    per_seq: list[float] | None = None  # each sequence's NLL (mean over draws): for paired comparisons


    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    @property
    def ppl(self) -> float:
        """exp(NLL), inf where that overflows a float (a finite NLL past ~709 nats/token: a diverged model)."""
        return math.exp(self.nats) if self.nats < MAX_EXP else math.inf

    @property
    def finite(self) -> bool:
        """Every number of the estimate is a finite float: what a model that has not diverged gives."""
        return all(math.isfinite(v) for v in (self.nats, self.se_nats, self.ppl))

    def to_dict(self) -> dict:
        return {"nll": self.nats, "nll_bits": self.bits, "ppl": self.ppl, "nll_se": self.se_nats,
                "nll_data_se": self.data_se_nats, "n_seqs": self.n_seqs, "n_draws": self.n_draws,
                "mean_loops": self.mean_loops, "nll_per_seq": self.per_seq}


def eval_noise(shape: tuple[int, int], seed: int, draw: int, n_draws: int,
               schedule: Schedule = Schedule()) -> tuple[torch.Tensor, torch.Tensor]:
    """The times (N,) and uniform masking noise (N, L) of eval draw ``draw`` of ``n_draws``: a pure function of
    (seed, draw), drawn for the whole eval set, so every model, loop count and rank sees the same masks."""
    offsets = torch.rand(shape[0], generator=torch.Generator().manual_seed(seed))
    t = schedule.eps + (1 - schedule.eps) * ((offsets + draw / n_draws) % 1)
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + draw + 1))
    return t, noise


@torch.no_grad()
def nelbo_draws(model, tokens: torch.Tensor, loops: int | None = None, n_draws: int = 4, seed: int = 0,
                batch_size: int = 16, exit_threshold: float | None = None, schedule: Schedule = Schedule(),
                rows: range | None = None, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, float, int]:
    """Per-sequence NELBO of each noise draw, (len(rows), K) float64, and the loops the mid block ran (sum,
    count), for the sequences ``rows`` of ``tokens`` (default all). ``keep`` (L,) bool marks positions never
    masked (a corpus's given part, ``data.given``): the NELBO is then of the rest given them.

    The times for sequence n are stratified over the draws (t_nk = u_n + k/K mod 1, u_n seeded), and the
    masks come from a generator seeded by (seed, draw), both drawn for the whole set and indexed by n: two
    models, two loop counts, or two ranks holding different ``rows``, see exactly the same noise per
    sequence (which is what lets evaluation be sharded over ranks)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    N = tokens.shape[0]
    rows = range(N) if rows is None else rows
    per = torch.empty(len(rows), n_draws, dtype=torch.float64)
    loops_sum, loops_n = 0.0, 0
    for k in range(n_draws):
        t_all, noise = eval_noise(tokens.shape, seed, k, n_draws, schedule)
        for lo in range(0, len(rows), batch_size):
            idx = slice(rows.start + lo, min(rows.start + lo + batch_size, rows.stop))
            x = tokens[idx].to(device)
            nelbo, stats, _ = sequence_nelbo(model, x, t_all[idx], loops, schedule, exit_threshold=exit_threshold,
                                             noise=noise[idx], keep=keep)
            per[lo:lo + x.shape[0], k] = nelbo.double().cpu()
            loops_sum += stats.loops_used.sum().item()
            loops_n += stats.loops_used.numel()
    model.train(was_training)
    return per, loops_sum, loops_n


def estimate_from_draws(per: torch.Tensor, mean_loops: float) -> NLLEstimate:
    """The NLL and its errors from per-sequence draws (N, K): the MC error is the within-sequence variance
    over the N*K draws; the data error adds the spread of the sequence means."""
    N, n_draws = per.shape
    seq_mean = per.mean(1)
    mc_var = per.var(1, unbiased=True).mean().item() if n_draws > 1 else float("nan")
    return NLLEstimate(nats=per.mean().item(), se_nats=math.sqrt(mc_var / (N * n_draws)),
                       data_se_nats=(seq_mean.std().item() / math.sqrt(N)) if N > 1 else float("nan"),
                       n_seqs=N, n_draws=n_draws, mean_loops=mean_loops,
                       per_seq=[round(v, 6) for v in seq_mean.tolist()])


def validation_nll(model, tokens: torch.Tensor, loops: int | None = None, n_draws: int = 4, seed: int = 0,
                   batch_size: int = 16, exit_threshold: float | None = None,
                   schedule: Schedule = Schedule(), keep: torch.Tensor | None = None) -> NLLEstimate:
    """NLL bound over fixed eval sequences ``tokens`` (N, L) with K = ``n_draws`` fixed noise draws (see
    `nelbo_draws`): two models, or two loop counts, see exactly the same noise, so their difference is far
    more precise than either number alone."""
    per, loops_sum, loops_n = nelbo_draws(model, tokens, loops, n_draws, seed, batch_size, exit_threshold,
                                          schedule, keep=keep)
    return estimate_from_draws(per, loops_sum / max(loops_n, 1))


# -- sampling -------------------------------------------------------------------------------------
REMASKING = ("low_confidence", "random", "ancestral")
INFILL_ORDERS = ("confidence", "random", "raster")


@torch.no_grad()
def infill(model, x: torch.Tensor, steps: int, order: str = "confidence", loops: int | None = None,
           generator: torch.Generator | None = None, schedule: Schedule = Schedule()) -> torch.Tensor:
    """Fill the mask positions of ``x`` (B, L) in ``steps`` steps, an even share each step, argmax tokens.

    ``order`` is which masked positions are committed each step: ``confidence`` (the model's most confident,
    a free order), ``random`` or ``raster`` (left to right) — the last two are *restricted* generation
    orders: the model must get each cell right when its turn comes, however hard it is then. Positions
    that are not masked never change."""
    if order not in INFILL_ORDERS:
        raise ValueError(f"order {order!r} unknown; allowed: {', '.join(INFILL_ORDERS)}")
    was_training = model.training
    model.eval()
    mask_id = model.cfg.mask_id
    x = x.clone()
    masked0 = x == mask_id
    counts = _transfer_counts(masked0.sum(1), max(1, steps))
    pos = torch.arange(x.shape[1], device=x.device)[None].expand_as(x)
    for i in range(counts.shape[1]):
        masked = x == mask_id
        if not masked.any():
            break
        t = (masked.float().sum(1) / masked0.float().sum(1).clamp_min(1)).clamp_min(schedule.eps)
        logits = _masked_logits(model(x, t, loops=loops).float(), mask_id)
        x0 = logits.argmax(-1)
        if order == "confidence":
            score = torch.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
        elif order == "random":
            score = torch.rand(x.shape, generator=generator).to(x.device)
        else:
            score = -pos.float()
        score = torch.where(masked, score, torch.full_like(score, -float("inf")))
        k_max = int(counts[:, i].max())
        if k_max == 0:
            continue
        top = score.topk(k_max, dim=1).indices
        reveal = torch.zeros_like(masked)
        reveal.scatter_(1, top, torch.arange(k_max, device=x.device)[None] < counts[:, i:i + 1])
        x = torch.where(reveal & masked, x0, x)
    model.train(was_training)
    return x


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, P + gen_length)
    loops_per_step: torch.Tensor  # (steps, B): mid-block loops each denoising step actually ran
    nfe: int  # network evaluations

    @property
    def mean_loops(self) -> float:
        return self.loops_per_step.float().mean().item()


def _transfer_counts(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many positions to unmask at each of ``steps`` steps: as even as possible, earlier steps first."""
    base = n_masked // steps
    counts = base[:, None].repeat(1, steps)
    rem = n_masked % steps
    counts += (torch.arange(steps, device=n_masked.device)[None] < rem[:, None]).long()
    return counts


@torch.no_grad()
def sample(model, prompt: torch.Tensor | None, gen_length: int, steps: int, block_length: int | None = None,
           remasking: str = "low_confidence", loops: int | None = None, exit_threshold: float | None = None,
           temperature: float = 0.0, batch_size: int | None = None, generator: torch.Generator | None = None,
           schedule: Schedule = Schedule(), prompt_pad: torch.Tensor | None = None) -> SampleResult:
    """Generate ``gen_length`` tokens after ``prompt`` (B, P) by iterative unmasking from all-mask.

    Semi-autoregressive (LLaDA): the generation is split into blocks of ``block_length`` filled left to right,
    ``steps`` spread evenly over blocks. Within a block, ``low_confidence`` commits the most confident
    predictions each step, ``random`` commits random positions, ``ancestral`` follows the reverse process of
    the schedule (each masked token is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t)).
    The prompt is never masked and never changed. ``prompt_pad`` (B, P) bool marks left padding of prompts
    of unequal lengths: kept out of attention, so with greedy decoding a row's tokens are what it would get
    alone (``study.evaluate.lm_eval_model`` batches requests this way).
    """
    if remasking not in REMASKING:
        raise ValueError(f"remasking {remasking!r} unknown; allowed: {', '.join(REMASKING)}")
    block_length = block_length or gen_length
    if gen_length < 1 or gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a positive multiple of block_length={block_length}")
    n_blocks = gen_length // block_length
    if steps < n_blocks or steps % n_blocks:
        raise ValueError(f"steps={steps} must be a positive multiple of the number of blocks ({n_blocks})")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mask_id = model.cfg.mask_id
    if prompt is None:
        prompt = torch.empty(batch_size or 1, 0, dtype=torch.long)
    B, P = prompt.shape
    x = torch.cat([prompt.to(device), torch.full((B, gen_length), mask_id, dtype=torch.long, device=device)], 1)
    pad = None
    if prompt_pad is not None and bool(prompt_pad.any()):
        pad = torch.cat([prompt_pad.to(device), torch.zeros(B, gen_length, dtype=torch.bool, device=device)], 1)
    steps_per_block = steps // n_blocks
    loops_log = []
    for b in range(n_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        in_block = torch.zeros_like(x, dtype=torch.bool)
        in_block[:, lo:hi] = True
        counts = _transfer_counts(((x == mask_id) & in_block).sum(1), steps_per_block)
        for i in range(steps_per_block):
            masked = (x == mask_id) & in_block
            t = masked[:, P:].float().mean(1).clamp_min(schedule.eps)  # noise level of the generated part
            out = model(x, t, loops=loops, exit_threshold=exit_threshold, return_stats=True, pad=pad)
            logits, stats = out.logits, out.stats
            loops_log.append(stats.loops_used.cpu())
            logits = _masked_logits(logits.float(), mask_id)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                x0 = torch.multinomial(probs.flatten(0, 1).cpu(), 1, generator=generator).view(B, -1).to(device)
            else:
                x0 = logits.argmax(-1)
            if remasking == "ancestral":
                t_now = 1 - i / steps_per_block
                t_next = 1 - (i + 1) / steps_per_block
                a_t, a_s = schedule.alpha(torch.tensor(t_now)), schedule.alpha(torch.tensor(t_next))
                p_reveal = ((a_s - a_t) / (1 - a_t)).item() if i < steps_per_block - 1 else 1.0
                reveal = (torch.rand(x.shape, generator=generator).to(device) < p_reveal) & masked
            else:
                if remasking == "low_confidence":
                    score = torch.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
                else:
                    score = torch.rand(x.shape, generator=generator).to(device)
                score = torch.where(masked, score, torch.full_like(score, -1.0))
                k_max = int(counts[:, i].max())
                reveal = torch.zeros_like(masked)
                if k_max > 0:
                    top = score.topk(k_max, dim=1).indices
                    keep = torch.arange(k_max, device=device)[None] < counts[:, i:i + 1]
                    reveal.scatter_(1, top, keep)
                    reveal &= masked
            x = torch.where(reveal, x0, x)
    model.train(was_training)
    return SampleResult(tokens=x, loops_per_step=torch.stack(loops_log), nfe=len(loops_log))
