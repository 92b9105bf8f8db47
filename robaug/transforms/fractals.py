"""Procedural fractals and IPMix's mixing set (this path is kept for imports; the code lives in
:mod:`robaug.transforms.ifs` (IFS sampling, chaos game, rendering) and :mod:`robaug.transforms.mixing_set`)."""

from .ifs import chaos_game, generate_fractals, sample_ifs
from .mixing_set import MixingSet, MixingSource

__all__ = ["generate_fractals", "sample_ifs", "chaos_game", "MixingSet", "MixingSource"]
