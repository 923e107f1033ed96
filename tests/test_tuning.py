"""The tuning stage (`tune:`): planning its runs, choosing each key's LR from their results on a synthetic landscape
(the grid's best, an edge flagged, a diverged LR the worst), the grid at the chosen LRs, never tuning twice, the
dry run, bad input, and a real local sweep through both stages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import records
from model.config import ConfigError
from study import cli
from study.launch import training
from study.plan import spec as sweep
from study.plan import tuning

BASE = {
    "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 3},
    "data": {"corpus": "gsm8k-synth:easy", "tokenizer": "byte", "seq_len": 32},
    "optim": {"lr": 3e-3, "warmup_steps": 2},
    "batch": {"global_batch": 4},
    "eval": {"points": 2, "n_seqs": 4, "n_draws": 2, "loops": [1, 3]},
    "system": {"log_every": 5, "ckpt_every": 100, "num_threads": 1},
}
LRS = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]


def raw_spec(**kw) -> dict:
    raw = {"study": "t", "base": BASE, "axes": {"budget.steps": [8, 12]}, "baselines": ["same_size"],
           "resources": {"executor": "local"}, "tune": {"lr": LRS, "budget": {"steps": 6}}}
    raw.update(kw)
    return raw


def write_spec(tmp_path: Path, **kw) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw_spec(**kw)))
    return p


#: the synthetic landscape: final NLL quadratic in log LR, each family with its own best LR
BEST = {"loopmdm": 4e-3, "mdm": 8e-3}


def landscape(family: str, lr: float, best: dict = BEST) -> float:
    return 2.5 + 0.05 * math.log(lr / best[family]) ** 2


def fake_tuning(study: Path, spec: sweep.Spec, nll=landscape, failed: dict | None = None) -> list[sweep.PlannedRun]:
    """Every tuning run 'done' with the landscape's final NLL (per-sequence values around it), as the trainer leaves
    it: config.yaml, one final evals.jsonl row at the run's S, DONE.json; ``failed`` {(family, lr): reason}."""
    runs = sweep.tuning_runs(spec)
    training.write_run_configs(study, spec, runs)
    for r in runs:
        rd = r.run_dir(study)
        why = (failed or {}).get((r.tune["family"], r.tune["lr"]))
        if why:
            records.mark_failed(rd, why)
            continue
        v = nll(r.tune["family"], r.tune["lr"])
        per_seq = [v + d for d in (-0.02, 0.01, -0.01, 0.02)]
        records.append_jsonl(rd / records.EVALS, {"step": r.cfg.steps, "eval_loops": r.cfg.eval_loops[0], "nll": v,
                                                  "nll_se": 0.001, "exit_threshold": None, "is_final": True,
                                                  "nll_per_seq": per_seq, "n_seqs": 4})
        records.mark_done(rd, {"step": r.cfg.steps})
    return runs


def test_tuning_runs_per_family_and_width():
    s = sweep.parse_spec(raw_spec(zip=[{"model.d_model": [32, 48], "model.n_heads": [4, 4]}]))
    runs = sweep.tuning_runs(s)
    keys = sorted({r.tune["key"] for r in runs})
    assert keys == ["loopmdm-d32", "loopmdm-d48", "mdm-d32", "mdm-d48"]
    assert len(runs) == len(keys) * len(LRS)
    for r in runs:
        assert r.cfg.budget.steps == 6 and r.cfg.eval.points == 1 and r.cfg.eval.exit_thresholds == ()
        assert r.cfg.eval_loops == ((3,) if r.tune["family"] == "loopmdm" else (1,))  # the S the claims read
        assert r.cfg.optim.lr == r.tune["lr"] and r.run_dir(Path("/s")).parent == Path("/s/tune/runs")
    grid = sweep.expand(s)
    assert len(grid) == 8 and all(r.pending for r in grid)
    with pytest.raises(RuntimeError, match="waits for the tuning stage"):
        grid[0].final_config("t")  # a pending run has no config to write


def test_choose_picks_the_grids_best_and_flags_an_edge():
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    def pts(best: float) -> list[tuning.TunePoint]:
        return [tuning.TunePoint(lr, 0, "done", landscape("mdm", lr, {"mdm": best}), 0.001) for lr in lrs]

    c = tuning.choose("mdm-d32", "mdm", 32, pts(2.5e-3), lrs)
    assert c.status == tuning.TUNED and c.lr == 2e-3 and c.edge == []
    high = tuning.choose("mdm-d32", "mdm", 32, pts(0.05), lrs)
    assert high.lr == 8e-3 and high.edge == ["lr=0.008 is the largest LR tried"]
    low = tuning.choose("mdm-d32", "mdm", 32, pts(1e-4), lrs)
    assert low.lr == 1e-3 and "smallest" in low.edge[0]
    # a diverged LR is the worst, and bounds the best from above: 4e-3 is then not at the edge
    div = pts(0.05)
    div[-1] = tuning.TunePoint(8e-3, 0, "diverged", detail="Diverged: loss nan")
    c = tuning.choose("mdm-d32", "mdm", 32, div, lrs)
    assert c.lr == 4e-3 and c.edge == []
    # a run that failed otherwise, or is not finished, leaves the key untuned: the choice could still change
    fail = pts(2.5e-3)
    fail[1] = tuning.TunePoint(2e-3, 0, "failed", detail="OSError: disk full")
    assert tuning.choose("k", "mdm", 32, fail, lrs).status == tuning.FAILED
    fail[1] = tuning.TunePoint(2e-3, 0, "unfinished")
    assert tuning.choose("k", "mdm", 32, fail, lrs).status == tuning.UNFINISHED
    all_div = [tuning.TunePoint(lr, 0, "diverged") for lr in lrs]
    assert "every LR tried diverged" in tuning.choose("k", "mdm", 32, all_div, lrs).detail


