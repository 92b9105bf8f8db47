"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) as batched tensor operations.

Re-implementations, not the reference: use them to build a "-C" test set for any dataset
(e.g. Fashion-MNIST-C, see :func:`make_corrupted_dataset`) and to compare methods with each other on it.
**Numbers reported as CIFAR-10-C, CIFAR-100-C or ImageNet-C must be measured on the published files**
(read them with :mod:`robaug.eval.benchmarks`): the reference code runs PIL, OpenCV, scikit-image,
ImageMagick and libjpeg on uint8 images, and its random draws cannot be reproduced here.

What is the same as the reference ``make_cifar_c.py``:

- the five-severity parameter tables of CIFAR-10-C for every corruption;
- the formulas (clipped Gaussian / Poisson / salt-and-pepper / multiplicative noise; Gaussian blur with
  scikit-image's kernel (truncate 4, edge mode "nearest"); the anti-aliased disk of defocus blur with OpenCV's
  reflect-101 border; glass blur's local pixel shuffle (as the reference actually runs it, see
  ``_glass_shuffle``); ImageMagick's one-sided Gaussian motion-blur
  kernel with per-image random angle; zoom blur as the mean of centre-zoomed copies with scipy's linear
  ``zoom`` grid (including the reference's 7 zoom factors at severity 1); fog from a diamond-square plasma
  fractal; HSV brightness and saturation (scikit-image's HSV); per-channel contrast; PIL's BOX resampling for
  pixelate; libjpeg compression at the same qualities; the random affine + smoothed displacement field of
  the elastic transform; the snow layer's zoom, threshold and motion blur);
- frost with the reference's photographs (:class:`FrostImages`, e.g. ``frost1.png`` .. ``frost5.jpg``):
  ``clip(c0 x + c1 crop)`` with a random crop of a random photograph shrunk by 0.2 with OpenCV's
  ``INTER_LINEAR`` rule (at 0.2 it picks every fifth pixel, so the resized photographs equal ``cv2.resize``'s);
- spatter, whole pipeline: the blurred, thresholded liquid layer; for water (severities 1-3) OpenCV's Canny
  edges, 5x5 chamfer distance transform, box blurs, histogram equalisation and emboss filter with the
  reference's uint8 roundings (including numpy's uint8 wrap-around of liquid values above 1 at severity 3),
  re-implemented in torch (:mod:`robaug.eval._cv_ops`); for mud (severities 4-5) the blurred mask over brown.
  Given the same Gaussian noise, the result equals the reference run with OpenCV 5.0 / scikit-image 0.26
  (checked on 1,500 images; the tests compare with loop implementations of OpenCV's algorithms and with
  values computed by OpenCV).

What differs:

- everything runs on float images on the input's device, in batches, with torch's random generators
  (deterministic given a ``torch.Generator`` / seed); the reference rounds to uint8 between steps;
- parameters measured in pixels (blur widths, motion-blur radius, glass-blur distance) are scaled by
  ``min(H, W) / 32`` for images larger than 32x32 so that they get the CIFAR-10-C strength, and used as they
  are for 32x32 and smaller images (28x28 Fashion-MNIST gets the CIFAR-10-C values). The elastic transform's
  magnitudes are fractions of the image size, as in the reference. This is *not* the ImageNet-C table (which
  was tuned separately for 224x224); the plasma fractal for fog is generated at the next power of two of the
  image size;
- 1-channel images are supported: colour operations (brightness, saturate, frost, spatter) act on the grey
  image replicated to RGB and are converted back with ITU-R 601 luma (brightness is then exactly
  ``clip(x + c)``), and the snow's greyscale step uses the image itself;
- **frost without photographs** (the default: the photographs are not shipped) blends a *procedural* frost
  texture instead (thin bright crystal "feathers" and needles over a cloudy bluish background, see
  ``_procedural_frost``), tuned to the brightness, contrast, roughness and colour statistics of the
  reference's 32x32 frost crops. It is an approximation of CIFAR-10-C's frost, not the same corruption:
  pass the photographs (``frost_images=``) to get the reference's. The photographs are shrunk by
  ``0.2 * min(H, W) / 32`` for images larger than 32x32 (the same part of the photograph as a CIFAR-10-C
  crop; the reference used 0.3 for 64x64 Tiny-ImageNet-C and 1 for 224x224 ImageNet-C); ``resize=`` sets it;
- spatter: for images larger than 32x32 the liquid blur, the mud blur and the distance truncation (20 px)
  are scaled like the other pixel parameters, the 3x3 Sobel, box and emboss kernels are not; where no
  liquid passes the threshold the reference divides by zero (NaN) and this leaves the image unchanged.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import PIL.Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import is_pure_tensor

from .._core.image import to_float_batch
from ._cv_ops import box_blur3, canny, chamfer_distance, equalize_hist, linear_resize_matrix

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "DEFAULT_CORRUPTIONS",
    "CORRUPTION_FAMILIES",
    "CORRUPTION_PARAMS",
    "available_corruptions",
    "corrupt",
    "Corrupt",
    "make_corrupted_dataset",
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "saturate",
    "spatter",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "FrostImages",
    "FROST_RESIZE",
]

#: The 15 corruptions of the CIFAR-10-C / ImageNet-C benchmark, in the reference order.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 held-out "extra" corruptions of the reference release.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

CORRUPTION_FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise", "speckle_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "gaussian_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather", "spatter": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
    "saturate": "digital",
}

