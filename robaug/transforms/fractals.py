"""Old path of the fractal code (warns; goes away in robaug 0.3.0): :mod:`robaug.transforms.ifs` (IFS sampling,
chaos game, rendering) and :mod:`robaug.transforms.mixing_set` (IPMix's mixing set)."""

from __future__ import annotations

from .._core.deprecation import moved_names

_HOMES = {**dict.fromkeys(["generate_fractals", "sample_ifs", "chaos_game"], "robaug.transforms.ifs"),
          **dict.fromkeys(["MixingSet", "MixingSource"], "robaug.transforms.mixing_set")}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)
