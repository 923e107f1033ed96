"""RunConfig: everything that defines one training run, resolved, validated and hashed.

A run's identity is a hash of its *fully resolved semantic* config (sorted keys, canonical numbers) — never
of its difference from defaults, so changing a default later cannot silently re-label old runs (dora's trap).
Keys that do not change what is computed (logging cadence, checkpoint cadence, ZeRO stage, paths, eval batch
size) are listed in ``NON_SEMANTIC`` and left out of the hash.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from model import flops
from model.config import ConfigError, ModelConfig, field_names, reject_unknown_keys

SCHEDULES = ("constant", "cosine", "wsd")
KINDS = ("pretrain", "sft")
PRECISIONS = ("fp32", "bf16")
NON_SEMANTIC = ("system", "data.cache_dir", "eval.batch_size", "meta")
#: fields added after runs existed: left out of the hash while at their default, so a config that does not
#: use them keeps the identity (and the run directory) it had before they were added
HASHED_ONLY_IF_SET = {"model.loop_input": "none", "model.loop_embed": False, "model.loop_norm": False,
                      "model.pad_vocab": 1, "model.grid_box": None, "data.align": False, "data.val_split": None,
                      "data.given": False}


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "shakespeare"
    tokenizer: str = "byte"
    seq_len: int = 128
    val_fraction: float = 0.05
    max_tokens: int | None = None  # cap on tokens read from the corpus (hub corpora are streamed)
    cache_dir: str | None = None  # where token shards live; None -> $LOOPMDM_CACHE or ~/.cache/loopmdm
    align: bool = False  # windows start at multiples of seq_len: fixed-length records (a Sudoku grid + eos)
    val_split: str | None = None  # the corpus's own held-out split (hub: `test` for LM1B); None: every k-th document
    # an iterated corpus's given part (automaton row 0, pointer table) is never masked, in training and in every
    # NLL: the model learns p(rest | given), what the per-depth scorer asks (`study.data.corpora.given_positions`)
    given: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3
    warmup_steps: int = 100
    schedule: str = "constant"  # constant after warmup (MDLM), cosine, or warmup-stable-decay
    min_lr_ratio: float = 0.1  # cosine / wsd end at lr * min_lr_ratio, exactly at the run's last step
    decay_fraction: float = 0.2  # wsd: the share of steps spent decaying
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    grad_clip: float = 1.0
    ema: float = 0.0  # 0 = off; else EMA decay of the weights used for evaluation


@dataclass(frozen=True)
class BatchConfig:
    global_batch: int = 32  # sequences per optimizer step, over all ranks
    micro_batch: int | None = None  # sequences per rank per forward; None -> global_batch / world size


@dataclass(frozen=True)
class BudgetConfig:
    """Exactly one of flops / tokens / steps; the others are derived (and recorded in the run)."""

    flops: float | None = None
    convention: str = "exact"  # which FLOPs convention ``flops`` is counted in
    tokens: int | None = None
    steps: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    points: int = 6  # validation points along training, spaced geometrically, the last at the final step
    loops: tuple[int, ...] = ()  # inference S to evaluate at; () -> (1, s_max) for looped models, (1,) otherwise
    exit_thresholds: tuple[float, ...] = ()  # adaptive exit (capped at s_max) evaluated at the final step
    n_seqs: int = 32  # fixed validation sequences
    n_draws: int = 4  # Monte-Carlo noise draws per sequence
    seed: int = 1234
    batch_size: int = 16


@dataclass(frozen=True)
class SystemConfig:
    """How to run, not what: none of this enters the run hash."""

    zero_stage: int = 0
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10
    ckpt_every: int = 100  # steps; a checkpoint is also written at the end and on preemption
    keep_last: int = 2
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    compile: bool = False
    tf32: bool = True  # CUDA fp32 runs: TF32 matmuls (recorded in the run's system.json); off = strict fp32
    tensorboard: bool = False  # also log metrics and evals as TensorBoard events in <run>/tb (needs `tensorboard`)
    wandb: bool = False  # also log them to Weights & Biases (needs `wandb`; WANDB_PROJECT, WANDB_MODE=offline, ...)


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    budget: BudgetConfig = field(default_factory=lambda: BudgetConfig(steps=100))
    eval: EvalConfig = field(default_factory=EvalConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (semantic: it changes the numbers)
    kind: str = "pretrain"  # pretrain | sft (fine-tune from ``init_from`` on question/answer data)
    init_from: str | None = None  # a run directory whose final weights start this run
    meta: dict = field(default_factory=dict)  # study, slug, groups, axes: labels, not identity

    # -- derived quantities ------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.batch.global_batch * self.data.seq_len

    def flops_per_step(self, convention: str | None = None) -> float:
        """Expected training FLOPs per optimizer step under the training distribution of S."""
        conv = convention or self.budget.convention
        return self.tokens_per_step * flops.expected_train_flops_per_token(self.model, self.data.seq_len, conv)

    @functools.cached_property
    def steps(self) -> int:
        b = self.budget
        if b.steps is not None:
            return b.steps
        if b.tokens is not None:
            return b.tokens // self.tokens_per_step
        return int(b.flops // self.flops_per_step())

    @property
    def eval_loops(self) -> tuple[int, ...]:
        if self.eval.loops:
            return tuple(self.eval.loops)
        return (1, self.model.s_max) if self.model.is_looped else (1,)

    def eval_steps(self) -> list[int]:
        """Geometric spacing: the paper's protocol reads 'FLOPs to reach a loss' off the curve, which needs
        resolution early, where the loss moves fastest, as well as at the end."""
        n, s = self.eval.points, self.steps
        if n <= 1:
            return [s]
        pts = {max(1, int(round(s ** (i / (n - 1))))) for i in range(n)} if s > 1 else {s}
        pts = sorted(p for p in pts if p <= s)
        return pts if pts[-1] == s else pts + [s]

    def lr_at(self, step: int) -> float:
        """LR for 0-based ``step``; decays reach ``lr * min_lr_ratio`` exactly at the last step."""
        o, total = self.optim, self.steps
        warm = min(o.warmup_steps, max(total - 1, 0))
        if step < warm:
            return o.lr * (step + 1) / warm
        if o.schedule == "constant":
            return o.lr
        lo = o.lr * o.min_lr_ratio
        if o.schedule == "cosine":
            frac = (step - warm) / max(total - 1 - warm, 1)
            return lo + 0.5 * (o.lr - lo) * (1 + math.cos(math.pi * min(frac, 1.0)))
        decay_start = total - max(1, int(round(o.decay_fraction * total)))
        if step < max(decay_start, warm):
            return o.lr
        frac = (step - decay_start + 1) / max(total - decay_start, 1)
        return o.lr + (lo - o.lr) * min(frac, 1.0)

    # -- validation ---------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        def need(cond: bool, fld: str, msg: str) -> None:
            if not cond:
                raise ConfigError(fld, msg)

        d, o, b, bud, e = self.data, self.optim, self.batch, self.budget, self.eval
        need(d.seq_len >= 2, "data.seq_len", f"got {d.seq_len}; must be >= 2")
        need(not self.system.tensorboard or importlib.util.find_spec("tensorboard") is not None, "system.tensorboard",
             "needs the tensorboard package: pip install tensorboard, or set system.tensorboard=false")
        need(not self.system.wandb or importlib.util.find_spec("wandb") is not None, "system.wandb",
             "needs the wandb package: pip install wandb, or set system.wandb=false")
        need(isinstance(d.align, bool), "data.align", f"got {d.align!r}; must be true or false")
        need(isinstance(d.given, bool), "data.given", f"got {d.given!r}; must be true or false")
        if d.given:
            from study.data.corpora import check_given  # late, as in resolve(): planning needs no generators otherwise
            check_given(d.corpus, d.align, d.seq_len, self.kind)
        need(d.val_split is None or (isinstance(d.val_split, str) and d.val_split.strip() != ""), "data.val_split",
             f"got {d.val_split!r}; a split name of the corpus (e.g. test) or null")
        need(d.seq_len <= self.model.max_seq_len, "data.seq_len",
             f"{d.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}; raise model.max_seq_len or lower data.seq_len")
        need(0 < d.val_fraction < 0.5, "data.val_fraction", f"got {d.val_fraction}; must be in (0, 0.5)")
        for name in ("lr", "min_lr_ratio", "decay_fraction", "weight_decay", "beta1", "beta2", "eps", "grad_clip", "ema"):
            need(math.isfinite(getattr(o, name)), f"optim.{name}", f"got {getattr(o, name)}; must be a finite number")
        need(o.lr > 0, "optim.lr", f"got {o.lr}; must be > 0")
        need(o.schedule in SCHEDULES, "optim.schedule", f"got {o.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        need(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
        need(0 < o.decay_fraction <= 1, "optim.decay_fraction", "must be in (0, 1]")
        need(0 <= o.ema < 1, "optim.ema", "must be in [0, 1); 0 turns EMA off")
        need(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = no clipping)")
        need(b.global_batch >= 1, "batch.global_batch", "must be >= 1")
        if b.micro_batch is not None:
            need(b.micro_batch >= 1 and b.global_batch % b.micro_batch == 0, "batch.micro_batch",
                 f"{b.micro_batch} must be >= 1 and divide batch.global_batch={b.global_batch}")
        given = [k for k in ("flops", "tokens", "steps") if getattr(bud, k) is not None]
        need(len(given) == 1, "budget", f"set exactly one of budget.flops, budget.tokens, budget.steps (got {given or 'none'})")
        need(bud.convention in flops.CONVENTIONS, "budget.convention",
             f"got {bud.convention!r}; allowed: {', '.join(flops.CONVENTIONS)}")
        key = given[0]
        need(getattr(bud, key) > 0, f"budget.{key}", "must be > 0")
        if self.steps < 1:
            one = {"flops": f"{self.flops_per_step():.3g} FLOPs ({bud.convention})",
                   "tokens": f"{self.tokens_per_step} tokens", "steps": "1 step"}[key]
            raise ConfigError(f"budget.{key}", f"{getattr(bud, key):.4g} is too small for one optimizer step, which "
                              f"costs {one}; raise budget.{key} or shrink batch.global_batch / the model")
        need(e.points >= 1, "eval.points", "must be >= 1")
        need(e.n_seqs >= 1, "eval.n_seqs", "must be >= 1")
        need(e.n_draws >= 2, "eval.n_draws", f"got {e.n_draws}; must be >= 2 (the Monte-Carlo standard error "
             "needs two noise draws per sequence)")
        need(all(isinstance(s, int) and s >= 1 for s in e.loops), "eval.loops",
             f"got {list(e.loops)}; every inference loop count must be an integer >= 1")
        need(all(t > 0 for t in e.exit_thresholds), "eval.exit_thresholds", "thresholds must be > 0")
        need(self.precision in PRECISIONS, "precision", f"got {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        need(self.kind in KINDS, "kind", f"got {self.kind!r}; allowed: {', '.join(KINDS)}")
        need(self.kind == "pretrain" or self.init_from is not None, "init_from",
             "an sft run needs init_from: the run directory of the pretrained model")
        need(self.system.zero_stage in (0, 1, 2, 3), "system.zero_stage", "allowed: 0, 1, 2, 3")
        need(self.system.device in ("auto", "cpu", "cuda"), "system.device", "allowed: auto, cpu, cuda")
        need(self.system.ckpt_every >= 1 and self.system.log_every >= 1 and self.system.keep_last >= 1,
             "system", "ckpt_every, log_every and keep_last must be >= 1")
        return self

    # -- (de)serialisation and identity ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists) for YAML/JSON. Sections are flat dataclasses, so a shallow walk is
        exact, and ~10x faster than dataclasses.asdict when planning 10,000 runs."""
        out: dict[str, Any] = {}
        for name in field_names(RunConfig):
            value = getattr(self, name)
            if dataclasses.is_dataclass(value):
                value = {k: list(v) if type(v) is tuple else v for k, v in value.__dict__.items()}
            elif isinstance(value, dict):
                value = copy_tree(value)
            out[name] = value
        return out

    def semantic_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        for key in NON_SEMANTIC:
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                node = node.get(p, {})
            node.pop(parts[-1], None)
        for key, default in HASHED_ONLY_IF_SET.items():
            section, name = key.split(".")
            if d.get(section, {}).get(name, default) == default:
                d.get(section, {}).pop(name, None)
        return d

    @functools.cached_property
    def hash(self) -> str:
        blob = json.dumps(self.semantic_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def copy_tree(obj: Any) -> Any:
    """A deep copy of plain YAML data (dicts, lists, scalars): what copy.deepcopy does, without its
    memo bookkeeping, which dominated planning large grids."""
    if isinstance(obj, dict):
        return {k: copy_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy_tree(v) for v in obj]
    return obj


# -- building from dicts / YAML / key=value overrides ------------------------------------------------
SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "batch": BatchConfig,
            "budget": BudgetConfig, "eval": EvalConfig, "system": SystemConfig}


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(section: str, cls: type, raw: dict) -> Any:
    """Build a section dataclass, coercing YAML scalars to the declared types (1 -> 1.0 for floats, '1e18'
    -> 1e18), so that equal configs hash equally however they were written."""
    if not isinstance(raw, dict):
        raise ConfigError(section, f"expected a mapping, got {type(raw).__name__}")
    reject_unknown_keys(section, raw, field_names(cls))
    hints = _hints(cls)
    out = {}
    for name, value in raw.items():
        out[name] = _coerce_value(f"{section}.{name}", hints[name], value)
    try:
        return cls(**out)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(section, str(exc)) from exc


