"""``python -m study.run``: the program is `study.cli.run`."""

import sys

from study.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
