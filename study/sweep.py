"""``python -m study.sweep``: the program is `study.cli.sweep`."""

import sys

from study.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