_SIMPLE = {int: int, float: float, str: str, bool: bool}


def _coerce_value(fld: str, hint: Any, value: Any) -> Any:
    if _SIMPLE.get(hint) is type(value):  # already the declared type: the common case, kept fast
        return value
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise ConfigError(fld, "must not be null")
    base = [a for a in args if a is not type(None)] if args and typing.get_origin(hint) is not tuple else [hint]
    target = base[0] if base else hint
    if typing.get_origin(target) is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = typing.get_args(target)[0]
        return tuple(_coerce_value(fld, item, v) for v in value)
    if isinstance(value, bool) and target in (int, float):  # YAML's true is not 1: name what was written
        raise ConfigError(fld, f"got {str(value).lower()}, a boolean; give {'an integer' if target is int else 'a number'}")
    try:
        if target is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if target is int and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
    except ValueError:
        raise ConfigError(fld, f"expected {target.__name__}, got {value!r}") from None
    if target is bool and not isinstance(value, bool):
        raise ConfigError(fld, f"expected true/false, got {value!r}")
    if target is str and not isinstance(value, str):
        raise ConfigError(fld, f"expected a string, got {value!r}")
    return value


@functools.lru_cache(maxsize=32)
def tokenizer_vocab(spec: str) -> tuple[int, int]:
    """(vocab_size incl. mask, mask_id) of a tokenizer spec — cached: a 10,000-run plan asks thousands of times."""
    from study.data import get_tokenizer  # late import: data pulls in tokenizers, not needed for hashing

    tok = get_tokenizer(spec)
    return tok.vocab_size, tok.mask_id


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from a nested dict (as in YAML). The model's vocabulary comes from the tokenizer
    unless given, and its max_seq_len from data.seq_len unless given."""
    raw = copy_tree(raw or {})
    reject_unknown_keys("", raw, field_names(RunConfig))
    raw.setdefault("budget", {"steps": 100})
    sections = {name: _coerce(name, cls, raw.pop(name, {}) or {}) for name, cls in SECTIONS.items() if name != "model"}
    model_raw = dict(raw.pop("model", {}) or {})
    if "vocab_size" not in model_raw:
        vocab, mask = tokenizer_vocab(sections["data"].tokenizer)  # a DataError is a ConfigError
        model_raw["vocab_size"] = vocab
        model_raw.setdefault("mask_token_id", mask)
    if not (isinstance(sections["data"].seq_len, int) and sections["data"].seq_len >= 2):
        raise ConfigError("data.seq_len", f"got {sections['data'].seq_len!r}; must be an integer >= 2")
    model_raw.setdefault("max_seq_len", sections["data"].seq_len)
    model = _coerce("model", ModelConfig, model_raw)
    top = {}
    for f in fields(RunConfig):
        if f.name in raw:
            top[f.name] = raw[f.name] if f.name == "meta" else _coerce_value(f.name, _hints(RunConfig)[f.name], raw[f.name])
    return RunConfig(model=model, **sections, **top).validate()


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key.sub=value`` strings (values parsed as YAML) applied to a nested dict."""
    raw = copy_tree(raw or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key.sub=value (e.g. optim.lr=1e-3)")
        key, _, text = item.partition("=")
        value = parse_yaml(text, f"override {item!r}") if text.strip() else None
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"'{p}' is not a section")
        node[parts[-1]] = value
    return raw


