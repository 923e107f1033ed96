"""Validation during training: at the run's eval steps, the NLL bound at each inference loop count (and, at the
final step, under adaptive exit), and for a looped model the per-loop state diagnostics.

Every rank evaluates a contiguous share of the eval sequences (the noise of a sequence does not depend on
which rank evaluates it), the shares are gathered, and rank 0 appends the rows to evals.jsonl / loops.jsonl.
The NLL goes through the training loss's own path (`model.diffusion.nelbo_draws`: the head on masked rows).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import records
from model import LoopMDM
from model.diagnostics import loop_means, loop_sums
from model.diffusion import estimate_from_draws, nelbo_draws
from study.data import given_mask
from study.plan.config import RunConfig

from .distributed import Diverged, all_gather, any_rank
from .metrics import Progress


class Evaluator:
    def __init__(self, cfg: RunConfig, run_dir: Path, tokens: torch.Tensor | None, device: torch.device, rank: int,
                 world: int, tb=None, wandb=None):
        self.cfg, self.run_dir, self.tokens, self.device = cfg, run_dir, tokens, device
        self.given = given_mask(cfg.data)  # the NLL of what training predicts: p(rest | given) under data.given
        self.rank, self.world, self.tb, self.wandb = rank, world, tb, wandb
        self.steps = set(cfg.eval_steps()) if cfg.kind == "pretrain" else set()

    def should_eval(self, step: int, last: bool) -> bool:
        return step in self.steps

    def evaluate(self, progress: Progress, final: bool, module: torch.nn.Module,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
        """``weights`` (EMA, or the gathered ZeRO-3 weights) go into a plain copy of the model, so the training
        weights are never touched; without them ``module`` is evaluated as it is."""
        cfg = self.cfg
        model = module
        if weights is not None:
            model = LoopMDM(cfg.model).to(self.device)
            model.load_state_dict(weights)
        settings = [(s, None) for s in cfg.eval_loops]
        if final and cfg.model.is_looped:
            # adaptive exit is capped at the training s_max, so it is compared with the fixed S = s_max row:
            # "fewer loops at equal quality" against the depth the model was trained for, not an extrapolation
            settings += [(cfg.model.s_max, eps) for eps in cfg.eval.exit_thresholds]
        N = self.tokens.shape[0]
        share = -(-N // self.world)
        rows_here = range(min(N, self.rank * share), min(N, (self.rank + 1) * share))
        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        rows = []
        for loops, eps in settings:
            with bf16:
                per, lsum, ln = nelbo_draws(model, self.tokens, loops=loops, n_draws=cfg.eval.n_draws,
                                            seed=cfg.eval.seed, batch_size=cfg.eval.batch_size, exit_threshold=eps,
                                            rows=rows_here, keep=self.given)
            parts = all_gather((per, lsum, ln), self.world)
            est = estimate_from_draws(torch.cat([p[0] for p in parts]),
                                      sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts)))
            if any_rank(not est.finite, self.world, self.device):  # NaN, inf, or past exp's range
                raise Diverged(f"evaluation at step {progress.step} (S={loops}) gave NLL {est.nats:.4g} ± "
                               f"{est.se_nats:.3g} nats/token: the model diverged; lower optim.lr or raise "
                               f"optim.warmup_steps")
            rows.append({"step": progress.step, "tokens": progress.tokens, **progress.flops(), "eval_loops": loops,
                         "exit_threshold": eps, **est.to_dict(), "is_final": final})
        diag = None
        if cfg.model.is_looped:  # as far as the deepest loop count evaluated: drift shows past s_max
            K = max([*cfg.eval_loops, cfg.model.s_max])
            with bf16:
                sums = loop_sums(model, self.tokens, K, seed=cfg.eval.seed, n_draws=cfg.eval.n_draws,
                                 batch_size=cfg.eval.batch_size, rows=rows_here, keep=self.given)
            parts = all_gather(sums, self.world)
            diag = {"step": progress.step, "tokens": progress.tokens, **progress.flops(), "loops": K,
                    **loop_means({k: sum(p[k] for p in parts) for k in sums}), "is_final": final}
        if self.rank == 0:
            for row in rows:
                records.append_jsonl(self.run_dir / records.EVALS, row)
                if self.tb is not None:
                    eps = "" if row["exit_threshold"] is None else f"_exit{row['exit_threshold']:g}"
                    self.tb.add_scalar(f"val/nll_S{row['eval_loops']}{eps}", row["nll"], progress.step)
            if self.wandb is not None:
                self.wandb.log_eval(rows, progress.step)
            if diag is not None:
                records.append_jsonl(self.run_dir / records.LOOP_DIAG, diag)
