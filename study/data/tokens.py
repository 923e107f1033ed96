"""Token shards on disk and deterministic batches.

The path is one-way: a corpus spec yields documents → a tokenizer turns them into ids → `prepare_tokens`
packs them (eos between documents) into two memory-mapped files, once per (corpus, tokenizer, split) →
`get_batch` / `eval_batches` cut windows out of those files as a pure function of (seed, step, rank).
Nothing here keeps state between calls except the on-disk cache, so a resumed or requeued run sees exactly
the batches an uninterrupted run would have seen.

Every failure a user can cause raises `DataError`, whose message starts with the config field to change
(`data.corpus`, `data.tokenizer`, `eval.n_seqs`, ...) and says what to pass instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:  # annotations only: torch loads inside the functions that build tensors
    import torch

try:  # POSIX only; elsewhere the rename protocol alone keeps the cache consistent
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

import records

from .corpora import CorpusSource, check_hub_reachable, get_corpus_texts, given_positions, resolve_corpus
from .hub import offline_requested
from .tokenizers import ByteTokenizer, DataError, Tokenizer, get_tokenizer, token_dtype

FORMAT_VERSION = 1  # bump when the on-disk layout or the packing rule changes: it is part of the cache key
_LOCKING = True  # tests switch the lock off to check that the temp-dir + rename protocol is safe on its own


@dataclass
class TokenData:
    """Packed token ids of a corpus: `train` and `val` are read-only memmaps (plain arrays when empty)."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    meta: dict
    path: Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("LOOPMDM_CACHE") or Path.home() / ".cache" / "loopmdm")


def prepare_tokens(
    corpus: str,
    tokenizer: str,
    cache_dir: Path | str | None = None,
    val_fraction: float = 0.05,
    val_tokens: int | None = None,
    max_tokens: int | None = None,
    val_split: str | None = None,
    workers: int = 1,
) -> TokenData:
    """Tokenise a corpus once into `cache_dir/tokens/<key>/{train.bin,val.bin,meta.json}` and map it.

    Held-out rule: document i (counting non-empty documents in corpus order) is validation when
    i % k == k − 1 with k = round(1 / val_fraction). Why every k-th document rather than the last fraction:
    it works in one pass over a stream whose length is unknown (hub corpora), no document straddles the
    split, and sorted corpora (the plays by title) do not put one kind of text only in validation. With
    `val_tokens`, the same documents fill validation until it holds exactly that many tokens; the rest go
    to train. A corpus of fewer than k documents (one big .txt) instead holds out its last tokens. With
    `val_split` (a hub dataset's own split, e.g. LM1B's `test`), training is the whole train split and
    validation that split (`val_tokens` still caps it).

    Safe when several runs start at once: one process tokenises under a file lock into a temp directory
    that is renamed into place; meta.json is written last, and only a directory holding it is trusted.
    Resumable and parallel: documents are tokenised in chunks (in `workers` processes) that are kept in
    `tokens/<key>.partial/` until the build completes, so an interrupted build redoes only missing chunks
    (`python -m study.data prepare` runs this ahead of a sweep). Neither changes the result or the key.
    """
    if not 0 <= val_fraction < 1:
        raise DataError("data.val_fraction", f"got {val_fraction}; must be in [0, 1)")
    if val_tokens is not None and val_tokens < 0:
        raise DataError("data.val_tokens", f"got {val_tokens}; must be >= 0")
    if max_tokens is not None and max_tokens < 1:
        raise DataError("data.max_tokens", f"got {max_tokens}; must be >= 1 or null")
    source = resolve_corpus(corpus)
    tok = get_tokenizer(tokenizer)
    params = {
        "format_version": FORMAT_VERSION,
        "corpus": source.spec,
        "corpus_fingerprint": source.fingerprint,
        "tokenizer": str(tokenizer),
        "tokenizer_fingerprint": getattr(tok, "fingerprint", tok.name),
        "val_fraction": float(val_fraction),
        "val_tokens": val_tokens,
        "max_tokens": max_tokens,
    }
    if val_split is not None:  # only when set: existing caches keep their keys
        params["val_split"] = str(val_split)
    if workers < 1:
        raise DataError("workers", f"got {workers}; must be >= 1")
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tokens_dir = root / "tokens"
    final = tokens_dir / key
    if not (final / "meta.json").is_file():
        _check_can_build(source, tokens_dir)
        tokens_dir.mkdir(parents=True, exist_ok=True)
        with _locked(tokens_dir / f"{key}.lock"):
            if not (final / "meta.json").is_file():
                _build(final, source, tok, params, key, workers)
    return _load(final, tok)


