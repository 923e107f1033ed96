"""LoopMDM as an lm-eval model: ``loopmdm-lm-eval run --model loopmdm --model_args pretrained=RUN_DIR,loops=12``.

lm-eval 0.4.13 (the newest release) finds a model only in its own table or among classes registered with
``@register_model`` by a module already imported; it reads no plugin entry points, so ``lm_eval --model loopmdm``
and ``python -m lm_eval --model loopmdm`` fail with "no model for this name found". Two routes work:

* ``loopmdm-lm-eval ...`` (or ``python -m study.lm_eval_cli ...``): lm-eval's own command line, every
  subcommand and flag as lm-eval documents them, with this module imported first;
* in Python: ``import study.evaluate.lm_eval_model`` before ``lm_eval.simple_evaluate(model="loopmdm", ...)``.

``pretrained=RUN_DIR`` names the run as lm-eval's HF model names a checkpoint, so ``--output_path`` gets a
folder named after the run, the same on every call (``run=`` is accepted as the same thing). Any other key
that is not a knob of `LoopMDMLM` is refused with one line, as is a value of the wrong kind.

How a masked diffusion LM answers lm-eval's three questions (the approach of LLaDA's ``eval_llada.py``):

* ``loglikelihood(context, continuation)``: a diffusion LM has no exact likelihood, only a bound. We use the
  Monte-Carlo estimate of the masked-diffusion ELBO on the continuation with the context never masked:
  draw l ~ U{1..n} (n = continuation length), mask l random continuation positions, and score
  (n / l) * sum of log p(x_i | unmasked) over the masked positions; average ``mc_num`` draws. The draws are
  stratified over l and seeded by the request itself, so a score does not depend on batching or order.
  ``is_greedy`` is the argmax of one pass with the whole continuation masked (the diffusion analogue).
* ``loglikelihood_rolling``: the same bound over the whole text, in windows of the model's length, later
  windows conditioned on the tokens just before them (never masked); every token is scored once.
* ``generate_until``: the sampler (``model.diffusion.sample``) fills ``gen_length`` masked positions after
  the prompt; the text is cut at the first eos token and then at the first ``until`` string (the sampler
  cannot stop early: all positions are decoded together).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import sys
import warnings
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from model import sample
from model.diffusion import REMASKING
from study.evaluate.loading import LoadedRun, load_run
from study.evaluate.request import EvalError, check_loops

#: lm-eval generation_kwargs the sampler honours; any other is refused (see LoopMDMLM._gen_settings)
GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature"})
#: positions generated when neither the model_args nor a task say (capped at half the model's positions)
DEFAULT_GEN_LENGTH = 128


def _opt_float(value: Any, arg: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise EvalError(arg, f"got {value!r}; expected a number") from None


def _int(value: Any, arg: str, minimum: int = 1) -> int:
    try:
        f = float(value)
        if not f.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise EvalError(arg, f"got {value!r}; expected an integer >= {minimum}") from None
    if int(f) < minimum:
        raise EvalError(arg, f"got {int(f)}; must be >= {minimum}")
    return int(f)


def _bool(value: Any, arg: str) -> bool:
    """lm-eval hands ``true``/``false`` over as booleans and anything else as a string: only those two mean a
    boolean (``ema=maybe`` is a typo, not a yes)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise EvalError(arg, f"got {value!r}; expected true or false")


def check_model_args(given: dict[str, Any]) -> None:
    """Refuse a model_args key `LoopMDMLM` does not take (a typo would otherwise be silently ignored and the
    evaluation run with the default), naming the closest knob."""
    import difflib

    known = sorted(inspect.signature(LoopMDMLM.__init__).parameters.keys() - {"self", "loaded", "extra"})
    for key in sorted(given):
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {near[0]}?" if near else f"known: {', '.join(known)}"
        raise EvalError("model_args", f"unknown key {key!r} ({hint})")


def _no_bar(disable: bool) -> bool:
    """Progress bars only on a terminal: in job logs and test output they are noise."""
    return disable or not sys.stderr.isatty()


