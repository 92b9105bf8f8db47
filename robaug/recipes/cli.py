"""Moved to :mod:`robaug.cli.train` (the ``robaug train`` command); this path keeps working."""

from robaug.cli.train import build_parser, config_from_args, main
from robaug.recipes.config import PRESETS, parse_fraction, parse_pgd

__all__ = ["PRESETS", "build_parser", "config_from_args", "main", "parse_fraction", "parse_pgd"]