def _check_can_build(source: CorpusSource, tokens_dir: Path) -> None:
    """What a build needs that can be checked before the cache is touched: a writable cache, a reachable hub."""
    why = records.unwritable(tokens_dir, "dir")
    if why is not None:
        raise DataError("data.cache_dir", f"the token cache {tokens_dir.parent} cannot be written ({why}); set "
                                          f"data.cache_dir (or $LOOPMDM_CACHE) to a writable directory, or prepare "
                                          f"these tokens where it is writable (python -m study.data prepare)")
    if source.kind == "hub" and not offline_requested():
        check_hub_reachable(source.name, source.config)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Let one process tokenise while the others wait (flock may be a no-op on some network filesystems;
    correctness then rests on the rename, this only saves duplicated work)."""
    if fcntl is None or not _LOCKING:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(final: Path, source: CorpusSource, tok: Tokenizer, params: dict, key: str, workers: int = 1) -> None:
    if final.exists():  # a directory without meta.json is the wreck of a crash mid-copy, never a result
        shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
    partial = final.parent / f"{key}.partial"
    try:
        started = time.perf_counter()
        split = params.get("val_split")
        meta = _tokenize_into(tmp, get_corpus_texts(source.spec, split="train" if split else None), tok, params,
                              work=partial, workers=workers,
                              val_docs=get_corpus_texts(source.spec, split=split) if split else None)
        meta.update(params, key=key, corpus_kind=source.kind, tokenizer_name=tok.name, vocab_size=tok.vocab_size,
                    mask_id=tok.mask_id, eos_id=tok.eos_id, seconds=round(time.perf_counter() - started, 3),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _write_json_synced(tmp / "meta.json", meta)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            # another process finished first; its data is identical by construction, use it
        shutil.rmtree(partial, ignore_errors=True)  # only once complete: until then its chunks are the resume point
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json_synced(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _tokenize_into(out: Path, docs: Iterable[str], tok: Tokenizer, params: dict, work: Path | None = None,
                   workers: int = 1, val_docs: Iterable[str] | None = None) -> dict:
    """Stream documents → ids → train.bin / val.bin, memory bounded by a few chunks of documents. Chunks are
    tokenised by `_chunk_ids` (resumable, parallel) and packed here in corpus order, so the result is the
    same whatever the workers and however often the build was interrupted. `val_docs`: a held-out split of
    the corpus's own (all of `docs` then trains)."""
    dtype = token_dtype(tok.vocab_size)
    fraction, val_cap, max_tokens = params["val_fraction"], params["val_tokens"], params["max_tokens"]
    every = max(1, round(1 / fraction)) if fraction > 0 and val_docs is None else 0
    counts = {"train": 0, "val": 0}
    n_docs = {"train": 0, "val": 0}
    source_hash = hashlib.sha256()
    scratch = work is None  # no resume folder given: chunks live inside `out` only while packing
    work = out / "chunks" if scratch else work
    streams = [("train" if val_docs is not None else None, docs)] + ([("val", val_docs)] if val_docs is not None else [])
    with open(out / "train.bin", "wb") as f_train, open(out / "val.bin", "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        index = 0
        for fixed, stream in streams:
            full = False
            for ids_per_doc, text_sha in _chunk_ids(_batches(stream), params["tokenizer"], work / (fixed or "all"),
                                                    workers):
                source_hash.update(text_sha.encode())
                for ids in ids_per_doc:
                    ids = np.concatenate([ids.astype(dtype, copy=False), np.array([tok.eos_id], dtype)])
                    split = fixed or ("val" if every and index % every == every - 1 else "train")
                    if split == "val" and val_cap is not None:
                        room = val_cap - counts["val"]
                        if room <= 0:
                            if fixed:  # the held-out split is full: the rest of it is not read
                                full = True
                                break
                            split = "train"
                        else:
                            ids = ids[:room]
                    if max_tokens is not None:
                        ids = ids[: max_tokens - counts["train"] - counts["val"]]
                    ids.tofile(files[split])
                    counts[split] += len(ids)
                    n_docs[split] += 1
                    index += 1
                    if max_tokens is not None and counts["train"] + counts["val"] >= max_tokens:
                        full = True
                        break
                if full:
                    break
    if scratch:
        shutil.rmtree(work, ignore_errors=True)
    rule = "own_split" if val_docs is not None else "every_kth_document"
    if counts["val"] == 0 and every and val_cap != 0 and counts["train"] > 1:
        moved = val_cap if val_cap is not None else max(1, round(fraction * counts["train"]))
        _move_tail(out, dtype, counts["train"], min(moved, counts["train"] - 1))
        counts["val"] = min(moved, counts["train"] - 1)
        counts["train"] -= counts["val"]
        rule = "tail_tokens"
    if counts["train"] == 0:
        raise DataError("data.corpus", f"{params['corpus']} yielded no training tokens; check the corpus "
                                       "(and data.max_tokens / data.val_fraction)")
    if val_docs is not None and counts["val"] == 0:
        raise DataError("data.val_split", f"split {params['val_split']!r} of {params['corpus']} yielded no tokens; "
                                          f"name a split the dataset has (e.g. test, validation) or unset it")
    return {"n_train": counts["train"], "n_val": counts["val"], "n_docs_train": n_docs["train"],
            "n_docs_val": n_docs["val"], "split_rule": rule, "val_every": every, "dtype": dtype.name,
            "source_sha256": source_hash.hexdigest()}


def _chunk_ids(batches: Iterable[list[str]], tokenizer: str, work: Path, workers: int) -> Iterator[tuple[list[np.ndarray], str]]:
    """(ids per document, SHA-256 of the chunk's texts) for each chunk of documents, in corpus order. A chunk
    an earlier, interrupted build finished is read back from `work/`; the others are tokenised — in a pool
    of `workers` processes when > 1, in order, at most 4 x workers chunks ahead — and written there atomically."""
    work.mkdir(parents=True, exist_ok=True)
    tasks = ((str(work / f"chunk-{i:06d}.npz"), tokenizer, batch) for i, batch in enumerate(batches))
    if workers == 1:
        yield from map(_chunk_job, tasks)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        while window := list(itertools.islice(tasks, 4 * workers)):  # bounded: imap alone reads the corpus ahead
            yield from pool.imap(_chunk_job, window)


def _chunk_job(task: tuple[str, str, list[str]]) -> tuple[list[np.ndarray], str]:
    """One chunk: read it back if an earlier build wrote it, else tokenise and write it (temp + rename)."""
    path, tokenizer, batch = task
    text_sha = hashlib.sha256(b"".join(t.encode("utf-8", errors="replace") + b"\0" for t in batch)).hexdigest()
    path = Path(path)
    if path.is_file():
        with np.load(path) as z:
            if str(z["sha"]) == text_sha:  # the same documents as last time (else the corpus changed: redo)
                return np.split(z["ids"], np.cumsum(z["lengths"])[:-1]), text_sha
    ids = _encode_docs(get_tokenizer(tokenizer), batch)
    lengths = np.array([len(a) for a in ids], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)  # a racing build that finished first removes the folder
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=np.concatenate(ids) if ids else np.zeros(0, np.int64), lengths=lengths, sha=np.array(text_sha))
    os.replace(tmp, path)
    return ids, text_sha


