"""``loopmdm-lm-eval ...`` / ``python -m study.lm_eval_cli ...``: lm-eval's own command line with the ``loopmdm``
model registered (lm-eval 0.4.13 reads no plugin entry points, so ``lm_eval --model loopmdm`` cannot find it).

Every lm-eval subcommand and flag works as lm-eval documents them. Added: ``run=RUN_DIR`` in ``--model_args`` is
passed on as ``pretrained=RUN_DIR``, the key lm-eval names its ``--output_path`` folder after (else each call
writes to a new random folder). Checked before lm-eval starts, so neither costs a long wait: an
``--output_path`` that cannot be written, and a hub that cannot be used (then datasets are read from the local
cache only, as with ``HF_HUB_OFFLINE=1``, instead of retrying every download). A bad model argument (an unknown
key, a value of the wrong kind, a run without a checkpoint) and a task whose dataset is not cached while the hub
is unusable are one line, exit 2, instead of a traceback."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .common import check_writable, input_errors, say_error


def pretrained_args(argv: list[str]) -> list[str]:
    """``--model_args run=X,...`` -> ``pretrained=X,...`` (the value after the flag, or ``--model_args=...``)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model_args" and i + 1 < len(out):
            out[i + 1] = re.sub(r"(^|,)run=", r"\1pretrained=", out[i + 1])
        elif arg.startswith("--model_args="):
            out[i] = "--model_args=" + re.sub(r"(^|,)run=", r"\1pretrained=", arg.split("=", 1)[1])
    return out


def _output_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--output_path", "-o") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    from study.data.hub import cache_only_unless_reachable

    argv = pretrained_args(list(sys.argv[1:] if argv is None else argv))
    if "-h" in argv or "--help" in argv:
        hub_reason = None
    else:
        try:
            out = _output_path(argv)
            if out:
                check_writable(Path(out), "--output_path", "pass --output_path to a writable place", kind=None)
        except input_errors() as exc:
            return say_error(exc)
        hub_reason = cache_only_unless_reachable()
    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from lm_eval.__main__ import cli_evaluate

    from study.evaluate.task_scores import not_cached

    sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except ConnectionError as exc:  # `datasets` reports a cache miss offline as a ConnectionError
        if hub_reason is None:
            raise
        return say_error(not_cached(None, hub_reason, exc))
    except input_errors() as exc:
        return say_error(exc)
    return 0
