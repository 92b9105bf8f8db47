"""``python -m robaug ...``: the ``robaug`` command (see :mod:`robaug.cli`)."""

import sys

from robaug.cli import main

if __name__ == "__main__":
    sys.exit(main())