def _move_tail(out: Path, dtype: np.dtype, n_train: int, n_val: int) -> None:
    """Too few documents for a document-level split: the last tokens become validation (nanoGPT's rule)."""
    train = np.memmap(out / "train.bin", dtype=dtype, mode="r", shape=(n_train,))
    train[n_train - n_val:].tofile(out / "val.bin")
    del train  # unmap before truncating the file under it
    with open(out / "train.bin", "r+b") as f:
        f.truncate((n_train - n_val) * dtype.itemsize)


CHUNK_CHARS = 4_000_000  # characters of text per chunk: the unit of batch encoding, parallelism and resumption


def _batches(docs: Iterable[str], max_chars: int | None = None) -> Iterator[list[str]]:
    """Group non-empty documents into chunks: batch encoding, one chunk per worker, and the unit a build
    resumes from — without holding the corpus in memory."""
    max_chars = max_chars or CHUNK_CHARS
    batch: list[str] = []
    size = 0
    for doc in docs:
        if not doc or doc.isspace():
            continue
        batch.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")  # a newline between non-spaces: BPE pre-tokenizers split here anyway


def _encode_docs(tok: Tokenizer, docs: list[str], piece: int = 1 << 16) -> list[np.ndarray]:
    """Ids per document. Long documents are cut at newlines into pieces encoded in one parallel batch —
    identical ids for GPT-2 BPE (checked on the plays), bounded memory for a multi-GB single file."""
    if isinstance(tok, ByteTokenizer):
        return [tok.encode_array(d) for d in docs]
    pieces: list[str] = []
    owners: list[int] = []
    for i, doc in enumerate(docs):
        start = 0
        while start < len(doc):
            end = len(doc)
            if end - start > piece:
                cut = _SAFE_CUT.search(doc, start + piece)
                end = cut.start() if cut else len(doc)
            pieces.append(doc[start:end])
            owners.append(i)
            start = end
    encode_batch = getattr(tok, "encode_batch", None)
    encoded = encode_batch(pieces) if encode_batch else [tok.encode(p) for p in pieces]
    per_doc: list[list[np.ndarray]] = [[] for _ in docs]
    for owner, ids in zip(owners, encoded):
        per_doc[owner].append(np.asarray(ids, dtype=np.int64))
    return [np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in per_doc]


