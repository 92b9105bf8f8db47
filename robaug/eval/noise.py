"""Noise corruptions (Hendrycks & Dietterich 2019) on float ``(B, C, H, W)`` batches in [0, 1]. Each takes the
severity's parameter from :data:`robaug.eval.catalogue.CORRUPTION_PARAMS` and an optional generator (draws on
the generator's device, see :mod:`robaug._core.rng`)."""

from __future__ import annotations

import torch

from .._core import rng

__all__ = ["gaussian", "shot", "impulse", "speckle"]


def gaussian(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """``clip(x + c n)``, ``n ~ N(0, 1)``."""
    return (x + c * rng.randn(x.shape, generator, x.device)).clamp(0, 1)


def shot(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """``clip(Poisson(c x) / c)``."""
    c = float(c)
    dev = rng.draw_device(generator, x.device)
    return (torch.poisson((x * c).to(dev), generator=generator).to(x.device) / c).clamp(0, 1)


def impulse(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """Salt and pepper: a fraction ``c`` of the values becomes 0 or 1 (equally likely)."""
    u = rng.rand((2, *x.shape), generator, x.device)
    flipped = u[0] < c
    salt = u[1] < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def speckle(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """``clip(x + x c n)``, ``n ~ N(0, 1)``."""
    return (x + x * c * rng.randn(x.shape, generator, x.device)).clamp(0, 1)
