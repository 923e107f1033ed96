"""The process's place in a distributed run: device, ranks, and the DeepSpeed pieces a run needs changed.

Ranks come from the environment (torchrun, SLURM via submitit's export); a bare process is rank 0 of 1.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from typing import Any

import torch


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class Diverged(RunError):
    """A NaN or inf in the loss, the weights or an evaluation."""


class ForeignRunDir(RunError):
    """The directory belongs to another config: never written to, never marked failed."""


def pick_device(want: str) -> torch.device:
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
    """(rank, world). On CPU, DeepSpeed would JIT-compile a shared-memory comm op (~45 s cold) that gloo
    does not need; it is skipped."""
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
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def safe_checkpoint_engine():
    """DeepSpeed's torch checkpoint engine, but loading with ``weights_only=True``: nothing in a checkpoint
    can execute code."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    allowed = _deepspeed_state_classes()

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True)

    return SafeTorchCheckpointEngine()


def _deepspeed_state_classes() -> list:
    """The few plain-data classes DeepSpeed pickles into ZeRO optimizer states (loss scaler, stage enum):
    allowed by name, so weights_only loading still refuses everything else."""
    out = []
    for mod, names in (("deepspeed.runtime.fp16.loss_scaler", ("LossScaler", "DynamicLossScaler")),
                       ("deepspeed.runtime.zero.config", ("ZeroStageEnum",)),
                       ("deepspeed.utils.tensor_fragment", ("fragment_address",))):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        out += [getattr(m, n) for n in names if hasattr(m, n)]
    return out


@contextlib.contextmanager
def full_parameters(module: torch.nn.Module, zero_stage: int):
    """The module's full weights inside the block, on every rank: under ZeRO-3 each rank holds a shard, so
    reading (state_dict, EMA, a safetensors file) must gather them — collectively, on all ranks at once."""
    if zero_stage < 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def all_gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is true on any (so all ranks stop, or fail, at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


@contextlib.contextmanager
def quiet_stdout(quiet: bool):
    """DeepSpeed prints its config tables on stdout; keep them out of a quiet run's output."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield
