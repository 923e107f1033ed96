"""The positive control's iterated-computation corpora: elementary cellular automata and pointer chasing."""
import collections
import itertools
import math

import pytest

from study.data import automata, corpora, pointer
from study.data.tokenizers import DataError


def wolfram_step(row, rule, periodic):
    """An independent rule step: the rule's 8-character truth table, indexed by the neighbourhood as a binary
    string (no shared code with the generator's bit shifts)."""
    table = format(rule, "08b")[::-1]  # table[int('lcr', 2)] is the new cell
    w = len(row)
    cell = (lambda i: row[i % w]) if periodic else (lambda i: row[i] if 0 <= i < w else 0)
    return tuple(int(table[int(f"{cell(i - 1)}{cell(i)}{cell(i + 1)}", 2)]) for i in range(w))


@pytest.mark.parametrize("rule", [30, 90, 110, 184])
@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_histories_follow_the_rule(rule, boundary):
    a = automata.parse(f"eca:{rule}:11:6:50:{boundary}")
    for first in itertools.islice(a.training_first_rows(), 20):
        rows = a.history(first)
        assert len(rows) == 6 and rows[0] == first
        for prev, nxt in zip(rows, rows[1:]):
            assert nxt == wolfram_step(prev, rule, boundary == "periodic")


def test_known_rows():
    a = automata.parse("eca:90:7:3:1:fixed")  # rule 90: XOR of the two neighbours
    assert a.history((0, 0, 0, 1, 0, 0, 0)) == [(0, 0, 0, 1, 0, 0, 0), (0, 0, 1, 0, 1, 0, 0), (0, 1, 0, 0, 0, 1, 0)]
    p = automata.parse("eca:30:4:2:1")  # periodic: the left neighbour of cell 0 is cell 3
    assert p.history((1, 0, 0, 0))[1] == (1, 1, 0, 1)


def test_corpus_is_deterministic_laid_out_and_keyed_by_every_parameter():
    a = automata.parse("eca:30:16:8:40")
    docs = list(a.corpus())
    assert docs == list(automata.parse("eca:30:16:8:40:periodic").corpus())
    assert len(docs) == 40 and all(len(d) + 1 == a.record_len == 137 for d in docs)
    assert all(d.count("\n") == 8 and set(d) <= set("01\n") for d in docs)
    assert list(corpora.get_corpus_texts("eca:30:16:8:40")) == docs
    specs = ["eca:30:16:8", "eca:90:16:8", "eca:30:17:8", "eca:30:16:9", "eca:30:16:8:500", "eca:30:16:8:fixed"]
    fingerprints = {corpora.resolve_corpus(s).fingerprint for s in specs}
    assert len(fingerprints) == len(specs)
    assert corpora.resolve_corpus("eca:30:16:8").fingerprint == "eca:30:16:8:20000:periodic@v1"
    assert pointer.parse("pointer:8:4").spec == corpora.resolve_corpus("pointer:8:4").spec == "pointer:8:4:20000"


def entropy(counts):
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_automaton_floor_is_the_exact_entropy_of_a_record():
    """Enumerate every first row of a tiny automaton: the distribution of whole records (eos included) has
    entropy width·ln 2, which the floor spreads over record_len tokens."""
    for spec in ("eca:30:4:3", "eca:0:4:5:1:fixed"):  # rule 0 wipes every row after the first: still injective
        a = automata.parse(spec)
        records = collections.Counter(a.text(first) + "<eos>" for first in itertools.product((0, 1), repeat=4))
        assert math.isclose(entropy(records), a.nll_floor * a.record_len, rel_tol=1e-12)
    assert math.isclose(automata.parse("eca:30:16:8").nll_floor, 16 * math.log(2) / 137)


def test_pointer_floor_is_the_exact_entropy_of_a_record():
    p = pointer.parse("pointer:3:2")
    records = collections.Counter(p.text(perm, s) for perm in itertools.permutations(range(3)) for s in range(3))
    assert len(records) == 18 and all(len(t) + 1 == p.record_len for t in records)
    assert math.isclose(entropy(records), p.nll_floor * p.record_len, rel_tol=1e-12)


