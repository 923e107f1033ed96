"""``python -m study.lm_eval_cli ...``: lm-eval's own command line with the ``loopmdm`` model registered."""

from __future__ import annotations


def main() -> None:
    import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm")
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
