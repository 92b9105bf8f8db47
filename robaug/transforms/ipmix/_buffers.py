"""Scratch buffers, window gathers and host-to-device helpers of IPMix's kernels."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["Workspace", "window_grid", "window_offsets", "windows", "sort_by", "to_device"]


class Workspace:
    """Named scratch buffers of one call, reused (as views) by every chunk; grown when a chunk needs more.

    Fresh CPU allocations above the allocator's mmap threshold are page-faulted on first write, which costs
    more than the arithmetic done on them; reusing the chunks' large buffers pays that once per call.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self._buffers[name] = torch.empty(numel, dtype=self.dtype, device=self.device)
        return buf[:numel].view(*shape)


@functools.lru_cache(maxsize=64)
def window_grid(sh: int, sw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates ``(1, sh, 1)`` and ``(1, 1, sw)`` of a window (cached)."""
    return (
        torch.arange(sh, device=device, dtype=torch.float32).view(1, sh, 1),
        torch.arange(sw, device=device, dtype=torch.float32).view(1, 1, sw),
    )


@functools.lru_cache(maxsize=64)
def window_offsets(c: int, h: int, w: int, sh: int, sw: int, device: torch.device) -> torch.Tensor:
    """Flat offsets ``(C, sh, sw)`` of an ``sh x sw`` window at the corner of a ``(C, h, w)`` image (cached)."""
    ch = torch.arange(c, device=device).view(c, 1, 1) * (h * w)
    return ch + torch.arange(sh, device=device).view(1, sh, 1) * w + torch.arange(sw, device=device).view(1, 1, sw)


def windows(
    src: torch.Tensor, rows: torch.Tensor | None, top: torch.Tensor, left: torch.Tensor, sh: int, sw: int
) -> torch.Tensor:
    """The ``sh x sw`` windows at ``(top[i], left[i])`` of images ``src[rows[i]]`` (``rows=None``: ``src[i]``)."""
    _, c, h, w = src.shape
    device = src.device
    base = torch.arange(top.shape[0], device=device) if rows is None else rows
    corner = top.long() * w + left.long()
    flat = base.mul(c * h * w).add_(corner).view(-1, 1, 1, 1) + window_offsets(c, h, w, sh, sw, device)
    return src.reshape(-1).index_select(0, flat.view(-1)).view(-1, c, sh, sw)


def sort_by(items: np.ndarray, keys: np.ndarray, num_keys: int) -> tuple[np.ndarray, list[int]]:
    """``items`` reordered so equal ``keys`` are contiguous, and the count of each key (host arrays)."""
    order = np.argsort(keys, kind="stable")
    return items[order], np.bincount(keys, minlength=num_keys).tolist()


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device`` (no copy on CPU, an asynchronous one elsewhere)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if device.type == "cpu" else t.to(device, non_blocking=True)
