"""lm-eval tasks that run offline: GSM8K from a local jsonl, generated GSM8K-format problems, and a small
multiple-choice task built from them.

Task specs (``study.eval --tasks``):

* ``gsm8k-local`` — lm-eval's own ``gsm8k`` configuration (prompt, ``until`` strings, the strict
  ``#### N`` and flexible-extract filters, exact_match settings) with only the data source switched to
  local files: ``$LOOPMDM_GSM8K_DIR`` or ``--gsm8k-dir`` holding ``test.jsonl`` (and ``train.jsonl`` for
  few-shot examples). Zero-shot by default: the claim under test is about fine-tuned models.
* ``gsm8k-synth[:DIFFICULTY[:N]]`` — the same configuration on N problems of ``study.gsm8k_synth``'s test
  split (hash-disjoint from what ``data.corpus=gsm8k-synth`` trains on); defaults mixed, 500.
* ``gsm8k-synth-mc[:DIFFICULTY[:N]]`` — multiple choice (``gsm8k_synth_mc.yaml``), loglikelihood-based.
* anything else — an lm-eval task name, used as is (hub tasks on machines that reach the hub).

The tasks themselves are packaged YAMLs (``lm_eval_tasks/``: lm-eval's gsm8k configuration with datasets
built offline by ``lm_eval_tasks/loaders.py``), usable by lm-eval's own CLI with ``--include_path``. A spec
with options becomes a named variant — a YAML that includes the packaged one by absolute path and sets its
``metadata`` (difficulty, n, data folder) — written into a content-addressed folder of the cache (same
content, same folder: concurrent jobs write identical files).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import records
from study.evaluate.request import EvalError

HERE = Path(__file__).resolve().parent
#: the packaged task YAMLs: lm-eval's own CLI reads them with ``--include_path`` (see docs/INTERFACES.md)
PACKAGED = HERE / "lm_eval_tasks"
SYNTH_DEFAULTS = ("mixed", 500)
FEWSHOT_POOL = 64  # generated train-split problems offered to lm-eval as few-shot examples
GSM8K_METRIC = "exact_match,strict-match"
MC_METRIC = "acc,none"
ENV_GSM8K_DIR = "LOOPMDM_GSM8K_DIR"


@dataclass
class TaskSpec:
    """One requested task: ``name`` is what lm-eval knows it by (and what results are filed under)."""

    spec: str
    name: str
    kind: str  # gsm8k-local | gsm8k-synth | gsm8k-synth-mc | lm-eval
    primary_metric: str | None  # 'metric,filter' key of lm-eval's results; None = first reported
    difficulty: str | None = None
    n: int | None = None
    fingerprint: dict = field(default_factory=dict)  # what the data was: enters the eval hash
    yaml_text: str | None = None  # for local tasks, the YAML written at run time

    @property
    def local(self) -> bool:
        return self.kind != "lm-eval"


def parse(spec: str) -> TaskSpec:
    """Canonical name and kind of a task spec (no I/O): equal settings get equal names however spelled."""
    spec = str(spec).strip()
    if not spec:
        raise EvalError("tasks", "empty task name")
    head, _, rest = spec.partition(":")
    if head == "gsm8k-local":
        if rest:
            raise EvalError("tasks", f"{spec!r}: gsm8k-local takes no options (point --gsm8k-dir at the data)")
        return TaskSpec(spec, "gsm8k-local", "gsm8k-local", GSM8K_METRIC)
    if head in ("gsm8k-synth", "gsm8k-synth-mc"):
        from study.data import gsm8k_synth

        parts = rest.split(":") if rest else []
        difficulty = parts[0] if parts and parts[0] else SYNTH_DEFAULTS[0]
        try:
            gsm8k_synth.step_range(difficulty)
            n = int(parts[1]) if len(parts) > 1 else SYNTH_DEFAULTS[1]
            if n < 1 or len(parts) > 2:
                raise ValueError("N must be >= 1")
        except ValueError as exc:
            raise EvalError("tasks", f"bad {spec!r}: want {head}[:DIFFICULTY[:N]], DIFFICULTY 1..5 or "
                                     f"tiny/easy/medium/hard/mixed, N an integer >= 1 ({exc})") from None
        name = head if (difficulty, n) == SYNTH_DEFAULTS else f"{head}-{difficulty}-{n}"
        metric = MC_METRIC if head.endswith("-mc") else GSM8K_METRIC
        return TaskSpec(spec, name, head, metric, difficulty=str(difficulty), n=n)
    if not re.fullmatch(r"[\w.\-]+", spec):
        raise EvalError("tasks", f"{spec!r} is not a task name (letters, digits, _ . - only)")
    return TaskSpec(spec, spec, "lm-eval", None)


# ------------------------------------------------------------------------------------------ data
def default_gsm8k_dir() -> Path | None:
    """$LOOPMDM_GSM8K_DIR, else the shared copy beside this checkout (../shared/data/gsm8k), if present."""
    env = os.environ.get(ENV_GSM8K_DIR)
    if env:
        return Path(env).expanduser()
    shared = HERE.parents[2] / "shared" / "data" / "gsm8k"
    return shared if (shared / "test.jsonl").is_file() else None


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def mc_rows(problems: list[dict], seed: int = 0) -> list[dict]:
    """Multiple-choice docs from GSM8K-format problems: context = prompt + worked solution up to '####';
    choices = the answer and 3 numbers with as many digits that occur nowhere in the problem or its working,
    drawn per question from a seeded RNG, in a seeded order.

    Why such distractors: the task must separate a model that learned anything about its answers from
    chance within a minute of CPU training (tests), and a same-length number drawn at random is usually of
    the wrong size for the problem. A model that reads its own working scores ~100 %; chance is 25 %."""
    from study.data import format_answer, format_prompt

    out = []
    for p in problems:
        working, _, final = p["answer"].rpartition("####")
        gold = final.strip()
        rng = random.Random(f"{seed}:{p['question']}")
        seen = set(re.findall(r"\d+", p["question"] + " " + working)) | {gold}
        digits = len(gold.lstrip("-"))
        lo, hi = (0, 9) if digits <= 1 else (10 ** (digits - 1), 10 ** digits - 1)
        pool = [str(v) for v in range(lo, hi + 1) if str(v) not in seen]
        if len(pool) < 3:  # one-digit answers in problems that use most digits: widen to two digits
            pool += [str(v) for v in range(10, 100) if str(v) not in seen]
        choices = [gold] + rng.sample(pool, 3)
        rng.shuffle(choices)
        context = format_prompt(p["question"]) + format_answer(working.rstrip()) + "\n####"
        out.append({"question": p["question"], "context": context, "choices": [f" {c}" for c in choices],
                    "label": choices.index(gold)})
    return out


def _variant_yaml(base: str, name: str, metadata: dict, num_fewshot: int) -> str:
    """A named variant of a packaged task (``PACKAGED/base``), included by absolute path: one definition of
    prompt, filters and metrics, shared with lm-eval's own CLI (``--include_path PACKAGED``)."""
    packaged = yaml.load((PACKAGED / base).read_text(), Loader=_IgnoreTags)
    doc = {"include": str(PACKAGED / base), "task": name, "num_fewshot": num_fewshot,
           "metadata": {**(packaged.get("metadata") or {}), **metadata}}
    return yaml.safe_dump(doc, sort_keys=False)


