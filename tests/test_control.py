"""The positive control's analysis: paired per-depth differences, the pre-registered gate and criteria."""
import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from analysis import control as CT
from analysis.report.control import control_md

N, K = 200, 6  # records, depths (rows 1..6)


def mats(rng, depth1, deep, n=N):
    """A per-record accuracy matrix: depth 1 and 2 at ``depth1``, depths >= 3 at ``deep`` on average, with a
    large spread between records (so only pairing gives tight CIs)."""
    spread = rng.uniform(-0.3, 0.3, size=(n, 1))
    m = np.empty((n, K))
    m[:, :2] = depth1
    m[:, 2:] = np.clip(deep + spread, 0, 1)
    return m


def frame(entries, budget=1e12, width=64):
    """entries: (group, family, loops, per_depth) -> the rows load_depth_evals gives."""
    rows = []
    for i, (g, fam, S, m, *ids) in enumerate(entries):
        rows.append(dict(run=f"{g}-{fam}", group=g, family=fam, s_max=8 if fam == "loopmdm" else 1, loops=S,
                         budget_flops=budget, exit_threshold=None, per_depth=m, order="parallel", depth_unit="row",
                         sample_ids=ids[0] if ids else [f"r{j}" for j in range(len(m))], nll_floor=0.08,
                         majority=[0.5] * K, file=f"f{i}.json", chance=0.5, d_model=width))
    return pd.DataFrame(rows)


def sens_table(groups, value=0.05, se=0.005):
    sens = pd.DataFrame([dict(run=f"{g}-loopmdm", sensitivity=value, sens_low=value - 1.96 * se,
                              sens_high=value + 1.96 * se) for g in groups])
    nll = pd.DataFrame([dict(run=f"{g}-loopmdm", budget_flops=1e12) for g in groups])
    return sens, nll


def test_a_looping_effect_is_detected_with_paired_cis():
    rng = np.random.default_rng(0)
    same = mats(rng, 0.99, 0.5)
    top = same.copy()
    top[:, 2:] += 0.3  # exactly +30 points on depths >= 3, record by record
    one = same.copy()
    deep = same.copy()
    deep[:, 2:] += 0.2
    df = frame([("g1", "loopmdm", 8, top), ("g1", "loopmdm", 1, one), ("g1", "mdm", 1, same),
                ("g1", "mdm_deeper", 1, deep)])
    res = CT.evaluate_control(df, *sens_table(["g1"]), CT.Preregistration(), n_boot=400)
    assert res.verdict == CT.DETECTED and res.gate.met and res.gate.measured == pytest.approx(0.99)
    by = {c.key: c for c in res.criteria + res.extra}
    for key, want in (("loop_vs_s1", 30), ("loop_vs_same", 30), ("deeper_vs_same", 20), ("loop_vs_deeper", 10)):
        assert by[key].measured == pytest.approx(want)
        assert by[key].low == pytest.approx(want) and by[key].high == pytest.approx(want)  # paired: no spread
    assert by["nll_sensitivity"].met and by["nll_sensitivity"].measured == pytest.approx(0.05)
    assert not res.inert.met
    md = "\n".join(control_md(res, None, Path(".")))
    assert "looping effect detected" in md and "| LoopMDM | 8 |" in md and "+30.0 [+30.0, +30.0] points" in md


def test_records_are_paired_by_id_not_by_position():
    rng = np.random.default_rng(1)
    same = mats(rng, 0.99, 0.4)
    top = same + np.r_[[0, 0], [0.25] * (K - 2)]
    perm = rng.permutation(N)
    ids = [f"r{j}" for j in range(N)]
    df = frame([("g", "loopmdm", 8, top[perm], [ids[j] for j in perm]), ("g", "loopmdm", 1, same),
                ("g", "mdm", 1, same[::-1], ids[::-1])])
    res = CT.evaluate_control(df, *sens_table(["g"]), CT.Preregistration(), n_boot=200)
    c = res.criteria[0]
    assert c.measured == pytest.approx(25) and c.high - c.low < 1e-9


def test_unpaired_noise_widens_the_ci_and_groups_are_resampled():
    rng = np.random.default_rng(2)
    entries = []
    for g, gain in (("a", 0.02), ("b", 0.18)):
        base = mats(rng, 0.97, 0.5)
        entries += [("%s" % g, "loopmdm", 8, mats(rng, 0.97, 0.5 + gain)), (g, "loopmdm", 1, base), (g, "mdm", 1, base)]
    res = CT.evaluate_control(frame(entries), *sens_table(["a", "b"]), CT.Preregistration(), n_boot=1000)
    c = res.criteria[0]
    assert res.n_groups == 2 and 5 < c.measured < 15
    assert c.low < c.measured - 1.5 and c.high > c.measured + 1.5  # two different groups: wide


