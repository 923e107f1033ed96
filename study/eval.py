"""``python -m study.eval``: the program is `study.cli.eval`."""

import sys

from study.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
