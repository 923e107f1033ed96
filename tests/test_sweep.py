"""Sweeps: expansion with matched baselines, the plan, validation before anything is written, local runs."""

import json
from pathlib import Path

import pytest
import yaml

from model.config import ConfigError
import records
from study import cli
from study.plan import spec as sweep

BASE = {
    "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 4},
    "data": {"corpus": "gsm8k-synth:easy", "tokenizer": "byte", "seq_len": 32},
    "batch": {"global_batch": 4},
    "eval": {"points": 2, "n_seqs": 4, "n_draws": 2},
    "system": {"log_every": 5, "ckpt_every": 100, "num_threads": 1},
}


def spec(**kw) -> sweep.Spec:
    raw = {"study": "t", "base": BASE, "axes": {"budget.steps": [6, 9]}, "baselines": ["same_size", "deeper"]}
    raw.update(kw)
    return sweep.parse_spec(raw)


def test_expansion_emits_matched_baselines_in_groups():
    runs = sweep.expand(spec())
    assert len(runs) == 8  # per budget: looped, same-size, and two deeper depths bracketing equal compute
    by_role = {}
    for r in runs:
        by_role.setdefault(r.role, []).append(r)
    assert set(by_role) == {"looped", "baseline_same", "baseline_deeper"}
    for looped in by_role["looped"]:
        gid = looped.groups[0]["group"]
        members = [r for r in runs if any(g["group"] == gid for g in r.groups)]
        assert len(members) == 4
        same = next(r for r in members if r.role == "baseline_same")
        deep = [r for r in members if r.role == "baseline_deeper"]
        assert same.cfg.model.s_max == 1 and same.cfg.model.n_layers_physical == looped.cfg.model.n_layers_physical
        # E[S] = 2.5 with one looped layer: 1 + 2.5 + 1 = 4.5 layers; neither 4 nor 5 is within 5% in FLOPs,
        # so both are planned, each with its per-step FLOPs ratio to the looped model in its group entry
        assert sorted(r.cfg.model.n_layers_physical for r in deep) == [4, 5]
        ratios = sorted(g["flops_ratio"] for r in deep for g in r.groups if g["group"] == gid)
        assert ratios[0] < 1 < ratios[1] and all(r.cfg.model.s_max == 1 for r in deep)
        assert same.cfg.steps == looped.cfg.steps  # a steps budget is shared as given


def test_shared_baseline_is_one_run_in_two_groups():
    s = spec(axes={"model.s_max": [2, 4]}, baselines=["same_size"], base={**BASE, "budget": {"steps": 5}})
    runs = sweep.expand(s)
    assert len(runs) == 3  # two looped runs share one same-size baseline
    base = next(r for r in runs if r.role == "baseline_same")
    assert len(base.groups) == 2


def test_baselines_of_different_placements_are_one_run():
    s = spec(axes={"layout": [{"n_layers": 4, "looped": [1]}, {"n_layers": 4, "looped": [2]}]},
             baselines=["same_size"], base={**BASE, "budget": {"steps": 5}})
    runs = sweep.expand(s)
    assert len(runs) == 3 and len(next(r for r in runs if r.role == "baseline_same").groups) == 2


def test_zip_and_layout():
    s = spec(axes={}, zip=[{"layout": [{"n_layers": 6, "looped": [1, 2]}, {"n_layers": 6, "looped": [3]}]}],
             baselines=[], base={**BASE, "budget": {"steps": 5}})
    runs = sweep.expand(s)
    layouts = sorted((r.cfg.model.n_head_layers, r.cfg.model.n_mid_layers, r.cfg.model.n_tail_layers) for r in runs)
    assert layouts == [(1, 2, 3), (3, 1, 2)]


@pytest.mark.parametrize("kw, field, words", [
    ({"axes": {"model.d_model": []}}, "axes.model.d_model", "non-empty"),
    ({"axes": {"model.d_modle": [32]}}, "model.d_modle", "Did you mean"),
    ({"axes": {"budget.flops": [10.0]}}, "budget.flops", "too small for one optimizer step"),
    ({"axes": {"layout": [{"n_layers": 4, "looped": [3, 4]}]}}, "layout.looped", "outside the 4-layer stack"),
    ({"baselines": ["wider"]}, "baselines", "allowed"),
    ({"scaling": {"lr": "magic"}}, "scaling.lr", "unknown rule"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"zip": [{"model.d_model": [32, 64], "model.n_heads": [4]}]}, "zip[0]", "same length"),
])
def test_bad_specs_fail_naming_the_field(kw, field, words):
    with pytest.raises(ConfigError) as e:
        sweep.expand(spec(**kw))
    assert e.value.field == field and words in str(e.value)


