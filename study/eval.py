"""``python -m study.eval``: see `study.cli` (every command line lives there)."""

import sys

from study.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
