"""``robaug list``: the registered pretrained denoisers, one name per line (no torch import). The module is named
``list_`` so that it does not shadow the builtin ``list`` inside :mod:`robaug.cli`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ._common import make_parser, run_main

DESCRIPTION = "List the registered pretrained denoisers, one name per line (details: robaug download --list)."
EPILOG = """examples:
  robaug list
  robaug list | grep cifar"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``robaug list`` takes no options."""


def run(args: argparse.Namespace) -> int:
    from robaug.hub.registry import list_pretrained

    for name in list_pretrained():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("list", DESCRIPTION, EPILOG)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("list", build_parser(), run, argv)