def test_first_rows_are_uniform():
    """The floor assumes a uniform first row: 4000 rows of width 3 put about 500 on each of the 8 patterns."""
    a = automata.parse("eca:30:3:2:4000")
    counts = collections.Counter(a.training_first_rows())
    chi2 = sum((c - 500) ** 2 / 500 for c in counts.values())
    assert len(counts) == 8 and chi2 < 24.3  # 99.9th percentile of chi-square with 7 d.o.f.


def test_pointer_chain_follows_the_table():
    p = pointer.parse("pointer:5:6:30")
    for text in p.corpus():
        lines = text.split("\n")[:-1]
        table = dict(lines[:5])
        assert sorted(table) == list("abcde") and sorted(table.values()) == list("abcde")  # a permutation
        chain = lines[5]
        assert len(chain) == 7 and all(table[x] == y for x, y in zip(chain, chain[1:]))


def test_scoring_records_are_held_out_and_mask_only_computed_cells():
    a = automata.parse("eca:110:5:4:20")  # 32 possible first rows, up to 20 of them in training
    train = set(a.training_first_rows())
    recs = a.scoring_records(8, seed=1)
    assert len({r[0] for r in recs}) == 8 and not {tuple(map(int, r[0])) for r in recs} & train
    assert recs == a.scoring_records(8, seed=1)
    _, text, depths = recs[0]
    assert len(depths) == 3 and all(len(d) == 5 for d in depths)
    assert "".join(text[i] for i in depths[0]) == text.split("\n")[1]
    with pytest.raises(DataError, match="data.corpus.*wider automaton"):
        a.scoring_records(32 - len(train) + 1)
    p = pointer.parse("pointer:4:3:10")
    (pid, ptext, pdepths), = p.scoring_records(1)
    chain = ptext.split("\n")[4]
    assert [ptext[d[0]] for d in pdepths] == list(chain[1:]) and pid.startswith(chain)


@pytest.mark.parametrize("spec, words", [
    ("eca:300:16:8", "rule 300"), ("eca:30:2:8", "width 2"), ("eca:30:16:1", "rows 1"),
    ("eca:30:16:8:0", "N 0"), ("eca:30:16:8:100:mirror", "'mirror' is not a boundary"), ("eca:30:16", "want eca:RULE"),
    ("eca:x:16:8", "integers"), ("eca:30:16:8:fixed:100", "'100' is not"), ("eca:30:16:8:fixed:fixed", "given once"), ("pointer:27:4", "nodes 27"),
    ("pointer:8:0", "hops 0"), ("pointer:8", "want pointer:NODES"), ("pointer:8:4:0", "N 0"),
])
def test_bad_parameters_are_one_line_errors_naming_the_field(spec, words):
    with pytest.raises(DataError) as exc:
        corpora.resolve_corpus(spec)
    msg = str(exc.value)
    assert msg.startswith("data.corpus: ") and words in msg and "\n" not in msg


def test_the_columns_layout_writes_each_cell_history_on_its_own_line():
    rows_ = automata.parse("eca:54:6:4:5:fixed")
    cols = automata.parse("eca:54:6:4:5:fixed:columns")
    assert cols.spec == "eca:54:6:4:5:fixed:columns" and rows_.spec == "eca:54:6:4:5:fixed"  # rows: spec unchanged
    assert automata.parse("eca:54:6:4:5:columns:fixed") == cols
    assert cols.record_len == 6 * 5 + 1 and rows_.record_len == 4 * 7 + 1
    assert cols.nll_floor == pytest.approx(6 * math.log(2) / 31)
    for first in itertools.islice(cols.training_first_rows(), 5):
        hist = cols.history(first)
        text = cols.text(first)
        assert text.split("\n")[:-1] == ["".join(str(hist[k][i]) for k in range(4)) for i in range(6)]
        assert all(text[cols.position(k, i)] == str(hist[k][i]) for k in range(4) for i in range(6))
    _, text, depths = cols.scoring_records(1)[0]
    assert [len(d) for d in depths] == [6, 6, 6] and all(text[p] in "01" for d in depths for p in d)
    assert {p % 5 for p in depths[1]} == {2}  # row 2 is the third character of every line