def request_seed(base: int, *parts: Any) -> int:
    """A seed that depends only on the request's content: scores do not change with batch size or order."""
    h = hashlib.sha256(repr((base, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def resolve_knobs(cfg, weights: str = "model", loops: Any = None, exit_threshold: Any = None, mc_num: Any = 32,
                  gen_length: Any = None, steps: Any = None, block_length: Any = None,
                  remasking: str = "low_confidence", temperature: Any = 0.0, seed: Any = 1234) -> dict[str, Any]:
    """Every setting that can change a score, validated and with defaults filled in from the model config
    (``cfg``: a ModelConfig). Used by the model and by study.eval, which must know an evaluation's identity
    before it loads any weights, to skip one already done."""
    loops = check_loops([loops if loops is not None else cfg.s_max], "loops")[0]
    eps = _opt_float(exit_threshold, "exit_threshold")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise EvalError("exit_threshold", f"got {eps}; must be > 0 (or none for fixed loops)")
    if gen_length is None:  # a default that leaves a prompt room in a short model
        gen_length = min(DEFAULT_GEN_LENGTH, max(1, cfg.max_seq_len // 2))
    gen_length = _int(gen_length, "gen_length")  # room for a prompt is checked when generating (generate_until)
    block_length = _int(block_length if block_length is not None else gen_length, "block_length")
    if gen_length % block_length:
        raise EvalError("block_length", f"{block_length} must divide gen_length={gen_length}")
    n_blocks = gen_length // block_length
    steps = _int(steps if steps is not None else gen_length, "steps")
    if steps % n_blocks:
        raise EvalError("steps", f"{steps} must be a multiple of the number of blocks ({n_blocks} = "
                                 f"gen_length / block_length)")
    if remasking not in REMASKING:
        raise EvalError("remasking", f"{remasking!r} unknown; allowed: {', '.join(REMASKING)}")
    temperature = _opt_float(temperature, "temperature") or 0.0
    if temperature < 0:
        raise EvalError("temperature", f"got {temperature}; must be >= 0 (0 = argmax)")
    return {"loops": loops, "exit_threshold": eps, "mc_num": _int(mc_num, "mc_num"), "gen_length": gen_length,
            "steps": steps, "block_length": block_length, "remasking": remasking, "temperature": temperature,
            "seed": _int(seed, "seed", minimum=0), "weights": weights}


def check_room(gen_length: int, max_seq_len: int) -> None:
    """A generation must leave the prompt at least one of the model's positions."""
    if gen_length >= max_seq_len:
        raise EvalError("gen_length", f"{gen_length} leaves no room for a prompt in the model's {max_seq_len} "
                                      f"positions; lower gen_length (study.eval --gen-length, lm-eval max_gen_toks)")


@register_model("loopmdm")
class LoopMDMLM(LM):
    """A LoopMDM checkpoint behind lm-eval's LM interface. Knobs (all also valid as ``--model_args``):

    pretrained (or run): run directory; ckpt: step or 'latest'; loops: mid-block repetitions S (default: the
    model's s_max); exit_threshold: adaptive exit (S then caps the loops); mc_num: Monte-Carlo draws per
    loglikelihood; gen_length (default 128, at most half the model's positions) / steps / block_length /
    remasking / temperature: the sampler; batch_size: rows per forward; device: auto | cpu | cuda[:N]; seed:
    base seed of the MC draws and of sampling; ema: prefer EMA weights (true / false). Any other key is refused.
    """

    def __init__(self, pretrained: str | None = None, run: str | None = None, ckpt: str | int = "latest",
                 loops: int | None = None, exit_threshold: float | None = None, mc_num: int = 32,
                 gen_length: int | None = None, steps: int | None = None, block_length: int | None = None,
                 remasking: str = "low_confidence", temperature: float = 0.0, batch_size: int | str | None = 16,
                 device: str | None = "auto", seed: int = 1234, ema: bool = True, max_batch_size: int | None = None,
                 loaded: LoadedRun | None = None, **extra: Any) -> None:
        super().__init__()
        check_model_args(extra)
        prefer_ema = _bool(ema, "ema")
        if pretrained and run and str(pretrained) != str(run):
            raise EvalError("model_args", f"pretrained={pretrained} and run={run} name two runs; give one")
        run = pretrained or run
        if loaded is None:
            if not run:
                raise EvalError("run", "missing: pass model_args pretrained=RUN_DIR (a trained run directory)")
            if str(device).startswith("cuda") and not torch.cuda.is_available():
                # lm-eval's CLI passes device=cuda:0 unless told otherwise, as its HF model assumes a GPU
                warnings.warn(f"device={device} asked for but no CUDA device is visible: running on the CPU")
                device = "cpu"
            loaded = load_run(str(run), ckpt, device, prefer_ema=prefer_ema)
        self.loaded = loaded
        self.model = loaded.model
        self.cfg = loaded.cfg.model
        self.tok = loaded.tokenizer
        self._device = loaded.device
        self.mask_id = self.cfg.mask_id
        self.max_length = self.cfg.max_seq_len
        k = resolve_knobs(self.cfg, weights=loaded.weights, loops=loops, exit_threshold=exit_threshold,
                          mc_num=mc_num, gen_length=gen_length, steps=steps, block_length=block_length,
                          remasking=remasking, temperature=temperature, seed=seed)
        self.knobs = k
        self.loops, self.exit_threshold, self.mc_num = k["loops"], k["exit_threshold"], k["mc_num"]
        self.gen_length, self.steps, self.block_length = k["gen_length"], k["steps"], k["block_length"]
        self.remasking, self.temperature, self.seed = k["remasking"], k["temperature"], k["seed"]
        if batch_size is None or str(batch_size).startswith("auto"):
            batch_size = 16
        self.batch_size = _int(batch_size, "batch_size")
        self.stats: dict[str, float] = defaultdict(float)  # forward passes and loops actually used

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def mean_loops(self) -> float | None:
        n = self.stats["rows"]
        return self.stats["loops"] / n if n else None

    def _forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t, loops=self.loops, exit_threshold=self.exit_threshold, return_stats=True)
        logits, stats = out.logits, out.stats
        self.stats["rows"] += x.shape[0]
        self.stats["forwards"] += 1
        self.stats["loops"] += stats.loops_used.sum().item()
        logits = logits.float()
        logits[..., self.mask_id] = float("-inf")  # the model never predicts the mask (SUBS)
        return logits

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokens of context and continuation as lm-eval's HF model splits them: trailing context spaces move
        to the continuation, and the continuation is what the whole string adds beyond the context."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        if whole[:len(ctx)] != ctx:  # a merge across the boundary: fall back to separate encodings
            return ctx, self.tok.encode(continuation)
        return ctx, whole[len(ctx):]

    # -- loglikelihood -----------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]], desc: str = "") -> list[tuple[float, bool]]:
        """ELBO estimate of log p(continuation | context) for token pairs, batched across requests."""
        rows = []  # (pair index, tokens, n masked, masked positions or None for the greedy row)
        for i, (ctx, cont) in enumerate(pairs):
            n = len(cont)
            if n == 0:
                continue
            if n > self.max_length:
                raise EvalError("task", f"a continuation of {n} tokens does not fit the model's {self.max_length} "
                                        f"positions; this task needs a longer-context model")
            room = self.max_length - n  # the context loses its start, as in lm-eval's HF model
            ctx = ctx[len(ctx) - room:] if len(ctx) > room else ctx
            seq = torch.tensor(ctx + cont, dtype=torch.long)
            g = torch.Generator().manual_seed(request_seed(self.seed, ctx, cont))
            u0 = torch.rand(1, generator=g).item()
            for k in range(self.mc_num):
                l = 1 + int(((u0 + k / self.mc_num) % 1.0) * n)  # stratified over 1..n
                pos = len(ctx) + torch.randperm(n, generator=g)[:l]
                rows.append((i, seq, l, n, pos))
            rows.append((i, seq, n, n, None))  # all continuation masked: the greedy check
        by_len = defaultdict(list)
        for r in rows:
            by_len[len(r[1])].append(r)
        total = [0.0] * len(pairs)
        greedy = [True] * len(pairs)
        bar = tqdm(total=len(rows), desc=desc or "loglikelihood", disable=_no_bar(len(rows) < 256), leave=False)
        for length in sorted(by_len):
            group = by_len[length]
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                x = torch.stack([r[1] for r in chunk])
                target = x.clone()
                masked = torch.zeros_like(x, dtype=torch.bool)
                for b, (i, seq, l, n, pos) in enumerate(chunk):
                    if pos is None:
                        masked[b, len(seq) - n:] = True
                    else:
                        masked[b, pos] = True
                x = torch.where(masked, torch.full_like(x, self.mask_id), x)
                t = torch.tensor([l / n for (_, _, l, n, _) in chunk])
                logits = self._forward(x.to(self.device), t.to(self.device))
                logp = F.log_softmax(logits, -1).gather(-1, target.to(self.device)[..., None]).squeeze(-1).cpu()
                argmax = logits.argmax(-1).cpu()
                for b, (i, seq, l, n, pos) in enumerate(chunk):
                    if pos is None:
                        greedy[i] = bool((argmax[b, len(seq) - n:] == target[b, len(seq) - n:]).all())
                    else:
                        total[i] += (n / l) * logp[b][masked[b]].sum().item() / self.mc_num
                bar.update(len(chunk))
        bar.close()
        return [(total[i], greedy[i]) for i in range(len(pairs))]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*req.args) for req in requests]
        out = self._score(pairs)
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Windows: the first covers up to ``max_length`` tokens with no context; each later one scores the
        next half-window, conditioned on the tokens right before it."""
        out = []
        half = max(1, self.max_length // 2)
        for req in requests:
            ids = self.tok.encode(req.args[0])
            pairs = [([], ids[:self.max_length])]
            pos = self.max_length
            while pos < len(ids):
                pairs.append((ids[max(0, pos - (self.max_length - half)):pos], ids[pos:pos + half]))
                pos += half
            ll = sum(s for s, _ in self._score([p for p in pairs if p[1]], desc="rolling"))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, ll)
            out.append(ll)
        return out

    # -- generation --------------------------------------------------------------------------------
    def _decode(self, ids: list[int], until: list[str]) -> str:
        eos = getattr(self.tok, "eos_id", None)
        if eos is not None and eos in ids:
            ids = ids[:ids.index(eos)]
        text = self.tok.decode(ids)
        for stop in until:
            if stop:
                text = text.split(stop, 1)[0]
        return text

    def _gen_settings(self, gen_kwargs: Any) -> tuple[list[str], int, int, float]:
        """A request's (until, gen_length, block_length, temperature) from lm-eval's generation_kwargs:
        ``until``, ``max_gen_toks`` (the positions to fill; one block stays one block, else it must be a
        multiple of block_length) and ``do_sample`` / ``temperature`` are honoured; anything else would be
        silently ignored by a diffusion sampler, so it is refused."""
        kw = dict(gen_kwargs) if isinstance(gen_kwargs, dict) else {}
        unknown = sorted(set(kw) - GEN_KWARGS)
        if unknown:
            raise EvalError("gen_kwargs", f"{unknown} not supported by the diffusion sampler (supported: "
                                          f"{', '.join(sorted(GEN_KWARGS))}); drop them from the task's "
                                          f"generation_kwargs or --gen_kwargs")
        until = kw.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        gen_length = _int(kw["max_gen_toks"], "max_gen_toks") if "max_gen_toks" in kw else self.gen_length
        block = gen_length if self.block_length == self.gen_length else self.block_length
        if gen_length % block:
            raise EvalError("max_gen_toks", f"{gen_length} is not a multiple of block_length={block}")
        temperature = self.temperature
        if "temperature" in kw:
            temperature = _opt_float(kw["temperature"], "temperature") or 0.0
        if kw.get("do_sample") is False:
            temperature = 0.0
        if temperature < 0:
            raise EvalError("temperature", f"got {temperature}; must be >= 0 (0 = argmax)")
        check_room(gen_length, self.max_length)
        return until, gen_length, block, temperature

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Prompts of unequal lengths share a batch, left-padded with the padding kept out of attention and
        positions counted from each row's first token (``model.diffusion.sample(prompt_pad=...)``): with
        greedy decoding every row gets what it would alone (tests check this token for token). Requests are
        sorted longest first so a batch wastes little padding; a prompt longer than the model's positions
        minus the generation loses its start. With sampling (temperature > 0, random remasking) the noise is
        drawn per batch, seeded by its first request."""
        items = []
        for idx, req in enumerate(requests):
            context, gen_kwargs = req.args
            until, gen_length, block, temperature = self._gen_settings(gen_kwargs)
            ids = self.tok.encode(context)[-(self.max_length - gen_length):]
            items.append((idx, ids, until, req, gen_length, block, temperature))
        groups = defaultdict(list)  # one sampler call needs one length, block and temperature
        for item in items:
            groups[item[4:]].append(item)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(items), desc="generate", disable=_no_bar(disable_tqdm or len(items) < 8), leave=False)
        for (gen_length, block, temperature), group in sorted(groups.items()):
            group.sort(key=lambda it: (-len(it[1]), it[0]))
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                width = len(chunk[0][1])
                prompt = torch.full((len(chunk), width), self.mask_id, dtype=torch.long)
                pad = torch.ones(len(chunk), width, dtype=torch.bool)
                for b, it in enumerate(chunk):
                    if it[1]:
                        prompt[b, width - len(it[1]):] = torch.tensor(it[1])
                        pad[b, width - len(it[1]):] = False
                gen = torch.Generator().manual_seed(request_seed(self.seed, chunk[0][1]))
                steps = self.steps * gen_length // self.gen_length  # the same steps per token as configured
                res = sample(self.model, prompt, gen_length=gen_length, steps=steps,
                             block_length=block, remasking=self.remasking, loops=self.loops,
                             exit_threshold=self.exit_threshold, temperature=temperature, generator=gen,
                             prompt_pad=pad)
                self.stats["rows"] += res.loops_per_step.numel()
                self.stats["forwards"] += res.nfe
                self.stats["loops"] += res.loops_per_step.sum().item()
                for b, (idx, ids, until, req, *_) in enumerate(chunk):
                    text = self._decode(res.tokens[b, width:].tolist(), until)
                    out[idx] = text
                    self.cache_hook.add_partial("generate_until", req.args, text)
                bar.update(len(chunk))
        bar.close()
        return [o if o is not None else "" for o in out]

    # lm-eval asks for these in some code paths (chat templates, request caching)
    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.cfg.data.tokenizer)

    def __repr__(self) -> str:
        return f"LoopMDMLM(run={self.loaded.run_dir}, step={self.loaded.step}, {self.knobs})"

