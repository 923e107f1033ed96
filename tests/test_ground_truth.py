"""Ground truth the analysis was not built on (issue: verdicts with power): studies drawn from a Kaplan-form
law L = E + [(Nc/N)^(aN/aD) + Dc/D]^aD — not `analysis.synthetic`'s Chinchilla sum — with a per-run offset
(training-seed variance, which no CI of a one-seed study can contain) and per-eval noise. LoopMDM is
exactly ``m`` times cheaper: a looped run of size N with D tokens has the loss of the baseline with m·D
tokens, so both frontiers are m apart at every loss.

Over 20 noise seeds per truth, with 3 training seeds per config (the fits average them and carry their
spread, `analysis.select.collapse_seeds`), the fitted multiplier's 95% CI must cover the truth as often as
binomial limits allow, a true 1.0x must be called "smaller than the paper" whenever its CI excludes 3.3, a
true 3.3x "consistent with the paper" as often as it is covered, and every claim states a minimum detectable
effect. (With one seed per config the same study covers only ~15/20: no CI of a one-seed study can contain
training-seed variance, which is why the report says when it is missing.)
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import claims as CL
from analysis.study_fits import fit_study

KAPLAN = dict(E=1.2, Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
N_SEEDS = 20
NB = 100
pytestmark = pytest.mark.slow


def kaplan_loss(N, D):
    k = KAPLAN
    return k["E"] + ((k["Nc"] / N) ** (k["aN"] / k["aD"]) + k["Dc"] / D) ** k["aD"]


def study_table(m: float, seed: int, *, run_sd: float = 0.004, eval_sd: float = 0.002,
                train_seeds: int = 1) -> pd.DataFrame:
    """Two families, 5 budgets x 5 sizes, trajectories of 4 eval points, ``train_seeds`` runs per config (each
    with its own offset: training-seed variance)."""
    rng = np.random.default_rng([seed, int(m * 1000)])
    rows = []
    for C in (1e15, 3e15, 1e16, 3e16, 1e17):
        k, a = KAPLAN, KAPLAN["aN"] / KAPLAN["aD"]  # compute-optimal N of this law under C = 6 N D
        n_opt = (a * k["Nc"] ** a * C / (6 * k["Dc"])) ** (1 / (1 + a))
        for N in (n_opt * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)):
            group = f"n{N:.2e}-c{C:.0e}"
            for fam, role, mult, ts in ((f, r, x, t) for f, r, x in (("mdm", "baseline_same", 1.0),
                                                                    ("loopmdm", "looped", m))
                                        for t in range(train_seeds)):
                run = f"{fam}-{group}-seed{ts}"
                offset = rng.normal(0, run_sd)
                for frac in (0.25, 0.5, 0.75, 1.0):
                    c = C * frac
                    D = c / (6 * N)
                    nll = float(kaplan_loss(N, mult * D)) + offset + rng.normal(0, eval_sd)
                    rows.append(dict(study="kaplan", run=run, slug=f"{fam}-{group}", group=f"{group}-seed{ts}", role=role, family=fam,
                                     d_model=64, n_heads=1, n_head_layers=1, n_mid_layers=2, n_tail_layers=1,
                                     s_max=8 if fam == "loopmdm" else 1, n_layers=4, params_embedding=1e5,
                                     params_nonembedding=N, params_total=N + 1e5, params_effective=N + 1e5,
                                     seq_len=256, global_batch=64, budget_flops=C, budget_convention="6N_nonembed",
                                     lr_schedule="constant", step=int(1000 * frac), tokens=D, flops_6N_nonembed=c,
                                     flops_6N_total=c * 1.1, flops_exact=c * 1.2,
                                     eval_loops=8 if fam == "loopmdm" else 1, exit_threshold=np.nan, nll=nll,
                                     nll_se=eval_sd, mean_loops=8.0 if fam == "loopmdm" else 1.0,
                                     is_final=frac == 1.0, done=True, seed=ts))
    return pd.DataFrame(rows)


def fitted_claim(m: float, seed: int, train_seeds: int = 3) -> CL.Claim:
    df = study_table(m, seed, train_seeds=train_seeds)
    fits = fit_study(df, n_boot=NB, seed=seed, conventions=["flops_6N_nonembed"], extras=False)
    return CL.state_power(CL.claim_multiplier(fits, "6N_nonembed"))


@pytest.fixture(scope="module")
def runs():
    return {m: [fitted_claim(m, s) for s in range(N_SEEDS)] for m in (1.0, 3.3)}


def _covered(c: CL.Claim, truth: float) -> bool:
    return c.ci_low is not None and c.ci_high is not None and c.ci_low <= truth <= c.ci_high


@pytest.mark.parametrize("truth", [1.0, 3.3])
def test_fitted_multiplier_ci_covers_the_truth_within_binomial_limits(runs, truth):
    cover = sum(_covered(c, truth) for c in runs[truth])
    # nominal 95%: fewer than this many covered out of 20 would happen by chance < 1% of the time
    floor = int(stats.binom.ppf(0.01, N_SEEDS, 0.95))
    assert cover >= floor, (truth, cover, [(c.ci_low, c.ci_high) for c in runs[truth]])


def test_a_true_1x_is_smaller_than_the_paper_whenever_its_ci_excludes_3p3(runs):
    cs = runs[1.0]
    excl = [c for c in cs if c.ci_high is not None and c.ci_high < 3.3]
    assert len(excl) >= N_SEEDS - 1  # the study has the power to tell 1.0x from 3.3x
    assert all(c.paper_verdict == CL.SMALLER for c in excl)
    assert all(c.verdict != CL.SUPPORTED for c in cs)


def test_a_true_3p3x_is_consistent_with_the_paper_when_covered(runs):
    cs = runs[3.3]
    assert all(c.paper_verdict == CL.CONSISTENT for c in cs if _covered(c, 3.3))
    assert sum(c.verdict == CL.SUPPORTED for c in cs) >= N_SEEDS - 1


@pytest.mark.parametrize("truth", [1.0, 3.3])
def test_every_study_states_a_minimum_detectable_effect(runs, truth):
    # where the fit's bootstrap gave no CI at all (seen once in 40: an open issue of the IsoFLOP frontier's
    # replicates, not of the power statement), the claim says the MDE is not determined instead of guessing
    assert sum(c.mde is not None for c in runs[truth]) >= N_SEEDS - 1
    for c in runs[truth]:
        if c.mde is None:
            assert c.ci_low is None and c.ci_high is None and "not determined" in c.mde_text
            continue
        assert 1.0 < c.mde < 3.3 and "80% power" in c.mde_text
        # the MDE follows from the CI's width, (z.975 + z.8) x s.e.: where only a bound is known (LoopMDM never
        # reached the baseline's loss), from the extrapolated frontier's CI, which still measures the noise
        lo, hi, est = CL.common._power_ci(c)
        if math.isfinite(hi) and lo > 0:
            se = (math.log(hi) - math.log(lo)) / (2 * 1.959964)
        else:
            se = abs(math.log(est) - math.log(lo)) / 1.959964
        assert math.log(c.mde) == pytest.approx((1.959964 + 0.841621) * se, rel=1e-4)


def test_minimum_detectable_effect_arithmetic():
    # additive: CI half-width 0.02 -> s.e. 0.0102 -> MDE 2.8016 x s.e.
    assert CL.minimum_detectable(-0.01, 0.03, multiplicative=False) == pytest.approx(0.02 / 1.959964 * 2.801585, rel=1e-5)
    # multiplicative on log scale, symmetric around 2x
    m = CL.minimum_detectable(2 / 1.5, 2 * 1.5, multiplicative=True)
    assert math.log(m) == pytest.approx(math.log(1.5) / 1.959964 * 2.801585, rel=1e-5)
    assert CL.minimum_detectable(0.0, 1.2, multiplicative=True) is None  # only an upper bound, no estimate
    assert CL.paper_verdict(0.0, 1.1, 3.3, multiplicative=True) == CL.SMALLER
    assert CL.paper_verdict(0.0, 4.0, 3.3, multiplicative=True) == CL.UNDETERMINED
    assert CL.paper_verdict(3.5, math.inf, 3.3, multiplicative=True) == CL.LARGER
    assert CL.paper_verdict(2.0, 4.0, 3.3, multiplicative=True) == CL.CONSISTENT
    assert CL.paper_verdict(2.0, 4.0, None, multiplicative=True) is None