#: CIFAR-10-C parameters per corruption, severity 1..5 (Hendrycks & Dietterich, ``make_cifar_c.py``).
CORRUPTION_PARAMS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, alias blur sigma)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # np.arange(1, end, 0.01) zoom factors
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    # (mean, std, zoom, threshold, blur radius, blur sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (strength, wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (saturation scale, saturation shift)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    # (alpha, sigma, affine jitter) as fractions of the image size
    "elastic_transform": (
        (0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    # (image weight, frost weight): clip(c0 x + c1 frost)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (liquid mean, liquid std, blur sigma, threshold, water intensity or mud blur sigma, 0 water / 1 mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
}

_REF_SIZE = 32.0  # the CIFAR-10-C table is in pixels of 32x32 images
_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    return int(severity)


def _param(name: str, severity: int) -> Any:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    return CORRUPTION_PARAMS[name][int(severity) - 1]


def _size_scale(x: torch.Tensor) -> float:
    """Factor for the pixel-unit parameters: ``min(H, W) / 32`` for images larger than 32x32, else 1 (the
    CIFAR-10-C values; scaling them down would e.g. shrink defocus blur's smallest disks to a single pixel)."""
    return max(1.0, min(x.shape[-2], x.shape[-1]) / _REF_SIZE)


def _check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the images are on {x.device}; "
            f"create it with torch.Generator(device={str(x.device)!r})"
        )


def _rand(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=x.device, dtype=torch.float32)


def _randn(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=x.device, dtype=torch.float32)


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
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


def _pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if ph:
        x = x.index_select(-2, _pad_index(h, ph, ph, mode, x.device))
    if pw:
        x = x.index_select(-1, _pad_index(w, pw, pw, mode, x.device))
    return x


def _gaussian_kernel1d(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Separable Gaussian filter over the last two dims of ``(B, C, H, W)`` (scipy.ndimage.gaussian_filter)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, truncate, x.device)
    r = (k.numel() - 1) // 2
    b, c, h, w = x.shape
    y = _pad(x.reshape(b * c, 1, h, w), r, r, mode)
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(b, c, h, w)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with one odd-sized ``(k, k)`` kernel (OpenCV filter2D)."""
    k = kernel.shape[-1]
    r = (k - 1) // 2
    b, c, h, w = x.shape
    y = _pad(x.reshape(b * c, 1, h, w), r, r, mode)
    return F.conv2d(y, kernel.view(1, 1, k, k).to(x.dtype)).reshape(b, c, h, w)


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
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


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
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


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _back_to_channels(y: torch.Tensor, c: int) -> torch.Tensor:
    return _to_gray(y) if c == 1 else y


def _linear_zoom_matrix(n: int, zoom: float, device: torch.device) -> torch.Tensor:
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


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ah = _linear_zoom_matrix(h, zoom, x.device)
    aw = _linear_zoom_matrix(w, zoom, x.device)
    return ah @ x @ aw.T


def _box_resize_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
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


def _plasma_fractal(
    batch: int, mapsize: int, wibbledecay: float, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Batched diamond-square height maps in [0, 1], shape ``(B, mapsize, mapsize)`` (the reference's
    ``plasma_fractal``: random offsets ``wibble * U(-wibble, wibble)``, wibble 100 divided by ``wibbledecay``
    per octave, periodic boundaries)."""
    m = torch.zeros(batch, mapsize, mapsize, device=like.device, dtype=torch.float32)
    step = mapsize
    wibble = 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * (_rand(total.shape, like, generator) * 2 * wibble - wibble)

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


def _motion_blur_batch(
    x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor
) -> torch.Tensor:
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


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().div(255)


# ----------------------------------------------------------------------------------------------------------
# frost: the reference's photographs (user-supplied) or a procedural texture
# ----------------------------------------------------------------------------------------------------------

#: ``make_cifar_c.py`` shrinks the frost photographs by 0.2 (``cv2.resize(..., fx=0.2, fy=0.2)``) before the
#: random 32x32 crop.
FROST_RESIZE = 0.2
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _photo_from_array(t: Any, what: str) -> tuple[torch.Tensor, bool]:
    """One ``(C, h, w)`` uint8 or float [0, 1] array -> ``((3, h, w) float32 CPU, came from uint8)``."""
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if t.ndim != 3 or t.shape[0] not in (1, 3) or t.shape[1] < 1 or t.shape[2] < 1:
        raise ValueError(
            f"frost_images: {what} must be an RGB image (3, h, w) (or a batch (N, 3, h, w)), got shape "
            f"{tuple(t.shape)}; convert HWC arrays with .permute(2, 0, 1)"
        )
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        photo, quantized = t.float().div(255), True
    elif t.is_floating_point():
        photo, quantized = t.float(), False
        if not bool(torch.isfinite(photo).all()) or photo.min() < 0 or photo.max() > 1:
            raise ValueError(f"frost_images: {what} must be uint8 or float in [0, 1] (finite); got values outside")
    else:
        raise ValueError(f"frost_images: {what} must be uint8 or float in [0, 1], got dtype {t.dtype}")
    return photo.expand(3, -1, -1).contiguous(), quantized


