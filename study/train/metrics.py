"""What a run counts and logs: cumulative progress (tokens, FLOPs under every convention), the throughput
window between log lines, and the log itself (metrics.jsonl, the heartbeat, TensorBoard, the console).

The training loss stays on the device until a log line needs it: one host sync per log window, never one per
step or micro-step (on a GPU each sync leaves the device idle while the host queues the next kernels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import records
from model import flops
from study.plan.config import RunConfig

from . import wandb_log


@dataclass
class Progress:
    """What the loop carries between steps (and through a checkpoint, as DeepSpeed client state)."""

    step: int = 0  # optimizer steps completed
    tokens: int = 0
    flops_6N_nonembed: float = 0.0
    flops_6N_total: float = 0.0
    flops_exact: float = 0.0
    wall_s: float = 0.0

    def flops(self) -> dict[str, float]:
        return {f"flops_{c}": getattr(self, f"flops_{c}") for c in flops.CONVENTIONS}

    def add_step(self, cfg: RunConfig, loops: int) -> None:
        tokens = cfg.tokens_per_step
        self.step += 1
        self.tokens += tokens
        for conv in flops.CONVENTIONS:
            f = tokens * flops.train_flops_per_token(cfg.model, cfg.data.seq_len, loops, conv)
            setattr(self, f"flops_{conv}", getattr(self, f"flops_{conv}") + f)


@dataclass
class Window:
    """The throughput window: training steps only (not evals or checkpoints). MFU counts the model's FLOPs
    under the ``exact`` convention (see model/flops.py for what the device executes instead)."""

    seconds: float = 0.0
    tokens: int = 0
    flops: float = 0.0
    steps: int = 0
    loss: torch.Tensor | None = None  # the sum of the steps' losses, on the device

    def reset(self, device: torch.device) -> None:
        self.seconds, self.tokens, self.flops, self.steps = 0.0, 0, 0.0, 0
        self.loss = torch.zeros((), device=device)

    def add(self, cfg: RunConfig, loops: int, seconds: float) -> None:
        self.seconds += seconds
        self.tokens += cfg.tokens_per_step
        self.flops += cfg.tokens_per_step * flops.train_flops_per_token(cfg.model, cfg.data.seq_len, loops, "exact")
        self.steps += 1

    def mean_loss(self) -> float:
        """The one host sync of the window."""
        return self.loss.item() / max(self.steps, 1)


class MetricsLog:
    """Rank 0 writes; every rank asks `should_log` (the answer is the same everywhere)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, rank: int, progress_step: int, quiet: bool):
        self.cfg, self.run_dir, self.rank, self.quiet = cfg, run_dir, rank, quiet
        self.path = run_dir / records.METRICS
        self.tb = self._tensorboard(progress_step)
        self.wandb = wandb_log.open_run(cfg, run_dir, rank, quiet)  # system.wandb: W&B's mirror (rank 0)

    def _tensorboard(self, step: int):
        """``system.tensorboard``: rank 0 mirrors metrics.jsonl and evals.jsonl into TensorBoard events in
        <run>/tb. On resume the writer purges events past the checkpoint's step (they are replayed), as the
        jsonl logs are cut back; the jsonl files stay the record the analysis reads."""
        if not self.cfg.system.tensorboard or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter  # the config checked that tensorboard is installed

        return SummaryWriter(log_dir=str(records.tensorboard_dir(self.run_dir)), purge_step=step + 1 if step else None)

    def should_log(self, step: int, last: bool) -> bool:
        return last or step % self.cfg.system.log_every == 0

    def write(self, progress: Progress, window: Window, loops: int, loss: float, lr: float, peak: float,
              engine, echo: bool) -> None:
        if self.rank != 0:
            return
        dt = max(window.seconds, 1e-9)
        row = {"step": progress.step, "tokens": progress.tokens, "loops": loops, "loss": loss, "lr": lr,
               "grad_norm": grad_norm(engine), "tokens_per_s": window.tokens / dt,
               "mfu": window.flops / dt / peak if peak else None, "wall_s": progress.wall_s, **progress.flops()}
        records.append_jsonl(self.path, row)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "loops"):
                if row[key] is not None:
                    self.tb.add_scalar(f"train/{key}", row[key], progress.step)
        if self.wandb is not None:
            self.wandb.log_train(row, progress.step)
        records.heartbeat(self.run_dir, step=progress.step, loss=loss, state="running")
        if echo and not self.quiet:
            print(f"[{self.run_dir.name}] step {progress.step}/{self.cfg.steps} "
                  f"({100 * progress.step / max(self.cfg.steps, 1):.0f}%) loss {loss:.4f} S={loops} "
                  f"lr {lr:.2e} {row['tokens_per_s']:.0f} tok/s", flush=True)

    def close(self, status: str = "done") -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close(status)


def grad_norm(engine) -> float | None:
    try:
        g = engine.get_global_grad_norm()
        return None if g is None else float(g)
    except Exception:  # noqa: BLE001 - not every ZeRO stage exposes it
        return None
