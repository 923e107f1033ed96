"""Question/answer sets for fine-tuning: prompts in the GSM8K format, the question never masked."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: torch loads inside the functions that build tensors
    import torch

from . import gsm8k_synth
from .corpora import _hub_rows, _read_jsonl, resolve_corpus
from .tokenizers import DataError, Tokenizer, get_tokenizer


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
