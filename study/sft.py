"""``python -m study.sft``: the program is `study.cli.sft`."""

import sys

from study.cli.sft import main

if __name__ == "__main__":
    sys.exit(main())
