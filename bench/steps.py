"""A bare training step (forward + backward + AdamW, no harness) and its timing: shared by bench_train.py and
gpu_check.py, so both time the same thing.

A `Variant` turns each throughput change of issue #22 on or off, so a change's gain is the ratio of two timings
taken in the same process, interleaved round by round:
  - ``full_head``: the output head and loss over every position (before), not the masked rows only;
  - ``pad_vocab``: the vocabulary padded to a multiple (model.pad_vocab);
  - ``host_syncs``: two host syncs per micro-step, where the loss path had them before (a blocking copy of
    the mask before the forward, ``.item()`` of the mask fraction after it);
  - ``fused``: fused AdamW (CUDA);
  - ``compile``: ``system.compile`` (every block compiled, the row head too);
  - ``mixed``: the harness's optimisation on top (bf16 weights with an fp32 master copy, fp32 gradients,
    clipping at 1.0, AdamW on the master): the like-for-like reference for the harness's own overhead.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from model import LoopMDM, ModelConfig, flops, masked_diffusion_loss


@dataclass(frozen=True)
class Variant:
    name: str = "all changes"
    full_head: bool = False
    pad_vocab: int = 128
    host_syncs: bool = False
    fused: bool = True
    compile: bool = True
    mixed: bool = False

    def without(self, change: str) -> "Variant":
        """This variant with one change undone, named for it."""
        undo = {"rows head": {"full_head": True}, "vocab padding": {"pad_vocab": 1}, "no host syncs": {"host_syncs": True},
                "fused AdamW": {"fused": False}, "compile": {"compile": False}}[change]
        return replace(self, name=f"- {change}", **undo)


BEFORE = Variant("before #22", full_head=True, pad_vocab=1, host_syncs=True, fused=False, compile=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareStep:
    """One model (built once per padding and compile setting: compiling is in place) stepped under a variant."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self._models: dict[tuple[int, bool], LoopMDM] = {}

    def model(self, v: Variant) -> LoopMDM:
        key = (v.pad_vocab, v.compile)
        if key not in self._models:
            torch.manual_seed(0)
            with torch.device(self.device):
                m = LoopMDM(self.cfg.replace(pad_vocab=v.pad_vocab)).to(self.dtype)
            self._models[key] = m.compile_blocks() if v.compile else m
        return self._models[key]

    def make(self, v: Variant, loops: int, batch: int, seq_len: int, clip: float = 0.0):
        model = self.model(v)
        x = torch.randint(0, self.cfg.vocab_size - 1, (batch, seq_len), device=self.device)
        gen = torch.Generator().manual_seed(0)
        if v.mixed and self.dtype != torch.float32:
            return self._mixed_step(model, v, loops, x, gen)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=v.fused and self.device.type == "cuda")

        def step():
            if v.host_syncs:
                _sync(self.device)
            loss, _ = masked_diffusion_loss(model, x, loops=loops, generator=gen, full_head=v.full_head)
            if v.host_syncs:
                _sync(self.device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:  # the harness's optimisation (gradient clipping is a choice, not overhead)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return loss

        return step

    def _mixed_step(self, model, v: Variant, loops: int, x: torch.Tensor, gen: torch.Generator):
        params = [p for p in model.parameters() if p.requires_grad]
        master = [p.detach().float().clone().requires_grad_() for p in params]
        opt = torch.optim.AdamW(master, lr=1e-4, fused=v.fused and self.device.type == "cuda")

        def step():
            loss, _ = masked_diffusion_loss(model, x, loops=loops, generator=gen, full_head=v.full_head)
            loss.backward()
            for p, m in zip(params, master):
                m.grad = p.grad.float()
                p.grad = None
            torch.nn.utils.clip_grad_norm_(master, 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_copy_(params, master)
            return loss

        return step

    def time(self, v: Variant, loops: int, batch: int, seq_len: int, iters: int, warmup: int = 3,
             clip: float = 0.0) -> float:
        """Seconds per step: ``iters`` steps queued back to back, one sync at the end (as a training loop that
        syncs once per log window runs them), after ``warmup`` steps (compilation included)."""
        step = self.make(v, loops, batch, seq_len, clip)
        for _ in range(warmup):
            step()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(self.device)
        return (time.perf_counter() - t0) / iters


def interleaved(timers: dict[str, callable], rounds: int, deadline: float | None = None) -> dict[str, float]:
    """Median seconds of each timer over ``rounds`` rounds that run every timer once, in turn (a timer run
    first would also pay for the machine warming up); stops early (at least one round) past ``deadline``."""
    times: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(rounds):
        if r and deadline is not None and time.perf_counter() > deadline:
            break
        for k, fn in timers.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items() if v}


def step_row(cfg: ModelConfig, loops: int, batch: int, seq_len: int, seconds: float, peak: float,
             mask_frac: float = 0.5, v: Variant | None = None) -> dict:
    """Throughput of a step: tokens/s, MFU (the model's FLOPs, ``exact`` convention) and the utilisation of what
    the device executed (head on ~half the rows, padded vocabulary) for the variant."""
    tokens = batch * seq_len
    model_flops = tokens * flops.train_flops_per_token(cfg, seq_len, loops, "exact")
    ran = cfg if v is None else cfg.replace(pad_vocab=v.pad_vocab)
    rows = 1.0 if v is None or v.full_head else mask_frac
    executed = 3 * flops.executed_forward_flops(ran, seq_len, loops, batch, head_rows=rows)
    return {"step_s": seconds, "tokens_per_s": tokens / seconds, "tflops": model_flops / seconds / 1e12,
            "mfu": model_flops / seconds / peak, "executed_util": executed / seconds / peak}
