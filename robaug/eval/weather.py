"""Weather corruptions (Hendrycks & Dietterich 2019) on float ``(B, C, H, W)`` batches in [0, 1]: snow, frost,
fog, brightness and spatter. Each takes the severity's parameter from
:data:`robaug.eval.catalogue.CORRUPTION_PARAMS`. Colour operations act on grey images replicated to RGB and
convert back with ITU-R 601 luma."""

from __future__ import annotations

import torch

from .._core import rng
from ._cv_ops import box_blur3, canny, chamfer_distance, equalize_hist
from .frost import FrostImages, procedural_frost
from .kernels import (
    as_rgb,
    back_to_channels,
    clipped_zoom,
    filter2d,
    gaussian_filter,
    hsv_to_rgb,
    motion_blur_batch,
    plasma_fractal,
    quantize,
    rgb_to_hsv,
    size_scale,
    to_gray,
)

__all__ = ["snow", "frost", "fog", "brightness", "spatter"]

_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def snow(x: torch.Tensor, p: tuple, generator: torch.Generator | None) -> torch.Tensor:
    """A zoomed, thresholded, motion-blurred snow layer added twice (and flipped) over a brightened image;
    ``p = (mean, std, zoom, threshold, blur radius, blur sigma, blend)``."""
    mean, std, zoom, thresh, radius, sigma, blend = p
    scale = size_scale(x)
    b, c, h, w = x.shape
    layer = mean + std * rng.randn((b, 1, h, w), generator, x.device)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # the reference stores the layer as uint8
    angles = rng.rand((b,), generator, x.device) * 90 - 135
    layer = quantize(motion_blur_batch(layer, radius * scale, sigma * scale, angles))
    x = blend * x + (1 - blend) * torch.maximum(x, to_gray(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1)


def frost(
    x: torch.Tensor, p: tuple[float, float], generator: torch.Generator | None, photos: FrostImages | None = None
) -> torch.Tensor:
    """``clip(c0 x + c1 layer)`` with ``p = (c0, c1)`` and a layer from ``photos`` or the procedural texture."""
    c0, c1 = p
    b, c, h, w = x.shape
    layer = photos.sample(b, h, w, x, generator) if photos is not None else procedural_frost(b, h, w, x, generator)
    return back_to_channels((c0 * as_rgb(x) + c1 * layer).clamp(0, 1), c)


def fog(x: torch.Tensor, p: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """``clip((x + s plasma) max(x) / (max(x) + s))``; ``p = (strength s, wibble decay)``."""
    strength, decay = p
    b, c, h, w = x.shape
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    plasma = plasma_fractal(b, mapsize, decay, x, generator)[:, None, :h, :w]
    max_val = x.flatten(1).max(1).values.view(b, 1, 1, 1)
    return ((x + strength * plasma) * max_val / (max_val + strength)).clamp(0, 1)


def brightness(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """HSV value ``v -> clip(v + c)``."""
    hsv = rgb_to_hsv(as_rgb(x))
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)
    return back_to_channels(hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1)


def spatter(x: torch.Tensor, p: tuple, generator: torch.Generator | None) -> torch.Tensor:
    """Water drops (mode 0) or mud (mode 1) from a blurred, thresholded liquid layer; ``p = (liquid mean,
    liquid std, blur sigma, threshold, water intensity or mud blur sigma, mode)``."""
    mean, std, sigma, thresh, amount, mode = p
    scale = size_scale(x)
    b, c, h, w = x.shape
    liquid = mean + std * rng.randn((b, 1, h, w), generator, x.device)
    liquid = gaussian_filter(liquid, sigma * scale, 4.0, "nearest")
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    rgb = as_rgb(x)
    if mode == 0:
        # water: drops lit from one side. The reference (OpenCV, uint8): Canny edges of the liquid layer,
        # distance to them (truncated at 20 px), 3x3 box blur, histogram equalisation, an emboss kernel and
        # another 3x3 box blur shade the drops; m = liquid * shading, normalised to max 1, times `amount`.
        # .astype(np.uint8) as the reference runs it: values above 1 (severity 3 has some) wrap around modulo 256
        l8 = torch.floor(liquid * 255).remainder(256)
        edges = canny(l8, 50, 150)
        dist = chamfer_distance(edges, 20.0 * scale)
        dist = torch.floor(box_blur3(dist))  # float blur, then .astype(np.uint8)
        dist = equalize_hist(dist)
        dist = filter2d(dist, _EMBOSS.to(x.device), "mirror").round().clamp(0, 255)  # filter2D to CV_8U
        dist = box_blur3(dist).round()  # cv2.blur on uint8 rounds
        m = l8 * dist
        m = m / m.flatten(1).max(1).values.clamp_min(1e-12).view(b, 1, 1, 1) * amount
        colour = torch.tensor(_WATER, device=x.device).view(1, 3, 1, 1)
        out = rgb + m * colour
    else:
        # mud: the thresholded liquid mask, blurred (sigma `amount`), kept where >= 0.8, replaces the image by brown
        m = gaussian_filter((liquid > thresh).float(), amount * scale, 4.0, "nearest")
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = torch.tensor(_MUD, device=x.device).view(1, 3, 1, 1)
        out = rgb * (1 - m) + colour * m
    return back_to_channels(out.clamp(0, 1), c)
