"""Where a module lives and what precision it computes in, for modules and plain callables alike."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["module_device", "module_dtype"]


def module_device(module: object, default: torch.device | str = "cpu") -> torch.device:
    """Device of a module's first buffer or parameter (``default`` for callables and parameter-free modules)."""
    if isinstance(module, nn.Module):
        for t in module.buffers():
            return t.device
        for t in module.parameters():
            return t.device
    return torch.device(default)


def module_dtype(module: object, default: torch.dtype) -> torch.dtype:
    """dtype of a module's first floating parameter (``default`` for callables and parameter-free modules), so a
    ``.half()``-ed network gets half input."""
    if isinstance(module, nn.Module):
        for p in module.parameters():
            if p.is_floating_point():
                return p.dtype
    return default
