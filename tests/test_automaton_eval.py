"""The positive control's scorer: accuracy per row of held-out automaton histories vs inference loops."""
from types import SimpleNamespace

import pytest
import torch

import records

from study.data import automata
from study.data.tokenizers import ByteTokenizer
from study.evaluate.automaton_eval import depth_accuracy, majority_accuracy, score_depths

TOK = ByteTokenizer()
ZERO, ONE = TOK.encode("01")


class RuleOracle(torch.nn.Module):
    """A model that knows the rule and applies it ``rows_per_loop`` rows per loop: a row is computed once the
    row above it is known. Cells it cannot compute get a random guess between '0' and '1' (low logits), so
    with S loops in one parallel step rows 1..S are right and later rows are at chance."""

    def __init__(self, a: automata.Automaton, rows_per_loop: int | None = 1, seed: int = 0):
        super().__init__()
        self.a, self.rows_per_loop = a, rows_per_loop
        self.cfg = SimpleNamespace(mask_id=TOK.mask_id, vocab_size=TOK.vocab_size)
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x, t=None, loops=None):
        B, L = x.shape
        line = self.a.width + 1
        logits = torch.full((B, L, self.cfg.vocab_size), -30.0)
        guess = torch.rand(B, L, generator=self.gen) < 0.5
        logits[..., ZERO] = torch.where(guess, 0.1, 0.0)
        logits[..., ONE] = torch.where(guess, 0.0, 0.1)
        budget = None if self.rows_per_loop is None else self.rows_per_loop * (loops or 1)
        for b in range(B):
            known = {}
            for k in range(self.a.rows):
                row = x[b, k * line:k * line + self.a.width]
                if (row != self.cfg.mask_id).all():
                    known[k] = tuple(int(v == ONE) for v in row)
            computed = 0
            for k in range(1, self.a.rows):
                if k not in known and k - 1 in known and (budget is None or computed < budget):
                    known[k] = self.a.step(known[k - 1])
                    computed += 1
            for k, row in known.items():
                for i, v in enumerate(row):
                    logits[b, k * line + i] = -30.0
                    logits[b, k * line + i, ONE if v else ZERO] = 30.0
        return logits


def truth_and_depths(a: automata.Automaton, n: int):
    recs = a.scoring_records(n, seed=0)
    truth = torch.tensor([TOK.encode(text) + [TOK.eos_id] for _, text, _ in recs])
    return truth, recs[0][2]


A = automata.parse("eca:30:8:5:50:fixed")


def test_an_oracle_that_knows_the_rule_is_right_on_every_row():
    truth, depths = truth_and_depths(A, 40)
    acc = score_depths(RuleOracle(A, rows_per_loop=None), truth, depths, loops=1, order="parallel")
    assert acc.shape == (40, 4) and (acc == 1).all()


@pytest.mark.parametrize("loops", [1, 2, 3])
def test_one_parallel_step_sees_depth_and_sequential_orders_stand_in_for_it(loops):
    """Rows 1..S right and later rows at chance in ONE step; filling one row per step (raster) gets every
    row right even at S = 1: sequential decoding replaces depth."""
    truth, depths = truth_and_depths(A, 120)
    acc = score_depths(RuleOracle(A), truth, depths, loops=loops, order="parallel").mean(0)
    assert (acc[:loops] == 1).all()
    assert all(abs(float(a) - 0.5) < 0.08 for a in acc[loops:])  # 960 cells a row: s.d. of a guess 1.6 points
    for order in ("raster", "confidence"):
        assert (score_depths(RuleOracle(A), truth, depths, loops=1, order=order) == 1).all()


