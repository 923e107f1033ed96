"""Paired comparisons on the same eval set (``nll_per_seq``).

Every run of a study with the same ``data`` and ``eval`` settings is evaluated on the same fixed
sequences with the same masking noise (``model.diffusion.validation_nll``), and so is every inference
loop setting of one run. The NLL of two such evaluations differs far less than either number's own
error suggests: sequence difficulty and most of the Monte-Carlo noise are shared. The standard error of
the difference is then estimated *paired*, over sequences::

    se(a - b) = std_n(a_n - b_n) / sqrt(N)

which covers both the MC noise and which sequences happened to be drawn. When the per-sequence arrays
are missing (runs written before ``nll_per_seq`` existed), of different lengths, or come from different
eval sets (``eval_set`` differs), the comparison falls back to the unpaired MC error
``hypot(nll_se_a, nll_se_b)``, and says so.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

PAIRED, UNPAIRED = "paired", "unpaired MC"


def as_seq_array(x: Any) -> np.ndarray | None:
    """A per-sequence NLL list as a 1-d float array, or None when it is not one (missing, a scalar, text):
    how the tidy table stores ``nll_per_seq``."""
    if x is None or isinstance(x, (float, int, str)):
        return None
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim == 1 and a.size else None


def seq_array(x: Any) -> np.ndarray | None:
    """A per-sequence NLL array a paired comparison can use (>= 2 values, all finite), or None."""
    a = as_seq_array(x)
    return a if a is not None and a.size >= 2 and np.isfinite(a).all() else None


def _key(x: Any) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x)


def same_eval_set(keys: Iterable[Any]) -> bool:
    """True unless two known eval-set keys differ (unknown keys are trusted: lengths are still checked)."""
    known = {k for k in (_key(x) for x in keys) if k is not None}
    return len(known) <= 1


def stack(arrays: Sequence[Any], keys: Sequence[Any] | None = None) -> np.ndarray | None:
    """Stack per-sequence arrays into (K, N) when all are usable, equally long and from one eval set."""
    out = [seq_array(a) for a in arrays]
    if not out or any(a is None for a in out) or len({a.size for a in out}) != 1:
        return None
    if keys is not None and not same_eval_set(keys):
        return None
    return np.stack(out)


def _nz(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def diff_se(a_seq: Any, b_seq: Any, a_se: Any, b_se: Any, a_key: Any = None, b_key: Any = None) -> tuple[float, str, int]:
    """Standard error of NLL(a) − NLL(b): (se, method, number of sequences paired or 0)."""
    S = stack([a_seq, b_seq], [a_key, b_key])
    if S is not None:
        d = S[0] - S[1]
        return float(d.std(ddof=1) / math.sqrt(d.size)), PAIRED, int(d.size)
    return math.hypot(_nz(a_se), _nz(b_se)), UNPAIRED, 0


def method_note(methods: Sequence[str], n_seqs: Sequence[int], what: str, kind: str = "standard errors") -> str:
    """One caveat line saying how a claim's eval noise was estimated (paired or not, for how many)."""
    n = len(methods)
    k = sum(m == PAIRED for m in methods)
    nstr = "/".join(str(s) for s in sorted({int(s) for s, m in zip(n_seqs, methods) if m == PAIRED}))
    if n and k == n:
        return f"{kind}: paired over the {nstr} shared eval sequences (nll_per_seq) for all {n} {what}"
    if k == 0:
        return (f"{kind}: unpaired MC errors for all {n} {what} (no usable nll_per_seq: older runs, different "
                f"eval sets or lengths) — wider than a paired comparison would give")
    return (f"{kind}: paired over {nstr} eval sequences for {k} of {n} {what}; unpaired MC errors for the other "
            f"{n - k} (no usable nll_per_seq)")
