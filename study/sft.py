"""``python -m study.sft``: see `study.cli` (every command line lives there)."""

import sys

from study.cli import sft_main

if __name__ == "__main__":
    sys.exit(sft_main())
