"""``robaug download``: pre-fetch pretrained weights into the cache (for offline clusters); no torch import."""

from __future__ import annotations

import argparse
from typing import Sequence

from ._common import add_debug, run_main

EPILOG = """examples:
  robaug download --list
  robaug download google/ddpm-cifar10-32
  ROBAUG_CACHE=/shared/robaug robaug download all"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robaug.hub._cli import add_arguments as add_download_arguments

    add_download_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    from robaug.hub._cli import build_parser as build_download_parser

    from ._common import HelpFormatter

    p = build_download_parser("robaug download")
    p.formatter_class = HelpFormatter
    p.epilog = EPILOG
    add_debug(p)
    return p


def run(args: argparse.Namespace) -> int:
    from robaug.hub._cli import run as run_download

    return run_download(args, prog="robaug download")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("download", build_parser(), run, argv)
