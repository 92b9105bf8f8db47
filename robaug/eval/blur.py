"""Blur corruptions (Hendrycks & Dietterich 2019) on float ``(B, C, H, W)`` batches in [0, 1]: Gaussian, glass,
defocus, motion and zoom blur. Each takes the severity's parameter from
:data:`robaug.eval.catalogue.CORRUPTION_PARAMS`; widths in pixels are scaled by ``min(H, W) / 32`` above 32x32
(:func:`robaug.eval.kernels.size_scale`)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .._core import rng
from .kernels import clipped_zoom, filter2d, gaussian_filter, motion_blur_batch, pad, quantize, size_scale

__all__ = ["gaussian", "glass", "glass_shuffle", "defocus", "defocus_kernel", "motion", "zoom", "zoom_factors"]


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """scikit-image's Gaussian blur (truncate 4, edge mode "nearest")."""
    return gaussian_filter(x, sigma * size_scale(x), 4.0, "nearest").clamp(0, 1)


def glass_shuffle(
    y: torch.Tensor, delta: int, iterations: int, generator: torch.Generator | None, sequential: bool = False
) -> torch.Tensor:
    """The reference's local pixel shuffle. It scans rows and columns from ``size - delta`` down to
    ``delta + 1`` and, for each pixel, draws ``dx, dy`` in ``[-delta, delta)`` and runs
    ``x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]`` on an ``(H, W, 3)`` numpy array. On numpy
    row views that tuple assignment *copies* ``x[h + dy, w + dx]`` into ``x[h, w]`` and leaves the neighbour
    unchanged (it is not a swap), so the published sets contain that copy; it is reproduced here for any
    channel count. With ``delta = 1`` every read hits a pixel not yet written in the same pass, so a pass is
    one parallel gather; larger ``delta`` (images above 32 pixels) runs the sequential scan."""
    b, c, h, w = y.shape
    hs = list(range(h - delta, delta, -1))
    ws = list(range(w - delta, delta, -1))
    if not hs or not ws:
        return y
    offs = rng.randint(-delta, delta, (iterations, len(hs), len(ws), 2, b), generator, y.device)
    flat = y.reshape(b, c, h * w)
    if delta == 1 and not sequential:
        hh = torch.tensor(hs, device=y.device)
        ww = torch.tensor(ws, device=y.device)
        target = (hh[:, None] * w + ww[None, :]).reshape(-1)
        for it in range(iterations):
            dx, dy = offs[it, :, :, 0], offs[it, :, :, 1]  # (nh, nw, B)
            src = (hh[:, None, None] + dy) * w + (ww[None, :, None] + dx)
            idx = torch.arange(h * w, device=y.device).repeat(b, 1)
            idx[:, target] = src.permute(2, 0, 1).reshape(b, -1)
            flat = flat.gather(2, idx[:, None, :].expand(b, c, h * w))
        return flat.reshape(b, c, h, w)
    flat = flat.transpose(1, 2).contiguous()  # (B, HW, C)
    ar = torch.arange(b, device=y.device)
    for it in range(iterations):
        for ih, hh_ in enumerate(hs):
            for iw, ww_ in enumerate(ws):
                dx, dy = offs[it, ih, iw]
                flat[:, hh_ * w + ww_] = flat[ar, (hh_ + dy) * w + (ww_ + dx)]
    return flat.transpose(1, 2).reshape(b, c, h, w)


def glass(x: torch.Tensor, p: tuple[float, int, int], generator: torch.Generator | None) -> torch.Tensor:
    """Blur, local pixel shuffle (:func:`glass_shuffle`), blur; ``p = (sigma, max_delta, iterations)``."""
    sigma, delta, iterations = p
    scale = size_scale(x)
    sigma, delta = sigma * scale, max(1, int(round(delta * scale)))
    # the reference quantises (truncates) to uint8 after the first blur
    y = torch.floor(gaussian_filter(x, sigma, 4.0, "nearest").clamp(0, 1) * 255) / 255
    y = glass_shuffle(y, delta, iterations, generator)
    return gaussian_filter(y, sigma, 4.0, "nearest").clamp(0, 1)


def defocus_kernel(radius: float, alias_blur: float, device: torch.device) -> torch.Tensor:
    """The reference's anti-aliased disk: normalised disk on an integer grid, then a 3x3 (5x5 for radius > 8)
    Gaussian blur with OpenCV's reflect-101 border (no effect inside the support, so the grid is cropped)."""
    ksize = 3 if radius <= 8 else 5
    r = int(math.ceil(radius)) + ksize // 2
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).double()
    disk = disk / disk.sum()
    g = torch.arange(ksize, device=device, dtype=torch.float64) - ksize // 2
    g = torch.exp(-(g**2) / (2 * alias_blur**2))
    g = g / g.sum()
    disk = pad(disk.view(1, 1, *disk.shape), ksize // 2, ksize // 2, "mirror")
    disk = F.conv2d(F.conv2d(disk, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    return disk[0, 0].float()


def defocus(x: torch.Tensor, p: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """Correlation with :func:`defocus_kernel` (OpenCV reflect-101 border); ``p = (radius, alias blur sigma)``."""
    radius, alias = p
    scale = size_scale(x)
    kernel = defocus_kernel(radius * scale, alias * scale, x.device)
    return filter2d(x, kernel, "mirror").clamp(0, 1)


def motion(x: torch.Tensor, p: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """ImageMagick's motion blur at an angle ``U(-45, 45)`` degrees per image; ``p = (radius, sigma)``."""
    radius, sigma = p
    scale = size_scale(x)
    angles = rng.rand((x.shape[0],), generator, x.device) * 90 - 45
    return quantize(motion_blur_batch(x, radius * scale, sigma * scale, angles))


def zoom_factors(end: float) -> np.ndarray:
    """The reference's ``np.arange(1, end, 0.01)`` (7 factors for ``end = 1.06``, a float artefact)."""
    return np.arange(1, end, 0.01)


def zoom(x: torch.Tensor, end: float, generator: torch.Generator | None) -> torch.Tensor:
    """Mean of ``x`` and its centre-zoomed copies at :func:`zoom_factors`."""
    factors = zoom_factors(end)
    out = torch.zeros_like(x)
    for z in factors:
        out += clipped_zoom(x, float(z))
    return ((x + out) / (len(factors) + 1)).clamp(0, 1)
