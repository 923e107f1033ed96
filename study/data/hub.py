"""Can the Hugging Face hub be used from here? Asked once per process, before anything that would reach it.

Without this, every hub call on a machine with no route out (a compute node, a laptop on a plane) retries its
connection five times with back-off (~24 s) before failing, once per file: a wall of warnings and a long
wait before the one line that matters. One short probe of the hub's endpoint answers for the whole process,
and callers then fail in one line (or, with ``HF_HUB_OFFLINE=1``, read only the local cache, as asked).
"""

from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # a blocked network that drops packets costs this once, not 24 s per file
TRUE = ("1", "ON", "YES", "TRUE")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_requested() -> bool:
    """The user said the hub is not to be used (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``): cache only."""
    return any(os.environ.get(v, "").strip().upper() in TRUE for v in OFFLINE_VARS)


def hub_unavailable() -> str | None:
    """Why the hub cannot be used from this process (for an error message), or None when it answers.
    The probe is made once per process and endpoint; the proxy settings of the environment are honoured."""
    if offline_requested():
        return "HF_HUB_OFFLINE is set"
    return _probe(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"))


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str) -> str | None:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as exc:  # it answered: reachable, unless it is down
        return f"{endpoint} answers HTTP {exc.code}" if exc.code >= 500 else None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        return f"{endpoint} is unreachable from here ({why})"
    return None


def cache_only_unless_reachable() -> str | None:
    """Before a library that reads the hub on its own (lm-eval's datasets) starts: where the hub cannot be used,
    make this process read the local cache only (as HF_HUB_OFFLINE=1 would), so nothing waits on retries.
    Returns why the hub cannot be used (for the error a cache miss then gets), or None when it answers."""
    reason = hub_unavailable()
    if reason is not None and not offline_requested():
        _go_offline()
    return reason


def _go_offline() -> None:
    """`datasets` and `huggingface_hub` read the switch when imported: set before either is, it takes effect."""
    if "datasets" not in sys.modules and "huggingface_hub" not in sys.modules:
        for var in OFFLINE_VARS:
            os.environ[var] = "1"
