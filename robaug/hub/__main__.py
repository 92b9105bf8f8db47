"""``python -m robaug.hub download NAME`` (the same as ``robaug download NAME``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["download"]:
        argv = argv[1:]
    sys.exit(main(argv, prog="python -m robaug.hub download"))
