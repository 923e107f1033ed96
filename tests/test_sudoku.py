"""The Sudoku positive control's generator and scores (issue: the embedded default's positive control)."""
import itertools

import pytest

from study.data import sudoku


BOX = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # written out here, not read from the generator


def brute_force_solutions(puzzle: str, limit: int = 2, n: int = 9) -> int:
    """An independent solver: plain row-major backtracking with set lookups (no shared code with the
    generator's most-constrained-first counter)."""
    g = [[0 if ch == "." else int(ch) for ch in puzzle[r * n:(r + 1) * n]] for r in range(n)]
    hb, wb = BOX[n]
    found = 0

    def ok(r, c, d):
        if d in g[r] or d in (g[i][c] for i in range(n)):
            return False
        br, bc = hb * (r // hb), wb * (c // wb)
        return all(g[br + i][bc + j] != d for i, j in itertools.product(range(hb), range(wb)))

    def solve(pos=0):
        nonlocal found
        while pos < n * n and g[pos // n][pos % n]:
            pos += 1
        if pos == n * n:
            found += 1
            return found >= limit
        r, c = divmod(pos, n)
        for d in range(1, n + 1):
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


@pytest.mark.parametrize("size, blanks", [(4, 6), (4, 12), (6, 14), (6, 24)])
def test_smaller_grids_are_valid_and_uniquely_solvable(size, blanks):
    rows = list(sudoku.generate(5, blanks=blanks, seed=2, split="test", size=size))
    assert len({r["id"] for r in rows}) == 5 and all(r["id"].startswith(f"sudoku{size}x{size}-test-") for r in rows)
    for r in rows:
        p, s = r["puzzle"], r["solution"]
        assert p.count(".") == blanks and len(p) == size * size
        assert sudoku.is_valid_solution(s, size) and not sudoku.is_valid_solution(s)  # a 9x9 check refuses it
        assert all(a == "." or a == b for a, b in zip(p, s))
        assert brute_force_solutions(p, n=size) == 1
    grids = list(sudoku.solved_grids(4, size=size))
    assert all(len(t) + 1 == sudoku.record_len(size) and t.count("\n") == size for t in grids)
    assert all(sudoku.is_valid_solution(sudoku.unlayout(t), size) for t in grids)
    assert grids == list(sudoku.solved_grids(4, size=size)) != list(sudoku.solved_grids(4, seed=1, size=size))


def test_the_9x9_streams_are_generator_version_1_byte_for_byte():
    """The 9x9 default stays reproducible: the hashes of its corpus and puzzles as version 1 wrote them
    (measured before the sizes were added), so its token caches and committed evaluations stay valid."""
    import hashlib
    import json

    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert digest("".join(sudoku.solved_grids(50, seed=0))) == \
        "87260d1e91ecf06e841c843348f9f4bdc562a055fbd9023a36e22bf90eaff05a"
    assert digest(json.dumps(list(sudoku.generate(5, blanks=30, seed=0, split="test")))) == \
        "8c2fe263b94f9d4ae842fe6053a447726a9c3122ff47241eabc17459aab6189d"


@pytest.mark.parametrize("spec, size, n", [("sudoku", 9, 20_000), ("sudoku:500", 9, 500), ("sudoku:9x9:7", 9, 7),
                                           ("sudoku:6x6", 6, 20_000), ("sudoku:4x4:30", 4, 30)])
def test_corpus_specs_name_size_and_count(spec, size, n):
    from study.data.corpora import resolve_corpus

    assert sudoku.parse_corpus(spec) == (size, n)
    src = resolve_corpus(spec)
    assert src.spec == sudoku.canonical_corpus(size, n)
    assert src.fingerprint == f"{src.spec}@v{sudoku.GENERATOR_VERSION}"
    if size == 9:
        assert src.spec == f"sudoku:{n}"  # the key version 1 used: 9x9 caches stay valid


@pytest.mark.parametrize("spec", ["sudoku:0", "sudoku:5x5", "sudoku:6x9", "sudoku:6x6:x", "sudoku:6x6:10:3",
                                  "sudoku:-4", "sudoku:abc"])
def test_bad_corpus_specs_are_one_line_naming_the_field(spec):
    from study.data.corpora import resolve_corpus
    from study.data.tokenizers import DataError

    with pytest.raises(DataError) as e:
        resolve_corpus(spec)
    assert e.value.field == "data.corpus" and "\n" not in str(e.value) and spec in str(e.value)


def test_blanks_are_bounded_per_size():
    for size, most in ((4, 12), (6, 28), (9, 64)):
        sudoku.check_blanks(most, size)
        for bad in (0, most + 1, True, 2.5):
            with pytest.raises(ValueError, match=f"1..{most}"):
                sudoku.check_blanks(bad, size)
    with pytest.raises(ValueError, match="size=5"):
        sudoku.geometry(5)


def test_generation_is_a_pure_function_of_seed_and_split():
    a = list(sudoku.generate(3, blanks=30, seed=1))
    assert a == list(sudoku.generate(3, blanks=30, seed=1))
    assert a != list(sudoku.generate(3, blanks=30, seed=1, split="test"))
    with pytest.raises(ValueError, match="blanks"):
        list(sudoku.generate(1, blanks=70))


def test_layout_round_trips_and_the_corpus_is_aligned_records():
    g = next(sudoku.generate(1, blanks=30))["solution"]
    text = sudoku.layout(g)
    assert len(text) + 1 == sudoku.record_len() and text.count("\n") == 9 and sudoku.unlayout(text) == g
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
    # with the puzzle: the share of its 30 blanks answered right (the givens do not count)
    assert sudoku.score(wrong, s, r["puzzle"]) == {"exact": 0.0, "cells": pytest.approx(80 / 81),
                                                   "blanks": pytest.approx(29 / 30)}
    assert sudoku.score(r["puzzle"], s, r["puzzle"])["blanks"] == 0.0  # the puzzle copied back: no blank right
    assert sudoku.score(r["puzzle"], s, r["puzzle"])["cells"] == pytest.approx(51 / 81)


def test_answers_are_read_cell_by_cell_so_a_stray_token_costs_one_cell():
    r = next(sudoku.generate(1, blanks=12, seed=0, size=6))
    pieces = list(sudoku.layout(r["solution"], 6)) + [""]  # one decoded token a position, eos last
    assert sudoku.cells_at(pieces, 6) == r["solution"]
    i = r["puzzle"].index(".")
    at = (i // 6) * 7 + i % 6  # the blank's position in the laid-out text
    for stray in ("\n", "", "ab", "7"):  # a line break, a special token, two characters, a digit beyond 6
        bad = pieces[:at] + [stray] + pieces[at + 1:]
        got = sudoku.cells_at(bad, 6)
        assert got == r["solution"][:i] + "?" + r["solution"][i + 1:]
        assert sudoku.score(got, r["solution"], r["puzzle"]) == {"exact": 0.0, "cells": pytest.approx(35 / 36),
                                                                 "blanks": pytest.approx(11 / 12)}
    assert sudoku.cells_at(pieces[:10], 6) == r["solution"][:9] + "?" * 27  # a short answer: the rest wrong


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


def test_sudoku_completion_of_a_smaller_grid():
    from study.evaluate.lm_eval_tasks.loaders import sudoku_complete, sudoku_results

    doc = sudoku_complete(rows=2, n=1, size=6)["test"][0]
    assert doc["context"].count("\n") == 4 and len(doc["target"]) == 14 and doc["id"].startswith("sudoku6x6-")
    assert sudoku_results(doc, [doc["target"]]) == {"valid": 1.0, "cells": 1.0}
    wrong = doc["target"][1] + doc["target"][0] + doc["target"][2:]
    assert sudoku_results(doc, [wrong])["valid"] == 0.0
    with pytest.raises(ValueError, match="size=5"):
        sudoku_complete(rows=1, n=1, size=5)


def test_a_6x6_run_is_scored_at_its_own_size_in_each_order(tmp_path):
    """The evaluation reads the grid size from the run's corpus: 6x6 puzzles, blanks bounded for 6x6, the
    confidence order filed as its own task, and blank-cell accuracy per puzzle consistent with cell accuracy."""
    from study.evaluate.request import EvalError
    from study.evaluate.sudoku_eval import sudoku_eval
    from study.plan import config as C
    from study.train import train

    cfg = C.from_dict({
        "model": {"d_model": 32, "n_heads": 4, "n_mid_layers": 2, "grid_box": [2, 3]},
        "data": {"corpus": "sudoku:6x6:200", "tokenizer": "byte", "seq_len": 43, "align": True,
                 "val_fraction": 0.05, "cache_dir": str(tmp_path / "cache")},
        "optim": {"lr": 3e-3, "warmup_steps": 2}, "batch": {"global_batch": 8}, "budget": {"steps": 3},
        "eval": {"points": 1, "n_seqs": 4, "n_draws": 2},
        "system": {"log_every": 50, "ckpt_every": 10_000, "num_threads": 1}})
    run = tmp_path / "run6"
    train(cfg, run, quiet=True)
    [r] = sudoku_eval(run, loops=[1], n_puzzles=5, blanks=20, order="confidence")
    assert r["task"] == "sudoku-confidence" and r["n"] == 5
    assert all(i.startswith("sudoku6x6-test-") for i in r["sample_ids"])
    for c, b in zip(r["cells_per_sample"], r["blank_cells_per_sample"]):
        assert c * 36 == pytest.approx(16 + 20 * b)  # the 16 givens kept, b of the 20 blanks right
    assert r["blank_cell_accuracy"] == pytest.approx(sum(r["blank_cells_per_sample"]) / 5)
    assert r["score"] == sum(b == 1.0 for b in r["blank_cells_per_sample"]) / 5  # exact = every blank right
    with pytest.raises(EvalError, match="1..28"):
        sudoku_eval(run, loops=[1], n_puzzles=2, blanks=30)  # 30 blanks fit a 9x9, not a 6x6 grid


@pytest.mark.parametrize("spec, size, runs", [("sudoku.yaml", 6, 3), ("sudoku_9x9.yaml", 9, 3)])
def test_the_sudoku_specs_plan_grid_runs_and_score_both_orders_past_s_max(spec, size, runs):
    """The committed CPU control (6x6) and the GPU spec (9x9): every run is trained on aligned records of its
    grid size with its box positions, and the evaluate stage fills valid blank counts in the random and
    the confidence order at loop counts past the training s_max."""
    from pathlib import Path

    from study.plan.spec import expand, load_spec

    s = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / spec)
    planned = expand(s)
    assert len(planned) == runs and {p.role for p in planned} == {"looped", "baseline_same", "baseline_deeper"}
    for p in planned:
        d = p.cfg.data
        assert sudoku.parse_corpus(str(d.corpus))[0] == size and d.align
        assert d.seq_len == sudoku.record_len(size) and p.cfg.model.grid_box == sudoku.BOXES[size]
    s_max = max(p.cfg.model.s_max for p in planned)
    reqs = [st.request for st in s.evaluate if st.request.sudoku]
    assert {r.sudoku_order for r in reqs} == {"random", "confidence"}
    for r in reqs:
        sudoku.check_blanks(r.sudoku_blanks, size)
        assert max(r.loops) > s_max and min(r.loops) == 1


def test_the_report_table_gives_blank_cells_right_where_evaluations_have_them():
    import pandas as pd

    from analysis.report.sections import task_loops_md

    row = dict(task="sudoku", metric="exact", n=100, exit_threshold=None, family="loopmdm", score=0.5,
               cell_accuracy=0.9, blank_cell_accuracy=0.75)
    t = pd.DataFrame([{**row, "loops": 1, "file": "a"}, {**row, "loops": 4, "file": "b", "score": 0.6}])
    text = "\n".join(task_loops_md(t))
    assert "in brackets: % of blank cells right" in text and "| LoopMDM | 50.0 (75.0) | 60.0 (75.0) |" in text
    text = "\n".join(task_loops_md(t.drop(columns="blank_cell_accuracy")))  # an older record: all cells
    assert "in brackets: % of cells right" in text and "50.0 (90.0)" in text
