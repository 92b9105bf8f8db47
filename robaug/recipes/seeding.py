"""Old path (warns; goes away in robaug 0.3.0): moved to :mod:`robaug.data.seeding`."""

from __future__ import annotations

from .._core.deprecation import moved_names

_HOMES = dict.fromkeys(["derive_seed", "PURPOSE", "make_generator"], "robaug.data.seeding")
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)