class _IgnoreTags(yaml.SafeLoader):
    """Reads a packaged YAML's plain fields; lm-eval resolves its ``!function`` tags itself."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


def _materialize(ts: TaskSpec, gsm8k_dir: Path | None, num_fewshot: int) -> None:
    from study.data import gsm8k_synth

    if ts.kind == "gsm8k-local":
        folder = Path(gsm8k_dir).expanduser().resolve() if gsm8k_dir else None
        if folder is None or not (folder / "test.jsonl").is_file():
            where = f"{folder}/test.jsonl does not exist" if folder else "no GSM8K directory given"
            raise EvalError("gsm8k_dir", f"{where}; pass --gsm8k-dir DIR (test.jsonl, train.jsonl from "
                                         f"openai/gsm8k) or set ${ENV_GSM8K_DIR}; on a machine with the hub "
                                         f"use the task 'gsm8k' instead")
        train = folder / "train.jsonl" if (folder / "train.jsonl").is_file() else None
        if num_fewshot and train is None:
            raise EvalError("num_fewshot", f"{num_fewshot}-shot needs {folder}/train.jsonl (few-shot examples "
                                           f"must not come from the test set); use --num-fewshot 0")
        ts.fingerprint = {"test_sha": _sha_file(folder / "test.jsonl"),
                          "train_sha": _sha_file(train) if train else None}
        ts.yaml_text = _variant_yaml("gsm8k_local.yaml", ts.name, {"gsm8k_dir": str(folder)}, num_fewshot)
        return
    ts.fingerprint = {"generator_version": gsm8k_synth.GENERATOR_VERSION, "difficulty": ts.difficulty, "n": ts.n,
                      "seed": 0}
    if ts.kind == "gsm8k-synth-mc" and num_fewshot:
        raise EvalError("num_fewshot", f"{ts.name} is zero-shot only (its context already holds a worked "
                                       f"solution); use --num-fewshot 0")
    base = "gsm8k_synth.yaml" if ts.kind == "gsm8k-synth" else "gsm8k_synth_mc.yaml"
    ts.yaml_text = _variant_yaml(base, ts.name, {"difficulty": ts.difficulty, "n": ts.n}, num_fewshot)


def prepare(specs: list[str], cache_dir: str | Path, gsm8k_dir: str | Path | None = None,
            num_fewshot: int = 0) -> tuple[list[TaskSpec], Path | None]:
    """Resolve task specs, write the data and YAMLs of the local ones; returns (tasks, include_path).

    ``include_path`` is a folder holding only the requested local tasks' YAMLs (None when there are none):
    a TaskManager over it alone loads in milliseconds instead of indexing lm-eval's ~10,000 YAMLs."""
    tasks = [parse(s) for s in specs]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise EvalError("tasks", f"a task is listed twice: {names}")
    root = Path(cache_dir).expanduser().resolve() / "lm_eval_tasks"
    gsm8k_dir = gsm8k_dir if gsm8k_dir is not None else default_gsm8k_dir()
    local = [t for t in tasks if t.local]
    for t in local:
        _materialize(t, gsm8k_dir, num_fewshot)
    if not local:
        return tasks, None
    key = hashlib.sha256("".join(t.yaml_text for t in local).encode()).hexdigest()[:16]
    include = root / f"yaml-{key}"
    for t in local:
        path = include / f"{t.name}.yaml"
        if not path.is_file():
            why = records.unwritable(path, "file")
            if why is not None:
                raise EvalError("cache_dir", f"cannot write the task files into {root}: {why}; pass --cache-dir "
                                             f"(or set $LOOPMDM_CACHE) to a writable directory")
            records.atomic_write_text(path, t.yaml_text)
    return tasks, include


def check_exist(tasks: list[TaskSpec], task_manager) -> None:
    """Fail before loading any model when lm-eval does not know a task, with the nearest names."""
    import difflib

    known = set(task_manager.all_tasks)
    for t in tasks:
        if t.name not in known:
            close = difflib.get_close_matches(t.name, sorted(known) + ["gsm8k-local", "gsm8k-synth",
                                                                       "gsm8k-synth-mc"], n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise EvalError("tasks", f"task {t.spec!r} does not exist.{hint} Local tasks: gsm8k-local, "
                                     f"gsm8k-synth[:DIFFICULTY[:N]], gsm8k-synth-mc[:DIFFICULTY[:N]]; "
                                     f"lm-eval's own: `lm-eval ls tasks`")
