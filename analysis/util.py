"""Small helpers shared by the analysis modules: JSON safety, seeding, number formatting, FLOPs-convention
names, and the --help formatter of every command line (``study.cli`` uses it too)."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Convert to strict JSON: non-finite floats become None because JSON has no NaN/inf and
    a downstream reader must not mistake a missing estimate for a number."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return jsonable(obj.to_dict())
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False)


def derive_rng(seed: int, *keys: Any) -> np.random.Generator:
    """An RNG that depends on (seed, keys) only, so each fit's bootstrap is reproducible no matter
    in which order the report runs the fits."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def fmt(x: Any, digits: int = 3) -> str:
    """Human formatting for tables: None/NaN -> '—', large/small numbers in scientific notation."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "—"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}g}" if abs(f) >= 1 else f"{f:.{digits}f}"


def fmt_near(x: Any, ref: float = 1.0, digits: int = 3) -> str:
    """``fmt`` with as many more digits (up to 7) as it takes to show which side of ``ref`` x lies on: a
    bound of 1.0014 printed as '1' reads as 'at 1', where a verdict rule says 'at or below 1'."""
    out = fmt(x, digits)
    try:
        f = float(x)
    except (TypeError, ValueError):
        return out
    d = digits
    while math.isfinite(f) and f != ref and out == fmt(ref, d) and d < 7:
        d += 1
        out = fmt(x, d)
    return out


def normalise_convention(conv: str) -> str:
    """Accept '6N_nonembed' or 'flops_6N_nonembed'; return the tidy-table column name."""
    conv = conv.strip()
    return conv if conv.startswith("flops_") else f"flops_{conv}"


CONVENTIONS = ("flops_6N_nonembed", "flops_6N_total", "flops_exact")


class DefaultsFormatter(argparse.HelpFormatter):
    """An option's default in --help once: added only where the help text does not already say it, and never
    for a flag (``--no-report`` defaults to True only in argparse's bookkeeping) or an unset (None) default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0 or "default" in text.lower() \
                or not action.option_strings or action.default == []:
            return text
        return f"{text} (default: %(default)s)"
