"""The effective-parameter ratio φ (analysis/curves/phi.py): recovered within its bootstrap CI on synthetic ground
truth, its CI covering the truth at the nominal rate over seeds (within binomial limits), refused where the data
cannot identify it, and reported beside the multiplier."""

from __future__ import annotations

import pytest
from scipy.stats import binom

from analysis import synthetic as S
from analysis.claims import SUPPORTED, claim_phi
from analysis.curves import fit_phi
from analysis.study_fits import StudyFits


def fit(phi: float, seed: int, n_boot: int = 200, **kw):
    p = S.phi_points(phi, seed=seed, **kw)
    return fit_phi(p["N"], p["D"], p["loss"], p["loops"], n_boot=n_boot, seed=seed)


@pytest.mark.parametrize("phi", [0.0, 0.3, 1.0])
def test_phi_recovered_within_its_ci(phi):
    f = fit(phi, seed=7)
    assert f.ok and f.message == "ok", f.message
    assert f.phi.low <= phi <= f.phi.high
    assert f.phi.high - f.phi.low < 0.3  # an informative interval, not a vacuous one
    assert abs(f.alpha.estimate - S.LAW["alpha"]) < 0.05 and f.n_plain == 15 and f.n_looped == 9
    assert f.n_eff_ratio.estimate == pytest.approx(1 + f.phi.estimate * (4.5 - 1))


def test_claim_phi_states_phi_beside_the_multiplier():
    f = fit(0.3, seed=3)
    f.phi_unrolled = 0.6
    c = claim_phi(StudyFits(loops=8, loops_note="S=8", conventions=("flops_exact",), phi=f))
    assert c.key == "phi" and c.verdict == SUPPORTED and c.measured == pytest.approx(f.phi.estimate)
    assert any("reference φ = N_mid/N = 0.6" in cv and "worth less than a distinct copy" in cv for cv in c.caveats)
    none = claim_phi(StudyFits(loops=8, loops_note="S=8", conventions=("flops_exact",)))
    assert none.details.get("missing_input")
    f.message = "NOT reliable: parameters at their bounds: e"  # a fit nobody may trust gives no headline number
    bad = claim_phi(StudyFits(loops=8, loops_note="S=8", conventions=("flops_exact",), phi=f))
    assert bad.measured is None and bad.verdict != SUPPORTED and "NOT reliable" in bad.caveats[0]
    assert bad.details["fit"]["phi"]["estimate"] == pytest.approx(f.phi.estimate)


def test_phi_is_refused_where_the_data_cannot_identify_it():
    p = S.phi_points(0.3, seed=0, sizes=(1e6,))  # one plain size: the law's N exponent is not identified
    f = fit_phi(p["N"], p["D"], p["loss"], p["loops"], n_boot=0)
    assert not f.ok and "several N and D" in f.message
    p = S.phi_points(0.3, seed=0, looped_sizes=())
    f = fit_phi(p["N"], p["D"], p["loss"], p["loops"], n_boot=0)
    assert not f.ok and "looped runs" in f.message


def test_phi_ci_coverage_over_seeds_is_within_binomial_limits():
    """20 synthetic studies with φ = 0.3 (0.3% multiplicative noise): the 95% percentile-bootstrap CI must cover the
    truth in at least as many as Bin(20, 0.95) puts above its 0.5% quantile (a test of the interval, not of one
    fit)."""
    n, truth = 20, 0.3
    covered = sum(fit(truth, seed=100 + s).phi.covers(truth) for s in range(n))
    assert covered >= binom.ppf(0.005, n, 0.95), covered
