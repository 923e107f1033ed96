"""The looped-block variants (issue: loop diagnostics and variants): input injection (add / concat), a loop-index
embedding and a norm between loops — each changes the network, is what its docstring says it is, is counted
exactly by the FLOPs module, and leaves the identity of configs that do not use it unchanged."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model import LoopMDM, ModelConfig, flops
from model.config import ConfigError
from model.diagnostics import loop_diagnostics
from model.transformer import Positions

torch.set_num_threads(1)

VARIANTS = [dict(loop_input="add"), dict(loop_input="concat"), dict(loop_embed=True), dict(loop_norm=True),
            dict(loop_input="concat", loop_embed=True, loop_norm=True)]


def cfg_of(**kw) -> ModelConfig:
    base = dict(vocab_size=40, d_model=32, n_heads=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=1, s_max=3,
                max_seq_len=64)
    return ModelConfig(**{**base, **kw})


def reference_forward(m: LoopMDM, x: torch.Tensor, loops: int) -> torch.Tensor:
    """The recurrence written out by hand from the module docstring, one operation a line."""
    cfg = m.cfg
    L = x.shape[1]
    pos = Positions(m.rope_cos[:L], m.rope_sin[:L])
    e = m.embed(x)
    for blk in m.head_layers:
        e, _ = blk(e, pos)
    h = e if cfg.loop_input == "none" else torch.zeros_like(e)
    for k in range(1, loops + 1):
        if cfg.loop_input == "add":
            u = h + e
        elif cfg.loop_input == "concat":
            u = torch.cat([h, e], -1) @ m.loop_adapter.weight.T
        else:
            u = h
        if cfg.loop_embed:
            u = u + m.loop_index.weight[min(k, cfg.s_max) - 1]
        for blk in m.mid_layers:
            u, _ = blk(u, pos)
        h = torch.nn.functional.layer_norm(u, (cfg.d_model,), m.loop_state_norm.weight, m.loop_state_norm.bias) \
            if cfg.loop_norm else u
    for blk in m.tail_layers:
        h, _ = blk(h, pos)
    return m.norm(h) @ m.embed.weight.T


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "+".join(f"{k}={v}" for k, v in kw.items()))
def test_variant_changes_the_output_and_equals_the_written_out_recurrence(kw):
    torch.manual_seed(0)
    plain = LoopMDM(cfg_of())
    var = LoopMDM(cfg_of(**kw))
    missing, unexpected = var.load_state_dict(plain.state_dict(), strict=False)  # same shared weights
    assert not unexpected  # the variant only adds parameters (add injection has none)
    with torch.no_grad():  # trained-looking variant weights (the adapter starts at [I, I], the norm at 1/0)
        for name, p in var.named_parameters():
            if name in missing:
                p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 39, (3, 16))
    with torch.no_grad():
        for S in (1, 2, 5):  # 5 > s_max: the loop-index embedding is clamped at s_max
            out = var(x, loops=S)
            assert torch.allclose(out, reference_forward(var, x, S), atol=1e-5), S
            if S == 1 and kw == dict(loop_input="add"):  # h_0 = 0: the first loop sees e itself, as plain does
                assert torch.allclose(out, plain(x, loops=S), atol=1e-6)
            else:
                assert not torch.allclose(out, plain(x, loops=S), atol=1e-3), S


def test_concat_starts_as_additive_injection():
    torch.manual_seed(1)
    add = LoopMDM(cfg_of(loop_input="add"))
    cat = LoopMDM(cfg_of(loop_input="concat"))
    cat.load_state_dict(add.state_dict(), strict=False)
    x = torch.randint(0, 39, (2, 12))
    with torch.no_grad():
        assert torch.allclose(cat(x, loops=3), add(x, loops=3), atol=1e-5)


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "+".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("S", [1, 4])
def test_variant_flops_and_parameters_are_counted_exactly(kw, S):
    cfg = cfg_of(**kw)
    m = LoopMDM(cfg)
    assert sum(p.numel() for p in m.parameters()) == flops.param_counts(cfg).total
    x = torch.randint(0, 39, (2, 24))
    with sdpa_kernel(SDPBackend.MATH):
        fwd = FlopCounterMode(display=False)
        with fwd:
            m(x, loops=S)
        both = FlopCounterMode(display=False)
        with both:
            m(x, loops=S).sum().backward()
    expect = flops.forward_flops(cfg, 24, S, batch=2)
    assert fwd.get_total_flops() == pytest.approx(expect, rel=0.01)
    assert both.get_total_flops() == pytest.approx(3 * expect, rel=0.01)


def test_deeper_baseline_of_a_variant_pays_for_the_variant():
    """concat adds a (2d x d) matmul per loop: the deeper MDM is chosen on FLOPs that include it."""
    plain, cat = cfg_of(n_tail_layers=3, s_max=6), cfg_of(n_tail_layers=3, s_max=6, loop_input="concat", d_model=64)
    for c in (plain, cat):
        depths = c.deeper_depths(32)
        best = min(depths, key=lambda d: abs(d[1] - 1))
        assert abs(best[1] - 1) <= 0.05 or len(depths) == 2
        target = flops.forward_flops(c, 32, c.expected_loops)
        assert best[1] == pytest.approx(flops.forward_flops(c.plain_stack(best[0]), 32, 1) / target)
    # plain: 1 + 3.5 x 2 + 3 = 11 layers exactly; concat's adapter adds ~0.5 layer of FLOPs per step -> 12
    assert plain.replace(d_model=64).deeper_depths(32) == [(11, pytest.approx(1.0))]
    (n, r), = cat.deeper_depths(32)
    assert n == 12 and abs(r - 1) <= 0.05


def test_variants_need_a_looped_model_and_valid_values():
    with pytest.raises(ConfigError, match="model.loop_input"):
        cfg_of(loop_input="gated")
    with pytest.raises(ConfigError, match="model.loop_norm"):
        cfg_of(loop_norm=1)
    with pytest.raises(ConfigError, match="model.loop_embed.*looped model"):
        cfg_of(s_max=1, loop_embed=True)
    # the baselines of a variant are plain MDMs
    v = cfg_of(loop_input="concat", loop_embed=True, loop_norm=True)
    for b in (v.non_looped(), v.deeper(32)):
        assert (b.loop_input, b.loop_embed, b.loop_norm, b.s_max) == ("none", False, False, 1)


def test_default_variant_fields_leave_existing_run_hashes_unchanged():
    """The embedded default's committed runs (results/demo/runs/*-<hash12>) keep their identity."""
    from pathlib import Path

    from study.plan import spec as spec_mod

    root = Path(__file__).resolve().parents[1]
    committed = {p.name.rsplit("-", 1)[1] for p in (root / "results" / "demo" / "runs").iterdir()}
    planned = {r.hash[:12] for r in spec_mod.expand(spec_mod.load_spec(root / "sweeps" / "demo.yaml"))}
    assert committed <= planned
    from study.plan.config import from_dict
    a = from_dict({"model": {"s_max": 4}})
    b = from_dict({"model": {"s_max": 4, "loop_norm": True}})
    assert a.hash != b.hash and "loop_norm" not in a.semantic_dict()["model"]


def test_diagnostics_tell_a_settling_recurrence_from_a_drifting_one():
    """A contraction (each loop halves the distance to a fixed point) has shrinking increments; a loop that
    adds the same vector every time has constant increments pointing one way and a growing norm."""
    torch.manual_seed(0)
    m = LoopMDM(cfg_of(n_mid_layers=1, s_max=4))
    x = torch.randint(0, 39, (4, 16))
    target = torch.randn(32)
    m._mid = lambda h, pos, c, maps: 0.5 * h + 0.5 * target  # settles at target
    settle = loop_diagnostics(m, x, 8)
    m._mid = lambda h, pos, c, maps: h + target  # drifts along target
    drift = loop_diagnostics(m, x, 8)
    assert settle["increment_norm"][-1] < 0.05 * settle["increment_norm"][1]
    assert drift["increment_norm"][-1] == pytest.approx(drift["increment_norm"][1], rel=1e-4)
    assert min(drift["increment_cos"][2:]) > 0.999
    assert drift["state_norm"][-1] > 3 * drift["state_norm"][1]
    assert settle["increment_cos"][0] is None and len(settle["rel_change"]) == 8
