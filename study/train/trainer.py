"""One training run with a DeepSpeed engine: resumable, deterministic, honest about the FLOPs it spends.

Determinism is by construction, not by saved RNG state: the batch of step k comes from (seed, k, rank), the
loop count S from (seed, k), the masking noise from (seed, k, rank, micro-step). So a run that resumes from a
checkpoint at step k replays exactly what an uninterrupted run would have done, and the checkpoint only needs
weights and optimizer state. The data decomposition depends on the world size and gradient accumulation, so
both are recorded, and a resume with another decomposition is refused (the sums would differ).

Checkpoints are written into a temp dir and renamed into place once complete, sealed by a manifest of sizes
and hashes (`records.write_manifest`); a resume verifies the newest one and falls back to an older intact one
when it is damaged. Each holds the DeepSpeed state (loaded with ``weights_only=True``) and
``model.safetensors`` — full weights, gathered under ZeRO-3 — so evaluation needs no DeepSpeed.

A NaN or inf anywhere (the loss of any step, the weights after the last update, an evaluation) ends the run
FAILED with the step and reason, never DONE.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import records
from model import LoopMDM, flops, masked_diffusion_loss, train_loops
from model.diagnostics import loop_means, loop_sums
from model.diffusion import estimate_from_draws, nelbo_draws
from study.plan.config import RunConfig, dump_yaml
from study.plan.config import from_dict as config_from_dict
from study.machine import machine_record
from study.weights import load_weights, save_weights

from .distributed import (RunError, all_gather, any_rank, full_parameters, init_distributed, pick_device,
                          quiet_stdout, safe_checkpoint_engine)
from . import wandb_log


class Diverged(RunError):
    """A NaN or inf in the loss, the weights or an evaluation."""


class ForeignRunDir(RunError):
    """The directory belongs to another config: never written to, never marked failed."""


def resolve_parent(init_from: str, run_dir: Path) -> Path:
    """A sweep writes ``init_from`` relative to its study directory (``runs/<slug>-<hash>``), so a fine-tuned
    run's identity does not depend on where the study lives; a user may also pass any path."""
    p = Path(init_from)
    if not p.is_absolute():
        in_study = records.study_of(run_dir) / p
        if in_study.is_dir():
            return in_study
    return p


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
    """The throughput window: training steps only (not evals or checkpoints); the loss stays on the device
    until a log line needs it, so there is one host sync per log interval, not per step."""

    seconds: float = 0.0
    tokens: int = 0
    flops: float = 0.0
    steps: int = 0
    loss: torch.Tensor | None = None

    def reset(self, device: torch.device) -> None:
        self.seconds, self.tokens, self.flops, self.steps = 0.0, 0, 0.0, 0
        self.loss = torch.zeros((), device=device)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, stop: Callable[[], bool] | None = None,
                 quiet: bool = False):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        self.stop = stop or (lambda: False)
        self.quiet = quiet
        self.rank = 0
        self.tb = None  # a TensorBoard writer on rank 0 with system.tensorboard
        self.wandb = None  # the W&B mirror on rank 0 with system.wandb (study.train.wandb_log)

    def say(self, text: str) -> None:
        if self.rank == 0 and not self.quiet:
            print(f"[{self.run_dir.name}] {text}", flush=True)

    def warn(self, text: str) -> None:
        """Not progress: shown with --quiet too (a damaged checkpoint, a fallback to an older one)."""
        if self.rank == 0:
            print(f"[{self.run_dir.name}] warning: {text}", flush=True)

    # -- set-up ----------------------------------------------------------------------------------
    def _check_not_foreign(self) -> dict | None:
        """Refuse a run dir that belongs to another config (returns its config, None when new)."""
        try:
            theirs = records.read_config(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a YAML error of any kind
            raise ForeignRunDir(f"{self.run_dir}/config.yaml is unreadable ({type(exc).__name__}); "
                                f"use another --out directory") from None
        if theirs is not None:
            their_hash = records.recorded_hash(theirs) or config_from_dict(theirs).hash
            if their_hash != self.cfg.hash:
                raise ForeignRunDir(f"{self.run_dir} holds a run of another config (hash {their_hash[:12]}, this one "
                                    f"is {self.cfg.hash[:12]}); use another --out directory")
        return theirs

    def _claim_run_dir(self) -> None:
        """Write our config.yaml into a new run dir (after the inputs were checked)."""
        if self._check_not_foreign() is None and self.rank == 0:
            meta = dict(self.cfg.meta) | {"hash": self.cfg.hash, "steps": self.cfg.steps,
                                          "params": flops.param_counts(self.cfg.model).to_dict(self.cfg.model.expected_loops)}
            records.atomic_write_text(self.run_dir / records.CONFIG, dump_yaml(self.cfg.replace(meta=meta)))

    def _check_writable(self) -> None:
        why = records.unwritable(self.run_dir, "dir")
        if why is not None:
            raise RunError(f"the run directory {self.run_dir} is not writable ({why}); pass --out to a writable place")

    def _load_data(self) -> None:
        """Tokenizer, corpus, parent weights: everything that can be wrong with the inputs, checked before
        the run directory is touched (the vocabulary before any token cache is written)."""
        from study import data as data_mod

        cfg = self.cfg
        tok = data_mod.get_tokenizer(cfg.data.tokenizer)
        if (tok.vocab_size, tok.mask_id) != (cfg.model.vocab_size, cfg.model.mask_id):
            raise RunError(f"model.vocab_size={cfg.model.vocab_size} (mask id {cfg.model.mask_id}) does not match "
                           f"tokenizer {cfg.data.tokenizer!r} ({tok.vocab_size} tokens, mask id {tok.mask_id}); "
                           f"leave model.vocab_size out to take the tokenizer's")
        if cfg.init_from:
            self.parent_ckpt = records.latest_checkpoint(resolve_parent(cfg.init_from, self.run_dir))
            if self.parent_ckpt is None:
                raise RunError(f"init_from={cfg.init_from} has no complete checkpoint; train that run first")
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else data_mod.default_cache_dir()
        self.train_tokens = self.eval_tokens = self.qa = None
        if cfg.kind == "sft":
            self.qa = data_mod.prepare_qa(cfg.data.corpus, cfg.data.tokenizer, cfg.data.seq_len)
        else:
            td = data_mod.prepare_tokens(cfg.data.corpus, cfg.data.tokenizer, cache, val_fraction=cfg.data.val_fraction,
                                         max_tokens=cfg.data.max_tokens, val_split=cfg.data.val_split)
            self.train_tokens = td.train
            self.eval_tokens = data_mod.eval_batches(td.val, cfg.eval.n_seqs, cfg.data.seq_len, cfg.data.align)
        self.data_mod = data_mod

    def _build_engine(self) -> None:
        import deepspeed

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # initial weights: a function of the seed alone
        self.model = LoopMDM(cfg.model)
        if cfg.init_from:
            load_weights(self.parent_ckpt, self.model)
        if cfg.system.compile:
            self.model.compile_blocks()
        micro = cfg.batch.micro_batch or cfg.batch.global_batch // self.world
        if micro < 1 or cfg.batch.global_batch % (micro * self.world):
            raise RunError(f"batch.global_batch={cfg.batch.global_batch} is not divisible by batch.micro_batch={micro} "
                           f"x world size {self.world}; choose a micro batch that divides it")
        self.micro, self.accum = micro, cfg.batch.global_batch // (micro * self.world)
        # bf16 through DeepSpeed (weights and activations bf16, fp32 master weights in the optimizer): the
        # same engine path as fp32, so checkpoint/resume and ZeRO sharding work unchanged
        ds_config = {
            "train_batch_size": cfg.batch.global_batch,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": self.accum,
            "gradient_clipping": cfg.optim.grad_clip,
            "zero_optimization": {"stage": cfg.system.zero_stage},
            "bf16": {"enabled": cfg.precision == "bf16"},
            "steps_per_print": 10**12,
            "wall_clock_breakdown": False,
        }
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                                eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
        with quiet_stdout(self.quiet):
            self.engine, self.opt, _, _ = deepspeed.initialize(model=self.model, optimizer=opt, config=ds_config)
        self.engine.checkpoint_engine = safe_checkpoint_engine()
        self.ema = None
        if cfg.optim.ema > 0:
            self.ema = {k: v.clone() for k, v in self._full_state().items()}

    def _full_state(self) -> dict[str, torch.Tensor]:
        """Full fp32 weights on every rank (gathered under ZeRO-3), detached copies on the CPU."""
        module = self.engine.module
        with full_parameters(module, self.cfg.system.zero_stage):
            return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}

    # -- checkpointing ---------------------------------------------------------------------------
    def _save(self, progress: Progress) -> Path:
        cfg = self.cfg
        tmp, final = records.ckpt_tmp(self.run_dir, progress.step), records.ckpt_root(self.run_dir) / records.ckpt_name(progress.step)
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        torch.distributed.barrier()
        client = {"progress": progress.__dict__, "config_hash": cfg.hash, "world_size": self.world,
                  "grad_accum": self.accum}
        if self.ema is not None:
            client["ema"] = self.ema
        self.engine.save_checkpoint(str(tmp.parent), tag=tmp.name, client_state=client, save_latest=False)
        weights = self._full_state()  # collective under ZeRO-3: every rank takes part
        torch.distributed.barrier()
        if self.rank == 0:
            save_weights(tmp, weights, self.ema)
            records.atomic_write_json(tmp / records.CKPT_META, {
                "step": progress.step, "config_hash": cfg.hash, "tokens": progress.tokens, **progress.flops(),
                "world_size": self.world, "grad_accum": self.accum, "zero_stage": cfg.system.zero_stage})
            records.write_manifest(tmp)
            if final.exists():  # same step saved before (e.g. preempted exactly at a checkpoint)
                shutil.rmtree(final)
            os.rename(tmp, final)
            for old in records.complete_checkpoints(self.run_dir)[:-cfg.system.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        torch.distributed.barrier()
        return final

    def _usable_checkpoints(self) -> list[Path]:
        """Complete checkpoints, newest first, that pass verification; the damaged ones are named."""
        good = []
        for ckpt in reversed(records.complete_checkpoints(self.run_dir)):
            why = records.verify_checkpoint(ckpt)
            if why is None:
                good.append(ckpt)
            else:
                self.warn(f"checkpoint {ckpt.name} is damaged ({why}); trying an older one")
        return good

    def _resume(self) -> Progress:
        if self.rank == 0:
            records.clean_partial_checkpoints(self.run_dir)
        torch.distributed.barrier()
        found = records.complete_checkpoints(self.run_dir)
        candidates = self._usable_checkpoints()
        if not candidates:
            if found:
                raise RunError(f"every checkpoint of {self.run_dir} is damaged ({', '.join(p.name for p in found)}); "
                               f"delete {records.ckpt_root(self.run_dir)} to start the run again from step 0")
            if self.rank == 0:  # a start from scratch: whatever an earlier attempt logged is replayed
                records.cut_logs_to_step(self.run_dir, -1)
            return Progress()
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
            if self.ema is not None and "ema" in client:
                self.ema = {k: v.float() for k, v in client["ema"].items()}
            progress = Progress(**client["progress"])
            if self.rank == 0:
                dropped = records.cut_logs_to_step(self.run_dir, progress.step)
                extra = f"; dropped {sum(dropped.values())} log rows of the steps it replays" if any(dropped.values()) else ""
                (self.say if ckpt == found[-1] else self.warn)(f"resuming from step {progress.step} ({ckpt.name}){extra}")
            return progress
        raise RunError(f"no checkpoint of {self.run_dir} could be loaded; delete {records.ckpt_root(self.run_dir)} to "
                       f"start the run again from step 0")

    def _tensorboard(self, progress: Progress):
        """``system.tensorboard``: rank 0 mirrors metrics.jsonl and evals.jsonl into TensorBoard events in
        <run>/tb. On resume the writer purges events past the checkpoint's step (they are replayed), as the
        jsonl logs are cut back; the jsonl files stay the record the analysis reads."""
        if not self.cfg.system.tensorboard or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter  # the config checked that tensorboard is installed

        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=progress.step + 1 if progress.step else None)

    # -- evaluation ----------------------------------------------------------------------------------
    def _eval(self, progress: Progress, final: bool) -> None:
        """Every rank evaluates a contiguous share of the eval sequences (same noise per sequence whatever
        the split), the shares are gathered, rank 0 appends the rows to evals.jsonl (and, for a looped
        model, the per-loop state diagnostics to loops.jsonl). With EMA, a plain copy of the model holds the
        EMA weights, so the training weights are never touched."""
        cfg = self.cfg
        if self.ema is not None or cfg.system.zero_stage == 3:
            state = self.ema if self.ema is not None else self._full_state()
            model = LoopMDM(cfg.model).to(self.device)
            model.load_state_dict(state)
        else:
            model = self.engine.module
        settings = [(s, None) for s in cfg.eval_loops]
        if final and cfg.model.is_looped:
            # adaptive exit is capped at the training s_max, so it is compared with the fixed S = s_max row:
            # "fewer loops at equal quality" against the depth the model was trained for, not an extrapolation
            settings += [(cfg.model.s_max, eps) for eps in cfg.eval.exit_thresholds]
        N = self.eval_tokens.shape[0]
        share = -(-N // self.world)
        rows_here = range(min(N, self.rank * share), min(N, (self.rank + 1) * share))
        rows = []
        for loops, eps in settings:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                per, lsum, ln = nelbo_draws(model, self.eval_tokens, loops=loops, n_draws=cfg.eval.n_draws,
                                            seed=cfg.eval.seed, batch_size=cfg.eval.batch_size, exit_threshold=eps,
                                            rows=rows_here)
            parts = all_gather((per, lsum, ln), self.world)
            est = estimate_from_draws(torch.cat([p[0] for p in parts]), sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts)))
            if any_rank(not est.finite, self.world, self.device):  # NaN, inf, or past exp's range
                raise Diverged(f"evaluation at step {progress.step} (S={loops}) gave NLL {est.nats:.4g} ± "
                               f"{est.se_nats:.3g} nats/token: the model diverged; lower optim.lr or raise "
                               f"optim.warmup_steps")
            rows.append({"step": progress.step, "tokens": progress.tokens, **progress.flops(), "eval_loops": loops,
                         "exit_threshold": eps, **est.to_dict(), "is_final": final})
        diag = None
        if cfg.model.is_looped:  # as far as the deepest loop count evaluated: drift shows past s_max
            K = max([*cfg.eval_loops, cfg.model.s_max])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                sums = loop_sums(model, self.eval_tokens, K, seed=cfg.eval.seed, n_draws=cfg.eval.n_draws,
                                 batch_size=cfg.eval.batch_size, rows=rows_here)
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

    def _check_weights(self, progress: Progress) -> None:
        """Every parameter finite after the last update (a NaN produced by that update shows nowhere else)."""
        ok = all(bool(torch.isfinite(p.detach()).all()) for p in self.engine.module.parameters())
        if any_rank(not ok, self.world, self.device):
            raise Diverged(f"weights became NaN/inf at step {progress.step}; lower optim.lr, raise "
                           f"optim.warmup_steps or set optim.grad_clip")

    def _peak_flops(self) -> float:
        from study.train.perf import peak_flops

        return peak_flops(self.device, torch.bfloat16 if self.cfg.precision == "bf16" else torch.float32)

    # -- the loop ----------------------------------------------------------------------------------
    def _setup(self) -> Progress:
        cfg = self.cfg
        self.device = pick_device(cfg.system.device)
        if cfg.system.num_threads:
            torch.set_num_threads(cfg.system.num_threads)
        if self.device.type == "cuda" and cfg.precision == "fp32" and cfg.system.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True  # recorded in the run: MFU is then against TF32 peak
            torch.backends.cudnn.allow_tf32 = True
        self.rank, self.world = init_distributed(self.device)
        self._load_data()
        self._claim_run_dir()
        if self.rank == 0:
            records.heartbeat(self.run_dir, step=0, state="starting")
        self._build_engine()
        progress = self._resume()
        if self.rank == 0:
            records.atomic_write_json(self.run_dir / records.SYSTEM, {
                "world_size": self.world, "grad_accum": self.accum, "micro_batch": self.micro,
                "zero_stage": cfg.system.zero_stage, "precision": cfg.precision, "device": str(self.device),
                "tf32": bool(self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32),
                "machine": machine_record()})
        return progress

    def _train_step(self, step: int, window: Window) -> int:
        cfg = self.cfg
        lr = cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loops = train_loops(cfg.model, cfg.seed, step)
        for micro in range(self.accum):
            stream = (step * self.world + self.rank) * self.accum + micro
            gen = torch.Generator().manual_seed(hash((cfg.seed, stream, 0xD1FF)) & 0x7FFF_FFFF_FFFF_FFFF)
            keep = None
            if cfg.kind == "sft":
                x, keep = self.data_mod.get_qa_batch(self.qa, self.micro, cfg.seed, stream)
                keep = keep.to(self.device)
            else:
                x = self.data_mod.get_batch(self.train_tokens, self.micro, cfg.data.seq_len, cfg.seed, step,
                                            rank=self.rank * self.accum + micro, align=cfg.data.align)
            x = x.to(self.device, non_blocking=True)
            loss, _ = masked_diffusion_loss(self.engine, x, loops=loops, generator=gen, keep=keep)
            self.engine.backward(loss)
            self.engine.step()
            window.loss += loss.detach().float() / self.accum
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self._full_state().items():
                    self.ema[k].mul_(cfg.optim.ema).add_(v, alpha=1 - cfg.optim.ema)
        return loops

    def run(self) -> dict:
        cfg = self.cfg
        progress = self._setup()
        self.tb = self._tensorboard(progress)
        self.wandb = wandb_log.open_run(cfg, self.run_dir, self.rank, quiet=self.quiet)
        eval_steps = set(cfg.eval_steps())
        metrics_path, evals_path = self.run_dir / records.METRICS, self.run_dir / records.EVALS
        steps = cfg.steps
        peak = self._peak_flops()
        bar = None
        if self.rank == 0 and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=progress.step, desc=self.run_dir.name[:40], unit="step", leave=False)
        if progress.step == 0 and 0 not in eval_steps and cfg.kind == "pretrain":
            self._eval(progress, final=False)  # the untrained point anchors every curve
        status = "done"
        window = Window()
        window.reset(self.device)
        run_t0 = time.perf_counter() - progress.wall_s
        while progress.step < steps:
            if any_rank(self.stop(), self.world, self.device):  # every rank checkpoints at the same step
                status = "preempted"
                break
            t_step = time.perf_counter()
            lr = cfg.lr_at(progress.step)
            loops = self._train_step(progress.step, window)
            progress.add_step(cfg, loops)
            if self.device.type == "cuda" and progress.step % cfg.system.log_every == 0:
                torch.cuda.synchronize()
            window.seconds += time.perf_counter() - t_step
            window.tokens += cfg.tokens_per_step
            window.flops += cfg.tokens_per_step * flops.train_flops_per_token(cfg.model, cfg.data.seq_len, loops, "exact")
            window.steps += 1
            progress.wall_s = time.perf_counter() - run_t0
            is_last = progress.step == steps
            do_log = progress.step % cfg.system.log_every == 0 or is_last
            do_eval = progress.step in eval_steps and cfg.kind == "pretrain"
            do_ckpt = is_last or progress.step % cfg.system.ckpt_every == 0
            if do_log or do_eval or do_ckpt:  # never log, evaluate or save weights a NaN has reached
                loss_val = window.loss.item() / window.steps
                if not math.isfinite(loss_val):
                    raise Diverged(f"loss became {loss_val} by step {progress.step} (last S={loops}, lr={lr:.3g}); "
                                   f"lower optim.lr, raise optim.warmup_steps or set optim.grad_clip")
                self._check_weights(progress)
            if bar is not None:
                bar.update(1)
                if do_log:
                    bar.set_postfix(loss=f"{loss_val:.3f}", S=loops)
            if do_log:
                self._log(metrics_path, progress, window, loops, loss_val, lr, peak, quiet=bar is not None)
                window.reset(self.device)
            if do_eval:
                self._eval(progress, final=is_last)
            if do_ckpt:
                self._save(progress)
        if bar is not None:
            bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close(status)
        if status == "preempted":
            latest = records.latest_checkpoint(self.run_dir)
            if latest is None or records.ckpt_step(latest) != progress.step:
                self._save(progress)
            if self.rank == 0:
                records.mark_preempted(self.run_dir, step=progress.step)
            return {"status": "preempted", "step": progress.step}
        summary = {"status": "done", "step": progress.step, "steps": steps, "tokens": progress.tokens,
                   **progress.flops(), "wall_s": progress.wall_s, "config_hash": cfg.hash, "world_size": self.world,
                   "grad_accum": self.accum,
                   "final_eval": [r for r in records.read_jsonl(evals_path) if r.get("is_final")] if self.rank == 0 else []}
        if self.rank == 0:
            records.mark_done(self.run_dir, summary)
        return summary

    def _log(self, path: Path, progress: Progress, window: Window, loops: int, loss: float, lr: float, peak: float,
             quiet: bool) -> None:
        if self.rank != 0:
            return
        dt = max(window.seconds, 1e-9)
        row = {"step": progress.step, "tokens": progress.tokens, "loops": loops, "loss": loss, "lr": lr,
               "grad_norm": _grad_norm(self.engine), "tokens_per_s": window.tokens / dt,
               "mfu": window.flops / dt / peak if peak else None, "wall_s": progress.wall_s, **progress.flops()}
        records.append_jsonl(path, row)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "loops"):
                if row[key] is not None:
                    self.tb.add_scalar(f"train/{key}", row[key], progress.step)
        if self.wandb is not None:
            self.wandb.log_train(row, progress.step)
        records.heartbeat(self.run_dir, step=progress.step, loss=loss, state="running")
        if not quiet and not self.quiet:
            print(f"[{self.run_dir.name}] step {progress.step}/{self.cfg.steps} "
                  f"({100 * progress.step / max(self.cfg.steps, 1):.0f}%) loss {loss:.4f} S={loops} "
                  f"lr {lr:.2e} {row['tokens_per_s']:.0f} tok/s", flush=True)