def _write(tmp_path, **kw) -> Path:
    raw = {"study": "t", "base": BASE, "axes": {"budget.steps": [6, 9]}, "baselines": ["same_size"],
           "resources": {"executor": "local"}}
    raw.update(kw)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_bad_resources_fail_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "study"
    p = _write(tmp_path, resources={"executor": "local", "gpus": 2})
    assert cli.sweep_main([str(p), "--out", str(out)]) == 2
    assert "resources.gpus" in capsys.readouterr().err
    assert not out.exists()
    p = _write(tmp_path, resources={"executor": "local", "nodes": 2})
    assert cli.sweep_main([str(p), "--out", str(out)]) == 2
    assert "resources.nodes" in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_writes_nothing_and_prints_every_run(tmp_path, capsys):
    out = tmp_path / "study"
    p = _write(tmp_path)
    assert cli.sweep_main([str(p), "--out", str(out), "--dry-run", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and {r["role"] for r in rows} == {"looped", "baseline_same"}
    for r in rows:
        assert r["flops_exact"] > 0 and r["steps"] in (6, 9) and r["params_effective"] >= r["params_nonembedding"]
    assert not out.exists()


def test_local_sweep_runs_then_rerun_does_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    p = _write(tmp_path)
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    states = [s.state for s in records.scan_study(out)]
    assert states == ["done"] * 4
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) == 4
    capsys.readouterr()
    mtimes = {d: (d / "DONE.json").stat().st_mtime for d in (out / "runs").iterdir()}
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert {d: (d / "DONE.json").stat().st_mtime for d in (out / "runs").iterdir()} == mtimes
    assert cli.sweep_main(["status", str(p), "--out", str(out)]) == 0
    assert "4 done" in capsys.readouterr().out


def test_only_selects_and_failed_needs_retry(tmp_path, capsys):
    out = tmp_path / "study"
    p = _write(tmp_path)
    runs = sweep.expand(sweep.load_spec(p))
    target = runs[0]
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report", "--only", target.hash[:10]]) == 0
    assert [s.state for s in records.scan_study(out)] == ["done"]
    # a failed run is not resubmitted without --retry
    other = runs[1].run_dir(out)
    other.mkdir(parents=True)
    (other / "config.yaml").write_text(yaml.safe_dump(runs[1].final_config("t").to_dict()))
    records.mark_failed(other, "boom")
    capsys.readouterr()
    cli.sweep_main([str(p), "--out", str(out), "--no-report", "--only", runs[1].hash[:10]])
    assert "0 to run" in capsys.readouterr().out
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report", "--only", runs[1].hash[:10], "--retry"]) == 0
    assert records.read_json(other / "DONE.json") is not None


def test_evaluate_stage_scores_selected_runs_once(tmp_path, capsys):
    """Three stages in one spec, as the embedded default has them: pretrain, fine-tune only the parents that
    `finetune.only` selects, then `evaluate:` (study.eval's own arguments) on the fine-tuned runs. A second
    submission of the same spec trains and evaluates nothing."""
    ft = {"corpus": "gsm8k-synth:tiny", "only": "*-n9", "budget": {"steps": 2}, "data": {"seq_len": 200}}
    ev = [{"runs": "finetuned", "args": "--tasks gsm8k-synth:tiny:4 --loops 1,2 --gen-length 4"}]
    p = _write(tmp_path, finetune=ft, evaluate=ev)
    runs = sweep.expand(sweep.load_spec(p))
    children = [r for r in runs if r.parent is not None]
    assert len(runs) == 6 and len(children) == 2  # 2 budgets x (looped, same-size); only budget 9 fine-tuned
    assert {c.parent.cfg.steps for c in children} == {9}
    out = tmp_path / "study"
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[eval ") == 2
    from analysis.collect import load_task_evals

    tasks, _ = load_task_evals(out)
    assert sorted(zip(tasks["family"], tasks["loops"])) == [("loopmdm", 1), ("loopmdm", 2), ("mdm", 1)]
    assert set(tasks["task"]) == {"gsm8k-synth-tiny-4"} and all(len(x) == 4 for x in tasks["per_sample"])
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    again = capsys.readouterr().out
    assert "0 to run" in again and "[eval " not in again


@pytest.mark.parametrize("args, says", [
    ("--tasks gsm8k-synth --bogus 1", "unrecognized arguments: --bogus"),
    ("--tasks gsm8k-synth --executor slurm", "--executor belongs to the sweep"),
    ("--loops 1,2", "nothing to do"),
])
def test_bad_evaluate_stage_is_refused_naming_the_field(tmp_path, capsys, args, says):
    out = tmp_path / "study"
    p = _write(tmp_path, evaluate=[{"runs": "all", "args": args}])
    assert cli.sweep_main([str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "evaluate[0].args" in err and says in err and not out.exists()


def test_finetune_stage_runs_after_its_parents(tmp_path, capsys):
    """Two stages in one spec: each looped/same-size pretraining run gets a fine-tuned child that starts
    from its weights (init_from relative to the study, so the child's identity does not depend on where
    the study lives)."""
    ft = {"corpus": "gsm8k-synth:easy", "roles": ["looped"], "budget": {"steps": 3}, "optim": {"lr": 1e-3},
          "data": {"seq_len": 160}}
    p = _write(tmp_path, axes={"budget.steps": [4]}, finetune=ft)
    runs = sweep.expand(sweep.load_spec(p))
    children = [r for r in runs if r.parent is not None]
    assert len(runs) == 3 and len(children) == 1
    child = children[0]
    assert child.cfg.kind == "sft" and child.parent.role == "looped"
    assert child.cfg.init_from == f"runs/{child.parent.run_dir(tmp_path).name}"
    assert child.cfg.model == child.parent.cfg.model.replace(max_seq_len=160)
    out = tmp_path / "study"
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    assert [s.state for s in records.scan_study(out)] == ["done"] * 3
    with pytest.raises(ConfigError, match="finetune.budget"):
        sweep.expand(sweep.parse_spec({**yaml.safe_load(p.read_text()), "finetune": {"corpus": "gsm8k-synth"}}))


def test_the_embedded_defaults_stages_select_what_it_says():
    """sweeps/demo.yaml: the width-128 LoopMDM and same-size MDM of the largest budget are fine-tuned and scored;
    the attention statistic goes to the two largest looped runs (globs match slugs, never group names)."""
    root = Path(__file__).resolve().parents[1]
    spec_ = sweep.load_spec(root / "sweeps" / "demo.yaml")
    runs = sweep.expand(spec_)
    children = [r for r in runs if r.parent is not None]
    assert sorted(c.parent.slug for c in children) == ["d128-l0.3.0-s1-c5e12", "d128-l1.1.1-s4-c5e12"]
    tasks, attention = spec_.evaluate
    assert [r.slug for r in runs if tasks.selects(r)] == [c.slug for c in children]
    assert sorted(r.slug for r in runs if attention.selects(r)) == ["d128-l1.1.1-s4-c5e12", "d64-l1.1.1-s4-c5e12"]
    assert tasks.request.tasks == ["gsm8k-synth:tiny:200"] and attention.request.attention


def test_a_spec_s_control_study_runs_first_into_its_control_folder(tmp_path, capsys):
    """``control_study``: the named spec (relative to this one) runs first, as a study of its own in
    <out>/control; a bad name is refused naming the field before anything is written."""
    (tmp_path / "c").mkdir()
    ctl = _write(tmp_path / "c", study="ctl", axes={"budget.steps": [4]})
    (tmp_path / "c" / "ctl.yaml").write_text(ctl.read_text())
    main = tmp_path / "c" / "main.yaml"
    main.write_text(yaml.safe_dump({**yaml.safe_load(ctl.read_text()), "study": "m", "control_study": "ctl.yaml"}))
    out = tmp_path / "study"
    assert cli.sweep_main([str(main), "--out", str(out), "--dry-run"]) == 0
    assert f"first, its positive control {tmp_path / 'c' / 'ctl.yaml'}" in capsys.readouterr().out
    assert not out.exists()
    assert cli.sweep_main([str(main), "--out", str(out), "--no-report"]) == 0
    assert [s.state for s in records.scan_study(records.control_dir(out))] == ["done"] * 2
    assert [s.state for s in records.scan_study(out)] == ["done"] * 2  # the control's runs are not this study's
    assert "its positive control first" in capsys.readouterr().out
    for bad in ("nope.yaml", "main.yaml"):  # missing, or itself
        main.write_text(yaml.safe_dump({**yaml.safe_load(ctl.read_text()), "study": "m", "control_study": bad}))
        assert cli.sweep_main([str(main), "--out", str(tmp_path / "o2")]) == 2
        assert "control_study" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_local_workers_share_the_runs_each_trained_once(tmp_path, capfd):
    """resources.local_workers: 2 processes take runs from one queue; every run is trained by exactly one of them
    (one start in its metrics), and a re-run finds nothing to do."""
    out = tmp_path / "study"
    p = _write(tmp_path, resources={"executor": "local", "local_workers": 2})
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    text = capfd.readouterr().out
    assert "2 local workers" in text and "(w1)" in text and "(w2)" in text
    assert [s.state for s in records.scan_study(out)] == ["done"] * 4
    for d in (out / "runs").iterdir():
        steps = [r["step"] for r in records.read_jsonl(d / records.METRICS)]
        assert steps == sorted(set(steps))  # no step logged twice: one process trained it, once
    assert text.count("    done in ") == 4  # each run reported done once, by the worker that trained it
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    assert "0 to run" in capfd.readouterr().out
    p = _write(tmp_path, resources={"executor": "local", "local_workers": 0})
    assert cli.sweep_main([str(p), "--out", str(tmp_path / "other")]) == 2
    assert "resources.local_workers" in capfd.readouterr().err and not (tmp_path / "other").exists()