def _load(folder: Path, tok: Tokenizer) -> TokenData:
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for split in ("train", "val"):
        n = int(meta[f"n_{split}"])
        path = folder / f"{split}.bin"
        if path.stat().st_size != n * dtype.itemsize:
            raise DataError("data.cache_dir", f"{path} has the wrong size for {n} tokens; delete {folder} "
                                              "and rerun to rebuild it")
        arrays[split] = np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    return TokenData(train=arrays["train"], val=arrays["val"], tokenizer=tok, meta=meta, path=folder)


# ==========================================================================================================
# Batches


def get_batch(tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, step: int,
              rank: int = 0, align: bool = False) -> torch.Tensor:
    """`batch_size` random windows of `seq_len` tokens, a pure function of (seed, step, rank): a run resumed
    at step k draws exactly what an uninterrupted run drew at step k, and ranks draw different windows.
    ``align``: windows start at multiples of seq_len, so fixed-length records (documents of seq_len tokens,
    eos included) are never cut."""
    import torch  # late: planning a sweep resolves tokenizers without loading torch
    n = len(tokens)
    if n < seq_len:
        raise DataError("data.seq_len", f"{seq_len} is longer than the {n} training tokens available; lower "
                                        "data.seq_len or use a bigger corpus / data.max_tokens")
    rng = np.random.default_rng([seed, step, rank])
    if align:
        starts = rng.integers(0, n // seq_len, size=batch_size) * seq_len
    else:
        starts = rng.integers(0, n - seq_len + 1, size=batch_size)
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len)], dtype=np.int64)
    return torch.from_numpy(windows)


def given_mask(data) -> torch.Tensor | None:
    """(seq_len,) bool: the positions ``data.given`` never masks (`corpora.given_positions`), or None when it
    is off. One mask for every record: the corpora that have a given part are aligned fixed-length records."""
    if not data.given:
        return None
    import torch  # late, as above
    keep = torch.zeros(data.seq_len, dtype=torch.bool)
    keep[given_positions(data.corpus)] = True
    return keep


def eval_batches(tokens: np.ndarray, n_seqs: int, seq_len: int, align: bool = False) -> torch.Tensor:
    """`n_seqs` non-overlapping windows spread evenly over the validation split: every evaluation of every
    run scores the same tokens, and spreading them covers the whole held-out text, not just its start."""
    import torch  # late: planning a sweep resolves tokenizers without loading torch
    n = len(tokens)
    if n_seqs < 1:
        raise DataError("eval.n_seqs", f"got {n_seqs}; must be >= 1")
    if n < n_seqs * seq_len:
        raise DataError("eval.n_seqs", f"{n_seqs} sequences of {seq_len} tokens need {n_seqs * seq_len} "
                                       f"validation tokens but only {n} are available; lower eval.n_seqs to "
                                       f"{n // seq_len} or hold out more (data.val_fraction)")
    stride = n // n_seqs
    if align:  # record boundaries: every window one whole record
        stride = max(seq_len, stride - stride % seq_len)
    starts = np.arange(n_seqs) * stride
    return torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(seq_len)], dtype=np.int64))


# ==========================================================================================================