def test_a_guessing_model_is_at_chance_and_majority_is_counted_per_row():
    truth, depths = truth_and_depths(automata.parse("eca:90:16:4:50"), 200)
    acc = score_depths(RuleOracle(A, rows_per_loop=0), truth, depths, loops=4, order="parallel")
    assert abs(float(acc.mean()) - 0.5) < 0.03  # 9600 guessed cells
    maj = majority_accuracy(truth, depths)
    assert len(maj) == 3 and all(0.5 <= m <= 1 for m in maj)
    rows = truth[:, depths[0]]
    assert maj[0] == pytest.approx(max(float((rows == ONE).float().mean()), float((rows == ZERO).float().mean())))


def test_depth_accuracy_counts_each_depth_separately():
    truth = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    pred = torch.tensor([[1, 0, 3, 0, 0], [1, 2, 3, 4, 0]])
    acc = depth_accuracy(pred, truth, [[0, 1], [2], [3, 4]])
    assert acc.tolist() == [[0.5, 1.0, 0.0], [1.0, 1.0, 0.5]]


def test_a_run_trained_on_histories_is_scored_per_row_and_loop_count_and_not_recomputed(tmp_path):
    """End to end: the eca corpus as aligned records, a tiny training run, the scorer's files."""
    from study.evaluate.automaton_eval import automaton_eval
    from study.evaluate.loading import EvalError
    from study.plan import config as C
    from study.train import train

    a = automata.parse("eca:90:10:4:300:fixed")

    def cfg(corpus, seq_len, align=True):
        return C.from_dict({
            "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1,
                      "s_max": 2, "max_seq_len": 64},
            "data": {"corpus": corpus, "tokenizer": "byte", "seq_len": seq_len, "align": align,
                     "val_fraction": 0.05, "cache_dir": str(tmp_path / "cache")},
            "optim": {"lr": 3e-3, "warmup_steps": 5}, "batch": {"global_batch": 8}, "budget": {"steps": 4},
            "eval": {"points": 1, "n_seqs": 4, "n_draws": 2},
            "system": {"log_every": 50, "ckpt_every": 10_000, "num_threads": 1}})

    run = tmp_path / "run"
    train(cfg(a.spec, a.record_len), run, quiet=True)
    recs = automaton_eval(run, loops=[1, 2], n_records=10, orders=["parallel", "raster"])
    assert [(r["loops"], r["task"]) for r in recs] == [(1, "eca-parallel"), (1, "eca-raster"), (2, "eca-parallel"),
                                                      (2, "eca-raster")]
    for r in recs:
        assert r["n"] == 10 and len(r["per_sample"]) == 10 and len(r["sample_ids"]) == 10
        assert len(r["per_depth"]) == 10 and all(len(x) == 3 for x in r["per_depth"])
        assert r["nll_floor"] == pytest.approx(a.nll_floor) and r["record_len"] == 45 and r["chance"] == 0.5
        assert r["score"] == pytest.approx(sum(r["per_sample"]) / 10)
    again = automaton_eval(run, loops=[1, 2], n_records=10, orders=["parallel", "raster"])
    assert [x["eval_hash"] for x in again] == [r["eval_hash"] for r in recs]
    assert [x["wall_s"] for x in again] == [r["wall_s"] for r in recs]  # read back, not recomputed
    with pytest.raises(EvalError, match="automaton_orders"):
        automaton_eval(run, orders=["diagonal"])
    other = tmp_path / "other"  # trained on records, but not aligned: the scorer refuses it
    train(cfg(a.spec, a.record_len, align=False), other, quiet=True)
    with pytest.raises(EvalError, match="data.align: true"):
        automaton_eval(other, loops=[1], n_records=4)


def test_the_request_and_a_spec_stage_take_the_automaton_options():
    from model.config import ConfigError
    from study.evaluate.request import AUTOMATON_ORDERS, parse_stage_args

    _, req = parse_stage_args("--automaton --loops 1,5 --automaton-orders parallel,raster --automaton-records 50",
                              "evaluate[0].args")
    assert req.automaton and req.automaton_orders == ["parallel", "raster"] and req.automaton_records == 50
    assert req.loops == [1, 5] and not req.sudoku
    for args, words in (("--automaton --automaton-orders diagonal", "automaton_orders: got diagonal"),
                        ("--automaton --automaton-records 0", "automaton_records: got 0")):
        with pytest.raises(ConfigError, match=rf"evaluate\[0\].args: .*{words}"):
            parse_stage_args(args, "evaluate[0].args")
    from model.diffusion import INFILL_ORDERS
    assert set(AUTOMATON_ORDERS) == {"parallel", *INFILL_ORDERS}


