"""The output head and loss on the masked rows only (issue #22 items 1, 2, 4): the same loss and gradients as the
full head, the eval NELBO through the same path, vocabulary padding that changes nothing but the shapes, and no
host sync in a training micro-step."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model import ConfigError, LoopMDM, ModelConfig, Schedule, flops, masked_diffusion_loss, sample
from model.diffusion import draw_mask, nelbo_draws, sequence_nelbo

torch.set_num_threads(1)


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=41, d_model=32, n_heads=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=1,
                s_max=4, max_seq_len=64)
    return ModelConfig(**{**base, **kw})


def loss_and_grads(model, x, full_head, keep=None, loops=3):
    model.zero_grad(set_to_none=True)
    loss, _ = masked_diffusion_loss(model, x, loops=loops, generator=torch.Generator().manual_seed(5), keep=keep,
                                    full_head=full_head)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kw", [{}, {"tie_weights": False}, {"pad_vocab": 16}, {"mask_token_id": 7, "pad_vocab": 64}])
def test_masked_rows_head_gives_the_full_heads_loss_and_gradients(kw):
    torch.manual_seed(0)
    m = LoopMDM(tiny(**kw)).double()  # float64: the two paths then agree to ~1e-15, far below any real change
    x = torch.randint(0, 40, (6, 24))
    x[x == m.cfg.mask_id] = 39  # data never holds the mask token
    assert m.cfg.mask_id != 39
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[:, :5] = True  # an SFT prompt: never masked, never in the loss
    for k in (None, keep):
        ref, g_ref = loss_and_grads(m, x, True, k)
        got, g = loss_and_grads(m, x, False, k)
        assert torch.isfinite(ref) and got.item() == pytest.approx(ref.item(), rel=1e-12)
        for name in g_ref:
            assert torch.allclose(g[name], g_ref[name], rtol=1e-9, atol=1e-14), name
    # in fp32 (how it trains; adaLN time conditioning too): equal to rounding
    m = LoopMDM(tiny(**kw, time_cond=True))
    ref, g_ref = loss_and_grads(m, x, True)
    got, g = loss_and_grads(m, x, False)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    worst = max(((g[n] - g_ref[n]).norm() / g_ref[n].norm().clamp_min(1e-12)).item() for n in g_ref)
    assert worst < 1e-5


def test_the_head_runs_on_the_masked_rows_only():
    """FLOPs counted by torch: the rows path runs the head on the masked rows (and the padded vocabulary),
    which `flops.executed_forward_flops` predicts; the full head is the `exact` convention's count."""
    cfg = tiny(vocab_size=101, pad_vocab=128)
    m = LoopMDM(cfg)
    x = torch.randint(0, 100, (2, 32))
    t = torch.tensor([0.3, 0.8])
    masked = draw_mask(x.shape, t, Schedule(), torch.Generator().manual_seed(0))
    rows = masked.flatten().nonzero().squeeze(1)
    with sdpa_kernel(SDPBackend.MATH):
        counted = {}
        for name, kw in (("full", {}), ("rows", {"rows": rows, "targets": x.flatten()[rows]})):
            with FlopCounterMode(display=False) as fc:
                m(x, t, loops=2, **kw)
            counted[name] = fc.get_total_flops()
    assert counted["full"] == pytest.approx(flops.executed_forward_flops(cfg, 32, 2, batch=2), rel=1e-9)
    frac = len(rows) / x.numel()
    assert 0.2 < frac < 0.8
    assert counted["rows"] == pytest.approx(flops.executed_forward_flops(cfg, 32, 2, batch=2, head_rows=frac), rel=1e-9)
    # the model's FLOPs (every convention) are those of the real vocabulary, head everywhere
    assert flops.forward_flops(cfg, 32, 2) == flops.forward_flops(cfg.replace(pad_vocab=1), 32, 2)
    assert flops.executed_forward_flops(cfg.replace(pad_vocab=1), 32, 2) == flops.forward_flops(cfg, 32, 2)


