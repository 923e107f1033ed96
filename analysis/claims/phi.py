"""Beside claim 1: the looped family's effective-parameter ratio φ — a LoopMDM of N parameters at E[S] loops as a
plain MDM of N·(1 + φ(E[S] − 1)) parameters, read against the plain law of the same-size and deeper MDMs
(`curves.fit_phi`). Not a claim of the paper; the looped-model scaling work of 2026 reports it, and it says in one
number what the multiplier says at one loss: how much capacity the loops add."""

from __future__ import annotations

from ..study_fits import StudyFits
from ..util import fmt
from .common import NOT_IN_PAPER, Claim, Section, inconclusive, verdict_gt

PHI_RULE = ("φ from one joint fit: the plain law L(N, D) = E + A/N^α + B/D^β on the same-size and deeper MDMs' "
            "final evaluations and the LoopMDM runs (at the claims' S) on N_eff = N·(1 + φ(E[S] − 1)); N = "
            "non-embedding parameters, D = training tokens, one point per run; 95% CI from a bootstrap over runs "
            "within the plain and the looped stratum. Supported (the loops add effective parameters) if the CI lies "
            "above 0, not supported if below 0, else inconclusive; φ = N_mid/N would make a loop worth a distinct "
            "copy of the looped layers")


def claim_phi(fits: StudyFits) -> Claim:
    key, name = "phi", "1b. effective-parameter ratio φ (looped runs against the plain law)"
    statement = "A LoopMDM of N parameters with E[S] loops behaves like a plain MDM of N·(1 + φ(E[S] − 1)), φ > 0"
    args = (key, name, statement, None, NOT_IN_PAPER, "", PHI_RULE)
    p = fits.phi
    if p is None:
        return inconclusive(*args, "φ not fitted (no plain-law fit for this study)")
    if not p.ok:
        return inconclusive(*args, f"φ not identified: {p.message}")
    if p.message != "ok":  # a number from a fit nobody may trust is no headline; it stays in the details
        return inconclusive(*args, f"φ not identified: the joint fit is {p.message}",
                            f"its estimate {fmt(p.phi.estimate)} [{fmt(p.phi.low)}, {fmt(p.phi.high)}] is kept in the "
                            f"details", details=dict(fit=p.to_dict()))
    v = p.phi
    caveats = [f"N_eff / N at the looped runs' mean E[S] = {fmt(p.mean_loops)}: {fmt(p.n_eff_ratio.estimate)} "
               f"[{fmt(p.n_eff_ratio.low)}, {fmt(p.n_eff_ratio.high)}]"]
    if p.phi_unrolled is not None and v.low is not None:
        ref = p.phi_unrolled
        where = ("below it: a loop is worth less than a distinct copy of the looped layers" if v.high < ref else
                 "above it: a loop is worth more than a distinct copy of the looped layers" if v.low > ref else
                 "the CI covers it")
        caveats.append(f"reference φ = N_mid/N = {fmt(ref)} (loops as good as distinct layers); {where}")
    d = p.diagnostics
    if v.low is None:
        caveats.insert(0, "no CI: fewer than 2 bootstrap refits converged")
    elif d is not None and d.n_boot and d.n_boot_ok < 0.9 * d.n_boot:
        caveats.append(f"only {d.n_boot_ok}/{d.n_boot} bootstrap refits converged")
    caveats.append(f"{p.n_plain} plain and {p.n_looped} looped points for 6 parameters; LoopMDM at {fits.loops_note}")
    if p.n_looped < 3:
        caveats.append("φ rests on fewer than 3 looped runs")
    return Claim(key, name, statement, None, NOT_IN_PAPER, float(v.estimate), v.low, v.high, "",
                 verdict_gt(v.low, v.high, 0.0), PHI_RULE, caveats, dict(fit=p.to_dict()))


def details_md(c: Claim) -> list[str]:
    """The plain law φ was read against (so a reader sees what 'plain model' means here)."""
    f = c.details.get("fit")
    if not f or not f.get("ok"):
        return []
    iv = lambda x: "—" if not x else f"{fmt(x['estimate'])} [{fmt(x.get('low'))}, {fmt(x.get('high'))}]"  # noqa: E731
    dg = f.get("diagnostics") or {}
    return [f"The joint fit ({f['n_plain']} plain and {f['n_looped']} looped points): {f['message']}; "
            f"{dg.get('n_boot_ok', 0)}/{dg.get('n_boot', 0)} bootstrap refits converged.", "",
            "| φ | N_eff/N at E[S] | E | A | B | α | β | RMSE(log) | converged | starts agree |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {iv(f['phi'])} | {iv(f['n_eff_ratio'])} | {iv(f['E'])} | {iv(f['A'])} | {iv(f['B'])} | {iv(f['alpha'])} "
            f"| {iv(f['beta'])} | {fmt(dg.get('rmse_log'))} | {'yes' if dg.get('converged') else 'NO'} | "
            f"{dg.get('n_starts_agree', '—')}/{dg.get('n_starts', '—')} |", ""]


SECTION = Section("phi", "1b. Effective-parameter ratio φ", (), details=details_md)
