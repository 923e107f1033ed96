"""The report over a synthetic study writes report.md, fits.json and figures; bad input gives a partial report."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import main, run_report
from analysis.synthetic import SyntheticSpec, write_study

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(budgets=(1e15, 3e15, 1e16, 3e16, 1e17), size_factors=(0.25, 0.5, 1.0, 2.0, 4.0))
CLAIM_KEYS = ["multiplier[flops_6N_nonembed]", "multiplier[flops_6N_total]", "multiplier[flops_exact]", "phi",
              "protocol[flops_6N_nonembed]", "protocol[flops_6N_total]", "protocol[flops_exact]", "deeper",
              "loop_scaling", "adaptive", "task[gsm8k]"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = write_study(tmp_path_factory.mktemp("study") / "synthetic", SyntheticSpec(**SMALL, failed=1))
    return d, run_report(d, n_boot=100)


def headline(md: str) -> list[list[str]]:
    """The cells of the headline table (header row first)."""
    table = "| claim" + md.split("## Claims at a glance", 1)[1].split("| claim", 1)[1].split("\n\n", 1)[0]
    lines = [r for r in table.splitlines() if r.startswith("| ")]
    return [[x.strip() for x in re.split(r"(?<!\\)\|", r)[1:-1]] for r in lines]


def test_report_files_and_claims_table(report):
    d, res = report
    md = (d / "report.md").read_text()
    table = "\n".join(" | ".join(r) for r in headline(md))
    rows = headline(md)[1:]
    assert [c.key for c in res.claims] == CLAIM_KEYS
    # claims 1-2 under one convention (exact), every other claim once; the other conventions in their sections
    assert len(rows) == len(CLAIM_KEYS) - 4 and "Claims 1–2 under the other FLOPs conventions" in md
    for c in res.claims:
        assert (c.name in table) == (c.details.get("convention") in (None, "flops_exact")), c.name
        assert f"**{c.name}**" in md
    # the synthetic study is built with LoopMDM 3.3x cheaper, better than deeper MDMs, +8.5 GSM8K
    by = {c.key: c for c in res.claims}
    assert by["multiplier[flops_6N_nonembed]"].verdict == "supported"
    assert by["multiplier[flops_6N_nonembed]"].ci_low <= 3.3 <= by["multiplier[flops_6N_nonembed]"].ci_high
    assert by["deeper"].verdict == "supported" and by["loop_scaling"].verdict == "supported"
    assert by["task[gsm8k]"].verdict == "supported"
    # ... so against the paper's values: consistent, each with a minimum detectable effect
    assert by["multiplier[flops_6N_nonembed]"].paper_verdict == "consistent with the paper"
    assert by["task[gsm8k]"].paper_verdict == "consistent with the paper"
    assert by["deeper"].paper_verdict is None  # the paper states a direction only
    assert "(paper: up to 3.3x)" in table and "consistent (paper: +8.5 points)" in table and "at 80% power" in md
    for section in ("## Fit diagnostics", "### Backtests", "## What is missing", "Python", "numpy",
                    "## Task scores vs inference loops", "| LoopMDM |", "## Training seeds",
                    "by the outlier rule"):
        assert section in md
    assert "1 run(s) without any evaluation" in md and "failed run(s)" in md and "unfinished" in md


def test_figures_exist_and_are_embedded(report):
    d, res = report
    made = {f.name for f in res.figures if f.made}
    for name in ("loss_vs_flops_6N_nonembed", "loss_vs_flops_exact", "isoflop_mdm", "isoflop_loopmdm",
                 "multiplier_vs_loss", "nll_vs_loops", "score_vs_loops", "adaptive_loops", "training_curves",
                 "nll_vs_inference_flops"):
        assert name in made
        assert (d / "figures" / f"{name}.png").stat().st_size > 5000
        assert (d / "figures" / f"{name}.pdf").exists()
    md = (d / "report.md").read_text()
    assert "](figures/multiplier_vs_loss.png)" in md  # relative path


def test_fits_json_is_strict_json(report):
    d, _ = report
    payload = json.loads((d / "fits.json").read_text())  # json.loads rejects NaN only if we check:
    text = (d / "fits.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert {"claims", "fits", "missing", "generated", "collect"} <= set(payload)
    assert payload["fits"]["frontier"]["mdm|flops_6N_nonembed"]["ok"]
    assert payload["fits"]["parametric"]["mdm"]["diagnostics"]["converged"]


def test_baseline_only_study_gives_partial_report(tmp_path):
    d = write_study(tmp_path / "s", SyntheticSpec(**SMALL, with_tasks=False, partial=0, no_evals=0))
    for run in (d / "runs").iterdir():
        if not run.name.startswith("mdm-"):
            for f in run.iterdir():
                f.unlink()
            run.rmdir()
    res = run_report(d, n_boot=20, figures=False)
    assert all(c.verdict == "inconclusive" for c in res.claims)
    md = (d / "report.md").read_text()
    assert "no runs of family 'loopmdm'" in md and "no runs of family 'mdm_deeper'" in md
    # a claim without data reads "not measured" (its rule's "inconclusive" would suggest a measurement)
    rows = headline(md)[1:]
    assert rows and all(r[3] == "⬜ not measured" and r[1] == r[2] == "—" for r in rows), rows
    assert "❔ inconclusive" not in md and md.count("⬜ not measured") >= 2 * len(rows)


def test_headline_fits_a_screen_and_units_are_consistent(report):
    """Every headline cell <= 120 characters; each claim's estimate and CI in one unit with the same digits:
    percent with percent CIs, nats with as many decimals as their CI, multipliers as '0.98x'."""
    d, res = report
    md = (d / "report.md").read_text()
    rows = headline(md)
    assert rows[0] == ["claim", "measured", "95% CI", "verdict (vs no effect)", "vs the paper",
                       "power: smallest effect detectable (80%)"]
    assert all(len(x) <= 120 for r in rows for x in r), max((x for r in rows for x in r), key=len)
    by = {r[0]: r for r in rows[1:]}
    decimals = lambda x: len(x.split(".")[1]) if "." in x else 0  # noqa: E731
    for name, r in by.items():
        lo, hi = r[2].strip("[]").split(", ") if r[2].startswith("[") else (None, None)
        if "nats" in r[1] or "points" in r[1]:
            est = r[1].split(" ")[0]
            assert decimals(est) == decimals(lo) == decimals(hi), r
        if "% loops saved" in r[1]:
            assert lo.endswith("%") and hi.endswith("%") and decimals(lo.rstrip("%")) == decimals(r[1].split("%")[0]) == 1, r
        if name.startswith("1.") and r[1][0].isdigit():
            assert re.fullmatch(r"[\d.]+x", r[1]) and re.fullmatch(r"\[[\d.]+x, [\d.]+x\]", r[2]), r


def test_unit_formatting():
    from analysis.claims.common import Claim

    def claim(m, lo, hi, unit):
        return Claim("k", "n", "", None, "", m, lo, hi, unit, "supported", "")

    assert (claim(26.0, 6.53, 48.2, "% loops saved").measured_str(), claim(26.0, 6.53, 48.2, "%").ci_str()) == \
        ("26.0% loops saved", "[6.5%, 48.2%]")
    assert claim(-0.003, -0.007, -0.000234, "nats/token").ci_str() == "[-0.0070, -0.0002]"
    assert claim(-0.003, -0.007, -0.000234, "nats/token").measured_str() == "-0.0030 nats/token"
    assert claim(-0.036, -0.069, -0.009, "nats/token").ci_str() == "[-0.069, -0.009]"
    assert claim(7.0, 2.0, 12.0, "points").measured_str() == "+7.0 points"
    assert claim(0.9784, 0.5, 1.2, "x").measured_str() == "0.978x"


def test_one_seed_caveat_on_every_measured_claim(report):
    """One seed per config (the synthetic study): every measured claim says its CI lacks seed variance,
    the task claim (one model pair) included."""
    _, res = report
    measured = [c for c in res.claims if c.measured_at_all]
    assert any(c.key.startswith("task[") for c in measured)
    for c in measured:
        assert any(cv.startswith("one seed per config") for cv in c.caveats), c.key


def test_single_budget_and_missing_columns(tmp_path):
    d = write_study(tmp_path / "one", SyntheticSpec(budgets=(1e16,), with_tasks=False, partial=0, no_evals=0))
    res = run_report(d, n_boot=20, figures=False)
    md = (d / "report.md").read_text()
    assert "a single FLOPs budget" in md
    assert res.claims[0].verdict == "inconclusive"
    # "What is missing": one line per distinct fit failure, not one per fit and again per claim
    missing = md.split("## What is missing", 1)[1].split("<details>", 1)[0]
    assert "IsoFLOP, every family:" in missing and "- claim multiplier[" not in missing
    assert "No convention has both a fitted (claim 1) and a protocol multiplier" in md
    assert "overlapping CIs" not in md
    # a runs.parquet without required columns (and no runs/): a clear message, still a report
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame({"run": ["a"], "nll": [float("nan")]}).to_parquet(bad / "runs.parquet")
    res = run_report(bad, n_boot=10)
    md = (bad / "report.md").read_text()
    assert "lacks required columns" in md and "family" in md
    assert all(c.verdict == "inconclusive" for c in res.claims)


def test_cli(tmp_path):
    assert main([str(tmp_path / "nope")]) == 2
    d = write_study(tmp_path / "s", SyntheticSpec(**SMALL, with_tasks=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "analysis.report", str(d), "--bootstrap", "20", "--no-figures",
                        "--convention", "exact"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "multiplier" in r.stdout and (d / "report.md").exists()
    payload = json.loads((d / "fits.json").read_text())
    assert payload["conventions"] == ["flops_exact"]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_censored_multiplier_is_shown_as_a_bound(tmp_path):
    from analysis.synthetic import frontier_pair_table

    df = frontier_pair_table(0.5, budgets=(1e15, 1e16), size_factors=(0.5, 1.0, 2.0))
    z = df[df["step"] == df["step"].min()].copy()  # the step-0 evals (0 FLOPs) every real run has
    z[["step", "tokens", "flops_6N_nonembed", "flops_6N_total", "flops_exact"]] = 0
    z["is_final"] = False
    pd.concat([z, df], ignore_index=True).to_parquet(tmp_path / "runs.parquet")
    res = run_report(tmp_path, n_boot=50, figures=False)
    md = (tmp_path / "report.md").read_text()
    assert "e-12" not in md
    proto = [c for c in res.claims if c.key.startswith("protocol[")]
    assert proto and all(c.measured_text.startswith("not reached (< ") for c in proto)
    line = next(r for r in md.splitlines() if r.startswith("| 2. multiplier by the paper's protocol"))
    assert "| not reached (< " in line and "| < " in line
    assert "internal error" not in md
