"""``loopmdm-lm-eval ...`` / ``python -m study.lm_eval_cli ...``: lm-eval's own command line with the ``loopmdm``
model registered (lm-eval 0.4.13 reads no plugin entry points, so ``lm_eval --model loopmdm`` cannot find it).

Every lm-eval subcommand and flag works as lm-eval documents them. Two things are added: ``run=RUN_DIR`` in
``--model_args`` is passed on as ``pretrained=RUN_DIR``, the key lm-eval names its ``--output_path`` folder
after (else each call writes to a new random folder); and a bad model argument (an unknown key, a value of the
wrong kind, a run without a checkpoint) ends with one line and exit 2 instead of a traceback."""

from __future__ import annotations

import re
import sys

from .common import input_errors, say_error


def pretrained_args(argv: list[str]) -> list[str]:
    """``--model_args run=X,...`` -> ``pretrained=X,...`` (the value after the flag, or ``--model_args=...``)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model_args" and i + 1 < len(out):
            out[i + 1] = re.sub(r"(^|,)run=", r"\1pretrained=", out[i + 1])
        elif arg.startswith("--model_args="):
            out[i] = "--model_args=" + re.sub(r"(^|,)run=", r"\1pretrained=", arg.split("=", 1)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *pretrained_args(list(sys.argv[1:] if argv is None else argv))]
    try:
        cli_evaluate()
    except input_errors() as exc:
        return say_error(exc)
    return 0
