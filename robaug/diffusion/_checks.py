"""Checks of the samplers' float settings: a NaN or infinite setting would turn every image into NaN (or black
after clamping), so each one is refused in the constructor with a message that names the argument as the user
spells it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_float", "optional_finite"]


def finite_float(name: str, value: Any, *, lo: float | None = None, lo_open: bool = False,
                 hi: float | None = None, allow_inf: bool = False, hint: str = "") -> float:
    """``float(value)`` after checking that it is a real number, finite (``+inf`` too when ``allow_inf``, where it
    means "no limit"), and ``>= lo`` (``> lo`` when ``lo_open``) and ``<= hi``; else a ``ValueError`` naming
    ``name`` (``TypeError`` for a non-number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) or (allow_inf and v == math.inf)
    if not ok:
        what = "finite (inf means no limit)" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {what}, got {value!r}{hint}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}{hint}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi:g}, got {value!r}{hint}")
    return v


def optional_finite(name: str, value: Any, **kwargs: Any) -> float | None:
    """:func:`finite_float` for settings where ``None`` means "the default"."""
    return None if value is None else finite_float(name, value, **kwargs)
