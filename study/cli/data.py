"""``python -m study.data prepare TARGET``: tokenise corpora into the token cache ahead of training, so the runs
of a sweep (all sharing one cache key per data setting) never tokenise."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from model.config import ConfigError

from .common import Parser, input_errors, say_error


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m study.data", description="Tokenise corpora into the token cache ahead of training "
                "(resumable: rerun after an interruption; parallel: --workers).")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("prepare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="tokenise every corpus a spec (or one run config, or one corpus) trains on")
    p.add_argument("target", help="a study spec (sweeps/*.yaml), a run config (YAML), or a corpus (lm1b, hf:NAME@REV, PATH)")
    p.add_argument("overrides", nargs="*", default=[], help="key=value on a spec's base / a config (data.cache_dir=...)")
    p.add_argument("--tokenizer", default="byte", help="with a corpus target: the tokenizer")
    p.add_argument("--val-fraction", type=float, default=0.05, help="with a corpus target: every k-th document held out")
    p.add_argument("--val-split", default=None, help="with a corpus target: the corpus's own held-out split (hub)")
    p.add_argument("--max-tokens", type=int, default=None, help="with a corpus target: tokens read at most")
    p.add_argument("--cache-dir", default=None, help="token cache (default: data.cache_dir, else $LOOPMDM_CACHE or "
                                                      "~/.cache/loopmdm: where the runs will look)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="tokenising processes")
    ns = ap.parse_args(argv)
    from study import data as data_mod

    try:
        settings = _data_settings(ns)
        for corpus, tokenizer, cache, val_fraction, max_tokens, val_split in settings:
            td = data_mod.prepare_tokens(corpus, tokenizer, cache, val_fraction=val_fraction, max_tokens=max_tokens,
                                         val_split=val_split, workers=ns.workers)
            m = td.meta
            print(f"{corpus} / {tokenizer}: {m['n_train']:,} train + {m['n_val']:,} held-out tokens "
                  f"({m['split_rule']}) in {td.path}", flush=True)
    except input_errors() as exc:
        return say_error(exc)
    return 0


def _data_settings(ns) -> list[tuple]:
    """The distinct token caches a target needs: (corpus, tokenizer, cache dir, val_fraction, max_tokens,
    val_split) — for a spec, over its pretraining runs (fine-tuning reads question/answer sets instead)."""
    from study import data as data_mod
    from study.plan import config as config_mod
    from study.plan import spec as spec_mod

    target = Path(ns.target)
    if target.suffix in (".yaml", ".yml") and target.is_file():
        raw = config_mod.load_yaml_mapping(target, "TARGET", "a spec (study:, base:) or a run config (model:, data:)")
        overrides = list(ns.overrides) + ([f"data.cache_dir={ns.cache_dir}"] if ns.cache_dir else [])
        if "study" in raw or "base" in raw:
            cfgs = [r.cfg for r in spec_mod.expand(spec_mod.load_spec(target, overrides))]
        else:
            cfgs = [config_mod.from_dict(config_mod.apply_overrides(raw, overrides))]
        out = []
        for c in cfgs:
            if c.kind != "pretrain":
                continue
            d = c.data
            cache = Path(d.cache_dir) if d.cache_dir else data_mod.default_cache_dir()
            key = (d.corpus, d.tokenizer, cache, d.val_fraction, d.max_tokens, d.val_split)
            if key not in out:
                out.append(key)
        return out
    if ns.overrides:
        raise ConfigError("overrides", "key=value overrides apply to a spec or config target, not to a corpus")
    cache = Path(ns.cache_dir) if ns.cache_dir else data_mod.default_cache_dir()
    return [(ns.target, ns.tokenizer, cache, ns.val_fraction, ns.max_tokens, ns.val_split)]
