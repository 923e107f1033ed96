"""``python -m study.data prepare TARGET``: see `study.cli.data_main` (every command line lives there)."""

import sys

from study.cli import data_main

if __name__ == "__main__":
    sys.exit(data_main())
