"""The Sudoku positive control's generator and scores (issue: the embedded default's positive control)."""
import itertools

import pytest

from study.data import sudoku


def brute_force_solutions(puzzle: str, limit: int = 2) -> int:
    """An independent solver: plain row-major backtracking with set lookups (no shared code with the
    generator's most-constrained-first counter)."""
    g = [[0 if ch == "." else int(ch) for ch in puzzle[r * 9:(r + 1) * 9]] for r in range(9)]
    found = 0

    def ok(r, c, d):
        if d in g[r] or d in (g[i][c] for i in range(9)):
            return False
        br, bc = 3 * (r // 3), 3 * (c // 3)
        return all(g[br + i][bc + j] != d for i, j in itertools.product(range(3), range(3)))

    def solve(pos=0):
        nonlocal found
        while pos < 81 and g[pos // 9][pos % 9]:
            pos += 1
        if pos == 81:
            found += 1
            return found >= limit
        r, c = divmod(pos, 9)
        for d in range(1, 10):
            if ok(r, c, d):
                g[r][c] = d
                if solve(pos + 1):
                    return True
                g[r][c] = 0
        return False

    solve()
    return found


@pytest.mark.parametrize("blanks", [20, 45])
def test_puzzles_are_valid_and_uniquely_solvable(blanks):
    rows = list(sudoku.generate(6, blanks=blanks, seed=3, split="test"))
    assert len({r["puzzle"] for r in rows}) == 6
    for r in rows:
        p, s = r["puzzle"], r["solution"]
        assert p.count(".") == blanks and len(p) == 81
        assert sudoku.is_valid_solution(s)
        assert all(a == "." or a == b for a, b in zip(p, s))  # givens agree with the solution
        assert brute_force_solutions(p) == 1  # unique, by a solver that shares no code with the generator


def test_generation_is_a_pure_function_of_seed_and_split():
    a = list(sudoku.generate(3, blanks=30, seed=1))
    assert a == list(sudoku.generate(3, blanks=30, seed=1))
    assert a != list(sudoku.generate(3, blanks=30, seed=1, split="test"))
    with pytest.raises(ValueError, match="blanks"):
        list(sudoku.generate(1, blanks=70))


def test_layout_round_trips_and_the_corpus_is_aligned_records():
    g = next(sudoku.generate(1, blanks=30))["solution"]
    text = sudoku.layout(g)
    assert len(text) + 1 == sudoku.RECORD_LEN and text.count("\n") == 9 and sudoku.unlayout(text) == g
    grids = list(sudoku.solved_grids(3))
    assert all(len(t) == 90 and sudoku.is_valid_solution(sudoku.unlayout(t)) for t in grids)


def test_scores_perfect_one_cell_wrong_and_bad_answers():
    r = next(sudoku.generate(1, blanks=30, seed=0))
    s = r["solution"]
    assert sudoku.score(s, s) == {"exact": 1.0, "cells": 1.0}
    i = r["puzzle"].index(".")
    wrong = s[:i] + str(int(s[i]) % 9 + 1) + s[i + 1:]
    assert sudoku.score(wrong, s) == {"exact": 0.0, "cells": pytest.approx(80 / 81)}
    assert sudoku.score("", s) == {"exact": 0.0, "cells": 0.0}
    assert not sudoku.is_valid_solution(wrong)


def test_aligned_windows_are_whole_records():
    import numpy as np

    from study.data.tokens import eval_batches, get_batch

    tokens = np.tile(np.arange(82), 50)  # 50 records of 82 tokens, each starting with 0
    b = get_batch(tokens, 16, 82, seed=0, step=3, align=True)
    assert (b[:, 0] == 0).all() and (b[:, -1] == 81).all()
    e = eval_batches(tokens, 7, 82, align=True)
    assert (e[:, 0] == 0).all() and len({tuple(r.tolist()) for r in e}) == 1
    assert not (get_batch(tokens, 16, 82, seed=0, step=3)[:, 0] == 0).all()  # unaligned windows cut records


def test_a_run_trained_on_grids_is_scored_per_loop_count_and_not_recomputed(tmp_path):
    """End to end: the sudoku corpus, aligned records, training, and the infilling evaluation at S = 1, 2."""
    from study.evaluate.request import EvalError
    from study.evaluate.sudoku_eval import sudoku_eval
    from study.plan import config as C
    from study.train import train

    cfg = C.from_dict({
        "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1, "s_max": 2},
        "data": {"corpus": "sudoku:300", "tokenizer": "byte", "seq_len": 91, "align": True, "val_fraction": 0.05,
                 "cache_dir": str(tmp_path / "cache")},
        "optim": {"lr": 3e-3, "warmup_steps": 5}, "batch": {"global_batch": 8}, "budget": {"steps": 6},
        "eval": {"points": 1, "n_seqs": 4, "n_draws": 2},
        "system": {"log_every": 50, "ckpt_every": 10_000, "num_threads": 1}})
    assert "align" in cfg.semantic_dict()["data"]
    run = tmp_path / "run"
    train(cfg, run, quiet=True)
    recs = sudoku_eval(run, loops=[1, 2], n_puzzles=4, blanks=10, order="random")
    assert [r["loops"] for r in recs] == [1, 2]
    for r in recs:
        assert r["task"] == "sudoku" and r["n"] == 4 and len(r["per_sample"]) == 4
        assert all(0 <= c <= 1 for c in r["cells_per_sample"])
        assert r["cell_accuracy"] >= 71 / 81 - 1e-9  # the 71 givens are never changed
    again = sudoku_eval(run, loops=[1, 2], n_puzzles=4, blanks=10, order="random")
    assert [a["eval_hash"] for a in again] == [r["eval_hash"] for r in recs]  # read back, not recomputed
    with pytest.raises(EvalError, match="order"):
        sudoku_eval(run, order="diagonal")
    # the same run through lm-eval's own simple_evaluate and the packaged sudoku-complete task
    import lm_eval
    from lm_eval.tasks import TaskManager

    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from study.evaluate.lm_tasks import PACKAGED

    tm = TaskManager(include_path=str(PACKAGED), include_defaults=False, metadata={"rows": 1, "n": 3})
    out = lm_eval.simple_evaluate(model="loopmdm", model_args=f"run={run},loops=2,device=cpu",
                                  tasks=["sudoku-complete"], task_manager=tm, log_samples=True)
    res = out["results"]["sudoku-complete"]
    assert 0 <= res["valid,none"] <= 1 and 0 <= res["cells,none"] <= 1
    assert len(out["samples"]["sudoku-complete"]) == 3


def test_sudoku_completion_is_scored_valid_or_not():
    from study.evaluate.lm_eval_tasks.loaders import sudoku_complete, sudoku_results

    doc = sudoku_complete(rows=1, n=1)["test"][0]
    assert doc["context"].count("\n") == 8 and len(doc["target"]) == 10
    assert sudoku_results(doc, [doc["target"]]) == {"valid": 1.0, "cells": 1.0}
    wrong = doc["target"][1] + doc["target"][0] + doc["target"][2:]  # two cells swapped: a column repeats
    assert sudoku_results(doc, [wrong]) == {"valid": 0.0, "cells": 7 / 9}
    assert sudoku_results(doc, ["12"])["valid"] == 0.0  # too short
