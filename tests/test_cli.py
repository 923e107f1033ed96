"""What a researcher types and reads at the command lines: each verb's own --help, every default shown once,
the exit codes the README documents, overrides of swept keys refused, --only by slug, an honest ETA."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from study import cli
from study.cli.common import EXIT_BAD_INPUT, EXIT_CODES
from study.launch.preempt import EXIT_STOPPED
from study.launch.training import Eta, duration
from study.plan import config as config_mod
from study.plan import spec as spec_mod
from test_train import corpus, tiny_cfg  # noqa: F401  (the module-scoped corpus fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "tiny.yaml"


def help_text(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", *args, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    return res.stdout


def option_blocks(text: str) -> list[str]:
    """The help of each option (its line and the continuation lines below it)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if re.match(r"^\s{2}\S", line):
            blocks.append(line)
        elif blocks and line.startswith(" " * 6):
            blocks[-1] += " " + line.strip()
    return blocks


def test_each_sweep_verb_has_its_own_help():
    texts = {v: help_text("study.sweep", v) for v in ("submit", "status", "collect", "report")}
    assert len({t.split("\n\n")[1] for t in texts.values()}) == 4  # four different descriptions
    assert texts["status"].startswith("usage: python -m study.sweep status") and "--dry-run" not in texts["status"]
    assert "--retry" not in texts["collect"] and "--only" not in texts["report"] and "--json" in texts["status"]
    assert "--dry-run" in texts["submit"] and "--retry" in texts["submit"]


@pytest.mark.parametrize("program", [("study.run",), ("study.sft",), ("study.eval",), ("study.data",),
                                     ("study.sweep", "submit"), ("study.sweep", "status"), ("analysis.report",),
                                     ("analysis.fit",), ("analysis.compare",)])
def test_every_default_is_shown_once_and_never_for_a_flag(program):
    text = help_text(*program)
    for block in option_blocks(text):
        assert len(re.findall(r"\bdefault\b", block, flags=re.I)) <= 1, block
        assert not re.search(r"\(default: (None|True|False|\[\])\)", block), block
    assert EXIT_CODES.split(";")[0] in " ".join(text.split()) or program[0].startswith("analysis")


def test_exit_codes_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    for code in (0, 1, EXIT_BAD_INPUT, EXIT_STOPPED):
        assert re.search(rf"^\| {code} \|", section, flags=re.M), f"exit code {code} missing from the README"
    assert (EXIT_BAD_INPUT, EXIT_STOPPED) == (2, 3)


def test_an_override_of_a_swept_key_is_refused_in_one_line(capsys):
    assert cli.sweep_main([str(TINY), "budget.flops=1e11", "--dry-run"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: budget.flops: is swept by the spec (axes: budget.flops), so an override of the base "
                   "config would be ignored; edit axes in the spec, or select runs with --only"]
    assert cli.sweep_main([str(TINY), "budget=x", "--dry-run"]) == EXIT_BAD_INPUT  # a parent of a swept key
    assert cli.sweep_main([str(TINY), "optim.lr=1e-3", "--dry-run"]) == 0  # not swept: applied


def test_only_selects_by_slug_not_by_comparison_group():
    runs = spec_mod.expand(spec_mod.load_spec(TINY))
    looped = [r.slug for r in runs if r.role == "looped"]
    assert [r.slug for r in spec_mod.select(runs, "d48-l1*")] == looped  # the group is named like the looped run
    assert len(spec_mod.select(runs, "d48-*-c2e11")) == 4  # a slug glob still takes the baselines by their slugs
    assert [r.slug for r in spec_mod.select(runs, runs[1].hash[:8])] == [runs[1].slug]


def test_eta_never_says_zero_with_a_run_to_go_and_shows_the_fraction_done():
    assert duration(0.2) == "1 s" and duration(29) == "29 s" and duration(600) == "10 min"
    assert duration(3 * 3600) == "3.0 h"
    runs = spec_mod.expand(spec_mod.load_spec(TINY))[:2]
    eta = Eta(runs)
    assert eta.text() == "0% of the planned FLOPs done, ETA after the first run"
    eta.record(runs[0], seconds=0.5)  # fast: the rest takes well under a minute
    text = eta.text()
    assert re.match(r"^\d+% of the planned FLOPs done, ETA \d+ s for the rest", text), text
    assert "0 min" not in text and not text.startswith("0%")


def test_a_log_file_shows_the_progress_fraction(tmp_path, corpus, capsys):
    """Without a terminal (a job log, a pipe) every step line says how far the run is, not only 'step k/N'."""
    cfg = tiny_cfg(corpus, tmp_path / "cache", **{"budget.steps": 4, "system.log_every": 2, "eval.points": 1})
    path = tmp_path / "c.yaml"
    path.write_text(config_mod.dump_yaml(cfg))
    assert cli.run_main([str(path), "--out", str(tmp_path / "run")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "] step " in ln]
    assert [ln.split("] ", 1)[1].split(" loss")[0] for ln in lines] == ["step 2/4 (50%)", "step 4/4 (100%)"]
