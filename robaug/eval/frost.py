"""Frost: the reference's photographs (:class:`FrostImages`, supplied by the user: robaug does not ship them) or a
procedural frost-like texture (:func:`procedural_frost`), both giving a ``(B, 3, H, W)`` layer in [0, 1] that the
``frost`` corruption blends as ``clip(c0 x + c1 layer)``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch

from .._core import rng
from ._cv_ops import linear_resize_matrix
from .kernels import REF_SIZE, gaussian_filter, plasma_fractal, quantize, size_scale

__all__ = ["FROST_RESIZE", "FrostImages", "as_frost_images", "procedural_frost"]

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
        return self.resize if self.resize is not None else FROST_RESIZE * max(1.0, min(h, w) / REF_SIZE)

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
                resized.append(quantize(r) if quantized else r.clamp(0, 1))
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
        u = rng.rand((3, batch), generator, like.device)
        idx = (u[0] * k).long().clamp_max(k - 1)
        room_h = (hs[idx] - h).clamp_min(1)  # randint(0, h' - h); 0 when the photograph is exactly h high
        room_w = (ws[idx] - w).clamp_min(1)
        top = torch.minimum((u[1] * room_h).long(), room_h - 1)
        left = torch.minimum((u[2] * room_w).long(), room_w - 1)
        rows = top[:, None] + torch.arange(h, device=like.device)
        cols = left[:, None] + torch.arange(w, device=like.device)
        crops = stack[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, h, w, 3)
        return crops.permute(0, 3, 1, 2)


def as_frost_images(frost_images: Any) -> FrostImages | None:
    """``None`` or a :class:`FrostImages` as is; anything else through ``FrostImages(frost_images)``."""
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


def procedural_frost(b: int, h: int, w: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A frost-like texture ``(B, 3, h, w)`` in [0, 1]: thin bright crystal "feathers" (stems with side
    branches at 40-75 degrees) and short needles, splatted and blurred a little, over a cloudy background
    (plasma fractal) of random brightness, plus fine grain and a bluish tint. Lengths and blur are in pixels of
    a 32x32 image, scaled by ``min(H, W) / 32`` above 32 pixels (the photographs' field of view)."""
    p = _FROST_TEX
    s = size_scale(like.new_empty(1, 1, h, w))
    dev = like.device
    area = (h / s) * (w / s) / 1024.0
    nf = max(1, round(p["feathers"] * area))
    nn_ = max(1, round(p["needles"] * area))
    nb = int(p["branches"])

    def uni(shape: Sequence[int], lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * rng.rand(shape, generator, like.device)

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
    density = gaussian_filter(_splat(pts, wts, h, w), p["blur"] * s, 4.0, "nearest")
    crystal = 1 - torch.exp(-p["gain"] * density)

    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    cloud = plasma_fractal(b, mapsize, 2.0, like, generator)[:, None, :h, :w]
    level = uni((b, 1, 1, 1), *p["level"])
    background = level + p["cloud"] * (cloud - 0.5)
    peak = uni((b, 1, 1, 1), *p["peak"])
    grain = p["grain"] * rng.randn((b, 1, h, w), generator, like.device)
    tint = 1 + uni((b, 1, 1, 1), 0.0, 1.0) * torch.tensor(p["tint"], device=dev).view(1, 3, 1, 1)
    # the ice between the crystals is tinted, the crystals themselves are white
    return (background * tint * (1 - crystal) + peak * crystal + grain).clamp(0, 1)
