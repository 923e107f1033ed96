"""One training run with a DeepSpeed engine: resumable, deterministic, honest about the FLOPs it spends.

Determinism is by construction, not by saved RNG state: the batch of step k comes from (seed, k, rank), the
loop count S from (seed, k), the masking noise from (seed, k, rank, micro-step), all drawn on the host. So a
run that resumes from a checkpoint at step k replays exactly what an uninterrupted run would have done, and the
checkpoint only needs weights and optimizer state (`checkpointing`).

The loop asks its parts whether to act at each step (as torchtitan's does): the log (`metrics.MetricsLog`), the
evaluator (`evaluation.Evaluator`) and the checkpointer (`checkpointing.Checkpointer`). A micro-step asks the
device nothing: batches and masks are copied from pinned memory without waiting, the loss is summed on the
device, and the host syncs once per log window (when a log line, an evaluation or a checkpoint needs the loss).

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
from pathlib import Path
from typing import Callable

import torch

import records
from model import LoopMDM, flops, masked_diffusion_loss, train_loops
from model.diffusion import to_device
from study.machine import machine_record
from study.plan.config import RunConfig, dump_yaml
from study.plan.config import from_dict as config_from_dict
from study.weights import load_weights

from .checkpointing import Checkpointer
from .distributed import Diverged, ForeignRunDir, RunError, any_rank, init_distributed, pick_device
from .engine import build_engine, full_state, split_batch, zero_stage
from .evaluation import Evaluator
from .metrics import MetricsLog, Progress, Window
from .perf import peak_flops


def resolve_parent(init_from: str, run_dir: Path) -> Path:
    """A sweep writes ``init_from`` relative to its study directory (``runs/<slug>-<hash>``), so a fine-tuned
    run's identity does not depend on where the study lives; a user may also pass any path."""
    p = Path(init_from)
    if not p.is_absolute():
        in_study = records.study_of(run_dir) / p
        if in_study.is_dir():
            return in_study
    return p


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, stop: Callable[[], bool] | None = None,
                 quiet: bool = False):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        self.stop = stop or (lambda: False)
        self.quiet = quiet
        self.rank = 0

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
            raise ForeignRunDir(f"{self.run_dir / records.CONFIG} is unreadable ({type(exc).__name__}); "
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
        self.given = data_mod.given_mask(cfg.data)  # (seq_len,) or None; stays on the host, as the loss's masks do

    def _build_engine(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # initial weights: a function of the seed alone
        self.model = LoopMDM(cfg.model)
        if cfg.init_from:
            load_weights(self.parent_ckpt, self.model)
        if cfg.system.compile:
            self.model.compile_blocks()
        self.engine, self.opt = build_engine(cfg, self.model, self.micro, self.accum, self.device, self.quiet)
        self.ema = {k: v.clone() for k, v in self._ema_source().items()} if cfg.optim.ema > 0 else None

    def _full_state(self) -> dict[str, torch.Tensor]:
        return full_state(self.engine.module, self.zero_stage)

    def _ema_source(self) -> dict[str, torch.Tensor]:
        """The weights the EMA follows, in fp32: left on the device under ZeRO 0-2 (copying the model to the host
        every step would cost a sync and the whole model over PCIe per step), gathered to the host under ZeRO-3."""
        if self.zero_stage == 3:
            return self._full_state()
        return {k: v.detach().float() for k, v in self.engine.module.state_dict().items()}

    def _ema_on_host(self) -> dict[str, torch.Tensor] | None:
        return None if self.ema is None else {k: v.cpu() for k, v in self.ema.items()}

    def _setup(self) -> Progress:
        cfg = self.cfg
        self.device = pick_device(cfg.system.device)
        if cfg.system.num_threads:
            torch.set_num_threads(cfg.system.num_threads)
        if self.device.type == "cuda" and cfg.precision == "fp32" and cfg.system.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True  # recorded in the run: MFU is then against TF32 peak
            torch.backends.cudnn.allow_tf32 = True
        self.rank, self.world = init_distributed(self.device)
        self.micro, self.accum = split_batch(cfg.batch, self.world)  # a bad split fails before anything is written
        self.zero_stage = zero_stage(cfg)
        self._load_data()
        self._claim_run_dir()
        if self.rank == 0:
            records.heartbeat(self.run_dir, step=0, state="starting")
        self._build_engine()
        self.checkpointer = Checkpointer(cfg, self.run_dir, self.engine, self._full_state, self.rank, self.world,
                                         self.accum, self.zero_stage, self.say, self.warn, self.quiet)
        progress, ema = self.checkpointer.resume()
        if self.ema is not None and ema is not None:
            self.ema = {k: v.to(self.ema[k].device) for k, v in ema.items()}
        if self.rank == 0:
            records.atomic_write_json(self.run_dir / records.SYSTEM, {
                "world_size": self.world, "grad_accum": self.accum, "micro_batch": self.micro,
                "zero_stage": self.zero_stage, "precision": cfg.precision, "device": str(self.device),
                "grad_accum_dtype": "fp32", "optimizer": f"AdamW{' (fused)' if self.device.type == 'cuda' else ''}",
                "tf32": bool(self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32),
                "machine": machine_record()})
        return progress

    # -- the loop ----------------------------------------------------------------------------------
    def _train_step(self, step: int, window: Window) -> int:
        cfg = self.cfg
        lr = cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loops = train_loops(cfg.model, cfg.seed, step)
        for micro in range(self.accum):
            stream = (step * self.world + self.rank) * self.accum + micro
            gen = torch.Generator().manual_seed(hash((cfg.seed, stream, 0xD1FF)) & 0x7FFF_FFFF_FFFF_FFFF)
            keep = None  # stays on the host: the loss draws its masks there
            if cfg.kind == "sft":
                x, keep = self.data_mod.get_qa_batch(self.qa, self.micro, cfg.seed, stream)
            else:
                x = self.data_mod.get_batch(self.train_tokens, self.micro, cfg.data.seq_len, cfg.seed, step,
                                            rank=self.rank * self.accum + micro, align=cfg.data.align)
                keep = self.given
            loss, _ = masked_diffusion_loss(self.engine, to_device(x, self.device), loops=loops, generator=gen,
                                            keep=keep)
            self.engine.backward(loss)
            self.engine.step()
            window.loss += loss.detach().float() / self.accum
        if self.ema is not None:
            with torch.no_grad():
                now = self._ema_source()
                torch._foreach_lerp_([self.ema[k] for k in now], list(now.values()), 1 - cfg.optim.ema)
        return loops

    def _check_finite(self, progress: Progress, window: Window, loops: int, lr: float) -> float:
        """The window's mean loss (the host sync of the window), the loss and the weights checked finite:
        never log, evaluate or save weights a NaN has reached."""
        loss = window.mean_loss()
        if not math.isfinite(loss):
            raise Diverged(f"loss became {loss} by step {progress.step} (last S={loops}, lr={lr:.3g}); "
                           f"lower optim.lr, raise optim.warmup_steps or set optim.grad_clip")
        finite = torch.stack([torch.isfinite(p.detach()).all() for p in self.engine.module.parameters()]).all()
        if any_rank(not bool(finite), self.world, self.device):  # after the last update: shows nowhere else
            raise Diverged(f"weights became NaN/inf at step {progress.step}; lower optim.lr, raise "
                           f"optim.warmup_steps or set optim.grad_clip")
        return loss

    def _eval_weights(self) -> dict | None:
        """EMA weights, or the gathered ZeRO-3 weights, for a plain copy; None: evaluate the module itself."""
        if self.ema is not None:
            return self.ema
        return self._full_state() if self.zero_stage == 3 else None

    def run(self) -> dict:
        cfg = self.cfg
        progress = self._setup()
        log = MetricsLog(cfg, self.run_dir, self.rank, progress.step, self.quiet)
        evaluator = Evaluator(cfg, self.run_dir, self.eval_tokens, self.device, self.rank, self.world, log.tb,
                              log.wandb)
        steps = cfg.steps
        peak = peak_flops(self.device, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
        bar = None
        if self.rank == 0 and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=progress.step, desc=self.run_dir.name[:40], unit="step", leave=False)
        if progress.step == 0 and not evaluator.should_eval(0, False) and cfg.kind == "pretrain":
            evaluator.evaluate(progress, False, self.engine.module, self._eval_weights())  # anchors every curve
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
            last = progress.step == steps
            do_log = log.should_log(progress.step, last)
            do_eval = evaluator.should_eval(progress.step, last)
            do_ckpt = self.checkpointer.should_save(progress.step, last)
            if self.device.type == "cuda" and do_log:
                torch.cuda.synchronize()  # the window's time covers the work queued in it
            window.add(cfg, loops, time.perf_counter() - t_step)
            progress.wall_s = time.perf_counter() - run_t0
            if do_log or do_eval or do_ckpt:
                loss_val = self._check_finite(progress, window, loops, lr)
            if bar is not None:
                bar.update(1)
                if do_log:
                    bar.set_postfix(loss=f"{loss_val:.3f}", S=loops)
            if do_log:
                log.write(progress, window, loops, loss_val, lr, peak, self.engine, echo=bar is None)
                window.reset(self.device)
            if do_eval:
                evaluator.evaluate(progress, last, self.engine.module, self._eval_weights())
            if do_ckpt:
                self.checkpointer.save(progress, self._ema_on_host())
        if bar is not None:
            bar.close()
        log.close(status)
        if status == "preempted":
            self.checkpointer.save_unless_saved(progress, self._ema_on_host())
            if self.rank == 0:
                records.mark_preempted(self.run_dir, step=progress.step)
            return {"status": "preempted", "step": progress.step}
        summary = {"status": "done", "step": progress.step, "steps": steps, "tokens": progress.tokens,
                   **progress.flops(), "wall_s": progress.wall_s, "config_hash": cfg.hash, "world_size": self.world,
                   "grad_accum": self.accum,
                   "final_eval": [r for r in records.read_jsonl(self.run_dir / records.EVALS) if r.get("is_final")]
                   if self.rank == 0 else []}
        if self.rank == 0:
            records.mark_done(self.run_dir, summary)
        return summary


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


