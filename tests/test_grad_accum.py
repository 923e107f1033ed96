"""Gradient accumulation inside DeepSpeed (issue #22 item 3): k micro-steps give one big batch's gradient to fp32
precision, and under bf16 the micro-steps' gradients add up in fp32 (not in bf16, as DeepSpeed's ZeRO-0 bf16
wrapper did), whatever the ZeRO stage asked for."""

import pytest
import torch
from deepspeed.utils import safe_get_full_grad

from model import LoopMDM, Schedule
from model.diffusion import sequence_nelbo
from study.plan import config as C
from study.train.distributed import init_distributed
from study.train.engine import build_engine, deepspeed_config, split_batch, zero_stage

K, MICRO, L = 4, 3, 24


def run_cfg(precision: str, zero: int) -> C.RunConfig:
    return C.from_dict({
        "model": {"vocab_size": 41, "d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1,
                  "n_tail_layers": 1, "s_max": 2, "max_seq_len": L},
        "data": {"seq_len": L}, "batch": {"global_batch": K * MICRO, "micro_batch": MICRO},
        "optim": {"grad_clip": 0.0}, "precision": precision, "system": {"zero_stage": zero, "num_threads": 1}})


def batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (K * MICRO, L), generator=g)
    return x, torch.rand(K * MICRO, generator=g), torch.rand(K * MICRO, L, generator=g)


def nelbo(model, x, t, noise):
    return sequence_nelbo(model, x, t, 2, Schedule(), noise=noise)[0].mean()


def accumulated_grads(cfg):
    """The engine's gradient after K micro-steps (before the optimizer step), and its initial weights."""
    torch.manual_seed(cfg.seed)
    engine, _ = build_engine(cfg, LoopMDM(cfg.model), MICRO, K, torch.device("cpu"), quiet=True)
    start = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    x, t, noise = batches()
    for i in range(K):
        part = slice(i * MICRO, (i + 1) * MICRO)
        engine.backward(nelbo(engine, x[part], t[part], noise[part]))
        if i < K - 1:
            engine.step()  # not a boundary: DeepSpeed only counts the micro-step
    grads = {n: safe_get_full_grad(p).double() for n, p in engine.module.named_parameters()}
    return type(engine.optimizer).__name__, grads, start


def reference_model(cfg, state, dtype):
    m = LoopMDM(cfg.model)
    m.load_state_dict(state)
    return m.to(dtype)


def rel_err(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


@pytest.fixture(scope="module", autouse=True)
def dist():
    init_distributed(torch.device("cpu"))


def test_k_micro_steps_equal_one_big_batch_in_fp32():
    cfg = run_cfg("fp32", 0)
    _, grads, start = accumulated_grads(cfg)
    big = reference_model(cfg, start, torch.float32)
    x, t, noise = batches()
    nelbo(big, x, t, noise).backward()  # the whole batch at once
    assert rel_err(grads, {n: p.grad.double() for n, p in big.named_parameters()}) < 1e-5


@pytest.mark.parametrize("zero", [0, 2])
def test_bf16_micro_steps_add_up_in_fp32(zero):
    """bf16 gradients of each micro-batch, added in fp32 by the engine: equal to their float64 sum to fp32
    rounding. Added in bf16 they would be off by ~1e-3 (checked too, so the tolerance can tell them apart)."""
    cfg = run_cfg("bf16", zero)
    assert zero_stage(cfg) == max(1, zero) and deepspeed_config(cfg, MICRO, K)["data_types"]["grad_accum_dtype"] == "fp32"
    name, grads, start = accumulated_grads(cfg)
    assert name == ("BF16_Optimizer" if zero == 0 else "DeepSpeedZeroOptimizer")
    m = reference_model(cfg, start, torch.bfloat16)
    x, t, noise = batches()
    exact = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in m.named_parameters()}
    in_bf16 = {n: torch.zeros(p.shape, dtype=torch.bfloat16) for n, p in m.named_parameters()}
    for i in range(K):
        part = slice(i * MICRO, (i + 1) * MICRO)
        (nelbo(m, x[part], t[part], noise[part]) / K).backward()
        for n, p in m.named_parameters():
            exact[n] += p.grad.double()
            in_bf16[n] += p.grad
            p.grad = None
    assert rel_err(grads, exact) < 1e-6
    assert rel_err({n: g.double() for n, g in in_bf16.items()}, exact) > 1e-4


def test_an_impossible_micro_batch_names_the_field():
    from model.config import ConfigError

    for micro, world, field in ((5, 1, "batch.micro_batch"), (8, 4, "batch.micro_batch"), (None, 5, "batch.global_batch")):
        batch = C.BatchConfig(global_batch=16, micro_batch=micro)
        with pytest.raises(ConfigError) as e:
            split_batch(batch, world)
        assert e.value.field == field and "\n" not in str(e.value)
    assert split_batch(C.BatchConfig(global_batch=16, micro_batch=2), 4) == (2, 2)