def test_vocab_padding_is_the_same_model_in_bigger_matrices():
    """Same initial weights, the padded rows zero and never predicted, parameter counts of the real vocabulary,
    and training leaves the padding at zero (no gradient reaches it)."""
    for tie in (True, False):
        base = tiny(tie_weights=tie)
        torch.manual_seed(3)
        plain = LoopMDM(base)
        torch.manual_seed(3)
        padded = LoopMDM(base.replace(pad_vocab=64))
        assert padded.embed.weight.shape == (64, 32)
        a, b = plain.state_dict(), padded.state_dict()
        for k in a:
            assert torch.equal(a[k], b[k][:a[k].shape[0]] if b[k].shape != a[k].shape else b[k]), k
        extra = sum(p.numel() for p in padded.parameters()) - sum(p.numel() for p in plain.parameters())
        assert extra == (64 - 41) * 32 * (1 if tie else 2)
        assert flops.param_counts(padded.cfg) == flops.param_counts(plain.cfg)
        opt = torch.optim.AdamW(padded.parameters(), lr=1e-2, weight_decay=0.1)
        x = torch.randint(0, 40, (4, 16))
        for step in range(3):
            loss, _ = masked_diffusion_loss(padded, x, loops=2, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
        head = padded.embed.weight if tie else padded.lm_head.weight
        assert head[41:].abs().max().item() == 0.0
        logits = padded(x, loops=2)
        assert logits.shape == (4, 16, 41)  # callers see the real vocabulary only
        out = sample(padded, x[:, :4], gen_length=8, steps=4, loops=2)
        assert int(out.tokens.max()) < 41


@pytest.mark.parametrize("value", [0, -128, 100, 2048, True, 128.0])
def test_bad_vocab_padding_request_names_the_field(value):
    with pytest.raises(ConfigError) as e:
        tiny(pad_vocab=value)
    assert e.value.field == "model.pad_vocab" and "power of two" in str(e.value) and "\n" not in str(e.value)


def test_eval_nelbo_goes_through_the_rows_path_and_matches_the_full_head():
    torch.manual_seed(0)
    m = LoopMDM(tiny())
    tokens = torch.randint(0, 40, (5, 20))
    calls = []
    real = m._head_nll
    m._head_nll = lambda *a: calls.append(a[0].shape[0]) or real(*a)
    per, _, _ = nelbo_draws(m, tokens, loops=2, n_draws=2, seed=3, batch_size=2)
    assert calls and sum(calls) < tokens.numel() * 2  # only masked rows went through the head
    t = torch.rand(5)
    noise = torch.rand(5, 20)
    with torch.no_grad():
        full, _, _ = sequence_nelbo(m, tokens, t, 2, Schedule(), noise=noise, full_head=True)
        rows, _, _ = sequence_nelbo(m, tokens, t, 2, Schedule(), noise=noise)
    assert torch.allclose(rows, full, rtol=1e-5)
    assert per.shape == (5, 2) and torch.isfinite(per).all()


def test_a_training_micro_step_asks_the_device_nothing():
    """The model and batch on the 'meta' device, where any read of a value (.item(), bool(), a copy to the
    host) fails: a micro-step that runs there reads nothing from the device, which on a GPU would stall the
    host until the GPU caught up. The masks, times and row indices are drawn on the host."""
    m = LoopMDM(tiny(pad_vocab=64)).to("meta")
    x = torch.randint(0, 40, (4, 16)).to("meta")
    keep = torch.zeros(4, 16, dtype=torch.bool)
    keep[:, :3] = True
    loss, info = masked_diffusion_loss(m, x, loops=2, generator=torch.Generator().manual_seed(0), keep=keep)
    loss.backward()
    assert loss.device.type == "meta" and m.embed.weight.grad is not None and 0 < info["mask_frac"] < 1
    with pytest.raises(Exception):
        loss.item()  # the device really is unreadable


def test_vocab_padding_enters_the_run_hash_only_when_set():
    """A padded run has its own identity (its checkpoints hold bigger matrices); every run that does not pad
    keeps the hash it had before the field existed."""
    from study.plan import config as C

    raw = {"model": {"d_model": 32, "n_heads": 4}, "data": {"tokenizer": "byte", "seq_len": 32}}
    base = C.from_dict(raw)
    assert "pad_vocab" not in base.semantic_dict()["model"]
    assert C.from_dict(C.apply_overrides(raw, ["model.pad_vocab=1"])).hash == base.hash
    padded = C.from_dict(C.apply_overrides(raw, ["model.pad_vocab=128"]))
    assert padded.hash != base.hash and padded.semantic_dict()["model"]["pad_vocab"] == 128
    assert padded.flops_per_step() == base.flops_per_step()  # budgets buy the same steps
