"""Every command line of the study, one module per program (``python -m study.<name>`` are thin entry points):

    python -m study.sweep [submit|status|collect|report] SPEC [key=value ...]   a study: plan, run, watch  (sweep)
    python -m study.run [CONFIG.yaml] [key=value ...] [--out DIR]              one run, in the foreground  (run)
    python -m study.sft PARENT_RUN CORPUS --steps N [key=value ...]           fine-tune a pretrained run  (sft)
    python -m study.eval TARGET --tasks ... | --scan | --attention | --sudoku evaluate runs               (eval)
    python -m study.lm_eval_cli ...                                           lm-eval's CLI + loopmdm     (lm_eval)
    python -m study.data prepare TARGET                                       fill the token cache        (data)

Bad input exits 2 with one line ``error: FIELD-OR-FILE: what is wrong and what to do``, before anything is
written or submitted; a run stopped by a signal exits 3 after checkpointing (run the same command again).
The CLI sits on top of every stage and nothing below imports it.
"""

from .data import main as data_main
from .eval import main as eval_main
from .lm_eval import main as lm_eval_main
from .run import main as run_main
from .sft import main as sft_main
from .sweep import main as sweep_main

__all__ = ["data_main", "eval_main", "lm_eval_main", "run_main", "sft_main", "sweep_main"]
