"""Loop sensitivity, the inert flag and the settle/drift classification (issue: loop diagnostics)."""
import numpy as np
import pandas as pd

from analysis import claims as CL
from analysis import loop_diagnostics as LD
from analysis.collect import BASE_COLUMNS
from analysis.study_fits import StudyFits


def looped_rows(run: str, gain: float, rng, n_seqs: int = 64, s_max: int = 4, beyond: float = 0.0):
    """Final evals at S = 1, 2, s_max, 2 s_max of one looped run whose NLL falls by ``gain`` from S=1 to s_max,
    on a shared eval set (per-sequence difficulty + small per-eval noise)."""
    difficulty = np.random.default_rng(7).normal(3.0, 0.3, n_seqs)  # the same sequences for every eval
    rows = []
    for S, drop in ((1, 0.0), (2, gain / 2), (s_max, gain), (2 * s_max, gain - beyond)):
        per = difficulty - drop + rng.normal(0, 0.002, n_seqs)
        rows.append(dict(study="t", run=run, slug=run, group=f"g-{run}", role="looped", family="loopmdm",
                         s_max=s_max, eval_loops=S, exit_threshold=np.nan, nll=float(per.mean()), nll_se=0.01,
                         nll_per_seq=per.tolist(), eval_set="e", is_final=True, step=100, seed=0,
                         variant="plain", budget_flops=1e12, tokens=1e6, flops_exact=1e12))
    return rows


def table(*runs) -> pd.DataFrame:
    df = pd.DataFrame([r for rows in runs for r in rows])
    for c in BASE_COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df


def test_an_inert_looped_run_is_flagged_and_a_sensitive_one_is_not():
    rng = np.random.default_rng(0)
    df = table(looped_rows("inert", 0.0005, rng), looped_rows("sensitive", 0.03, rng, beyond=0.02))
    sens = LD.loop_sensitivity(df).set_index("run")
    assert bool(sens.at["inert", "inert"]) and not bool(sens.at["sensitive", "inert"])
    assert sens.at["sensitive", "sens_low"] > 0.02  # paired: the shared difficulty cancels
    assert sens.at["sensitive", "beyond_delta"] > 0.015 and sens.at["sensitive", "beyond_S"] == 8
    note = LD.inert_note(LD.loop_sensitivity(df))
    assert note and note.startswith("1 of 2 looped run(s) are inert")
    # the claims about what looping buys name it; the adaptive-exit claim does not
    cs = CL.all_claims(df, StudyFits(loops=4, loops_note="S=4", conventions=("flops_exact",)), None,
                            conventions=["flops_exact"], n_boot=50)
    by = {c.key: c for c in cs}
    assert note in by["loop_scaling"].caveats
    # a claim that could not be evaluated at all does not blame the looping; the adaptive-exit claim never does
    assert by["multiplier[flops_exact]"].details.get("missing_input")
    assert note not in by["multiplier[flops_exact]"].caveats and note not in by["adaptive"].caveats
    # no inert run: no note
    assert LD.inert_note(LD.loop_sensitivity(table(looped_rows("sensitive", 0.03, rng)))) is None


def diag_row(increments, norms, cos):
    return {"rel_change": [i / n for i, n in zip(increments, norms)], "state_norm": norms,
            "increment_norm": increments, "increment_cos": [None] + cos}


def test_state_behaviour_settles_drifts_or_neither():
    k = np.arange(1, 13)
    settle = diag_row(list(0.5 ** k), list(10 + 0 * k), [0.5] * 11)
    drift = diag_row([1.0] * 12, list(10.0 + k), [0.99] * 11)
    wander = diag_row([1.0] * 12, [10.0] * 12, [-0.3] * 11)
    assert LD.state_behaviour(settle)["state"] == "settles"
    d = LD.state_behaviour(drift)
    assert d["state"] == "drifts" and d["late_cos"] > 0.9 and d["norm_growth"] > 1.5
    assert LD.state_behaviour(wander)["state"] == "neither"
    explode = diag_row(list(2.0 ** k), list(2.0 ** (k + 1)), [0.999] * 11)
    assert LD.state_behaviour(explode)["state"] == "diverges"


def test_loop_state_figure_is_written(tmp_path):
    from analysis.figures import fig_loop_state

    k = np.arange(1, 9)
    rows = [dict(run=r, slug=r, variant=v, s_max=4, n_head_layers=1, n_mid_layers=2, n_tail_layers=3, step=10,
                 **diag_row(list(inc), list(norm), [0.99] * 7))
            for r, v, inc, norm in (("a", "plain", 1.0 + 0 * k, 10.0 + k), ("b", "loop-norm", 0.5 ** k, 10 + 0 * k))]
    res = fig_loop_state(pd.DataFrame(rows), tmp_path, formats=("png",))
    assert res.made and (tmp_path / "loop_state.png").stat().st_size > 5000
    assert not fig_loop_state(pd.DataFrame(), tmp_path).made  # no diagnostics: skipped with a note
