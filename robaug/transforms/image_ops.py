"""Batched image operations with one parameter per sample.

Every function takes a float batch ``x`` of shape ``(N, C, H, W)`` with values in ``[0, 1]`` and, where the
op has a parameter, a tensor of ``N`` values (one per sample; a Python number is broadcast to all samples).
They are the image-level operations of AugMix/IPMix, written so that a whole batch with a different
operation strength for every image is one tensor op, on any device. Each op reproduces the torchvision
functional op of the same name (``torchvision.transforms.v2.functional``) applied image by image with that
image's parameter; ops that PIL defines on 8-bit levels (posterize, equalize, autocontrast) work on the
8-bit level ``round(255 x)`` as PIL and torchvision's uint8 kernels do.

kornia's ``enhance`` functions already take per-sample parameters for several ops; ``sharpness`` and
``adjust_saturation_with_gray_subtraction`` are used as they are (their definition is the torchvision/PIL one).
Contrast is written here because kornia before 0.9 takes one mean over the whole batch for one-channel images.
Solarize, equalize and posterize are written here too: kornia's versions are correct but spend most of their
time in checks and ``torch.where`` passes (or truncate 8-bit levels), and they run in IPMix's hot loop.
Geometric ops share one warp (:func:`affine`) whose matrices follow torchvision's convention, so a step that
rotates some images, shears others and translates the rest is a single ``grid_sample`` call.
"""

from __future__ import annotations

import functools
from typing import Union

import torch
import torch.nn.functional as F

__all__ = [
    "Param",
    "invert",
    "posterize",
    "solarize",
    "equalize",
    "autocontrast",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_sharpness",
    "hflip",
    "affine_matrix",
    "affine",
    "affine_theta",
    "warp",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "to_grayscale",
]

Param = Union[float, int, torch.Tensor]