def _photo_from_file(path: Path) -> tuple[torch.Tensor, bool]:
    try:
        with PIL.Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))  # like cv2.imread(IMREAD_COLOR): alpha dropped, not composited
    except (PIL.UnidentifiedImageError, OSError) as e:
        raise ValueError(f"frost_images: cannot read {path} as an image ({e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255), True


def _load_frost_photos(source: Any) -> list[tuple[torch.Tensor, bool, str]]:
    if isinstance(source, (str, Path)) or hasattr(source, "__fspath__"):
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
            if not files:
                raise ValueError(
                    f"frost_images: no image files ({', '.join(_IMAGE_SUFFIXES)}) in the folder {path}"
                )
            return [(*_photo_from_file(f), f.name) for f in files]
        if path.is_file():
            return [(*_photo_from_file(path), path.name)]
        raise FileNotFoundError(f"frost_images: {path} is neither an image file nor a folder of images")
    if isinstance(source, PIL.Image.Image):
        arr = np.asarray(source.convert("RGB"))
        return [(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255), True, "PIL image")]
    if isinstance(source, (torch.Tensor, np.ndarray)):
        if source.ndim == 4:
            return [(*_photo_from_array(source[i], f"photo {i}"), f"photo {i}") for i in range(source.shape[0])]
        return [(*_photo_from_array(source, "the photo"), "photo 0")]
    if isinstance(source, (list, tuple)):
        out: list[tuple[torch.Tensor, bool, str]] = []
        for i, item in enumerate(source):
            if isinstance(item, (torch.Tensor, np.ndarray)) and item.ndim != 3:
                raise ValueError(
                    f"frost_images: list item {i} must be one image (3, h, w), got shape {tuple(item.shape)}"
                )
            known = isinstance(item, (str, Path, PIL.Image.Image, torch.Tensor, np.ndarray))
            if not known and not hasattr(item, "__fspath__"):
                raise TypeError(f"frost_images: list item {i} has unsupported type {type(item).__name__}")
            if isinstance(item, (str, Path)) and Path(item).is_dir():
                raise ValueError(f"frost_images: list item {i} ({item}) is a folder; pass the folder itself instead")
            out.extend(_load_frost_photos(item))
        return out
    raise TypeError(
        "frost_images must be a FrostImages, a tensor (N, 3, h, w) / (3, h, w), a PIL image, an image file, "
        f"a folder of images or a list of those; got {type(source).__name__}"
    )