def parse_yaml(text: str, where: str) -> Any:
    """YAML through the safe loader (no tags, no code); a syntax error or a python tag becomes a ConfigError
    that names ``where`` (a file, or an override) with the line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}{pos}", f"invalid YAML: {problem}") from None


def load_yaml_mapping(path: str | Path, field: str, what: str) -> dict[str, Any]:
    """A YAML file that must hold a non-empty mapping; errors name the file (with line:col) or ``field``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(field, f"file {p} does not exist")
    raw = parse_yaml(p.read_text(), str(p))
    if raw is None:
        raise ConfigError(str(p), f"the file is empty; give {what}")
    if not isinstance(raw, dict):
        raise ConfigError(str(p), f"must hold a mapping ({what})")
    return raw


def load(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file plus key=value overrides."""
    raw = load_yaml_mapping(path, "config", "sections model:, data:, ... (or no file at all for the defaults)") \
        if path is not None else {}
    return from_dict(apply_overrides(raw, list(overrides)))


def slug(cfg: RunConfig) -> str:
    """A short readable name: width, head/mid/tail layers, S_max, budget — the hash beside it is the identity."""
    m, b = cfg.model, cfg.budget
    budget = f"c{b.flops:.0e}" if b.flops is not None else (f"t{b.tokens:.0e}" if b.tokens is not None else f"n{b.steps}")
    budget = budget.replace("+", "")
    kind = "" if cfg.kind == "pretrain" else f"{cfg.kind}-"
    variant = ("" if m.loop_input == "none" else f"-x{m.loop_input}") + ("-pe" if m.loop_embed else "") + \
        ("-ln" if m.loop_norm else "")
    return f"{kind}d{m.d_model}-l{m.n_head_layers}.{m.n_mid_layers}.{m.n_tail_layers}-s{m.s_max}{variant}-{budget}"


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