def test_given_keeps_the_scorers_given_part_visible_in_training_and_in_every_nll(tmp_path, monkeypatch):
    """``data.given``: row 0, line breaks and eos are never masked by the training loss, the in-training NLL or
    a later loop scan (the two NLLs agree and differ from the unconditional one); the floor is then 0."""
    import model.diffusion as D
    from model import validation_nll
    from study.data import corpora, given_mask, pointer
    from study.evaluate.automaton_eval import automaton_eval
    from study.evaluate.loading import eval_tokens, load_run
    from study.evaluate.loop_scan import loop_scan
    from study.plan import config as C
    from study.train import train

    a = automata.parse("eca:30:10:4:300:fixed:columns")
    given = corpora.given_positions(a.spec)
    scored = sorted(p for d in a.depth_positions() for p in d)
    assert sorted(given + scored) == list(range(a.record_len)) and not set(given) & set(scored)
    row0, breaks = [a.position(0, i) for i in range(10)], [i * (a.rows + 1) + a.rows for i in range(10)]
    assert given == sorted(row0 + breaks) + [a.record_len - 1]  # row 0, the line breaks (columns layout), eos
    pc = pointer.parse("pointer:4:3:50")
    assert corpora.given_positions(pc.spec) == [q for q in range(pc.record_len) if q not in (13, 14, 15)]

    masks = []
    real = D.draw_mask
    monkeypatch.setattr(D, "draw_mask", lambda *args, **kw: masks.append(real(*args, **kw)) or masks[-1])
    cfg = C.from_dict({
        "model": {"d_model": 32, "n_heads": 4, "n_head_layers": 1, "n_mid_layers": 1, "n_tail_layers": 1,
                  "s_max": 2, "max_seq_len": 64},
        "data": {"corpus": a.spec, "tokenizer": "byte", "seq_len": a.record_len, "align": True, "given": True,
                 "val_fraction": 0.05, "cache_dir": str(tmp_path / "cache")},
        "optim": {"lr": 3e-3, "warmup_steps": 5}, "batch": {"global_batch": 8}, "budget": {"steps": 4},
        "eval": {"points": 1, "n_seqs": 4, "n_draws": 2, "loops": [1]},
        "system": {"log_every": 50, "ckpt_every": 10_000, "num_threads": 1}})
    run = tmp_path / "run"
    train(cfg, run, quiet=True)
    assert masks and all(not m[:, given].any() for m in masks)  # training and in-training evals
    assert any(m[:, scored].any() for m in masks)
    final = [r for r in records.read_jsonl(run / records.EVALS) if r["is_final"] and r["eval_loops"] == 1][0]
    scan = loop_scan(run, loops=[1], n_seqs=4, n_draws=2, seed=cfg.eval.seed)[0]
    assert scan["nll"] == pytest.approx(final["nll"], rel=1e-5)
    loaded = load_run(run, "latest", "cpu")
    tokens = eval_tokens(cfg, 4)
    unconditional = validation_nll(loaded.model, tokens, loops=1, n_draws=2, seed=cfg.eval.seed)
    conditional = validation_nll(loaded.model, tokens, loops=1, n_draws=2, seed=cfg.eval.seed,
                                 keep=given_mask(cfg.data))
    assert conditional.nats == pytest.approx(scan["nll"], rel=1e-5) and unconditional.nats != conditional.nats
    rec = automaton_eval(run, loops=[1], n_records=5)[0]
    assert rec["nll_floor"] == 0.0 and len(rec["depth_accuracy"]) == 3
