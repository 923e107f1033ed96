"""Which host-to-device copies does a steady-state harness step make, and from where (issue #22's open point)?

    python bench/h2d_probe.py --device cuda --precision bf16     # on a GPU: the real copies, with their call sites
    python bench/h2d_probe.py                                    # CPU: the candidates (what would copy on a GPU)

On one H200 the harness ran at 0.90-0.92 of the bare step, and the profiler counted ~5 pageable host-to-device
copies per micro-step that no Python frame was attributed to. This wraps, for the optimizer steps after a
warm-up, every Python-level call that moves host memory to a device — ``torch.tensor / as_tensor`` with a
device, ``Tensor.to`` / ``Tensor.cuda`` on a host tensor with a target device — and counts them per optimizer
step by call site (the last frames outside torch), marking the ones whose source was pinned (asynchronous).
On CUDA only real copies are counted (a device tensor's ``.to(device)`` is not); on CPU every host tensor moved
"to the device" is counted, so the CPU listing is the candidates, not the copies. Copies made in C++ (DeepSpeed's
hooks, the optimizer's kernels) are not seen: the profiler's trace is the complement. It trains a small model
through the harness itself (``study.train.train``), with DeepSpeed as configured for ``--precision``.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.plan import config as C  # noqa: E402
from study.train import trainer as T  # noqa: E402
from study.train import train  # noqa: E402


def call_site(depth: int = 3) -> str:
    frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename and "h2d_probe" not in f.filename]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames[-depth:])


def probe(device: str = "cpu", precision: str = "fp32", steps: int = 8, warmup: int = 2, accum: int = 2,
          d_model: int = 64, seq_len: int = 64) -> tuple[int, dict[tuple[str, str, str], int]]:
    """(optimizer steps measured, {(what, call site, source memory): count}) for a harness run of ``warmup +
    steps``; the source memory is ``pinned`` or ``pageable`` on CUDA, ``host`` on CPU (no copy there)."""
    hits: collections.Counter = collections.Counter()
    state = {"on": False, "step": 0}
    cuda = device.startswith("cuda")

    def target(args, kwargs):
        dev = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)
        return None if dev is None else torch.device(dev)

    def wrap(owner, name, moves):
        orig = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if state["on"]:
                hit = moves(args, kwargs)
                if hit is not None:
                    hits[(name, call_site(), hit)] += 1
            return orig(*args, **kwargs)
        setattr(owner, name, wrapped)
        return orig

    def from_data(args, kwargs):  # torch.tensor(data, device=...): always built on the host first
        dev = kwargs.get("device")
        if dev is None or (cuda and torch.device(dev).type != "cuda"):
            return None
        return "pageable" if cuda else "host"

    def tensor_to(args, kwargs):
        src, dev = args[0], target(args[1:], kwargs)
        if not isinstance(src, torch.Tensor) or src.device.type != "cpu" or dev is None:
            return None
        if cuda and dev.type != "cuda":
            return None
        return ("pinned" if src.is_pinned() else "pageable") if cuda else "host"

    def tensor_cuda(args, kwargs):
        src = args[0]
        return None if src.device.type != "cpu" else ("pinned" if src.is_pinned() else "pageable")

    originals = [(torch, "tensor", wrap(torch, "tensor", from_data)),
                 (torch, "as_tensor", wrap(torch, "as_tensor", from_data)),
                 (torch.Tensor, "to", wrap(torch.Tensor, "to", tensor_to)),
                 (torch.Tensor, "cuda", wrap(torch.Tensor, "cuda", tensor_cuda))]
    orig_step = T.Trainer._train_step

    def step(self, s, window):
        state["step"] += 1
        state["on"] = state["step"] > warmup
        try:
            return orig_step(self, s, window)
        finally:
            state["on"] = False

    T.Trainer._train_step = step
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = C.from_dict({
                "model": {"d_model": d_model, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1,
                          "n_tail_layers": 1, "s_max": 4},
                "data": {"corpus": "gsm8k-synth:easy", "tokenizer": "byte", "seq_len": seq_len, "cache_dir": tmp},
                "batch": {"global_batch": 4 * accum, "micro_batch": 4}, "budget": {"steps": warmup + steps},
                "eval": {"points": 1, "n_seqs": 4, "n_draws": 2},
                "system": {"device": device, "log_every": 10**6, "ckpt_every": 10**6, "num_threads": 1,
                           "zero_stage": 1},
                "precision": precision})
            train(cfg, Path(tmp) / "run", quiet=True)
    finally:
        T.Trainer._train_step = orig_step
        for owner, name, orig in originals:
            setattr(owner, name, orig)
    return state["step"] - warmup, dict(hits)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "fp32", choices=("fp32", "bf16"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--accum", type=int, default=2, help="micro-steps per optimizer step")
    ns = ap.parse_args(argv)
    n, hits = probe(ns.device, ns.precision, ns.steps, accum=ns.accum)
    kind = "copies" if ns.device.startswith("cuda") else "candidates (CPU: what would copy on a GPU)"
    print(f"host-to-device {kind} per optimizer step ({ns.accum} micro-steps), {n} steps, {ns.device}, {ns.precision}")
    for (what, where, memory), c in sorted(hits.items(), key=lambda kv: -kv[1]):
        print(f"{c / n:6.1f}  {what:9s} {memory:8s}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
