"""``python -m study.lm_eval_cli ...``: lm-eval's own command line with the ``loopmdm`` model registered.

Two things are checked before lm-eval starts, so neither costs a long wait: an ``--output_path`` that cannot be
written, and a hub that cannot be used (then datasets are read from the local cache only, as with
``HF_HUB_OFFLINE=1``, instead of retrying every download). A bad ``run=`` and a task whose dataset is not
cached while the hub is unusable are one line, exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import check_writable, input_errors, say_error


def _output_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--output_path", "-o") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def main() -> None:
    from study.data.hub import cache_only_unless_reachable

    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        hub_reason = None
    else:
        try:
            out = _output_path(argv)
            if out:
                check_writable(Path(out), "--output_path", "pass --output_path to a writable place", kind=None)
        except input_errors() as exc:
            sys.exit(say_error(exc))
        hub_reason = cache_only_unless_reachable()
    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from lm_eval.__main__ import cli_evaluate

    from study.evaluate.task_scores import not_cached

    try:
        cli_evaluate()
    except ConnectionError as exc:  # `datasets` reports a cache miss offline as a ConnectionError
        if hub_reason is None:
            raise
        sys.exit(say_error(not_cached(None, hub_reason, exc)))
    except input_errors() as exc:
        sys.exit(say_error(exc))
