"""Pieces shared by the attacks (the TRADES inner maximisation and the PGD evaluation): random draws on the
generator's device, per-sample norms and the l_inf projection."""

from __future__ import annotations

import torch

from ._core import rng


def draw_like(kind: str, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.rand`` (``kind="rand"``) or ``randn`` of ``x``'s shape, drawn with ``generator`` (on its
    device, float32; :mod:`robaug._core.rng`), returned on ``x``'s device and dtype."""
    draw = rng.rand if kind == "rand" else rng.randn
    return draw(x.shape, generator, x.device, x.dtype)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor shaped to broadcast against the batch ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm of a batch, shaped to broadcast against it."""
    return per_sample(t.flatten(1).norm(dim=1), t)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto ``{|x_adv - x|_inf <= eps} ∩ [0, 1]``."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def uniform_linf_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """``clip[0,1](x + U(-eps, eps))``: the random start of l_inf attacks."""
    return (x + (2.0 * draw_like("rand", x, generator) - 1.0) * eps).clamp_(0.0, 1.0)