def _per_sample(p: Param, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A parameter as an ``(N, 1, 1, 1)`` tensor on ``x``'s device (scalars broadcast to every sample)."""
    dtype = dtype or x.dtype
    if not isinstance(p, torch.Tensor):
        return torch.full((x.shape[0], 1, 1, 1), float(p), dtype=dtype, device=x.device)
    p = p.to(device=x.device, dtype=dtype)
    if p.ndim == 0:
        return p.expand(x.shape[0]).reshape(-1, 1, 1, 1)
    if p.shape != (x.shape[0],):
        raise ValueError(
            f"expected one parameter per sample, i.e. shape ({x.shape[0]},), got {tuple(p.shape)}"
        )
    return p.reshape(-1, 1, 1, 1)


def _vector(p: Param, n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        return torch.full((n,), float(p), dtype=dtype, device=device)
    p = p.to(device=device, dtype=dtype)
    return p.expand(n) if p.ndim == 0 else p.reshape(n)


# --------------------------------------------------------------------------------------------------
# point-wise (colour) ops


def invert(x: torch.Tensor) -> torch.Tensor:
    """``1 - x`` (PIL ``ImageOps.invert``)."""
    return 1.0 - x


def posterize(x: torch.Tensor, bits: Param) -> torch.Tensor:
    """Keep the ``bits`` (0..8) most significant bits of each 8-bit level ``round(255 x)``.

    Same as torchvision's uint8 ``posterize`` (``level & mask``). kornia's posterize truncates ``255 x``
    instead of rounding, which moves levels produced by bilinear warps down by one; hence our own version.
    """
    step = torch.exp2(8.0 - _per_sample(bits, x))  # 2 ** (8 - bits); dividing by it is exact
    return (x * 255.0).round_().mul_(1.0 / step).floor_().mul_(step / 255.0)


def solarize(x: torch.Tensor, threshold: Param) -> torch.Tensor:
    """Invert the values ``>= threshold`` (threshold in [0, 1]; above 1 leaves the image unchanged).

    Same as ``kornia.enhance.solarize``; written as ``|[x >= t] - x|`` with the comparison written straight into
    a float tensor, because ``torch.where`` and bool tensors are several times slower than arithmetic on CPU.
    """
    above = torch.ge(x, _per_sample(threshold, x), out=torch.empty_like(x))  # 0/1 floats: no bool tensor
    return above.sub_(x).abs_()  # |1 - x| = 1 - x where x >= t, |0 - x| = x elsewhere


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of every channel of every image (PIL ``ImageOps.equalize``).

    PIL's algorithm on the 8-bit level ``int(255 x)`` (as ``kornia.enhance.equalize``, whose check and
    ``torch.where`` passes make it several times slower): ``step = (count - count of the last used level) // 255``,
    ``lut[v] = (cumsum[v - 1] + step // 2) // step``, and a channel with ``step == 0`` is unchanged.
    """
    n, c, h, w = x.shape
    planes = n * c
    # int32 levels offset by 256 per channel: one histogram call and one flat look-up for all channels
    # (int32 indices and bincount are about twice as fast on CPU as int64 scatter_add_/gather).
    level = x.reshape(planes, h * w).mul(255.0).clamp_(0, 255).to(torch.int32)
    flat = level.add_(torch.arange(0, planes * 256, 256, device=x.device, dtype=torch.int32).view(planes, 1)).view(-1)
    if x.device.type == "cpu":
        hist = torch.bincount(flat, minlength=planes * 256).view(planes, 256).float()
    else:  # bincount reads its input's maximum on the host; index_add_ does not sync
        hist = torch.zeros(planes * 256, device=x.device, dtype=torch.float32)
        hist = hist.index_add_(0, flat, torch.ones(1, device=x.device).expand(flat.numel())).view(planes, 256)
    # Counts and LUT in float32: exact while a channel has fewer than 2^24 pixels (4096 x 4096).
    ramp = torch.arange(256, device=x.device, dtype=torch.float32)
    top = ((hist > 0).float() * ramp).amax(1, keepdim=True).long()  # highest level used
    last = hist.gather(1, top)  # its count
    step = torch.floor((h * w - last) / 255)
    cum = hist.cumsum(1).sub_(hist)  # cumsum[v - 1]
    lut = cum.add_(torch.floor(step / 2)).div_(step.clamp(min=1)).floor_().clamp_(0, 255)
    lut = torch.lerp(ramp.expand(planes, 256), lut, (step > 0).float()).div_(255.0).to(x.dtype)  # step == 0: unchanged
    return lut.view(-1).index_select(0, flat).view(n, c, h, w)


def autocontrast(x: torch.Tensor, cutoff: Param = 0.0) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast(img, cutoff)`` per channel, with a per-sample ``cutoff`` in percent.

    ``cutoff`` percent of the pixels are ignored at each end of every channel's 8-bit histogram, the
    remaining range ``[lo, hi]`` is stretched to ``[0, 255]`` through PIL's lookup table
    ``int(255 (v - lo) / (hi - lo))``; a channel with ``hi <= lo`` is left unchanged.
    """
    n, c, h, w = x.shape
    planes = n * c
    level = (x * 255.0).round_().clamp_(0, 255).long().reshape(planes, h * w)
    hist = torch.zeros(planes, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, level, torch.ones_like(level))
    cut_pct = _vector(cutoff, n, x.device, torch.float64).repeat_interleave(c)
    cut = torch.floor(float(h * w) * cut_pct / 100.0).long().unsqueeze(1)  # int(n * cutoff // 100)
    cum = hist.cumsum(1)
    suffix = hist.flip(1).cumsum(1).flip(1)
    lo = (cum <= cut).sum(1, keepdim=True)  # first level whose cumulative count exceeds the cut
    hi = (suffix > cut).sum(1, keepdim=True) - 1  # last level whose suffix count exceeds the cut
    span = (hi - lo).clamp(min=1).double()
    scale = torch.full_like(span, 255.0) / span  # a true division (255.0 / t is 255 * (1 / t) in torch)
    ramp = torch.arange(256, device=x.device, dtype=torch.float64).unsqueeze(0)
    lut = torch.trunc(ramp * scale - lo.double() * scale).clamp_(0, 255)
    lut = torch.where(hi > lo, lut, ramp.expand(planes, -1)).to(x.dtype)
    return (lut.gather(1, level) / 255.0).reshape(n, c, h, w)


def adjust_brightness(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """``clamp(factor * x)`` (PIL ``ImageEnhance.Brightness``)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Blend with the mean grey level of the image (PIL ``ImageEnhance.Contrast``): ``f x + (1 - f) mean(grey(x))``."""
    # Not kornia's adjust_contrast_with_mean_subtraction: before 0.9 it takes a one-channel mean over the whole batch.
    f = _vector(factor, x.shape[0], x.device, x.dtype).view(-1, 1, 1, 1)
    mean = to_grayscale(x).mean((-3, -2, -1), keepdim=True)
    return (x * f + mean * (1 - f)).clamp(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Blend with the greyscale image (PIL ``ImageEnhance.Color``); greyscale input is returned as is."""
    if x.shape[1] == 1:
        return x
    import kornia.enhance as KE  # lazy: kornia takes a second to import

    return KE.adjust_saturation_with_gray_subtraction(x, _vector(factor, x.shape[0], x.device, x.dtype))


def adjust_sharpness(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Blend with a 3x3 smoothed image, borders kept (PIL ``ImageEnhance.Sharpness``)."""
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x
    import kornia.enhance as KE  # lazy: kornia takes a second to import

    return KE.sharpness(x, _vector(factor, x.shape[0], x.device, x.dtype))


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's weights), as one channel."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


# --------------------------------------------------------------------------------------------------
# geometric ops


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right (PIL ``ImageOps.mirror``)."""
    return x.flip(-1)


def affine_matrix(
    n: int,
    device: torch.device | str = "cpu",
    *,
    angle: Param = 0.0,
    translate_x: Param = 0.0,
    translate_y: Param = 0.0,
    shear_x: Param = 0.0,
    shear_y: Param = 0.0,
    center_x: Param = 0.0,
    center_y: Param = 0.0,
) -> torch.Tensor:
    """Per-sample inverse affine matrices ``(n, 2, 3)`` in torchvision's convention.

    The transform is ``T * C * R(angle) * ShY(shear_y) * ShX(shear_x) * C^-1`` (angles in degrees, clockwise
    positive as in ``torchvision.transforms.v2.functional.affine``), with ``C`` a translation to the centre
    ``(center_x, center_y)`` given in pixels relative to the image centre and ``T`` the translation. The
    returned matrix maps output pixel coordinates (origin at the image centre) to input coordinates,
    which is what :func:`affine` samples with.
    """
    device = torch.device(device)
    v = lambda p: _vector(p, n, device, torch.float32)  # noqa: E731
    rot = torch.deg2rad(v(angle))
    sx = torch.deg2rad(v(shear_x))
    sy = torch.deg2rad(v(shear_y))
    cx, cy = v(center_x), v(center_y)
    tx, ty = v(translate_x), v(translate_y)
    # Forward linear part [[a, b], [c, d]] has determinant 1; its inverse is [[d, -b], [-c, a]].
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m00, m01, m10, m11 = d, -b, -c, a
    # x_in = M (x_out - C - T) + C
    ox, oy = cx + tx, cy + ty
    m02 = cx - m00 * ox - m01 * oy
    m12 = cy - m10 * ox - m11 * oy
    return torch.stack([m00, m01, m02, m10, m11, m12], dim=1).view(n, 2, 3)


def affine_theta(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Convert :func:`affine_matrix` matrices to ``grid_sample``'s normalised ``(n, 2, 3)`` form.

    Pixel coordinates centred on the image map to ``[-1, 1]`` by dividing by half the side
    (``align_corners=False``: pixel centres at ``(2 i + 1) / side - 1``).
    """
    m = matrix.reshape(-1, 6)
    scale = torch.tensor(
        [1.0, height / width, 2.0 / width, width / height, 1.0, 2.0 / height], dtype=m.dtype, device=m.device
    )
    return (m * scale).view(-1, 2, 3)


@functools.lru_cache(maxsize=32)
def _pixel_centres(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in ``grid_sample``'s [-1, 1] coordinates: rows ``(1, h, 1)``, columns ``(1, 1, w)`` (cached)."""
    rows = (torch.arange(h, device=device, dtype=dtype) * 2 + 1).div_(h).sub_(1).view(1, h, 1)
    cols = (torch.arange(w, device=device, dtype=dtype) * 2 + 1).div_(w).sub_(1).view(1, 1, w)
    return rows, cols


def warp(
    x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", window: tuple | None = None
) -> torch.Tensor:
    """``grid_sample`` of every image with its own normalised ``theta`` (from :func:`affine_theta`).

    The sampling grid is ``F.affine_grid``'s (``align_corners=False``), built from two broadcast sums of
    per-row and per-column terms, which is cheaper than ``affine_grid``'s batched matrix product on CPU.
    ``mode="nearest"`` is exact (and ~3x faster) for integer translations, where sample points fall on pixel
    centres.

    ``window=(top, left, height, width)`` (``top``/``left``: one integer-valued tensor entry per image) computes
    only that window of every output, ``(N, C, height, width)``: the same values as cropping the full warp,
    at the cost of the window.
    """
    n, _, h, w = x.shape
    th = theta.to(device=x.device, dtype=x.dtype).reshape(n, 6, 1, 1)
    rows, cols = _pixel_centres(h, w, x.device, x.dtype)
    if window is not None:
        top, left, h, w = window
        rows = rows.view(-1)[_span(top, h, n, x.device)].view(n, h, 1)
        cols = cols.view(-1)[_span(left, w, n, x.device)].view(n, 1, w)
    grid = torch.empty(n, h, w, 2, device=x.device, dtype=x.dtype)
    torch.add(th[:, 0] * cols + th[:, 2], th[:, 1] * rows, out=grid[..., 0])
    torch.add(th[:, 3] * cols + th[:, 5], th[:, 4] * rows, out=grid[..., 1])
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _span(start: torch.Tensor, length: int, n: int, device: torch.device) -> torch.Tensor:
    """Indices ``start[i] + 0, ..., start[i] + length - 1`` as an ``(n, length)`` tensor."""
    return start.to(device=device).reshape(n, 1).long() + torch.arange(length, device=device)


def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Warp every image with its own inverse affine ``matrix`` (from :func:`affine_matrix`).

    Bilinear sampling at pixel centres, zero (black) fill outside the image: the same sampling as
    torchvision's tensor ``affine``/``rotate`` with ``interpolation=BILINEAR`` and ``fill=None``.
    """
    n, _, h, w = x.shape
    if matrix.shape != (n, 2, 3):
        raise ValueError(f"expected matrices of shape ({n}, 2, 3), got {tuple(matrix.shape)}")
    return warp(x, affine_theta(matrix.to(device=x.device, dtype=x.dtype), h, w))


def rotate(x: torch.Tensor, angle: Param) -> torch.Tensor:
    """Rotate counter-clockwise by ``angle`` degrees about the centre (``TF.rotate``, bilinear, black fill)."""
    return affine(x, affine_matrix(x.shape[0], x.device, angle=-_vector(angle, x.shape[0], x.device)))


def shear_x(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Horizontal shear by ``factor`` about the top-left corner (PIL ``(1, factor, 0, 0, 1, 0)``).

    Equals torchvision's ``affine(shear=[degrees(atan(factor)), 0], center=[0, 0])``, which is what
    torchvision's AutoAugment/AugMix use for ``ShearX``.
    """
    n, _, h, w = x.shape
    deg = torch.rad2deg(torch.atan(_vector(factor, n, x.device)))
    return affine(x, affine_matrix(n, x.device, shear_x=deg, center_x=-w / 2, center_y=-h / 2))


def shear_y(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Vertical shear by ``factor`` about the top-left corner (PIL ``(1, 0, 0, factor, 1, 0)``)."""
    n, _, h, w = x.shape
    deg = torch.rad2deg(torch.atan(_vector(factor, n, x.device)))
    return affine(x, affine_matrix(n, x.device, shear_y=deg, center_x=-w / 2, center_y=-h / 2))


def translate_x(x: torch.Tensor, pixels: Param) -> torch.Tensor:
    """Shift right by ``pixels`` (may be negative), black fill."""
    return affine(x, affine_matrix(x.shape[0], x.device, translate_x=pixels))


def translate_y(x: torch.Tensor, pixels: Param) -> torch.Tensor:
    """Shift down by ``pixels`` (may be negative), black fill."""
    return affine(x, affine_matrix(x.shape[0], x.device, translate_y=pixels))
