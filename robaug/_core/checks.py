"""Checks of numeric settings, shared by every constructor: a NaN, an infinity or an out-of-range value is refused
with a message that names the argument (and its owner, e.g. ``IPMix: beta must ...``) instead of turning into NaN
images or a silently wrong result."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_real", "check_int"]


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def check_real(value: Any, name: str, owner: str | None = None, low: float | None = None, high: float | None = None,
               *, low_open: bool = False, allow_inf: bool = False, hint: str = "") -> float:
    """``float(value)`` after checking it is a real number, finite (``+inf`` too when ``allow_inf``, where it means
    "no limit"), ``>= low`` (``> low`` with ``low_open``) and ``<= high``. ``TypeError`` / ``ValueError`` name
    ``owner`` and ``name``; ``hint`` is appended to range errors."""
    real = isinstance(value, numbers.Real) or (not isinstance(value, (str, bytes)) and hasattr(value, "__float__"))
    if isinstance(value, bool) or not real:
        raise TypeError(f"{_prefix(owner)}{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) or (allow_inf and v == math.inf)):
        what = "finite (inf means no limit)" if allow_inf else "a finite number"
        raise ValueError(f"{_prefix(owner)}{name} must be {what}, got {value!r}{hint}")
    too_low = low is not None and (v <= low if low_open else v < low)
    if too_low or (high is not None and v > high):
        if low is not None and high is not None:
            bound = f"lie in {'(' if low_open else '['}{low}, {high}]"
        elif low is not None:
            bound = f"be {'>' if low_open else '>='} {low}"
        else:
            bound = f"be <= {high}"
        raise ValueError(f"{_prefix(owner)}{name} must {bound}, got {value!r}{hint}")
    return v


def check_int(value: Any, name: str, owner: str | None = None, low: int | None = None,
              high: int | None = None) -> int:
    """``int(value)`` after checking it is a whole number (an int, or a float without fraction) in ``[low, high]``;
    the ``TypeError`` / ``ValueError`` names ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_prefix(owner)}{name} must be an integer, got {type(value).__name__}")
    if not isinstance(value, numbers.Integral) and not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"{_prefix(owner)}{name} must be a whole number, got {value}")
    v = value if isinstance(value, int) else int(float(value))  # numpy ints and whole floats
    if (low is not None and v < low) or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{'-inf' if low is None else low}, {high}]"
        raise ValueError(f"{_prefix(owner)}{name} must be {bound}, got {v}")
    return v
