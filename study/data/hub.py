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
import threading
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # a blocked network that drops packets costs this once, not 24 s per file
TRUE = ("1", "ON", "YES", "TRUE")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_requested() -> str | None:
    """The variable by which the user said the hub is not to be used (``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE``: the local cache only), or None."""
    return next((v for v in OFFLINE_VARS if os.environ.get(v, "").strip().upper() in TRUE), None)


def hub_unavailable() -> str | None:
    """Why the hub cannot be used from this process (for an error message), or None when it answers.
    The probe is made once per process and endpoint; the proxy settings of the environment are honoured."""
    var = offline_requested()
    if var is not None:
        return f"{var} is set"
    return _probe(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"))


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str) -> str | None:
    """One HEAD request, in a thread so that a name lookup that hangs (which no socket timeout covers) is
    bounded by the same deadline."""
    answer: list[str | None] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
            answer.append(None)
        except urllib.error.HTTPError as exc:  # the hub's front page answers 200: an error is a proxy or an outage
            answer.append(f"{endpoint} answers HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            answer.append(f"{endpoint} is unreachable from here ({getattr(exc, 'reason', None) or exc})")

    probe = threading.Thread(target=ask, name="hub-probe", daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_S + 0.5)
    return answer[0] if answer else f"{endpoint} did not answer within {PROBE_TIMEOUT_S:g} s"


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