class FrostImages:
    """Frost photographs for the ``frost`` corruption (e.g. the six of Hendrycks & Dietterich's release).

    ``source``: a tensor ``(N, 3, h, w)`` or ``(3, h, w)`` (uint8, or float in [0, 1]; photographs of different
    sizes as a list), a PIL image, an image file, a folder (its image files in name order, read with PIL; no
    pickle), or a list of those. Photographs are kept on the CPU; their resized versions are cached per device.

    For each image the corruption picks a photograph uniformly at random, shrinks it by ``resize`` with OpenCV's
    ``INTER_LINEAR`` rule (default :data:`FROST_RESIZE` = 0.2 for images up to 32x32, as ``make_cifar_c.py``,
    times ``min(H, W) / 32`` for larger images so that a crop covers the same part of the photograph) and takes
    a random ``H x W`` crop, start ``randint(0, h' - H)`` as the reference. Every resized photograph must be at
    least ``H x W``. ``make_cifar_c.py`` draws ``np.random.randint(5)`` and so only ever uses the first five
    photographs (``frost1.png`` .. ``frost5.jpg``): pass those five to reproduce CIFAR-10-C's frost.
    """

    def __init__(self, source: Any, *, resize: float | None = None) -> None:
        if isinstance(source, FrostImages):
            photos = [(p, q, n) for p, q, n in zip(source.photos, source._quantized, source.names)]
        else:
            photos = _load_frost_photos(source)
        if not photos:
            raise ValueError("frost_images: got no photographs")
        if resize is not None and not (isinstance(resize, (int, float)) and 0 < resize and math.isfinite(resize)):
            raise ValueError(f"frost_images: resize must be a positive number, got {resize!r}")
        self.photos: list[torch.Tensor] = [p for p, _, _ in photos]
        self._quantized = [q for _, q, _ in photos]
        self.names: list[str] = [n for _, _, n in photos]
        self.resize = None if resize is None else float(resize)
        # (factor, device) -> (padded stack (K, 3, Hm, Wm), heights (K,), widths (K,), sizes)
        self._stacks: dict[tuple[float, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]] = {}

    def __len__(self) -> int:
        return len(self.photos)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{p.shape[1]}x{p.shape[2]}" for p in self.photos[:6])
        more = ", ..." if len(self.photos) > 6 else ""
        return f"FrostImages({len(self)} photographs: {sizes}{more}; resize={self.resize})"

    def factor(self, h: int, w: int) -> float:
        """The resize factor used for ``h x w`` images."""
        return self.resize if self.resize is not None else FROST_RESIZE * max(1.0, min(h, w) / _REF_SIZE)

    def resized(self, factor: float, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The photographs shrunk by ``factor`` (OpenCV ``INTER_LINEAR``, rounded to uint8 levels for uint8
        sources, as ``cv2.resize`` on uint8 images)."""
        stack, hs, ws, sizes = self._stack(factor, torch.device(device))
        return [stack[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]

    def _stack(self, factor: float, device: torch.device):
        key = (round(float(factor), 12), str(device))
        if key not in self._stacks:
            resized = []
            for photo, quantized in zip(self.photos, self._quantized):
                ah = linear_resize_matrix(photo.shape[1], factor)
                aw = linear_resize_matrix(photo.shape[2], factor)
                r = ah @ photo @ aw.T
                resized.append(r.clamp(0, 1).mul(255).round().div(255) if quantized else r.clamp(0, 1))
            sizes = [(r.shape[1], r.shape[2]) for r in resized]
            hm, wm = max(s[0] for s in sizes), max(s[1] for s in sizes)
            stack = torch.zeros(len(resized), 3, hm, wm)
            for i, r in enumerate(resized):
                stack[i, :, : r.shape[1], : r.shape[2]] = r
            hs = torch.tensor([s[0] for s in sizes])
            ws = torch.tensor([s[1] for s in sizes])
            self._stacks[key] = (stack.to(device), hs.to(device), ws.to(device), sizes)
        return self._stacks[key]

    def sample(self, batch: int, h: int, w: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(batch, 3, h, w)`` random crops of randomly chosen resized photographs, on ``like``'s device."""
        factor = self.factor(h, w)
        stack, hs, ws, sizes = self._stack(factor, like.device)
        for i, (ph, pw) in enumerate(sizes):
            if ph < h or pw < w:
                p = self.photos[i]
                raise ValueError(
                    f"frost_images: photograph {self.names[i]!r} ({p.shape[1]}x{p.shape[2]}) is {ph}x{pw} after "
                    f"resizing by {factor:g}, smaller than the {h}x{w} images; use larger photographs or pass "
                    f"resize= to FrostImages"
                )
        k = len(sizes)
        u = _rand((3, batch), like, generator)
        idx = (u[0] * k).long().clamp_max(k - 1)
        room_h = (hs[idx] - h).clamp_min(1)  # randint(0, h' - h); 0 when the photograph is exactly h high
        room_w = (ws[idx] - w).clamp_min(1)
        top = torch.minimum((u[1] * room_h).long(), room_h - 1)
        left = torch.minimum((u[2] * room_w).long(), room_w - 1)
        rows = top[:, None] + torch.arange(h, device=like.device)
        cols = left[:, None] + torch.arange(w, device=like.device)
        crops = stack[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, h, w, 3)
        return crops.permute(0, 3, 1, 2)


def _as_frost_images(frost_images: Any) -> FrostImages | None:
    if frost_images is None or isinstance(frost_images, FrostImages):
        return frost_images
    return FrostImages(frost_images)


# The procedural texture. Constants were chosen so that 32x32 textures have roughly the statistics of the
# reference's CIFAR-10-C frost crops (photographs 1-5 shrunk by 0.2, 32x32 crops; grey level: mean 0.63,
# spread of crop means 0.15, within-crop std 0.09, mean |horizontal difference| 0.07; bluish: R, G, B means
# 0.56, 0.65, 0.70).
_FROST_TEX = dict(
    feathers=10.0,  # feather-like crystals (stem + side branches) per 32x32 area
    stem=(6.0, 16.0),  # stem length range, in pixels of a 32x32 image
    branches=4,  # side branches per side of a stem
    branch=(1.5, 5.0),  # branch length range
    branch_angle=(40.0, 75.0),  # degrees from the stem
    needles=80.0,  # short isolated needles per 32x32 area
    needle=(1.0, 4.0),
    blur=0.35,  # crystal line blur sigma (pixels of a 32x32 image)
    gain=1.0,  # crystal density -> coverage: 1 - exp(-gain * density)
    level=(0.27, 0.9),  # background brightness range (one value per image)
    cloud=0.15,  # amplitude of the low-frequency background variation (plasma fractal)
    peak=(0.75, 0.95),  # brightness of the crystals
    grain=0.05,  # fine noise std
    tint=(-0.22, 0.03, 0.16),  # largest relative RGB tint of the background (bluish)
)


def _splat(points: torch.Tensor, weights: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear splat of ``(B, P, 2)`` (y, x) points with ``(B, P)`` weights onto ``(B, 1, h, w)``. The sum runs
    on fixed-point integers, so the result does not depend on the order of the additions (deterministic on
    CUDA too)."""
    b = points.shape[0]
    # points outside are clamped to just outside the image: their weight lands on a border that is cut off
    py = points[..., 0].clamp(-1, h)
    px = points[..., 1].clamp(-1, w)
    y0, x0 = torch.floor(py), torch.floor(px)
    fy, fx = py - y0, px - x0
    gy, gx = 1 - fy, 1 - fx
    hp, wp = h + 3, w + 3  # canvas with a border of 1 before and 2 after
    base = (torch.arange(b, device=points.device) * (hp * wp))[:, None] + (y0.long() + 1) * wp + (x0.long() + 1)
    idx = torch.cat([base, base + 1, base + wp, base + wp + 1], 1)
    q = torch.cat([weights * (gy * gx), weights * (gy * fx), weights * (fy * gx), weights * (fy * fx)], 1)
    acc = torch.zeros(b * hp * wp, dtype=torch.int64, device=points.device)
    acc.scatter_add_(0, idx.reshape(-1), torch.round(q * 65536.0).long().reshape(-1))
    return (acc.float() / 65536.0).view(b, 1, hp, wp)[..., 1: h + 1, 1: w + 1]


def _segments(
    origin: torch.Tensor, angle: torch.Tensor, length: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points along straight segments: ``origin (..., 2)``, ``angle (...)``, ``length (...)`` -> points
    ``(..., n, 2)`` and the length each point stands for ``(..., n)``."""
    t = torch.linspace(0, 1, n, device=origin.device)
    direction = torch.stack([torch.sin(angle), torch.cos(angle)], -1)
    pts = origin[..., None, :] + (t[:, None] * length[..., None, None]) * direction[..., None, :]
    step = (length / (n - 1))[..., None].expand(*length.shape, n)
    return pts, step


def _procedural_frost(b: int, h: int, w: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A frost-like texture ``(B, 3, h, w)`` in [0, 1]: thin bright crystal "feathers" (stems with side
    branches at 40-75 degrees) and short needles, splatted and blurred a little, over a cloudy background
    (plasma fractal) of random brightness, plus fine grain and a bluish tint. Lengths and blur are in pixels of
    a 32x32 image, scaled by ``min(H, W) / 32`` above 32 pixels (the photographs' field of view)."""
    p = _FROST_TEX
    s = _size_scale(like.new_empty(1, 1, h, w))
    dev = like.device
    area = (h / s) * (w / s) / 1024.0
    nf = max(1, round(p["feathers"] * area))
    nn_ = max(1, round(p["needles"] * area))
    nb = int(p["branches"])

    def uni(shape: Sequence[int], lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * _rand(shape, like, generator)

    extent = torch.tensor([h, w], device=dev, dtype=torch.float32)
    # feathers: stems
    stem_len = uni((b, nf), *p["stem"]) * s
    origin = uni((b, nf, 2), -0.1, 1.1) * extent
    theta = uni((b, nf), 0.0, 2 * math.pi)
    n_stem = int(math.ceil(p["stem"][1] * s / 0.5)) + 1
    stem_pts, stem_step = _segments(origin, theta, stem_len, n_stem)
    stem_w = uni((b, nf, 1), 0.6, 1.0) * stem_step
    # side branches: nb per side, from points along the stem, shorter towards the tip
    pos = uni((b, nf, 2, nb), 0.05, 1.0)
    side = torch.tensor([1.0, -1.0], device=dev).view(1, 1, 2, 1)
    b_theta = theta[..., None, None] + side * torch.deg2rad(uni((b, nf, 2, nb), *p["branch_angle"]))
    b_len = uni((b, nf, 2, nb), *p["branch"]) * s * (1 - 0.6 * pos)
    stem_dir = torch.stack([torch.sin(theta), torch.cos(theta)], -1)
    along = (pos * stem_len[..., None, None])[..., None]
    b_origin = origin[:, :, None, None, :] + along * stem_dir[:, :, None, None, :]
    n_branch = int(math.ceil(p["branch"][1] * s / 0.5)) + 1
    br_pts, br_step = _segments(b_origin, b_theta, b_len, n_branch)
    br_w = 0.8 * uni((b, nf, 1, 1, 1), 0.6, 1.0) * br_step
    # needles
    n_needle = int(math.ceil(p["needle"][1] * s / 0.5)) + 1
    nd_pts, nd_step = _segments(uni((b, nn_, 2), 0.0, 1.0) * extent, uni((b, nn_), 0.0, 2 * math.pi),
                                uni((b, nn_), *p["needle"]) * s, n_needle)
    nd_w = uni((b, nn_, 1), 0.3, 0.8) * nd_step

    pts = torch.cat([stem_pts.reshape(b, -1, 2), br_pts.reshape(b, -1, 2), nd_pts.reshape(b, -1, 2)], 1)
    wts = torch.cat([stem_w.reshape(b, -1), br_w.reshape(b, -1), nd_w.reshape(b, -1)], 1)
    density = _gaussian_filter(_splat(pts, wts, h, w), p["blur"] * s, 4.0, "nearest")
    crystal = 1 - torch.exp(-p["gain"] * density)

    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    cloud = _plasma_fractal(b, mapsize, 2.0, like, generator)[:, None, :h, :w]
    level = uni((b, 1, 1, 1), *p["level"])
    background = level + p["cloud"] * (cloud - 0.5)
    peak = uni((b, 1, 1, 1), *p["peak"])
    grain = p["grain"] * _randn((b, 1, h, w), like, generator)
    tint = 1 + uni((b, 1, 1, 1), 0.0, 1.0) * torch.tensor(p["tint"], device=dev).view(1, 3, 1, 1)
    # the ice between the crystals is tinted, the crystals themselves are white
    return (background * tint * (1 - crystal) + peak * crystal + grain).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------
# corruptions on float (B, C, H, W) batches in [0, 1]
# ----------------------------------------------------------------------------------------------------------


def _gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("gaussian_noise", severity)
    return (x + c * _randn(x.shape, x, generator)).clamp(0, 1)


def _shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = float(_param("shot_noise", severity))
    return (torch.poisson(x * c, generator=generator) / c).clamp(0, 1)


def _impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("impulse_noise", severity)
    u = _rand((2, *x.shape), x, generator)
    flipped = u[0] < c
    salt = u[1] < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def _speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("speckle_noise", severity)
    return (x + x * c * _randn(x.shape, x, generator)).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    sigma = _param("gaussian_blur", severity) * _size_scale(x)
    return _gaussian_filter(x, sigma, 4.0, "nearest").clamp(0, 1)


def _glass_shuffle(
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
    offs = torch.randint(-delta, delta, (iterations, len(hs), len(ws), 2, b), generator=generator, device=y.device)
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


def _glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    sigma, delta, iterations = _param("glass_blur", severity)
    scale = _size_scale(x)
    sigma, delta = sigma * scale, max(1, int(round(delta * scale)))
    # the reference quantises (truncates) to uint8 after the first blur
    y = torch.floor(_gaussian_filter(x, sigma, 4.0, "nearest").clamp(0, 1) * 255) / 255
    y = _glass_shuffle(y, delta, iterations, generator)
    return _gaussian_filter(y, sigma, 4.0, "nearest").clamp(0, 1)


def _defocus_kernel(radius: float, alias_blur: float, device: torch.device) -> torch.Tensor:
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
    disk = _pad(disk.view(1, 1, *disk.shape), ksize // 2, ksize // 2, "mirror")
    disk = F.conv2d(F.conv2d(disk, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    return disk[0, 0].float()


def _defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    radius, alias = _param("defocus_blur", severity)
    scale = _size_scale(x)
    kernel = _defocus_kernel(radius * scale, alias * scale, x.device)
    return _filter2d(x, kernel, "mirror").clamp(0, 1)


def _motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    radius, sigma = _param("motion_blur", severity)
    scale = _size_scale(x)
    angles = _rand((x.shape[0],), x, generator) * 90 - 45
    return _quantize(_motion_blur_batch(x, radius * scale, sigma * scale, angles))


def _zoom_factors(severity: int) -> np.ndarray:
    return np.arange(1, _param("zoom_blur", severity), 0.01)


def _zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    factors = _zoom_factors(severity)
    out = torch.zeros_like(x)
    for z in factors:
        out += _clipped_zoom(x, float(z))
    return ((x + out) / (len(factors) + 1)).clamp(0, 1)


def _snow(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    mean, std, zoom, thresh, radius, sigma, blend = _param("snow", severity)
    scale = _size_scale(x)
    b, c, h, w = x.shape
    layer = mean + std * _randn((b, 1, h, w), x, generator)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # the reference stores the layer as uint8
    angles = _rand((b,), x, generator) * 90 - 135
    layer = _quantize(_motion_blur_batch(layer, radius * scale, sigma * scale, angles))
    x = blend * x + (1 - blend) * torch.maximum(x, _to_gray(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1)


def _fog(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    strength, decay = _param("fog", severity)
    b, c, h, w = x.shape
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    plasma = _plasma_fractal(b, mapsize, decay, x, generator)[:, None, :h, :w]
    max_val = x.flatten(1).max(1).values.view(b, 1, 1, 1)
    return ((x + strength * plasma) * max_val / (max_val + strength)).clamp(0, 1)


def _frost(
    x: torch.Tensor, severity: int, generator: torch.Generator | None, photos: FrostImages | None = None
) -> torch.Tensor:
    c0, c1 = _param("frost", severity)
    b, c, h, w = x.shape
    layer = photos.sample(b, h, w, x, generator) if photos is not None else _procedural_frost(b, h, w, x, generator)
    return _back_to_channels((c0 * _as_rgb(x) + c1 * layer).clamp(0, 1), c)


_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def _spatter(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    mean, std, sigma, thresh, amount, mode = _param("spatter", severity)
    scale = _size_scale(x)
    b, c, h, w = x.shape
    liquid = mean + std * _randn((b, 1, h, w), x, generator)
    liquid = _gaussian_filter(liquid, sigma * scale, 4.0, "nearest")
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    rgb = _as_rgb(x)
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
        dist = _filter2d(dist, _EMBOSS.to(x.device), "mirror").round().clamp(0, 255)  # filter2D to CV_8U
        dist = box_blur3(dist).round()  # cv2.blur on uint8 rounds
        m = l8 * dist
        m = m / m.flatten(1).max(1).values.clamp_min(1e-12).view(b, 1, 1, 1) * amount
        colour = torch.tensor(_WATER, device=x.device).view(1, 3, 1, 1)
        out = rgb + m * colour
    else:
        # mud: the thresholded liquid mask, blurred (sigma `amount`), kept where >= 0.8, replaces the image by brown
        m = _gaussian_filter((liquid > thresh).float(), amount * scale, 4.0, "nearest")
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = torch.tensor(_MUD, device=x.device).view(1, 3, 1, 1)
        out = rgb * (1 - m) + colour * m
    return _back_to_channels(out.clamp(0, 1), c)


def _brightness(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("brightness", severity)
    hsv = _rgb_to_hsv(_as_rgb(x))
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)
    return _back_to_channels(_hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1)


def _saturate(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    mult, add = _param("saturate", severity)
    hsv = _rgb_to_hsv(_as_rgb(x))
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * mult + add).clamp(0, 1), hsv[:, 2]], 1)
    return _back_to_channels(_hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1)


def _contrast(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("contrast", severity)
    means = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def _pixelate(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    c = _param("pixelate", severity)
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    ah = _box_resize_matrix(sh, h, x.device) @ _box_resize_matrix(h, sh, x.device)
    aw = _box_resize_matrix(sw, w, x.device) @ _box_resize_matrix(w, sw, x.device)
    return (ah @ x @ aw.T).clamp(0, 1)


def _jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    # libjpeg through PIL, as the reference (torchvision.io's JPEG codec is deprecated since 0.29)
    quality = _param("jpeg_compression", severity)
    u8 = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    mode = "L" if u8.shape[-1] == 1 else "RGB"
    out = np.empty_like(u8)
    for i in range(len(u8)):  # the codec works on one image at a time
        buf = io.BytesIO()
        PIL.Image.fromarray(u8[i, ..., 0] if mode == "L" else u8[i], mode=mode).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        dec = np.asarray(PIL.Image.open(buf).convert(mode))
        out[i] = dec[..., None] if mode == "L" else dec
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device).float().div(255)


def _elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator | None) -> torch.Tensor:
    alpha_f, sigma_f, jitter_f = _param("elastic_transform", severity)
    b, c, h, w = x.shape
    size = float(min(h, w))
    alpha, sigma, jitter = alpha_f * size, sigma_f * size, jitter_f * size
    dev = x.device

    # 1) random affine: three points around the centre moved by U(-jitter, jitter) (OpenCV coordinates, x
    #    right / y down, pixel centres at integers); warpAffine samples the source at M^-1 p, border reflect-101.
    cx, cy = float(w // 2), float(h // 2)
    sq = float(int(size) // 3)
    pts1 = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], device=dev)
    pts2 = pts1 + (_rand((b, 3, 2), x, generator) * 2 - 1) * jitter
    ones = torch.ones(b, 3, 1, device=dev)
    inv = torch.linalg.solve(torch.cat([pts2, ones], 2).double(), pts1.expand(b, 3, 2).double()).float()  # (B, 3, 2)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3)
    src = (pix @ inv).view(b, h, w, 2)  # (x, y) source coordinates
    grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)

    # 2) smooth random displacement: gaussian(U(-1, 1), sigma, mode reflect, truncate 3) * alpha, sampled
    #    with scipy map_coordinates(order=1, mode="reflect") (half-sample symmetric).
    if alpha > 0 and sigma > 0:
        d = _rand((b, 2, h, w), x, generator) * 2 - 1
        d = _gaussian_filter(d, sigma, truncate=3.0, mode="reflect") * alpha
        sx, sy = xs + d[:, 0], ys + d[:, 1]
        grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return y.clamp(0, 1)


_IMPLS: dict[str, Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturate": _saturate,
    "spatter": _spatter,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}

#: The corruptions :func:`make_corrupted_dataset` builds by default: the 15 of CIFAR-10-C, in the reference order.
DEFAULT_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS


def available_corruptions() -> list[str]:
    """Names accepted by :func:`corrupt` (benchmark order, then the extra corruptions)."""
    return [n for n in BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS if n in _IMPLS]


def _check_name(name: str) -> str:
    if name not in _IMPLS:
        raise ValueError(f"unknown corruption {name!r}; available: {', '.join(available_corruptions())}")
    return name


def _apply(
    x: torch.Tensor,
    name: str,
    severity: int,
    generator: torch.Generator | None,
    frost_images: FrostImages | None = None,
) -> torch.Tensor:
    _check_name(name)
    _param(name, severity)
    _check_generator(generator, x)
    if name == "frost":
        return _frost(x, int(severity), generator, frost_images)
    return _IMPLS[name](x, int(severity), generator)


def corrupt(
    images: Any,
    corruption: str,
    severity: int,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    frost_images: Any = None,
) -> Any:
    """Apply ``corruption`` at ``severity`` (1..5) to a PIL image, a ``(C, H, W)`` image or a ``(..., C, H, W)``
    batch (uint8 or float in [0, 1], 1 or 3 channels); returns the input's type, dtype, device and shape.

    Randomness (noise, angles, fields) is drawn per image from ``generator`` (on the images' device), from a
    fresh generator seeded with ``seed``, or from torch's global RNG.

    ``frost_images``: the photographs for ``frost`` (a :class:`FrostImages`, or anything it accepts: a tensor
    ``(N, 3, h, w)``, a folder or list of image files); without them frost uses the procedural texture.
    Ignored by the other corruptions. Build a :class:`FrostImages` once when calling this repeatedly, so that
    the photographs are read and resized once.
    """
    x, restore = to_float_batch(images, name="images")
    if generator is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    photos = _as_frost_images(frost_images) if corruption == "frost" else None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    with torch.no_grad():
        return restore(_apply(x, corruption, severity, generator, photos))


def _make_public(name: str) -> Callable[..., Any]:
    def fn(images: Any, severity: int = 1, *, generator: torch.Generator | None = None, seed: int | None = None) -> Any:
        return corrupt(images, name, severity, generator=generator, seed=seed)

    fn.__name__ = fn.__qualname__ = name
    params = CORRUPTION_PARAMS[name]
    fn.__doc__ = (
        f"{name.replace('_', ' ').capitalize()} ({CORRUPTION_FAMILIES[name]} family) at severity 1..5; "
        f"CIFAR-10-C parameters {params}. See :func:`corrupt` for inputs and randomness."
    )
    return fn


gaussian_noise = _make_public("gaussian_noise")
shot_noise = _make_public("shot_noise")
impulse_noise = _make_public("impulse_noise")
speckle_noise = _make_public("speckle_noise")
gaussian_blur = _make_public("gaussian_blur")
defocus_blur = _make_public("defocus_blur")
glass_blur = _make_public("glass_blur")
motion_blur = _make_public("motion_blur")
zoom_blur = _make_public("zoom_blur")
snow = _make_public("snow")
fog = _make_public("fog")
spatter = _make_public("spatter")
brightness = _make_public("brightness")
contrast = _make_public("contrast")
saturate = _make_public("saturate")
elastic_transform = _make_public("elastic_transform")
pixelate = _make_public("pixelate")
jpeg_compression = _make_public("jpeg_compression")


def frost(
    images: Any,
    severity: int = 1,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    frost_images: Any = None,
) -> Any:
    """Frost (weather family): ``clip(c0 * x + c1 * frost_crop)`` with CIFAR-10-C's ``(c0, c1)`` per severity
    ``(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)``.

    With ``frost_images`` (the reference's photographs as a :class:`FrostImages`, a folder, files or a tensor)
    each image gets a random crop of a random photograph, shrunk as in ``make_cifar_c.py``: with the
    reference's ``frost1.png`` .. ``frost5.jpg`` this is the reference corruption (up to its random draws).
    Without them a procedural frost-like texture is used instead -- an approximation, not CIFAR-10-C's frost.
    See :func:`corrupt` for inputs and randomness.
    """
    return corrupt(images, "frost", severity, generator=generator, seed=seed, frost_images=frost_images)


class Corrupt(v2.Transform):
    """Transform applying one corruption at one severity (e.g. to build a corrupted test loader on the fly).

    Images (PIL, tensors, ``tv_tensors.Image``) are corrupted; labels and other inputs pass through.
    """

    _transformed_types = (tv_tensors.Image, PIL.Image.Image, is_pure_tensor)

    def __init__(
        self, corruption: str, severity: int, generator: torch.Generator | None = None, *, frost_images: Any = None
    ) -> None:
        super().__init__()
        self.corruption = _check_name(corruption)
        _param(corruption, severity)
        self.severity = int(severity)
        self.generator = generator
        self.frost_images = _as_frost_images(frost_images) if corruption == "frost" else None

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return corrupt(inpt, self.corruption, self.severity, generator=self.generator, frost_images=self.frost_images)

    def extra_repr(self) -> str:
        return f"corruption={self.corruption!r}, severity={self.severity}"


# ----------------------------------------------------------------------------------------------------------
# building a -C test set
# ----------------------------------------------------------------------------------------------------------


def _chunk_seed(seed: int, name: str, severity: int, chunk: int) -> int:
    return zlib.crc32(f"robaug-c/{seed}/{name}/{severity}/{chunk}".encode()) + (int(seed) << 32)


def make_corrupted_dataset(
    images: Any,
    labels: Any,
    corruptions: Iterable[str] | None = None,
    severities: Iterable[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    *,
    out_dir: str | Path | None = None,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    progress: bool = False,
    frost_images: Any = None,
):
    """Build a "-C" test set: every corruption at every severity applied to ``images``.

    ``images``: ``(N, C, H, W)`` uint8 or float in [0, 1] (tensor or numpy) or ``(N, H, W)`` greyscale;
    ``labels``: ``(N,)``. Images are processed in chunks of ``batch_size`` on ``device`` (default: the
    images' device); chunk ``k`` of corruption ``c`` at severity ``s`` uses its own generator seeded from
    ``(seed, c, s, k)``, so the result is deterministic for a given ``seed`` and ``batch_size`` and does not
    depend on which other corruptions are built.

    Without ``out_dir`` the set is returned in memory as a
    :class:`~robaug.eval.benchmarks.InMemoryCorruptionBenchmark` (uint8). With ``out_dir`` it is written in the
    CIFAR-10-C layout -- ``<corruption>.npy`` of shape ``(S * N, H, W, C)`` uint8 with the severities stacked
    in order, ``labels.npy`` of shape ``(S * N,)`` and a ``meta.json`` -- one corruption in memory at a time,
    and a :class:`~robaug.eval.benchmarks.NpyCorruptionBenchmark` reading it is returned.

    ``frost_images``: the frost photographs (see :class:`FrostImages`); without them ``frost`` uses the
    procedural texture, and ``meta.json`` records which one was used.

    These are re-implemented corruptions (see the module docstring): numbers on the published CIFAR-10-C /
    ImageNet-C must use the published files.
    """
    from .benchmarks import InMemoryCorruptionBenchmark, NpyCorruptionBenchmark

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    labels = torch.as_tensor(labels).long().reshape(-1).cpu()
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]
    if labels.numel() != n:
        raise ValueError(f"got {n} images but {labels.numel()} labels")
    names = list(DEFAULT_CORRUPTIONS if corruptions is None else corruptions)
    if isinstance(corruptions, str):
        names = [corruptions]
    for name in names:
        _check_name(name)
    sevs = [_check_severity(s) for s in severities]
    if not names or not sevs:
        raise ValueError("need at least one corruption and one severity")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else images.device
    photos = _as_frost_images(frost_images) if "frost" in names else None

    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names) * len(sevs) * math.ceil(n / batch_size), desc="corrupting", unit="batch")

    data: dict[str, torch.Tensor] = {}
    c, h, w = images.shape[1:]
    for name in names:
        out = torch.empty(len(sevs), n, c, h, w, dtype=torch.uint8)
        for si, s in enumerate(sevs):
            for k, start in enumerate(range(0, n, batch_size)):
                chunk = images[start: start + batch_size].to(dev)
                x, _ = to_float_batch(chunk, name="images")
                g = torch.Generator(device=x.device).manual_seed(_chunk_seed(seed, name, s, k))
                with torch.no_grad():
                    y = _apply(x, name, s, g, photos)
                out[si, start: start + batch_size] = y.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
                if bar is not None:
                    bar.update(1)
        if out_path is not None:
            arr = out.permute(0, 1, 3, 4, 2).reshape(len(sevs) * n, h, w, c).numpy()
            np.save(out_path / f"{name}.npy", arr)
        else:
            data[name] = out
    if bar is not None:
        bar.close()

    if out_path is not None:
        np.save(out_path / "labels.npy", labels.repeat(len(sevs)).numpy().astype(np.int64))
        meta = {
            "format": "robaug corruption set (CIFAR-10-C layout)",
            "corruptions": names,
            "severities": sevs,
            "num_images": n,
            "seed": int(seed),
            "batch_size": int(batch_size),
            "note": "re-implemented corruptions (robaug.eval.corruptions); not the published -C files",
        }
        if "frost" in names:
            meta["frost"] = (
                "procedural texture (approximation)" if photos is None
                else f"photographs: {', '.join(photos.names)} (resize {photos.resize or 'default'})"
            )
        (out_path / "meta.json").write_text(json.dumps(meta, indent=2))
        return NpyCorruptionBenchmark(out_path)
    return InMemoryCorruptionBenchmark(data, labels, severities=sevs)
