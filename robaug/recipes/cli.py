"""Old path (warns; goes away in robaug 0.3.0): the ``robaug train`` command moved to :mod:`robaug.cli.train`, the
presets and value parsers to :mod:`robaug.recipes.config`."""

from __future__ import annotations

from .._core.deprecation import moved_names

_HOMES = {**dict.fromkeys(["build_parser", "config_from_args", "main"], "robaug.cli.train"),
          **dict.fromkeys(["PRESETS", "parse_fraction", "parse_pgd"], "robaug.recipes.config")}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)