def test_the_gate_and_the_inert_verdict():
    rng = np.random.default_rng(3)
    same = mats(rng, 0.80, 0.5)  # the one-step rule is not learned
    df = frame([("g", "loopmdm", 8, same + 0.15), ("g", "loopmdm", 1, same), ("g", "mdm", 1, same)])
    res = CT.evaluate_control(df, *sens_table(["g"]), CT.Preregistration(), n_boot=200)
    assert res.verdict == CT.NO_GATE and not res.gate.met
    same = mats(rng, 0.99, 0.5)
    deep = same + np.r_[[0, 0], [0.2] * (K - 2)]
    df = frame([("g", "loopmdm", 8, same + 0.005), ("g", "loopmdm", 1, same), ("g", "mdm", 1, same),
                ("g", "mdm_deeper", 1, deep)])
    res = CT.evaluate_control(df, *sens_table(["g"], value=0.001), CT.Preregistration(), n_boot=200)
    assert res.verdict == CT.INERT and res.inert.met and res.inert.measured == pytest.approx(20)
    assert not any(c.met for c in res.criteria)


def test_a_preregistered_width_reads_only_its_groups():
    rng = np.random.default_rng(5)
    same = mats(rng, 0.99, 0.5)
    wide = same + np.r_[[0, 0], [0.3] * (K - 2)]
    df = pd.concat([frame([("w64", "loopmdm", 8, wide), ("w64", "loopmdm", 1, same), ("w64", "mdm", 1, same)]),
                    frame([("w32", "loopmdm", 8, same), ("w32", "loopmdm", 1, same), ("w32", "mdm", 1, same)],
                          width=32)], ignore_index=True)
    every = CT.evaluate_control(df, *sens_table(["w64", "w32"]), CT.Preregistration(), n_boot=200)
    only = CT.evaluate_control(df, *sens_table(["w64", "w32"]), CT.Preregistration(width=64), n_boot=200)
    assert every.n_groups == 2 and every.criteria[0].measured == pytest.approx(15)
    assert only.n_groups == 1 and only.criteria[0].measured == pytest.approx(30)
    assert CT.evaluate_control(df, None, None, CT.Preregistration(width=128)).verdict == CT.NO_DATA


def test_no_data_and_missing_depths_are_said_not_raised():
    assert CT.evaluate_control(pd.DataFrame(), None, None, CT.Preregistration()).verdict == CT.NO_DATA
    rng = np.random.default_rng(4)
    m = mats(rng, 0.99, 0.5)
    res = CT.evaluate_control(frame([("g", "loopmdm", 8, m), ("g", "loopmdm", 1, m), ("g", "mdm", 1, m)]), None, None,
                              CT.Preregistration(from_depth=9))
    assert res.verdict == CT.NO_DATA and "depth 9" in res.notes[0]


def test_preregistration_is_parsed_and_checked():
    p = CT.Preregistration.from_spec({"gate": {"depth": 1, "min_accuracy": 0.9}, "criteria": {"from_depth": 2},
                                      "inert": {"within_points": 5}, "width": 64})
    assert (p.gate_min_accuracy, p.from_depth, p.inert_within_points, p.min_gain_points, p.width) == (0.9, 2, 5.0,
                                                                                                       10.0, 64)
    assert not CT.Preregistration.from_spec(None).registered
    for raw, field in (({"gate": {"min_acc": 0.9}}, "control.gate.min_acc"),
                       ({"gate": {"min_accuracy": 1.5}}, "control.gate.min_accuracy"),
                       ({"criteria": {"from_depth": 2.5}}, "control.criteria.from_depth"),
                       ({"verdict": 1}, "control.verdict"),
                       ([1], "control")):
        with pytest.raises(CT.PreregistrationError) as exc:
            CT.Preregistration.from_spec(raw)
        assert exc.value.field == field and "\n" not in str(exc.value)


def test_a_spec_with_a_bad_control_section_is_refused_before_anything_runs(tmp_path):
    from model.config import ConfigError
    from study.plan.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("study: s\nbase: {budget: {steps: 5}}\ncontrol: {criteria: {min_gain_points: -1}}\n")
    with pytest.raises(ConfigError, match=r"control.criteria.min_gain_points: got -1.0"):
        load_spec(spec)
    spec.write_text("study: s\nbase: {budget: {steps: 5}}\ncontrol: {order: diagonal}\n")
    with pytest.raises(ConfigError, match=r"control.order: got 'diagonal'; want one of parallel"):
        load_spec(spec)
    spec.write_text("study: s\nbase: {budget: {steps: 5}}\ncontrol: {gate: {min_accuracy: 0.9}}\n")
    assert load_spec(spec).control.gate_min_accuracy == 0.9


