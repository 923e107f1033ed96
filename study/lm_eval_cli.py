r"""``python -m study.lm_eval_cli`` (= ``loopmdm-lm-eval``): lm-eval's own command line with the ``loopmdm``
model registered, since lm-eval 0.4.13 reads no plugin entry points (``lm_eval --model loopmdm`` fails):

    loopmdm-lm-eval run --model loopmdm --model_args pretrained=RUN_DIR,loops=12 --device cpu --batch_size 16 \
        --tasks hellaswag --output_path OUT

See `study.cli.lm_eval`. For the local offline tasks (gsm8k-local, gsm8k-synth, ...) ``python -m study.eval``
also writes their YAMLs and files the results in the run directory.
"""

import sys

from study.cli.lm_eval import main

if __name__ == "__main__":
    sys.exit(main())
