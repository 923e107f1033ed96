"""analysis.compare: a re-run agrees with a study when its final NLLs sit within the stated MC errors."""

import json

from analysis import compare


def _study(root, nll: float, se: float = 0.01, run_name: str = "d64-l1.1.1-s4-c1e12-0123456789ab"):
    run = root / "runs" / run_name
    run.mkdir(parents=True)
    rows = [{"step": 5, "eval_loops": 1, "exit_threshold": None, "nll": nll + 1, "nll_se": se, "is_final": False},
            {"step": 10, "eval_loops": 1, "exit_threshold": None, "nll": nll, "nll_se": se, "is_final": True},
            {"step": 10, "eval_loops": 4, "exit_threshold": 0.05, "nll": nll, "nll_se": se, "is_final": True}]
    (run / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_agreement_within_errors_and_disagreement_beyond(tmp_path, capsys):
    a = _study(tmp_path / "a", 3.0)
    assert compare.main([str(a), str(_study(tmp_path / "b", 3.02))]) == 0  # 0.02 <= 2 * 0.0141
    assert "2 within 2 MC s.e." in capsys.readouterr().out
    assert compare.main([str(a), str(_study(tmp_path / "c", 3.05))]) == 1
    assert "OUTSIDE" in capsys.readouterr().out
    assert compare.main([str(a), str(tmp_path / "nothing")]) == 2


def test_the_studys_positive_control_is_compared_too(tmp_path, capsys):
    """The README's check covers the whole one command: the demo and the control it runs first (control/)."""
    a, b = _study(tmp_path / "a", 3.0), _study(tmp_path / "b", 3.0)
    ctl = "d64-l1.1.1-s7-c5e12-ba9876543210"
    _study(a / "control", 0.2, run_name=ctl)
    _study(b / "control", 0.9, run_name=ctl)  # the control does not reproduce, the study does
    assert compare.main([str(a), str(b), "--summary"]) == 1
    out = capsys.readouterr().out
    assert f"control/{ctl}" in out and "4 shared final points" in out
