"""One training run with a DeepSpeed engine: resumable, deterministic, honest about the FLOPs it spends.

Determinism is by construction, not by saved RNG state: the batch of step k comes from (seed, k, rank), the
loop count S from (seed, k), the masking noise from (seed, k, rank, micro-step). So a run that resumes from a
checkpoint at step k replays exactly what an uninterrupted run would have done, and the checkpoint only needs
weights and optimizer state.

Checkpoints are written into ``ckpt/.tmp-<tag>`` and renamed to ``ckpt/<tag>`` once complete (``meta.json`` is
written last inside), so a run killed mid-write leaves only a temp dir that the next start deletes. Each holds
the DeepSpeed state (for resuming, loaded with ``weights_only=True``: nothing in a checkpoint can execute
code) and ``model.safetensors`` (for evaluation, readable without DeepSpeed).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from model import LoopMDM, flops, masked_diffusion_loss, train_loops, validation_nll
from study import store
from study.config import RunConfig, dump_yaml
from study.config import from_dict as config_from_dict

CKPT_PREFIX = "step_"


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class Diverged(RunError):
    pass


class ForeignRunDir(RunError):
    """The directory belongs to another config: never written to, never marked failed."""


# -- environment -------------------------------------------------------------------------------------
def pick_device(cfg: RunConfig) -> torch.device:
    want = cfg.system.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RunError("system.device=cuda but no CUDA device is visible; use system.device=cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world). Ranks come from the environment (torchrun, SLURM via submitit's export); a bare process
    is rank 0 of 1. On CPU, DeepSpeed would JIT-compile a shared-memory comm op that a single process never
    uses (~45 s cold); it is skipped."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    if device.type == "cpu":
        comm_torch = importlib.import_module("deepspeed.comm.torch")
        if hasattr(comm_torch, "build_shm_op"):
            comm_torch.build_shm_op = lambda: None
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _safe_checkpoint_engine():
    """DeepSpeed's torch checkpoint engine, but loading with ``weights_only=True``."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return torch.load(path, map_location=map_location, weights_only=True)

    return SafeTorchCheckpointEngine()


# -- checkpoints -------------------------------------------------------------------------------------
def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint dirs that finished writing, oldest first (a dir counts only once its meta.json exists)."""
    root = Path(run_dir) / "ckpt"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_weights(ckpt: Path, model: torch.nn.Module, prefer_ema: bool = True) -> dict:
    """Load ``model.safetensors`` (or its EMA twin) from a checkpoint dir into ``model``; returns meta.json."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    name = "ema.safetensors" if prefer_ema and (ckpt / "ema.safetensors").is_file() else "model.safetensors"
    model.load_state_dict(load_file(str(ckpt / name)))
    return meta


