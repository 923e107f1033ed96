"""What the looped block does to its state, loop by loop: the diagnostics behind "does looping refine or drift".

On the eval sequences, masked as in the first eval draw, the state h_k after each loop k (h_0 = what enters
the first loop) gives per loop:

- ``rel_change``: ||h_k - h_{k-1}|| / ||h_k||, the adaptive-exit criterion;
- ``state_norm``: ||h_k|| per token (RMS over positions of the per-token L2 norm);
- ``increment_norm``: ||h_k - h_{k-1}|| per token;
- ``increment_cos``: cosine between consecutive increments (h_k - h_{k-1}) and (h_{k-1} - h_{k-2}).

A recurrence that *settles* has shrinking increments (rel_change falls because the numerator falls); one
that *drifts* keeps a constant increment pointing the same way (cosine near 1) while the norm grows linearly,
so rel_change falls like 1/k for the wrong reason and adaptive exit acts as a fixed cap. Sums and counts are
returned so ranks holding different sequences can add them up.
"""
from __future__ import annotations

import torch

from .diffusion import Schedule, eval_noise, forward_mask
from .transformer import relative_change

STATS = ("rel_change", "state_norm", "increment_norm", "increment_cos")


@torch.no_grad()
def loop_sums(model, tokens: torch.Tensor, loops: int, seed: int = 0, n_draws: int = 1, batch_size: int = 16,
              rows: range | None = None, schedule: Schedule = Schedule(),
              keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-loop sums over sequences (float64, shape (loops,)) of each statistic, and ``n`` the count;
    ``keep`` (L,) bool: positions never masked, as in `model.diffusion.nelbo_draws`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = range(tokens.shape[0]) if rows is None else rows
    t_all, noise = eval_noise(tokens.shape, seed, 0, n_draws, schedule)
    sums = {k: torch.zeros(loops, dtype=torch.float64) for k in STATS}
    n = 0
    for lo in range(0, len(rows), batch_size):
        idx = slice(rows.start + lo, min(rows.start + lo + batch_size, rows.stop))
        x = tokens[idx].to(device)
        z, _ = forward_mask(x, t_all[idx], model.cfg.mask_id, schedule, noise=noise[idx], keep=keep)
        trace = [h.float().flatten(1) for h in model.loop_trace(z, t_all[idx].to(device), loops)]
        per_token = x.shape[1] ** 0.5
        prev_inc = None
        for k in range(1, loops + 1):
            inc = trace[k] - trace[k - 1]
            norm_k, inc_norm = trace[k].norm(dim=1), inc.norm(dim=1)
            sums["rel_change"][k - 1] += relative_change(trace[k], trace[k - 1]).sum().double().cpu()
            sums["state_norm"][k - 1] += (norm_k / per_token).sum().double().cpu()
            sums["increment_norm"][k - 1] += (inc_norm / per_token).sum().double().cpu()
            if prev_inc is not None:
                sums["increment_cos"][k - 1] += torch.nn.functional.cosine_similarity(inc, prev_inc, dim=1).sum().double().cpu()
            prev_inc = inc
        n += x.shape[0]
    model.train(was_training)
    return {**sums, "n": torch.tensor(float(n), dtype=torch.float64)}


def loop_means(sums: dict[str, torch.Tensor]) -> dict[str, list[float | None]]:
    """Sums (possibly added over ranks) -> per-loop means; increment_cos is undefined (None) at loop 1."""
    n = float(sums["n"])
    out: dict[str, list[float | None]] = {k: [round(float(v) / n, 6) for v in sums[k]] for k in STATS}
    out["increment_cos"][0] = None
    return out


def loop_diagnostics(model, tokens: torch.Tensor, loops: int, **kw) -> dict[str, list[float | None]]:
    """`loop_sums` of one process, as per-loop means."""
    return loop_means(loop_sums(model, tokens, loops, **kw))
