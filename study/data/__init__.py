"""Data for the study: tokenisers, corpora, token shards on disk, deterministic batches, question/answer sets.

    tokenizers   'byte', GPT-2 BPE from local files, tokenizer.json, hub names
    corpora      corpus specs -> documents (shakespeare, gsm8k-synth, files, hf:NAME)
    tokens       packing documents into memory-mapped shards once; batches as pure functions of (seed, step)
    qa           question/answer sets for fine-tuning
    hub          can the Hugging Face hub be used from here (asked once per process)
    gsm8k_synth  the GSM8K-format problem generator
"""

from .corpora import CORPUS_ALIASES, CORPUS_FORMS, SHAKESPEARE_INSTALL, CorpusSource, get_corpus_texts, resolve_corpus, strip_gutenberg
from .qa import QAData, format_answer, format_prompt, get_qa_batch, load_qa_rows, prepare_qa
from .tokenizers import (TOKENIZER_FORMS, ByteTokenizer, DataError, HFTokenizer, Tokenizer, get_tokenizer,
                         token_dtype)
from .tokens import TokenData, default_cache_dir, eval_batches, get_batch, given_mask, prepare_tokens

__all__ = [n for n in dir() if not n.startswith("_")]