def resolve_parent(init_from: str, run_dir: Path) -> Path:
    """A sweep writes ``init_from`` relative to its study directory (``runs/<slug>-<hash>``), so a fine-tuned
    run's identity does not depend on where the study lives; a user may also pass any path."""
    p = Path(init_from)
    if not p.is_absolute():
        in_study = Path(run_dir).resolve().parent.parent / p
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


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, stop: Callable[[], bool] | None = None,
                 quiet: bool = False):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        self.stop = stop or (lambda: False)
        self.quiet = quiet

    # -- set-up ----------------------------------------------------------------------------------
    def _claim_run_dir(self) -> None:
        """Refuse a run dir that belongs to another config; write ours if new."""
        cfg_path = self.run_dir / "config.yaml"
        if cfg_path.is_file():
            import yaml

            theirs = yaml.safe_load(cfg_path.read_text()) or {}
            their_hash = (theirs.get("meta") or {}).get("hash")
            if their_hash is None:
                their_hash = config_from_dict(theirs).hash
            if their_hash != self.cfg.hash:
                raise ForeignRunDir(f"{self.run_dir} holds a run of another config (hash {their_hash[:12]}, this one is "
                               f"{self.cfg.hash[:12]}); use another --out directory")
        elif self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            meta = dict(self.cfg.meta) | {"hash": self.cfg.hash, "steps": self.cfg.steps,
                                          "params": flops.param_counts(self.cfg.model).to_dict(self.cfg.model.expected_loops)}
            text = dump_yaml(self.cfg.replace(meta=meta))
            store.atomic_write_text(cfg_path, text)

    def _check_writable(self) -> None:
        parent = self.run_dir
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise RunError(f"cannot write the run directory {self.run_dir} ({parent} is not writable); "
                           f"pass --out to a writable place")

    def _load_data(self) -> None:
        """Tokenizer, corpus, parent weights: everything that can be wrong with the inputs, checked before
        the run directory is touched."""
        from study import data as data_mod

        cfg = self.cfg
        if cfg.init_from:
            self.parent_ckpt = latest_checkpoint(resolve_parent(cfg.init_from, self.run_dir))
            if self.parent_ckpt is None:
                raise RunError(f"init_from={cfg.init_from} has no complete checkpoint; train that run first")
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else data_mod.default_cache_dir()
        if cfg.kind == "sft":
            self.qa = data_mod.prepare_qa(cfg.data.corpus, cfg.data.tokenizer, cfg.data.seq_len)
            self.train_tokens = None
            self.eval_tokens = self.qa_eval = None
        else:
            td = data_mod.prepare_tokens(cfg.data.corpus, cfg.data.tokenizer, cache, val_fraction=cfg.data.val_fraction,
                                         max_tokens=cfg.data.max_tokens)
            self.train_tokens = td.train
            self.eval_tokens = data_mod.eval_batches(td.val, cfg.eval.n_seqs, cfg.data.seq_len)
        tok = data_mod.get_tokenizer(cfg.data.tokenizer)
        if (tok.vocab_size, tok.mask_id) != (cfg.model.vocab_size, cfg.model.mask_id):
            raise RunError(f"model.vocab_size={cfg.model.vocab_size} (mask id {cfg.model.mask_id}) does not match "
                           f"tokenizer {cfg.data.tokenizer!r} ({tok.vocab_size} tokens, mask id {tok.mask_id}); "
                           f"leave model.vocab_size out to take the tokenizer's")
        self.data_mod = data_mod

    def _build_engine(self) -> None:
        import deepspeed

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # initial weights: a function of the seed alone
        self.model = LoopMDM(cfg.model)
        if cfg.init_from:
            load_weights(self.parent_ckpt, self.model)
        micro = cfg.batch.micro_batch or cfg.batch.global_batch // self.world
        if cfg.batch.global_batch % (micro * self.world):
            raise RunError(f"batch.global_batch={cfg.batch.global_batch} is not divisible by batch.micro_batch={micro} "
                           f"x world size {self.world}; choose a micro batch that divides it")
        self.micro, self.accum = micro, cfg.batch.global_batch // (micro * self.world)
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
        with _quiet_stdout(self.quiet):
            self.engine, self.opt, _, _ = deepspeed.initialize(model=self.model, optimizer=opt, config=ds_config)
        self.engine.checkpoint_engine = _safe_checkpoint_engine()
        self.ema = None
        if cfg.optim.ema > 0:
            self.ema = {k: v.detach().clone().float() for k, v in self.engine.module.state_dict().items()}

    # -- checkpointing ---------------------------------------------------------------------------
    def _save(self, progress: Progress) -> Path:
        from safetensors.torch import save_file

        root = self.run_dir / "ckpt"
        tag = f"{CKPT_PREFIX}{progress.step:08d}"
        tmp = root / f".tmp-{tag}"
        final = root / tag
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        torch.distributed.barrier()
        client = {"progress": progress.__dict__, "config_hash": self.cfg.hash}
        if self.ema is not None:
            client["ema"] = self.ema
        self.engine.save_checkpoint(str(tmp.parent), tag=tmp.name, client_state=client, save_latest=False)
        torch.distributed.barrier()
        if self.rank == 0:
            weights = {k: v.detach().float().cpu().contiguous() for k, v in self.engine.module.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))
            if self.ema is not None:
                save_file({k: v.contiguous() for k, v in self.ema.items()}, str(tmp / "ema.safetensors"))
            store.atomic_write_json(tmp / "meta.json", {"step": progress.step, "config_hash": self.cfg.hash,
                                                        "tokens": progress.tokens, **progress.flops()})
            if final.exists():  # same step saved before (e.g. preempted exactly at a checkpoint)
                shutil.rmtree(final)
            os.rename(tmp, final)
            for old in complete_checkpoints(self.run_dir)[:-self.cfg.system.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        torch.distributed.barrier()
        return final

    def _resume(self) -> Progress:
        root = self.run_dir / "ckpt"
        if self.rank == 0 and root.is_dir():
            for junk in root.glob(".tmp-*"):  # a write that was killed: never trusted, never reused
                shutil.rmtree(junk, ignore_errors=True)
        torch.distributed.barrier()
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return Progress()
        meta = json.loads((ckpt / "meta.json").read_text())
        if meta.get("config_hash") != self.cfg.hash:
            raise RunError(f"checkpoint {ckpt} was written by config {str(meta.get('config_hash'))[:12]}, not "
                           f"{self.cfg.hash[:12]}; refusing to resume from it (use another --out directory)")
        with _quiet_stdout(self.quiet):
            _, client = self.engine.load_checkpoint(str(ckpt.parent), tag=ckpt.name, load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
        if client is None:
            raise RunError(f"DeepSpeed could not load checkpoint {ckpt}; delete it to fall back to an older one")
        if self.ema is not None and "ema" in client:
            self.ema = {k: v.float() for k, v in client["ema"].items()}
        return Progress(**client["progress"])

    # -- the loop ----------------------------------------------------------------------------------
    def _eval(self, progress: Progress, final: bool) -> list[dict]:
        cfg = self.cfg
        module = self.engine.module
        backup = None
        if self.ema is not None:
            backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.load_state_dict({k: v.to(backup[k].dtype) for k, v in self.ema.items()})
        rows = []
        settings = [(s, None) for s in cfg.eval_loops]
        if final and cfg.model.is_looped:
            # adaptive exit is capped at the training s_max, so it is compared with the fixed S = s_max row:
            # "fewer loops at equal quality" against the depth the model was trained for, not an extrapolation
            settings += [(cfg.model.s_max, eps) for eps in cfg.eval.exit_thresholds]
        for loops, eps in settings:
            est = validation_nll(module, self.eval_tokens, loops=loops, n_draws=cfg.eval.n_draws, seed=cfg.eval.seed,
                                 batch_size=cfg.eval.batch_size, exit_threshold=eps)
            rows.append({"step": progress.step, "tokens": progress.tokens, **progress.flops(), "eval_loops": loops,
                         "exit_threshold": eps, **est.to_dict(), "is_final": final})
        if backup is not None:
            module.load_state_dict(backup)
        return rows

    def _peak_flops(self) -> float:
        from study.perf import peak_flops

        return peak_flops(self.device, torch.bfloat16 if self.cfg.precision == "bf16" else torch.float32)

    def run(self) -> dict:
        cfg = self.cfg
        self.device = pick_device(cfg)
        if cfg.system.num_threads:
            torch.set_num_threads(cfg.system.num_threads)
        self.rank, self.world = init_distributed(self.device)
        self._check_writable()
        self._load_data()
        self._claim_run_dir()
        if self.rank == 0:
            store.heartbeat(self.run_dir, step=0, state="starting")
        self._build_engine()
        progress = self._resume()
        eval_steps = set(cfg.eval_steps())
        metrics_path, evals_path = self.run_dir / "metrics.jsonl", self.run_dir / "evals.jsonl"
        seq_len, steps = cfg.data.seq_len, cfg.steps
        peak = self._peak_flops()
        bar = None
        if self.rank == 0 and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=progress.step, desc=self.run_dir.name[:40], unit="step", leave=False)
        if progress.step == 0 and self.rank == 0 and 0 not in eval_steps and cfg.kind == "pretrain":
            for row in self._eval(progress, final=False):  # the untrained point anchors every curve
                store.append_jsonl(evals_path, row)
        status = "done"
        # the throughput window counts training steps only (not evals or checkpoints), and the loss stays on
        # the device until a log line needs it: one host sync per log interval, not per step
        window_s, window_tokens, window_flops, window_steps = 0.0, 0, 0.0, 0
        loss_acc = torch.zeros((), device=self.device)
        run_t0 = time.perf_counter() - progress.wall_s
        module = self.engine.module
        while progress.step < steps:
            step = progress.step
            if self._should_stop():
                status = "preempted"
                break
            t_step = time.perf_counter()
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
                    x = self.data_mod.get_batch(self.train_tokens, self.micro, seq_len, cfg.seed, step,
                                                rank=self.rank * self.accum + micro)
                x = x.to(self.device, non_blocking=True)
                loss, _ = masked_diffusion_loss(self.engine, x, loops=loops, generator=gen, keep=keep)
                self.engine.backward(loss)
                self.engine.step()
                loss_acc += loss.detach().float() / self.accum
            if self.ema is not None:
                with torch.no_grad():
                    for k, v in module.state_dict().items():
                        self.ema[k].mul_(cfg.optim.ema).add_(v.detach().float(), alpha=1 - cfg.optim.ema)
            tokens = cfg.tokens_per_step
            progress.step += 1
            progress.tokens += tokens
            for conv in flops.CONVENTIONS:
                f = tokens * flops.train_flops_per_token(cfg.model, seq_len, loops, conv)
                setattr(progress, f"flops_{conv}", getattr(progress, f"flops_{conv}") + f)
            if self.device.type == "cuda" and progress.step % cfg.system.log_every == 0:
                torch.cuda.synchronize()
            window_s += time.perf_counter() - t_step
            window_tokens += tokens
            window_flops += tokens * flops.train_flops_per_token(cfg.model, seq_len, loops, "exact")
            window_steps += 1
            progress.wall_s = time.perf_counter() - run_t0
            is_last = progress.step == steps
            do_log = progress.step % cfg.system.log_every == 0 or is_last
            do_eval = progress.step in eval_steps and cfg.kind == "pretrain"
            do_ckpt = is_last or progress.step % cfg.system.ckpt_every == 0
            if do_log or do_eval or do_ckpt:  # never log, evaluate or save weights a NaN has reached
                loss_val = loss_acc.item() / window_steps
                if not math.isfinite(loss_val):
                    raise Diverged(f"loss became {loss_val} by step {progress.step} (last S={loops}, lr={lr:.3g}); "
                                   f"lower optim.lr, raise optim.warmup_steps or set optim.grad_clip")
            if bar is not None:
                bar.update(1)
                if do_log:
                    bar.set_postfix(loss=f"{loss_val:.3f}", S=loops)
            if self.rank == 0 and do_log:
                dt = max(window_s, 1e-9)
                row = {"step": progress.step, "tokens": progress.tokens, "loops": loops, "loss": loss_val, "lr": lr,
                       "grad_norm": _grad_norm(self.engine), "tokens_per_s": window_tokens / dt,
                       "mfu": window_flops / dt / peak if peak else None, "wall_s": progress.wall_s, **progress.flops()}
                store.append_jsonl(metrics_path, row)
                store.heartbeat(self.run_dir, step=progress.step, loss=loss_val, state="running")
                if bar is None and not self.quiet:
                    print(f"[{self.run_dir.name}] step {progress.step}/{steps} loss {loss_val:.4f} S={loops} "
                          f"lr {lr:.2e} {row['tokens_per_s']:.0f} tok/s", flush=True)
            if do_log:
                window_s, window_tokens, window_flops, window_steps = 0.0, 0, 0.0, 0
                loss_acc.zero_()
            if self.rank == 0 and do_eval:
                for row in self._eval(progress, final=is_last):
                    store.append_jsonl(evals_path, row)
            if do_ckpt:
                self._save(progress)
        if bar is not None:
            bar.close()
        if status == "preempted":
            if latest_checkpoint(self.run_dir) is None or json.loads(
                    (latest_checkpoint(self.run_dir) / "meta.json").read_text())["step"] != progress.step:
                self._save(progress)
            if self.rank == 0:
                store.mark_preempted(self.run_dir, step=progress.step)
            return {"status": "preempted", "step": progress.step}
        summary = {"status": "done", "step": progress.step, "steps": steps, "tokens": progress.tokens,
                   **progress.flops(), "wall_s": progress.wall_s, "config_hash": cfg.hash,
                   "final_eval": [r for r in store.read_jsonl(evals_path) if r.get("is_final")] if self.rank == 0 else []}
        if self.rank == 0:
            store.mark_done(self.run_dir, summary)
        return summary

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self.stop() else 0.0])
        if self.world > 1:  # every rank must checkpoint at the same step
            flag = flag.to(self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


def _grad_norm(engine) -> float | None:
    try:
        g = engine.get_global_grad_norm()
        return None if g is None else float(g)
    except Exception:  # not every ZeRO stage exposes it
        return None


@contextlib.contextmanager
def _quiet_stdout(quiet: bool):
    """DeepSpeed prints its config tables on stdout; keep them out of a quiet run's output."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def train(cfg: RunConfig, run_dir: str | Path, stop: Callable[[], bool] | None = None, quiet: bool = False) -> dict:
    """Train (or resume) the run in ``run_dir``; a finished run returns its DONE summary without work.

    Failures are recorded in ``FAILED.json`` (a diverged loss included) and re-raised; the run is never
    marked done unless it reached its last step.
    """
    run_dir = Path(run_dir)
    done = (store.read_json(run_dir / "DONE.json") or {}).get("summary") if run_dir.is_dir() else None
    if done is not None and done.get("config_hash") == cfg.hash:
        return done
    trainer = Trainer(cfg, run_dir, stop=stop, quiet=quiet)
    try:
        return trainer.run()
    except ForeignRunDir:
        raise
    except Exception as exc:
        if getattr(trainer, "rank", 0) == 0 and (run_dir / "config.yaml").is_file():
            store.mark_failed(run_dir, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        raise
