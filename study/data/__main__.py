"""``python -m study.data prepare TARGET``: the program is `study.cli.data`."""

import sys

from study.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
