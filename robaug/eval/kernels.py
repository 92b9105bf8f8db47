"""Image kernels shared by the corruptions, on float ``(B, C, H, W)`` batches: padding with scipy's / OpenCV's
border rules, separable Gaussian filtering (scipy.ndimage's kernel), 2-D correlation, colour conversions
(luma, scikit-image's HSV), the resampling matrices of scipy's ``zoom`` and PIL's BOX filter, the diamond-square
plasma fractal and ImageMagick's motion blur.

kornia is used where it computes the same thing (the 1-D Gaussian kernel, the ITU-R 601 luma; the tests in
``tests/eval/test_kernels.py`` state the tolerances); everything else stays here, each with a one-line reason.
The OpenCV-exact operations of spatter and frost (Canny, chamfer distance, histogram equalisation, INTER_LINEAR
weights) are in :mod:`robaug.eval._cv_ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._core import rng

__all__ = [
    "REF_SIZE", "LUMA", "size_scale", "pad_index", "pad", "gaussian_kernel1d", "gaussian_filter", "filter2d",
    "to_gray", "rgb_to_hsv", "hsv_to_rgb", "as_rgb", "back_to_channels", "quantize", "linear_zoom_matrix",
    "clipped_zoom", "box_resize_matrix", "plasma_fractal", "motion_blur_batch",
]

REF_SIZE = 32.0  # the CIFAR-10-C table is in pixels of 32x32 images
LUMA = (0.299, 0.587, 0.114)


def size_scale(x: torch.Tensor) -> float:
    """Factor for the pixel-unit parameters: ``min(H, W) / 32`` for images larger than 32x32, else 1 (the
    CIFAR-10-C values; scaling them down would e.g. shrink defocus blur's smallest disks to a single pixel)."""
    return max(1.0, min(x.shape[-2], x.shape[-1]) / REF_SIZE)


# Own padding: F.pad / kornia have no scipy "reflect" (half-sample symmetric) and refuse pads longer than the axis.
def pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices of a padded axis. ``nearest`` repeats the edge (scipy "nearest", OpenCV REPLICATE),
    ``reflect`` is half-sample symmetric (scipy "reflect": d c b a | a b c d), ``mirror`` is whole-sample
    symmetric (scipy "mirror", OpenCV REFLECT_101: d c b | a b c d). Works for pads larger than ``n``."""
    idx = torch.arange(-before, n + after, device=device)
    if mode == "nearest" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "reflect":
        m = idx.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    if mode == "mirror":
        m = idx.remainder(2 * n - 2)
        return torch.where(m >= n, 2 * n - 2 - m, m)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by ``ph`` / ``pw`` on both sides with :func:`pad_index`'s rule."""
    h, w = x.shape[-2:]
    if ph:
        x = x.index_select(-2, pad_index(h, ph, ph, mode, x.device))
    if pw:
        x = x.index_select(-1, pad_index(w, pw, pw, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, normalised (computed in float64
    by kornia's ``get_gaussian_kernel1d``, returned in float32)."""
    from kornia.filters import get_gaussian_kernel1d

    radius = int(truncate * sigma + 0.5)
    k = get_gaussian_kernel1d(2 * radius + 1, float(sigma), device=device, dtype=torch.float64)[0]
    return (k / k.sum()).float()


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Separable Gaussian filter over the last two dims of ``(B, C, H, W)`` (scipy.ndimage.gaussian_filter).

    Own convolution rather than ``kornia.filters.gaussian_blur2d``: scipy's "reflect" border and pads longer than
    the image (small images, wide blurs) are needed; the kernel itself is kornia's."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate, x.device)
    r = (k.numel() - 1) // 2
    b, c, h, w = x.shape
    y = pad(x.reshape(b * c, 1, h, w), r, r, mode)
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(b, c, h, w)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with one odd-sized ``(k, k)`` kernel (OpenCV filter2D). Own padding (see
    :func:`pad`): ``kornia.filters.filter2d`` fails on kernels wider than the image."""
    k = kernel.shape[-1]
    r = (k - 1) // 2
    b, c, h, w = x.shape
    y = pad(x.reshape(b * c, 1, h, w), r, r, mode)
    return F.conv2d(y, kernel.view(1, 1, k, k).to(x.dtype)).reshape(b, c, h, w)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (kornia's ``rgb_to_grayscale``); 1-channel input as is."""
    if x.shape[1] == 1:
        return x
    from kornia.color import rgb_to_grayscale

    return rgb_to_grayscale(x, rgb_weights=torch.tensor(LUMA, device=x.device, dtype=x.dtype))


# Own HSV: kornia's rgb_to_hsv adds an eps to its denominators (brightness of pixels below 1/255 moves by up to 1e-4).
def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """scikit-image's rgb2hsv on ``(B, 3, H, W)``; hue in [0, 1), hue 0 for grey pixels."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    delta = v - x.min(1).values
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    d = delta.clamp_min(1e-12)
    h = torch.where(r == v, (g - b) / d, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / d, h)  # later channels win ties, as in scikit-image
    h = torch.where(b == v, 4.0 + (r - g) / d, h)
    h = torch.where(delta > 0, (h / 6.0).remainder(1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (scikit-image's hsv2rgb)."""
    h, s, v = hsv.unbind(1)
    h6 = h * 6.0
    hi = torch.floor(h6)
    f = h6 - hi
    hi = hi.long().remainder(6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    # rows: hi = 0..5; columns: r, g, b
    table = torch.stack(
        [
            torch.stack([v, t, p], 1), torch.stack([q, v, p], 1), torch.stack([p, v, t], 1),
            torch.stack([p, q, v], 1), torch.stack([t, p, v], 1), torch.stack([v, p, q], 1),
        ],
        1,
    )  # (B, 6, 3, H, W)
    idx = hi.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    return table.gather(1, idx).squeeze(1)


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """A grey ``(B, 1, H, W)`` batch replicated to RGB (a view); RGB as is."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def back_to_channels(y: torch.Tensor, c: int) -> torch.Tensor:
    """An RGB result converted back to ``c`` channels (luma for 1)."""
    return to_gray(y) if c == 1 else y


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 uint8 levels (the reference stores uint8 between steps)."""
    return x.clamp(0, 1).mul(255).round().div(255)


# Own resampling matrices here and below: kornia's resize follows torch's interpolate, not scipy's corner-aligned
# ``zoom`` grid or PIL's BOX filter.
def linear_zoom_matrix(n: int, zoom: float, device: torch.device) -> torch.Tensor:
    """(n, n) matrix of the reference ``clipped_zoom`` along one axis: crop the centre ``ceil(n / zoom)``
    pixels, scipy ``zoom(order=1)`` (corner-aligned grid) to ``round(ch * zoom)`` pixels, centre-trim to ``n``."""
    ch = int(math.ceil(n / zoom))
    top = (n - ch) // 2
    out = int(round(ch * zoom))
    trim = (out - n) // 2
    j = torch.arange(trim, trim + n, device=device, dtype=torch.float64)
    src = j * (ch - 1) / max(out - 1, 1) + top if ch > 1 else torch.full_like(j, float(top))
    lo = src.floor().clamp(0, n - 1)
    frac = src - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=n - 1)
    m = torch.zeros(n, n, device=device, dtype=torch.float64)
    rows = torch.arange(n, device=device)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.float()


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's ``clipped_zoom`` of the last two dims (see :func:`linear_zoom_matrix`)."""
    h, w = x.shape[-2:]
    ah = linear_zoom_matrix(h, zoom, x.device)
    aw = linear_zoom_matrix(w, zoom, x.device)
    return ah @ x @ aw.T


def box_resize_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's BOX resampling along one axis (Pillow ``precompute_coeffs``)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        for i in range(xmin, xmax):
            t = (i - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[o, i] = 1.0
        s = m[o].sum()
        if s > 0:
            m[o] /= s
    return m.float().to(device)


def plasma_fractal(
    batch: int, mapsize: int, wibbledecay: float, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Batched diamond-square height maps in [0, 1], shape ``(B, mapsize, mapsize)`` (the reference's
    ``plasma_fractal``: random offsets ``wibble * U(-wibble, wibble)``, wibble 100 divided by ``wibbledecay``
    per octave, periodic boundaries), on ``like``'s device."""
    m = torch.zeros(batch, mapsize, mapsize, device=like.device, dtype=torch.float32)
    step = mapsize
    wibble = 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * (rng.rand(total.shape, generator, like.device) * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + corners.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = noisy_mean(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = noisy_mean(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, 0::step] = noisy_mean(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step //= 2
        wibble /= wibbledecay
    flat = m.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / flat.max(1, keepdim=True).values.clamp_min(1e-12)
    return flat.view(batch, mapsize, mapsize)


# Own motion blur: kornia's motion_blur is a centred line kernel; ImageMagick's is one-sided and Gaussian-weighted.
def motion_blur_batch(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick ``MotionBlurImage``: out(p) = sum_i k_i x(p + round(i (cos a, sin a))), i = 0..2 ceil(r),
    k_i proportional to exp(-i^2 / (2 sigma^2)); edge pixels repeat. One angle per image."""
    b, c, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, device=x.device, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).float()
    a = torch.deg2rad(angles_deg.double())
    # ImageMagick rounds with ceil(v - 0.5)
    ox = torch.ceil(i[None] * torch.cos(a)[:, None] - 0.5).long()  # (B, width)
    oy = torch.ceil(i[None] * torch.sin(a)[:, None] - 0.5).long()
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    for t in range(width):
        sy = (yy + oy[:, t].view(b, 1, 1)).clamp(0, h - 1)
        sx = (xx + ox[:, t].view(b, 1, 1)).clamp(0, w - 1)
        idx = (sy * w + sx).reshape(b, 1, h * w).expand(b, c, h * w)
        out += k[t] * flat.gather(2, idx)
    return out.view(b, c, h, w)
