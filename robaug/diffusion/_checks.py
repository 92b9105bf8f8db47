"""Checks of the samplers' float settings: a NaN or infinite setting would turn every image into NaN (or black
after clamping), so each one is refused in the constructor with a message that names the argument as the user
spells it."""

from __future__ import annotations

from typing import Any

from .._core.checks import check_real

__all__ = ["finite_float", "optional_finite"]


def finite_float(name: str, value: Any, *, lo: float | None = None, lo_open: bool = False,
                 hi: float | None = None, allow_inf: bool = False, hint: str = "") -> float:
    """:func:`robaug._core.checks.check_real` with the samplers' argument order (the argument's name first)."""
    return check_real(value, name, None, lo, hi, low_open=lo_open, allow_inf=allow_inf, hint=hint)


def optional_finite(name: str, value: Any, **kwargs: Any) -> float | None:
    """:func:`finite_float` for settings where ``None`` means "the default"."""
    return None if value is None else finite_float(name, value, **kwargs)
