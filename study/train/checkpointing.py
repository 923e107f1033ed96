"""Checkpoints of a run: when to write one, writing it whole or not at all, and resuming from the newest intact one.

A checkpoint is written into a temp dir and renamed into place once complete, sealed by a manifest of sizes and
hashes (`records.write_manifest`); a resume verifies the newest one and falls back to an older intact one when
it is damaged. Each holds the DeepSpeed state (loaded with ``weights_only=True``) and ``model.safetensors`` —
full weights, gathered under ZeRO-3 — so evaluation needs no DeepSpeed. The data decomposition depends on the
world size and gradient accumulation, so both are recorded, and a resume with another split is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch

import records
from study.plan.config import RunConfig
from study.weights import save_weights

from .distributed import RunError, quiet_stdout
from .metrics import Progress


class Checkpointer:
    def __init__(self, cfg: RunConfig, run_dir: Path, engine, full_state: Callable[[], dict], rank: int, world: int,
                 accum: int, zero_stage: int, say: Callable[[str], None], warn: Callable[[str], None], quiet: bool):
        self.cfg, self.run_dir, self.engine, self.full_state = cfg, run_dir, engine, full_state
        self.rank, self.world, self.accum, self.zero_stage = rank, world, accum, zero_stage
        self.say, self.warn, self.quiet = say, warn, quiet  # warn: shown with --quiet too (a fallback is not progress)

    def should_save(self, step: int, last: bool) -> bool:
        return last or step % self.cfg.system.ckpt_every == 0

    def save(self, progress: Progress, ema: dict | None) -> Path:
        """Collective: every rank calls it at the same step."""
        cfg = self.cfg
        tmp = records.ckpt_tmp(self.run_dir, progress.step)
        final = records.ckpt_root(self.run_dir) / records.ckpt_name(progress.step)
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        torch.distributed.barrier()
        client = {"progress": progress.__dict__, "config_hash": cfg.hash, "world_size": self.world,
                  "grad_accum": self.accum}
        if ema is not None:
            client["ema"] = ema
        self.engine.save_checkpoint(str(tmp.parent), tag=tmp.name, client_state=client, save_latest=False)
        weights = self.full_state()  # collective under ZeRO-3: every rank takes part
        torch.distributed.barrier()
        if self.rank == 0:
            save_weights(tmp, weights, ema)
            records.atomic_write_json(tmp / records.CKPT_META, {
                "step": progress.step, "config_hash": cfg.hash, "tokens": progress.tokens, **progress.flops(),
                "world_size": self.world, "grad_accum": self.accum, "zero_stage": self.zero_stage})
            records.write_manifest(tmp)
            if final.exists():  # same step saved before (e.g. preempted exactly at a checkpoint)
                shutil.rmtree(final)
            os.rename(tmp, final)
            for old in records.complete_checkpoints(self.run_dir)[:-cfg.system.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        torch.distributed.barrier()
        return final

    def save_unless_saved(self, progress: Progress, ema: dict | None) -> None:
        """The preemption checkpoint (skipped when the step's regular one exists)."""
        latest = records.latest_checkpoint(self.run_dir)
        if latest is None or records.ckpt_step(latest) != progress.step:
            self.save(progress, ema)

    def _usable(self) -> list[Path]:
        """Complete checkpoints, newest first, that pass verification; the damaged ones are named."""
        good = []
        for ckpt in reversed(records.complete_checkpoints(self.run_dir)):
            why = records.verify_checkpoint(ckpt)
            if why is None:
                good.append(ckpt)
            else:
                self.warn(f"checkpoint {ckpt.name} is damaged ({why}); trying an older one")
        return good

    def resume(self) -> tuple[Progress, dict | None]:
        """(progress, EMA weights or None) from the newest loadable checkpoint; a fresh Progress when none."""
        if self.rank == 0:
            records.clean_partial_checkpoints(self.run_dir)
        torch.distributed.barrier()
        found = records.complete_checkpoints(self.run_dir)
        candidates = self._usable()
        if not candidates:
            if found:
                raise RunError(f"every checkpoint of {self.run_dir} is damaged ({', '.join(p.name for p in found)}); "
                               f"delete {records.ckpt_root(self.run_dir)} to start the run again from step 0")
            if self.rank == 0:  # a start from scratch: whatever an earlier attempt logged is replayed
                records.cut_logs_to_step(self.run_dir, -1)
            return Progress(), None
        for ckpt in candidates:
            meta = records.ckpt_meta(ckpt)
            if meta.get("config_hash") != self.cfg.hash:
                raise RunError(f"checkpoint {ckpt} was written by config {str(meta.get('config_hash'))[:12]}, not "
                               f"{self.cfg.hash[:12]}; refusing to resume from it (use another --out directory)")
            was = (meta.get("world_size", 1), meta.get("grad_accum", self.accum))
            if was != (self.world, self.accum):
                raise RunError(f"{ckpt.name} was written with world size {was[0]} x gradient accumulation {was[1]}; "
                               f"this start has {self.world} x {self.accum}. The batches and their sums depend on that "
                               f"split, so resuming would not continue the same run: restart with {was[0]} rank(s) "
                               f"(or set batch.micro_batch so the accumulation matches)")
            try:
                with quiet_stdout(self.quiet):
                    _, client = self.engine.load_checkpoint(str(ckpt.parent), tag=ckpt.name, load_optimizer_states=True,
                                                            load_lr_scheduler_states=False)
            except Exception as exc:  # noqa: BLE001 - a damaged file that the manifest could not see
                self.warn(f"checkpoint {ckpt.name} could not be loaded ({type(exc).__name__}: {exc}); trying an older one")
                continue
            if client is None:
                self.warn(f"DeepSpeed could not load checkpoint {ckpt.name}; trying an older one")
                continue
            ema = {k: v.float() for k, v in client["ema"].items()} if "ema" in client else None
            progress = Progress(**client["progress"])
            if self.rank == 0:
                dropped = records.cut_logs_to_step(self.run_dir, progress.step)
                extra = f"; dropped {sum(dropped.values())} log rows of the steps it replays" if any(dropped.values()) else ""
                (self.say if ckpt == found[-1] else self.warn)(f"resuming from step {progress.step} ({ckpt.name}){extra}")
            return progress, ema
        raise RunError(f"no checkpoint of {self.run_dir} could be loaded; delete {records.ckpt_root(self.run_dir)} to "
                       f"start the run again from step 0")