def write_study(root, gain, seeds=(0, 1)):
    """A study directory as the harness leaves it, reduced to what the control reads: the spec with its control:
    section, run configs with their groups, and the scorer's files (per-record accuracy per row)."""
    import json

    import yaml

    import records

    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    (root / records.SPEC).write_text(yaml.safe_dump({"study": "c", "control": {"width": 64, "gate": {"min_accuracy": 0.9}}}))
    ids = [f"r{j}" for j in range(N)]
    for seed in seeds:
        same = mats(rng, 0.97, 0.5)
        group = f"g{seed}"
        for role, s_max, S_scores in (("looped", 5, {1: same, 5: same + np.r_[[0, 0], [gain] * (K - 2)]}),
                                      ("baseline_same", 1, {1: same})):
            run = records.run_dir(root, f"{role}-{seed}", f"{seed}{s_max}" * 6)
            (run / records.EVALS_DIR).mkdir(parents=True)
            cfg = {"model": {"d_model": 64, "s_max": s_max}, "budget": {"flops": 1e12}, "seed": seed,
                   "meta": {"hash": run.name, "slug": run.name, "groups": [{"group": group, "role": role}]}}
            (run / records.CONFIG).write_text(yaml.safe_dump(cfg))
            for S, m in S_scores.items():
                rec = {"task": "eca-parallel", "metric": "cells", "loops": S, "exit_threshold": None, "step": 10,
                       "per_sample": m.mean(1).tolist(), "sample_ids": ids, "per_depth": m.tolist(), "order": "parallel",
                       "depth_unit": "row", "nll_floor": 0.1, "chance": 0.5, "majority_per_depth": [0.6] * K}
                (run / records.EVALS_DIR / f"eca-parallel-{S:02d}{seed}.json").write_text(json.dumps(rec))
    return root


def test_a_control_study_on_disk_is_read_with_its_preregistration(tmp_path):
    from analysis.collect import load_task_evals

    study = write_study(tmp_path, gain=0.25)
    tasks, problems = load_task_evals(study)
    assert not problems
    res = CT.control_for_study(study, pd.DataFrame(), tasks, None, n_boot=200)
    assert res.prereg.registered and res.prereg.width == 64 and res.prereg.gate_min_accuracy == 0.9
    assert res.n_groups == 2 and res.gate.met and res.gate.measured == pytest.approx(0.97)
    assert res.criteria[0].measured == pytest.approx(25) and res.criteria[0].met
    assert res.criteria[2].measured is None and res.verdict == CT.NOT_DETECTED  # no NLL: that criterion is unmet
    assert any("NLL" in c.detail or "loop sensitivity" in c.detail for c in res.criteria[2:])
    md = "\n".join(control_md(res, None, study))
    assert "| LoopMDM | 5 |" in md and "width 64" in md
    import records

    other = write_study(tmp_path / "plain", gain=0.25)
    (other / records.SPEC).write_text("study: c\n")  # nothing pre-registered: the defaults, said so
    res = CT.control_for_study(other, pd.DataFrame(), load_task_evals(other)[0], None, n_boot=100)
    assert not res.prereg.registered and "pre-registers no" in res.notes[0]
    assert CT.control_for_study(tmp_path / "empty", pd.DataFrame(), pd.DataFrame(), None) is None


def test_detected_effects_read_a_reported_control_back(tmp_path):
    import json

    import records

    rng = np.random.default_rng(8)
    m = mats(rng, 0.99, 0.5)
    res = CT.evaluate_control(frame([("g", "loopmdm", 8, m + 0.2), ("g", "loopmdm", 1, m), ("g", "mdm", 1, m)]),
                              *sens_table(["g"]), CT.Preregistration(), n_boot=100)
    claim = {"key": "loop_scaling", "name": "4. inference compute scales with loops", "verdict": "supported",
             "measured": -0.03, "ci_low": -0.04, "ci_high": -0.02, "unit": "nats/token per doubling of S"}
    (tmp_path / records.FITS).write_text(json.dumps({"claims": [claim], "control": res.to_dict()}))
    got = CT.detected_effects(tmp_path)
    text = got["loop_scaling"].pop("text")
    assert got["loop_scaling"] == {"verdict": "supported", "measured": -0.03, "low": -0.04, "high": -0.02,
                                   "unit": "nats/token per doubling of S", "name": claim["name"]}
    assert text.startswith("-0.03") and "[-0.04" in text and "-0.02" in text  # as the control's report writes it
    assert got["control"]["criteria"]["loop_vs_s1"]["text"] == res.criteria[0].text()
    assert got["control"]["verdict"] == res.verdict
    assert got["control"]["criteria"]["loop_vs_s1"]["measured"] == pytest.approx(res.criteria[0].measured)


def test_the_report_states_the_control_and_draws_its_figure(tmp_path):
    import json

    import records
    from analysis.report import run_report

    study = write_study(tmp_path, gain=0.25)
    res = run_report(study, n_boot=50, formats=("png",))
    md = res.report_path.read_text()
    assert "## Positive control (pre-registered)" in md and "| gate: same-size MDM has learned one rule step" in md
    assert (study / records.FIGURES_DIR / "control_depth.png").is_file() and "figures/control_depth.png" in md
    fits = json.loads((study / records.FITS).read_text())
    assert fits["control"]["gate"]["met"] is True and fits["control"]["prereg"]["width"] == 64