def _grad_norm(engine) -> float | None:
    try:
        g = engine.get_global_grad_norm()
        return None if g is None else float(g)
    except Exception:  # noqa: BLE001 - not every ZeRO stage exposes it
        return None


def train(cfg: RunConfig, run_dir: str | Path, stop: Callable[[], bool] | None = None, quiet: bool = False) -> dict:
    """Train (or resume) the run in ``run_dir``; a finished run returns its DONE summary without work.

    The run is owned by this process while it trains (`records.RunLock`): a second trainer of the same run
    fails at once with `records.Locked`, naming the holder. Failures are recorded in ``FAILED.json`` (a
    diverged loss, NaN weights or a NaN evaluation included) and re-raised; the run is never marked done
    unless it reached its last step with finite numbers.
    """
    run_dir = Path(run_dir)
    done = records.done_summary(run_dir) if run_dir.is_dir() else None
    if done is not None and done.get("config_hash") == cfg.hash:
        return done | {"already_done": True}
    rank = int(os.environ.get("RANK", "0") or 0)
    trainer = Trainer(cfg, run_dir, stop=stop, quiet=quiet)
    trainer._check_writable()
    trainer._check_not_foreign()  # before the lock: a foreign directory is left untouched
    lock = records.RunLock(run_dir) if rank == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        done = records.done_summary(run_dir)  # finished by the previous holder while we waited to look
        if done is not None and done.get("config_hash") == cfg.hash:
            return done | {"already_done": True}
        try:
            return trainer.run()
        except ForeignRunDir:
            raise
        except Exception as exc:
            if trainer.rank == 0 and (run_dir / records.CONFIG).is_file():
                step = None
                try:
                    step = records.tail_jsonl(run_dir / records.METRICS, 1)[0]["step"]
                except (IndexError, KeyError):
                    pass
                records.mark_failed(run_dir, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                                    last_logged_step=step)
            raise
    finally:
        if lock is not None:
            lock.release()
            _drop_if_only_lock(run_dir)


def _drop_if_only_lock(run_dir: Path) -> None:
    """A run that failed before writing anything (bad input) leaves no directory behind."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {records.rundir.LOCK}:
            shutil.rmtree(run_dir, ignore_errors=True)
    except FileNotFoundError:
        pass


