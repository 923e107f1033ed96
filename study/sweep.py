"""``python -m study.sweep``: see `study.cli` (every command line lives there)."""

import sys

from study.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main())
