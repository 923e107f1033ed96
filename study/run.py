"""``python -m study.run``: see `study.cli` (every command line lives there)."""

import sys

from study.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