def test_grid_takes_each_keys_best_lr_and_tuning_never_reruns(tmp_path, capsys):
    p = write_spec(tmp_path)
    s = sweep.load_spec(p)
    study = tmp_path / "study"
    fake_tuning(study, s, failed={("loopmdm", 1.6e-2): "Diverged: loss is nan at step 4"})
    tuned = tuning.choices(s.tune, sweep.tuning_runs(s), study)
    assert {k: c.lr for k, c in tuned.items()} == {"loopmdm-d32": 4e-3, "mdm-d32": 8e-3}
    grid = sweep.expand(s, tuned)
    assert not any(r.pending for r in grid)
    for r in grid:
        want = BEST["loopmdm" if r.cfg.model.is_looped else "mdm"]
        assert r.cfg.optim.lr == want
        meta = r.final_config("t").meta["lr"]
        assert meta["source"] == "tune" and meta["lr"] == want and meta["record"] == "tune/tuned_lr.json"
    # the grid's identity depends on the tuned LR, and only on it
    assert {r.hash for r in grid}.isdisjoint({r.hash for r in sweep.expand(s)})
    # nothing of the tuning stage is left to run: a re-submitted sweep trains no tuning run again
    todo, counts = training.to_submit(study, sweep.tuning_runs(s), retry=False)
    assert todo == [] and counts == {"done": 9, "failed": 1}
    assert cli.sweep_main(["status", str(p), "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert "9 done" in out and "1 failed" in out and "awaiting tuning" not in out
    # the dry run shows both stages, and the grid's real hashes now that tuning is done
    assert cli.sweep_main([str(p), "--out", str(study), "--dry-run", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["stage"] for r in rows].count("tune") == 10 and all(r["hash"] for r in rows)
    assert {r["lr"] for r in rows if r["stage"] == "grid"} == {4e-3, 8e-3}


def test_dry_run_before_tuning_shows_the_stage_and_its_cost(tmp_path, capsys):
    p = write_spec(tmp_path)
    out = tmp_path / "study"
    assert cli.sweep_main([str(p), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "tuning stage: 10 runs — 5 LRs for each of 2 keys" in text and "after tuning" in text
    assert "hashes (and run directories) are known only once it finished" in text and "tuning adds" in text
    assert not out.exists()


def test_an_edge_optimum_is_refused_when_the_spec_says_so(tmp_path, capsys):
    p = write_spec(tmp_path, tune={"lr": LRS[:3], "budget": {"steps": 6}, "on_edge": "refuse"})
    s = sweep.load_spec(p)
    study = tmp_path / "study"
    fake_tuning(study, s)  # the same-size MDM's best (8e-3) lies beyond the grid's largest LR, 4e-3
    assert cli.sweep_main([str(p), "--out", str(study), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "tune.lr" in err and "mdm-d32: lr=0.004 is the largest LR tried" in err
    assert records.list_run_dirs(study) == []  # no grid run was written
    rec = records.read_json(records.tuned_path(study))
    assert rec["keys"]["mdm-d32"]["edge"] == ["lr=0.004 is the largest LR tried"]


@pytest.mark.parametrize("kw, field, words", [
    ({"tune": {"lr": [1e-3, 2e-3], "budget": {"steps": 6}}}, "tune.lr", ">= 3 distinct"),
    ({"tune": {"lr": LRS, "budget": {"steps": 6}, "colour": 1}}, "tune.colour", "unknown key"),
    ({"tune": {"lr": LRS}}, "tune.budget", "exactly one of flops, tokens, steps"),
    ({"tune": {"lr": LRS, "budget": {"steps": 6}, "on_edge": "ignore"}}, "tune.on_edge", "warn, refuse"),
    ({"scaling": {"lr": "inv_width:32"}}, "scaling.lr", "drop scaling.lr"),
    ({"axes": {"optim.lr": [1e-3, 2e-3]}}, "axes.optim.lr", "the tune: stage chooses optim.lr"),
    ({"tune": {"lr": LRS, "budget": {"steps": 3}}}, "tune.budget", "under 2x optim.warmup_steps=2"),
    ({"tune": {"lr": LRS, "budget": {"flops": 10.0}}}, "tune.budget.flops", "too small for one optimizer step"),
])
def test_bad_tune_stages_fail_naming_the_field(tmp_path, capsys, kw, field, words):
    p = write_spec(tmp_path, **kw)
    out = tmp_path / "study"
    assert cli.sweep_main([str(p), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert field in err and words in err and not out.exists()


@pytest.mark.slow
def test_local_sweep_tunes_then_trains_the_grid_and_reruns_nothing(tmp_path, capsys):
    """Both stages for real: 3 tuning runs per key, the grid at the chosen LRs, and a second submission that trains
    nothing (the tuning runs are done like any run; the choice is re-derived from them, identically)."""
    p = write_spec(tmp_path, axes={"budget.steps": [8]}, tune={"lr": [1e-3, 4e-3, 1.6e-2], "budget": {"steps": 6}})
    out = tmp_path / "study"
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "tuning stage: 6 runs" in text and "2 runs (" in text
    assert [s.state for s in records.scan_study(records.tune_dir(out))] == ["done"] * 6
    rec = records.read_json(records.tuned_path(out))
    chosen = {k: c["lr"] for k, c in rec["keys"].items()}
    for rd in records.list_run_dirs(out):
        cfg = records.read_config(rd)
        key = cfg["meta"]["lr"]["key"]
        assert cfg["optim"]["lr"] == chosen[key] and records.done_summary(rd) is not None
    mtimes = {d: (d / records.DONE).stat().st_mtime for d in records.list_run_dirs(out) +
              records.list_run_dirs(records.tune_dir(out))}
    assert cli.sweep_main([str(p), "--out", str(out), "--no-report"]) == 0
    again = capsys.readouterr().out
    assert "6 done); 0 to run" in again and "2 done); 0 to run" in again
    assert {d: (d / records.DONE).stat().st_mtime for d in mtimes} == mtimes
    assert records.read_json(records.tuned_path(out)) == rec


def test_report_shows_the_lrs_and_whether_the_verdicts_are_lr_sensitive(tmp_path):
    """With the landscape above, LoopMDM ties the same-size MDM at their own best LRs, but loses at the same-size
    MDM's LR: the comparison at the tuning budget is LR-sensitive, and the report says so (table, figure, headline)."""
    from analysis.figures import fig_nll_vs_lr
    from analysis.report import run_report
    from analysis.tuning import BETTER, UNRESOLVED, WORSE, load_tuning, lr_sensitivity

    s = sweep.parse_spec(raw_spec())
    study = tmp_path / "study"
    fake_tuning(study, s)
    tuned = tuning.choices(s.tune, sweep.tuning_runs(s), study)
    training.write_tuned(study, s, tuned)
    sens = lr_sensitivity(*load_tuning(study))
    (comp,) = sens["comparisons"]  # no deeper baseline in this spec: one comparison
    assert comp["tuned"]["verdict"] == UNRESOLVED and comp["shared"]["verdict"] == WORSE and comp["changed"]
    assert comp["shared"]["delta"] == pytest.approx(-0.05 * math.log(2) ** 2) and sens["changed"] is True
    assert BETTER not in (comp["tuned"]["verdict"], comp["shared"]["verdict"])
    res = run_report(study, n_boot=20, figures=False)  # tuned, the grid not trained yet: the LRs are reported
    md = res.report_path.read_text()
    assert "at the tuning budget the comparisons would change had every family used the same-size MDM's LR" in md
    section = md.split("## Learning rate", 1)[1].split("\n## ", 1)[0]
    assert "| loopmdm-d32 | LoopMDM | 32 | 0.004 |" in section and "| mdm-d32 | MDM (same size) | 32 | 0.008 |" in section
    assert "| **yes** |" in section and "Not known from these runs" in section
    fig = fig_nll_vs_lr(load_tuning(study)[1], tmp_path / "figs", ("png",))
    assert fig.made and Path(fig.files[0]).stat().st_size > 0


def test_the_paper_specs_tune_before_their_grid():
    """Every paper-scale spec but the inference-loop one (a model compared with itself) has a tuning stage that plans;
    paper_shape_cpu is the committed CPU study (results/paper_shape_cpu: a tuning stage would re-plan its runs)."""
    root = Path(__file__).resolve().parents[1]
    specs = sorted((root / "sweeps").glob("paper_*.yaml"))
    assert len(specs) >= 7
    for p in specs:
        s = sweep.load_spec(p)
        if p.stem in ("paper_inference_loops", "paper_shape_cpu"):
            assert s.tune is None
            continue
        runs = sweep.tuning_runs(s)
        assert s.tune is not None and len(runs) >= 2 * len(s.tune.lr), p.stem
        assert {r.tune["family"] for r in runs} >= {"loopmdm", "mdm"}
        assert all(r.pending for r in sweep.expand(s) if r.parent is None)
