"""Claims on synthetic tidy tables get the right verdicts; missing inputs give 'inconclusive' with a caveat."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import claims as CL
from analysis.collect import BASE_COLUMNS
from analysis.select import choose_eval_loops
from analysis.study_fits import fit_study
from analysis.synthetic import frontier_pair_table

NB = 200  # bootstrap resamples in tests (the report default is 1000)


def row(**kw):
    base = dict(study="t", slug=None, d_model=64, n_heads=1, n_head_layers=2, n_mid_layers=4, n_tail_layers=2,
                n_layers=8, params_embedding=1e5, params_nonembedding=1e6, params_total=1.1e6,
                params_effective=1.1e6, seq_len=256, global_batch=64, budget_flops=1e16,
                budget_convention="6N_nonembed", step=1000, tokens=1e9, flops_6N_nonembed=1e16,
                flops_6N_total=1.1e16, flops_exact=1.2e16, exit_threshold=np.nan, nll_se=0.002, is_final=True,
                done=True, seed=0, s_max=8, eval_loops=1, mean_loops=None)
    base.update(kw)
    if base["mean_loops"] is None:
        base["mean_loops"] = float(base["eval_loops"])
    if base["slug"] is None:
        base["slug"] = base["run"]
    return base


def table(rows):
    df = pd.DataFrame(rows)
    return df[[c for c in BASE_COLUMNS if c in df.columns]]


# ------------------------------------------------------------------ 1 + 2: multiplier (fitted, protocol)
@pytest.fixture(scope="module")
def pair33():
    df = frontier_pair_table(3.3)
    return df, fit_study(df, n_boot=NB, conventions=["flops_6N_nonembed"])


def test_fitted_multiplier_recovers_3p3(pair33):
    df, fits = pair33
    c = CL.claim_multiplier(fits, "6N_nonembed")
    assert c.verdict == CL.SUPPORTED
    assert c.ci_low <= 3.3 <= c.ci_high and c.ci_low > 1
    assert abs(c.measured - 3.3) < 0.15
    assert any("covers the paper" in cv for cv in c.caveats)
    curve = c.details["curve"]
    assert len(curve["loss_levels"]) > 5 and all(abs(e - 3.3) < 0.3 for e in curve["estimate"])


def test_protocol_multiplier_recovers_3p3():
    df = frontier_pair_table(3.3, eval_fracs=tuple(np.linspace(0.05, 1.0, 40)), budgets=(1e15, 1e16))
    c = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    assert c.verdict == CL.SUPPORTED
    assert abs(c.measured - 3.3) / 3.3 < 0.03
    assert c.details["n_groups"] == 12


@pytest.mark.parametrize("m,verdict", [(1.0, CL.INCONCLUSIVE), (0.5, CL.NOT_SUPPORTED)])
def test_fitted_multiplier_no_or_negative_effect(m, verdict):
    df = frontier_pair_table(m)
    fits = fit_study(df, n_boot=NB, conventions=["flops_6N_nonembed"])
    c = CL.claim_multiplier(fits, "flops_6N_nonembed")
    assert c.verdict == verdict, (c.measured, c.ci_low, c.ci_high)
    p = CL.claim_protocol(df, "flops_6N_nonembed", n_boot=NB)
    if m < 1:
        assert p.verdict == CL.NOT_SUPPORTED
    else:
        assert p.ci_low <= 1.0 + 0.05


def test_disagreement_between_fitted_and_protocol_is_reported():
    a = CL.Claim("multiplier[flops_exact]", "", "", 3.3, "", 3.3, 3.1, 3.5, "x", CL.SUPPORTED, "")
    b = CL.Claim("protocol[flops_exact]", "", "", 3.3, "", 2.0, 1.8, 2.2, "x", CL.SUPPORTED, "")
    assert CL.multiplier_disagreements([a, b])
    b.ci_high = 3.2
    assert not CL.multiplier_disagreements([a, b])


# ----------------------------------------------------------------------------------- 3: deeper
def deeper_table(delta, n_groups=8, se=0.002, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        base = 3.0 - 0.1 * g
        rows.append(row(run=f"L{g}", group=f"g{g}", role="looped", family="loopmdm", eval_loops=8,
                        nll=base + rng.normal(0, se), nll_se=se))
        rows.append(row(run=f"D{g}", group=f"g{g}", role="baseline_deeper", family="mdm_deeper", s_max=1,
                        eval_loops=1, nll=base + delta + rng.normal(0, se), nll_se=se))
    return table(rows)


@pytest.mark.parametrize("delta,verdict", [(0.05, CL.SUPPORTED), (0.0, CL.INCONCLUSIVE), (-0.05, CL.NOT_SUPPORTED)])
def test_deeper_mdm_verdicts(delta, verdict):
    c = CL.claim_deeper(deeper_table(delta), n_boot=NB)
    assert c.verdict == verdict, (c.measured, c.ci_low, c.ci_high)
    assert abs(c.measured - delta) < 0.01
    assert c.details["eval_loops"] == 8


def test_a_study_whose_loss_does_not_fall_with_compute_gets_no_multiplier_headline():
    """The held-out-corpus case: every final NLL within a few thousandths whatever the budget."""
    df = frontier_pair_table(3.3)
    rng = np.random.default_rng(0)
    df["nll"] = 3.06 + rng.normal(0, 0.002, len(df))
    fits = fit_study(df, n_boot=NB, conventions=["flops_6N_nonembed"], extras=False)
    cs = CL.all_claims(df, fits, None, conventions=["flops_6N_nonembed"], n_boot=NB)
    mult = [c for c in cs if c.key.startswith(("multiplier", "protocol"))]
    assert mult and all(c.measured is None and c.verdict == CL.INCONCLUSIVE for c in mult)
    assert all("no headline" in c.measured_str() and "does not fall with compute" in c.caveats[0] for c in mult)
    # a study whose loss does fall keeps its headline
    ok = CL.all_claims(frontier_pair_table(3.3), fit_study(frontier_pair_table(3.3), n_boot=NB, extras=False,
                                                                 conventions=["flops_6N_nonembed"]),
                            None, conventions=["flops_6N_nonembed"], n_boot=NB)
    assert next(c for c in ok if c.key.startswith("multiplier")).measured is not None


def test_deeper_mdm_interpolated_between_bracketing_depths_to_equal_compute():
    """Two deeper depths at 0.9x and 1.1x LoopMDM's per-step FLOPs (E[S] x n_mid not integral): the comparison
    is made at 1.0x, between them in log FLOPs — not against the cheaper one alone (banker's rounding)."""
    rows = []
    for g in range(4):
        rows.append(row(run=f"L{g}", group=f"g{g}", role="looped", family="loopmdm", eval_loops=8, nll=3.0,
                        tokens=1e9, flops_exact=1.0e16))
        rows.append(row(run=f"Dlo{g}", group=f"g{g}", role="baseline_deeper", family="mdm_deeper", s_max=1,
                        nll=3.10, tokens=1e9 / 0.9, flops_exact=1.0e16))  # 0.9x per token: 1/0.9 the tokens
        rows.append(row(run=f"Dhi{g}", group=f"g{g}", role="baseline_deeper", family="mdm_deeper", s_max=1,
                        nll=2.90, tokens=1e9 / 1.1, flops_exact=1.0e16))
    c = CL.claim_deeper(table(rows), n_boot=NB)
    w = -np.log(0.9) / (np.log(1.1) - np.log(0.9))
    assert c.measured == pytest.approx((1 - w) * 3.10 + w * 2.90 - 3.0, abs=1e-9)
    assert all(gr["interpolated"] and gr["flops_ratio_deeper_over_loop"] == 1.0 for gr in c.details["groups"])
    assert any("interpolated" in cv for cv in c.caveats)
    # only the cheaper depth: compared as it is, and the report says per-step compute is not matched
    c1 = CL.claim_deeper(table([r for r in rows if not r["run"].startswith("Dhi")]), n_boot=NB)
    assert c1.measured == pytest.approx(0.10) and any("not matched within 5%" in cv for cv in c1.caveats)


# ----------------------------------------------------------------------------------- 4: loops
def loops_table(slope, n_runs=6, se=0.002, beyond=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_runs):
        for S in (1, 2, 4, 8, 16):
            x = np.log2(min(S, 8))
            nll = 3.0 + slope * x + (beyond if S > 8 else 0.0) + rng.normal(0, se)
            rows.append(row(run=f"L{r}", group=f"g{r}", role="looped", family="loopmdm", eval_loops=S, nll=nll,
                            nll_se=se))
    return table(rows)


@pytest.mark.parametrize("slope,verdict", [(-0.03, CL.SUPPORTED), (0.0, CL.INCONCLUSIVE), (0.03, CL.NOT_SUPPORTED)])
def test_loop_scaling_verdicts(slope, verdict):
    c = CL.claim_loop_scaling(loops_table(slope, beyond=0.02), n_boot=NB)
    assert c.verdict == verdict
    assert abs(c.measured - slope) < 0.005
    assert c.details["mean_beyond_delta"] == pytest.approx(0.02, abs=0.005)  # S=16 vs S=s_max=8


# ---------------------------------------------------------------------------------- 5: adaptive
def adaptive_table(extra_nll, mean_loops=5.0, n_runs=6, se=0.002, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_runs):
        f = 3.0 - 0.05 * r
        rows.append(row(run=f"L{r}", group=f"g{r}", role="looped", family="loopmdm", eval_loops=8,
                        nll=f + rng.normal(0, se), nll_se=se))
        rows.append(row(run=f"L{r}", group=f"g{r}", role="looped", family="loopmdm", eval_loops=8,
                        exit_threshold=0.05, mean_loops=mean_loops, nll=f + extra_nll + rng.normal(0, se), nll_se=se))
    return table(rows)


def test_adaptive_saves_at_equal_quality():
    c = CL.claim_adaptive(adaptive_table(0.0), n_boot=NB)
    assert c.verdict == CL.SUPPORTED
    assert c.measured == pytest.approx(100 * (1 - 5 / 8))


def test_adaptive_clearly_worse_is_not_supported():
    c = CL.claim_adaptive(adaptive_table(0.05), n_boot=NB)
    assert c.verdict == CL.NOT_SUPPORTED
    assert c.measured is None


# ------------------------------------------------------------------------------------ 6: tasks
def tasks_table(delta_pts, n=1319, seed=0, ids=False):
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    base = (u < 0.30).astype(float)
    loop = (u < 0.30 + delta_pts / 100).astype(float)
    rows = []
    for fam, role, loops, ps in (("mdm", "baseline_same", 1, base), ("loopmdm", "looped", 8, loop),
                                 ("loopmdm", "looped", 4, base)):
        rows.append(dict(run=fam, group="g", role=role, family=fam, s_max=8 if fam == "loopmdm" else 1,
                         params_total=1e8, budget_flops=1e18, seed=0, task="gsm8k", metric="exact_match", loops=loops,
                         exit_threshold=None, step=100, score=ps.mean(), n=n, per_sample=ps,
                         sample_ids=[f"q{i}" for i in range(n)] if ids else None, file=f"{fam}{loops}"))
    return pd.DataFrame(rows)


def test_gsm8k_delta_covers_paper_value():
    c = CL.claim_task_delta(tasks_table(8.5), "gsm8k", n_boot=NB)
    assert c.verdict == CL.SUPPORTED and c.paper_value == 8.5
    assert c.ci_low <= 8.5 <= c.ci_high
    assert c.details["groups"][0]["loops"] == 8  # largest S >= 6 within s_max


def test_gsm8k_no_difference_is_inconclusive_and_pairing_by_ids():
    t = tasks_table(0.0, ids=True)
    # shuffle the loop model's problem order: pairing must follow sample_ids
    perm = np.random.default_rng(1).permutation(1319)
    i = t.index[(t["family"] == "loopmdm") & (t["loops"] == 8)][0]
    t.at[i, "per_sample"] = t.at[i, "per_sample"][perm]
    t.at[i, "sample_ids"] = [t.at[i, "sample_ids"][k] for k in perm]
    c = CL.claim_task_delta(t, "gsm8k", n_boot=NB)
    assert c.verdict == CL.INCONCLUSIVE
    assert c.measured == pytest.approx(0.0)
    assert c.ci_high - c.ci_low < 1e-9  # identical per-problem outcomes once paired


def test_task_arrays_that_cannot_be_paired():
    t = tasks_table(5.0)
    i = t.index[(t["family"] == "loopmdm") & (t["loops"] == 8)][0]
    t.at[i, "per_sample"] = t.at[i, "per_sample"][:-10]
    c = CL.claim_task_delta(t, "gsm8k", n_boot=NB)
    assert c.verdict == CL.INCONCLUSIVE and any("cannot be paired" in cv for cv in c.caveats)


# ------------------------------------------------------------------------------------- missing
def test_missing_inputs_give_inconclusive_with_caveats():
    empty = pd.DataFrame(columns=BASE_COLUMNS)
    fits = fit_study(empty, n_boot=10)
    cs = CL.all_claims(empty, fits, None, n_boot=10)
    assert {c.key.split("[")[0] for c in cs} == {"multiplier", "phi", "protocol", "deeper", "loop_scaling", "adaptive",
                                                 "task"}
    for c in cs:
        assert c.verdict == CL.INCONCLUSIVE and c.measured is None
        assert c.caveats and all(isinstance(x, str) and x for x in c.caveats)
        assert "internal error" not in " ".join(c.caveats)


def test_no_baseline_family():
    df = frontier_pair_table(3.3)
    df = df[df["family"] != "mdm"]
    fits = fit_study(df, n_boot=20, conventions=["flops_6N_nonembed"])
    c = CL.claim_multiplier(fits, "flops_6N_nonembed")
    assert c.verdict == CL.INCONCLUSIVE and "mdm (baseline)" in c.caveats[0]
    p = CL.claim_protocol(df, "flops_6N_nonembed", n_boot=20)
    assert p.verdict == CL.INCONCLUSIVE and "same-size baseline" in p.caveats[0]
    d = CL.claim_deeper(df, n_boot=20)
    assert d.verdict == CL.INCONCLUSIVE and "mdm_deeper" in d.caveats[0]


def test_missing_columns_named():
    df = frontier_pair_table(3.3).drop(columns=["nll_se"])
    c = CL.claim_protocol(df, "flops_6N_nonembed", n_boot=10)
    assert c.verdict == CL.INCONCLUSIVE and "nll_se" in c.caveats[0]


def test_choose_eval_loops_rule():
    rows = [row(run=f"L{r}", group="g", role="looped", family="loopmdm", eval_loops=S, nll=3.0)
            for r in range(2) for S in (1, 4, 6, 8, 12)]
    rows += [row(run="L9", group="g", role="looped", family="loopmdm", eval_loops=S, nll=3.0) for S in (1, 4, 6, 12)]
    S, note = choose_eval_loops(table(rows))
    assert S == 6 and "largest S >= 6" in note  # 8 missing in one run; 12 > s_max
    rows = [row(run="L0", group="g", role="looped", family="loopmdm", eval_loops=S, nll=3.0) for S in (1, 2, 4)]
    S, note = choose_eval_loops(table(rows))
    assert S == 4 and "no S >= 6" in note


# ------------------------------------------------------------------- paired comparisons (nll_per_seq)
N_SEQ = 64
SEQ_DIFFICULTY = np.random.default_rng(123).normal(0, 0.5, N_SEQ)  # shared: every run sees the same sequences


def seqs(nll, sd, rng):
    """Per-sequence NLLs averaging exactly to ``nll``: shared difficulty + this evaluation's own noise."""
    e = rng.normal(0, sd, N_SEQ)
    return nll + SEQ_DIFFICULTY - SEQ_DIFFICULTY.mean() + e - e.mean()


def unpaired(df):
    return df.assign(nll_per_seq=None)


def test_deeper_paired_ci_excludes_zero_where_unpaired_does_not():
    # the two MC errors (0.02 each) hide a 0.02-nat gap; per sequence the gap is plain to see
    rng = np.random.default_rng(0)
    rows = []
    for g in range(4):
        base = 3.0 - 0.1 * g
        for run, role, fam, S, nll in ((f"L{g}", "looped", "loopmdm", 8, base), (f"D{g}", "baseline_deeper",
                                                                               "mdm_deeper", 1, base + 0.02)):
            rows.append(row(run=run, group=f"g{g}", role=role, family=fam, eval_loops=S, nll=nll, nll_se=0.02,
                            s_max=8 if fam == "loopmdm" else 1, nll_per_seq=seqs(nll, 0.03, rng), eval_set="e1"))
    df = pd.DataFrame(rows)
    p = CL.claim_deeper(df, n_boot=NB)
    u = CL.claim_deeper(unpaired(df), n_boot=NB)
    assert p.measured == pytest.approx(0.02) and u.measured == pytest.approx(0.02)
    assert p.verdict == CL.SUPPORTED and p.ci_low > 0, (p.ci_low, p.ci_high)
    assert u.verdict == CL.INCONCLUSIVE and u.ci_low < 0 < u.ci_high, (u.ci_low, u.ci_high)
    assert all(g["se_method"] == "paired" and g["se"] < 0.01 for g in p.details["groups"])
    assert any(f"paired over the {N_SEQ} shared eval sequences" in c for c in p.caveats)
    assert all(g["se_method"] == "unpaired MC" for g in u.details["groups"])
    assert any("unpaired MC errors for all 4 groups" in c for c in u.caveats)


def test_pairing_falls_back_on_different_lengths_or_eval_sets():
    rng = np.random.default_rng(1)
    rows = []
    for g in range(2):
        for run, role, fam, S in ((f"L{g}", "looped", "loopmdm", 8), (f"D{g}", "baseline_deeper", "mdm_deeper", 1)):
            rows.append(row(run=run, group=f"g{g}", role=role, family=fam, eval_loops=S, nll=3.0, nll_se=0.02,
                            s_max=8 if fam == "loopmdm" else 1, nll_per_seq=seqs(3.0, 0.03, rng), eval_set="e1"))
    df = pd.DataFrame(rows)
    df.at[1, "nll_per_seq"] = df.at[1, "nll_per_seq"][:-1]  # D0: one sequence fewer
    df.at[3, "eval_set"] = "e2"                              # D1: another eval set
    c = CL.claim_deeper(df, n_boot=NB)
    assert [g["se_method"] for g in c.details["groups"]] == ["unpaired MC", "unpaired MC"]
    assert all(g["se"] == pytest.approx(0.02 * np.sqrt(2)) for g in c.details["groups"])


def test_loop_scaling_paired_ci_excludes_zero_where_unpaired_does_not():
    rng = np.random.default_rng(2)
    rows = []
    for r in range(2):
        for S in (1, 2, 4, 8):
            nll = 3.0 - 0.1 * r - 0.01 * np.log2(S)
            rows.append(row(run=f"L{r}", group=f"g{r}", role="looped", family="loopmdm", eval_loops=S, nll=nll,
                            nll_se=0.02, nll_per_seq=seqs(nll, 0.05, rng), eval_set="e1"))
    df = pd.DataFrame(rows)
    p = CL.claim_loop_scaling(df, n_boot=NB)
    u = CL.claim_loop_scaling(unpaired(df), n_boot=NB)
    assert p.measured == pytest.approx(-0.01) and u.measured == pytest.approx(-0.01)
    assert p.verdict == CL.SUPPORTED and p.ci_high < 0, (p.ci_low, p.ci_high)
    assert u.verdict == CL.INCONCLUSIVE and u.ci_low < 0 < u.ci_high, (u.ci_low, u.ci_high)
    assert all(r["se_method"] == "paired" for r in p.details["runs"])


def test_adaptive_paired_shows_equal_quality_where_unpaired_cannot():
    rng = np.random.default_rng(3)
    rows = []
    for r in range(4):
        f = 3.0 - 0.05 * r
        for thr, ml, nll in ((np.nan, 8.0, f), (0.05, 5.0, f + 0.001)):
            rows.append(row(run=f"L{r}", group=f"g{r}", role="looped", family="loopmdm", eval_loops=8,
                            exit_threshold=thr, mean_loops=ml, nll=nll, nll_se=0.02,
                            nll_per_seq=seqs(nll, 0.02, rng), eval_set="e1"))
    df = pd.DataFrame(rows)
    p = CL.claim_adaptive(df, n_boot=NB, margin=0.01)
    u = CL.claim_adaptive(unpaired(df), n_boot=NB, margin=0.01)
    tp, tu = p.details["thresholds"][0], u.details["thresholds"][0]
    assert tp["delta_low"] < 0 < tp["delta_high"] <= 0.01 and tp["se_method"] == "paired"
    assert tu["delta_high"] > 0.01 and tu["se_method"] == "unpaired MC"
    assert p.verdict == CL.SUPPORTED and p.measured == pytest.approx(100 * (1 - 5 / 8))
    assert u.verdict == CL.INCONCLUSIVE


def test_protocol_paired_bootstrap_is_tighter():
    df = frontier_pair_table(3.3, eval_fracs=tuple(np.linspace(0.05, 1.0, 20)), budgets=(1e15,), noise=0.0,
                             nll_se=0.02)
    rng = np.random.default_rng(4)
    df["nll_per_seq"] = [seqs(v, 0.01, rng) for v in df["nll"]]
    df["eval_set"] = "e1"
    p = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    u = CL.claim_protocol(unpaired(df), "flops_6N_nonembed", loops=8, n_boot=NB)
    assert p.details["eval_noise"]["paired_pairs"] == 6 and u.details["eval_noise"]["unpaired_pairs"] == 6
    assert p.ci_low <= p.measured <= p.ci_high and abs(p.measured - 3.3) / 3.3 < 0.05
    for g_p, g_u in zip(p.details["groups"], u.details["groups"]):
        assert (g_p["high"] - g_p["low"]) < 0.5 * (g_u["high"] - g_u["low"])


# ------------------------------------------------------------------- censored protocol multipliers
def with_step0(df):
    """Add the step-0 eval every real run has (0 FLOPs: no place on a log-FLOPs axis)."""
    z = df[df["step"] == df["step"].min()].copy()
    z[["step", "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact"]] = 0
    z["nll"] = 5.5
    z["is_final"] = False
    return pd.concat([z, df], ignore_index=True)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_protocol_never_reached_is_an_upper_bound_not_zero():
    df = with_step0(frontier_pair_table(0.5, budgets=(1e15,), size_factors=(0.5, 1.0, 2.0)))
    c = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    assert c.measured is None and c.details["measured_low"] == 0.0
    assert 0.9 < c.details["measured_high"] <= 1.01  # below baseline FLOPs / LoopMDM's last-eval FLOPs (same budget)
    assert c.measured_text.startswith("not reached (< ") and c.ci_text.startswith("< ")
    assert c.ci_low == 0.0 and c.ci_high <= 1.0 and c.verdict == CL.NOT_SUPPORTED
    assert c.details["groups_never_reached"] == 3
    assert all(g["text"].startswith("not reached") for g in c.details["groups"])
    assert "1e-12" not in " ".join(c.caveats) and "1.00e-12" not in c.measured_str() + c.ci_str()


def test_protocol_median_stays_identified_with_a_few_censored_groups():
    df = frontier_pair_table(3.3, eval_fracs=tuple(np.linspace(0.05, 1.0, 40)), budgets=(1e15, 1e16))
    # one group's LoopMDM run stops early, above the baseline's final NLL: never reached
    g = sorted(df["group"].unique())[0]
    cut = (df["group"] == g) & (df["family"] == "loopmdm") & (df["step"] > 100)
    df = df[~cut]
    c = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    assert c.details["groups_never_reached"] == 1 and c.details["n_groups"] == 12
    assert c.measured is not None and abs(c.measured - 3.3) / 3.3 < 0.03
    assert c.verdict == CL.SUPPORTED and c.ci_low > 1
    assert any("1 of 12 group(s) LoopMDM never reached" in cv for cv in c.caveats)


# ------------------------------------------------------------------------ LR schedule and claim 2
def test_protocol_schedule_caveat_only_when_needed():
    df = frontier_pair_table(3.3, eval_fracs=tuple(np.linspace(0.05, 1.0, 20)), budgets=(1e15,))
    c = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    assert not any("schedule" in cv for cv in c.caveats)  # every run constant-LR: nothing to warn about
    assert c.details["lr_schedules"] == dict(cosine_runs=0, unknown_runs=0, mid_schedule_points_dropped=0)
    u = CL.claim_protocol(df.assign(lr_schedule=None), "flops_6N_nonembed", loops=8, n_boot=NB)
    assert any("LR schedule unknown for 12 run(s)" in cv for cv in u.caveats)


def test_protocol_drops_mid_schedule_points_of_cosine_runs():
    df = frontier_pair_table(3.3, eval_fracs=tuple(np.linspace(0.05, 1.0, 20)), budgets=(1e15,))
    groups = sorted(df["group"].unique())
    cos_run = f"loopmdm-{groups[0]}"
    df.loc[df["run"] == cos_run, "lr_schedule"] = "cosine"
    c = CL.claim_protocol(df, "flops_6N_nonembed", loops=8, n_boot=NB)
    assert c.details["lr_schedules"] == dict(cosine_runs=1, unknown_runs=0, mid_schedule_points_dropped=19)
    assert any("1 run(s) use a cosine LR schedule: their 19 mid-schedule eval point(s) are left out" in cv
               for cv in c.caveats)
    g = next(x for x in c.details["groups"] if x["group"] == groups[0])
    # with only its final point, the looped run is already below the baseline there: a lower bound
    assert g["status"] == ["reached at the first eval point"] and g["value_high"] == np.inf
    assert g["text"].startswith("≥ ")
    assert c.measured == pytest.approx(3.3, rel=0.03)  # the median over the 6 groups is unaffected


def test_adaptive_margin_is_a_fixed_tolerance_not_the_noise():
    # huge MC errors: the old default margin (2 x median MC s.e. = 0.4 nats) would have called this 'equal quality'
    c = CL.claim_adaptive(adaptive_table(0.0, se=0.2), n_boot=NB)
    assert c.details["margin"] == CL.EQUIV_MARGIN_NATS == 0.01 and c.details["margin_source"] == "fixed tolerance"
    assert c.verdict == CL.INCONCLUSIVE and c.measured is None
    assert any("wider than the margin" in cv for cv in c.caveats)
    assert any("≤ 0.01 nats/token (fixed tolerance)" in cv for cv in c.caveats)


def test_adaptive_that_never_exits_is_reported_as_not_exercised():
    c = CL.claim_adaptive(adaptive_table(0.0, mean_loops=8.0), n_boot=NB)
    assert c.verdict == CL.INCONCLUSIVE and c.details.get("missing_input")
    assert c.caveats[0].startswith("no exit threshold saved any loops")
    assert any("0.05 never exited early" in cv for cv in c.caveats)


def test_a_bound_just_above_1_is_not_printed_as_1():
    """'< 1x' read as 'at or below 1' while the verdict (correctly) said inconclusive for 1.0014."""
    assert CL.bounded_ci_text(0.0, 1.0014279) == "< 1.001x"
    assert CL.bounded_ci_text(0.0, 0.9685) == "< 0.969x"
    assert CL.bounded_text(0.0, 1.00002) == "not reached (< 1.00002x)"


def test_a_task_at_floor_has_no_power_and_says_so():
    rows = []
    for fam, role in (("loopmdm", "looped"), ("mdm", "baseline_same")):
        rows.append(dict(run=fam, group="g", role=role, family=fam, task="sudoku", metric="exact", loops=4 if
                         fam == "loopmdm" else 1, exit_threshold=None, step=10, score=0.0, n=50,
                         per_sample=np.zeros(50), sample_ids=None, s_max=4 if fam == "loopmdm" else 1,
                         budget_flops=1e12, params_total=1e6))
    c = CL.state_power(CL.claim_task_delta(pd.DataFrame(rows), "sudoku", n_boot=NB))
    assert c.verdict == CL.INCONCLUSIVE and "floor" in c.caveats[0]
    assert c.mde is None and "zero width" in c.mde_text
