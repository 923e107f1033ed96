"""Power beside every verdict: a study's report cites what its positive control detected, claim by claim."""
import json
import re

import numpy as np
import pytest

import records
from analysis import control as CT
from analysis.report import main, run_report
from analysis.report.cite import find_control
from analysis.synthetic import SyntheticSpec, write_study

SMALL = dict(budgets=(1e15, 3e15, 1e16, 3e16, 1e17), size_factors=(0.25, 0.5, 1.0, 2.0, 4.0))


def control_fits(where, loop_scaling=-0.0312):
    """A reported control study: two claims (the others it could not measure) and its pre-registered tests."""
    rng = np.random.default_rng(3)
    m = np.clip(0.6 + rng.uniform(-0.3, 0.3, size=(100, 1)) + np.zeros((1, 5)), 0, 1)
    m[:, 0] = 0.99
    frame = CT_frame([("g", "loopmdm", 5, np.clip(m + 0.15, 0, 1)), ("g", "loopmdm", 1, m), ("g", "mdm", 1, m)])
    res = CT.evaluate_control(frame, None, None, CT.Preregistration(), n_boot=100)
    claims = [dict(key="loop_scaling", name="4. inference compute scales with loops", verdict="supported",
                   measured=loop_scaling, ci_low=-0.041, ci_high=-0.022, unit="nats/token per doubling of S"),
              dict(key="deeper", name="3. LoopMDM vs deeper MDM at equal per-step compute", verdict="inconclusive",
                   measured=0.004, ci_low=-0.01, ci_high=0.018, unit="nats/token")]
    where.mkdir(parents=True, exist_ok=True)
    (where / records.FITS).write_text(json.dumps({"study": "control", "claims": claims, "control": res.to_dict()}))
    return res


def CT_frame(entries):
    import pandas as pd

    return pd.DataFrame([dict(run=f"{g}-{fam}", group=g, family=fam, s_max=5 if fam == "loopmdm" else 1, loops=S,
                              budget_flops=1e12, exit_threshold=None, per_depth=m, order="parallel", depth_unit="row",
                              sample_ids=[f"r{j}" for j in range(len(m))], nll_floor=0.08, majority=None,
                              file=f"f{i}.json", chance=0.5, d_model=64)
                         for i, (g, fam, S, m) in enumerate(entries)])


def headline(md):
    table = md.split("## Claims at a glance", 1)[1].split("| claim", 1)[1].split("\n\n", 1)[0]
    rows = [r for r in ("| claim" + table).splitlines() if r.startswith("| ")]
    return [[x.strip() for x in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("cite") / "study", SyntheticSpec(**SMALL))


def test_each_claim_sits_beside_what_the_control_detected(study, tmp_path):
    ctl = control_fits(tmp_path / "ctl")
    res = run_report(study, n_boot=40, figures=False, control_dir=tmp_path / "ctl")
    md = res.report_path.read_text()
    rows = headline(md)
    assert rows[0][-1] == "detected on the control"
    by = {r[0]: r[-1] for r in rows[1:]}
    assert by["4. inference compute scales with loops"].startswith("supported: -0.031")
    assert "[-0.041" in by["4. inference compute scales with loops"]
    assert by["3. LoopMDM vs deeper MDM at equal per-step compute"].startswith("inconclusive: +0.004")
    task = [v for k, v in by.items() if k.startswith("6.")]
    assert task and task[0] == f"{ctl.criteria[1].name}: {ctl.criteria[1].text()}"  # its paired gain over same-size
    assert any(v == "—" for k, v in by.items() if k.startswith("1."))  # the control measured no multiplier
    assert "`../" in md and "ctl/report.md" in md  # the control named relative to the study
    sec4 = md.split("## 4.", 1)[1].split("\n## ", 1)[0]
    assert "_Detected on the control (../" in sec4 and ctl.criteria[0].text() in sec4  # loop_vs_s1 beside claim 4
    sec1 = md.split("## 1.", 1)[1].split("\n## ", 1)[0]
    assert "the control cannot test this claim" in sec1
    cited = json.loads(res.fits_path.read_text())["cited_control"]
    assert cited["effects"]["control"]["verdict"] == ctl.verdict


def test_the_study_s_own_control_folder_is_found_without_a_flag(study, tmp_path):
    assert find_control(study, None) == (None, None)  # none there: nothing said
    control_fits(study / "control", loop_scaling=-0.0555)
    try:
        md = run_report(study, n_boot=40, figures=False).report_path.read_text()
        assert "supported: -0.0555" in md and "`control`" in md
    finally:
        (study / "control" / records.FITS).unlink()
    none, note = find_control(study, tmp_path / "nowhere")
    assert none is None and "--control" in note


def test_a_control_without_a_report_is_refused_in_one_line(study, tmp_path, capsys):
    assert main([str(study), "--control", str(tmp_path), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --control:")
