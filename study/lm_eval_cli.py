"""lm-eval's own command line, with the ``loopmdm`` model registered:

    python -m study.lm_eval_cli run --model loopmdm --model_args run=RUN_DIR,loops=12 --tasks gsm8k ...

lm-eval 0.4.13 finds models only in its built-in table or in modules already imported (``@register_model``);
it scans no entry points. This wrapper imports `study.evaluate.lm_eval_model` and hands over to lm-eval's CLI
unchanged (every subcommand and flag works as documented by lm-eval; give ``--batch_size 16``: lm-eval's
default of 1 is slow, and ``--device cpu`` on a machine without CUDA). For the local offline tasks
(gsm8k-local, gsm8k-synth, ...) prefer ``python -m study.eval``, which writes their YAMLs and files results.
"""

import study.evaluate.lm_eval_model  # noqa: F401  (registers "loopmdm" on import)
from study.cli.lm_eval import main

if __name__ == "__main__":
    main()
