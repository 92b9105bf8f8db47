"""Out-of-distribution test sets that exist offline, and a reader for the ones users have on disk.

Convention (OpenOOD's): **near-OOD** sets share the in-distribution data's low-level statistics (image style,
background, size) but hold other semantic classes, so only the semantics tell them apart; **far-OOD** sets come
from another domain (photographs, textures, noise). For a Fashion-MNIST model:

===============  =====  ==========================================================================================
set              kind   what
===============  =====  ==========================================================================================
``digits``       near   scikit-learn's bundled 1,797 handwritten digits (8x8, bilinear-resized, white on black;
                        far-OOD when the in-distribution data are colour images)
``photo_crops``  far    random crops of scikit-image's bundled photographs and textures, greyscale as needed
``uniform``      far    i.i.d. uniform noise
``gaussian``     far    i.i.d. N(0.5, 0.25^2) noise clipped to [0, 1]
``blobs``        far    Bernoulli(0.7) noise, Gaussian-blurred (sigma 1.5 px), values below 0.75 set to 0
                        (the "Blobs" set of Hendrycks et al.'s outlier exposure)
===============  =====  ==========================================================================================

``digits`` needs scikit-learn and ``photo_crops`` scikit-image (``pip install scikit-learn scikit-image``); the
procedural sets need nothing. CIFAR users point :func:`load_ood_folder` at SVHN, Textures (DTD), LSUN, Places or
the OpenOOD splits they have on disk (for CIFAR-10, OpenOOD lists CIFAR-100 and TinyImageNet as near-OOD; MNIST,
SVHN, Textures and Places365 as far-OOD).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OODSet", "digits_ood", "photo_crops_ood", "noise_ood", "blobs_ood", "offline_ood_sets",
           "load_ood_folder", "OFFLINE_OOD_SETS"]

OFFLINE_OOD_SETS = ("digits", "photo_crops", "uniform", "gaussian", "blobs")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: bundled in scikit-image's wheel (no download): photographs and textures
_SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "moon", "brick", "grass", "gravel",
                   "coins", "clock", "text")


@dataclass
class OODSet:
    """A set of images ``(N, C, H, W)`` float in [0, 1] (CPU), its ``kind`` (``near`` / ``far``) and origin."""

    name: str
    images: torch.Tensor
    kind: str
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _fit(x: torch.Tensor, size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """Bilinear (antialiased) resize to ``size`` and grey <-> RGB to ``channels`` (ITU-R 601 luma)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] != channels:
        if channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)[: x.shape[1]]
            x = (x * w.view(1, -1, 1, 1)).sum(1, keepdim=True)
        else:
            x = x.expand(-1, channels, -1, -1)
    return x.clamp(0.0, 1.0).contiguous()


def _gen(generator: torch.Generator | None, seed: int) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(int(seed))


def digits_ood(size: int = 28, channels: int = 1, n: int | None = None) -> OODSet:
    """scikit-learn's bundled digits, resized to ``size``: near-OOD for greyscale in-distribution data
    (Fashion-MNIST: the same white-on-black centred style), far-OOD for colour photographs (CIFAR, ImageNet)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits OOD set needs scikit-learn: pip install scikit-learn") from None
    arr = load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    x = _fit(torch.from_numpy(arr[:n] if n else arr).unsqueeze(1), size, channels)
    return OODSet("digits", x, "near" if channels == 1 else "far", "sklearn.datasets.load_digits, bilinear-resized")


def photo_crops_ood(n: int = 1000, size: int = 28, channels: int = 1, *, generator: torch.Generator | None = None,
                    seed: int = 0) -> OODSet:
    """``n`` random square crops (side 1/8..1/2 of the photograph's short side) of scikit-image's bundled
    photographs and textures, resized to ``size`` (far-OOD)."""
    try:
        import skimage.data as skd
    except ImportError:
        raise ImportError("the photo_crops OOD set needs scikit-image: pip install scikit-image") from None
    photos = []
    for name in _SKIMAGE_IMAGES:
        try:
            a = np.asarray(getattr(skd, name)())
        except Exception:  # an image this scikit-image version would download: skip it
            continue
        t = torch.from_numpy(a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0))
        t = t.unsqueeze(0) if t.ndim == 2 else t[..., :3].permute(2, 0, 1)
        photos.append(t)
    if not photos:
        raise RuntimeError("no bundled scikit-image photograph could be read")
    g = _gen(generator, seed)
    which = torch.randint(len(photos), (n,), generator=g)
    frac = torch.rand(n, generator=g) * (0.5 - 0.125) + 0.125
    pos = torch.rand(n, 2, generator=g)
    out = torch.empty(n, channels, size, size)
    for i in range(n):  # crops of differently sized photographs: one slice each (setup cost, not a hot path)
        p = photos[int(which[i])]
        side = max(2, int(frac[i] * min(p.shape[-2:])))
        top = int(pos[i, 0] * (p.shape[-2] - side))
        left = int(pos[i, 1] * (p.shape[-1] - side))
        out[i] = _fit(p[None, :, top:top + side, left:left + side], size, channels)[0]
    return OODSet("photo_crops", out, "far", f"scikit-image bundled images ({len(photos)}), random crops")


def noise_ood(kind: str = "uniform", n: int = 1000, size: int = 28, channels: int = 1, *,
              generator: torch.Generator | None = None, seed: int = 0) -> OODSet:
    """Uniform or Gaussian (``N(0.5, 0.25^2)``, clipped) i.i.d. pixel noise (far-OOD)."""
    g = _gen(generator, seed)
    shape = (n, channels, size, size)
    if kind == "uniform":
        x = torch.rand(shape, generator=g)
    elif kind == "gaussian":
        x = (0.5 + 0.25 * torch.randn(shape, generator=g)).clamp(0.0, 1.0)
    else:
        raise ValueError(f"kind must be 'uniform' or 'gaussian', got {kind!r}")
    return OODSet(kind, x, "far", f"procedural {kind} noise, seed {seed if generator is None else 'generator'}")


def blobs_ood(n: int = 1000, size: int = 28, channels: int = 1, *, generator: torch.Generator | None = None,
              seed: int = 0) -> OODSet:
    """Blobs: Bernoulli(0.7) pixels, Gaussian blur (sigma 1.5 px), values < 0.75 zeroed (far-OOD)."""
    from torchvision.transforms.v2 import functional as TF

    g = _gen(generator, seed)
    x = (torch.rand((n, channels, size, size), generator=g) < 0.7).float()
    x = TF.gaussian_blur(x, kernel_size=[9, 9], sigma=[1.5, 1.5])
    x = torch.where(x < 0.75, torch.zeros_like(x), x)
    return OODSet("blobs", x, "far", "procedural blobs (outlier-exposure recipe)")


def offline_ood_sets(size: int = 28, channels: int = 1, n: int = 1000, *, names: Sequence[str] | None = None,
                     seed: int = 0, skip_missing: bool = True) -> dict[str, OODSet]:
    """The offline sets above (``names``, default all) with ``n`` images each (digits: at most 1,797). Sets whose
    package is missing are skipped (``skip_missing``) or raise ImportError."""
    out: dict[str, OODSet] = {}
    for i, name in enumerate(names or OFFLINE_OOD_SETS):
        g = torch.Generator().manual_seed(int(seed) * 1000 + i)
        try:
            if name == "digits":
                out[name] = digits_ood(size, channels, n)
            elif name == "photo_crops":
                out[name] = photo_crops_ood(n, size, channels, generator=g)
            elif name in ("uniform", "gaussian"):
                out[name] = noise_ood(name, n, size, channels, generator=g)
            elif name == "blobs":
                out[name] = blobs_ood(n, size, channels, generator=g)
            else:
                raise ValueError(f"unknown OOD set {name!r}; offline sets: {', '.join(OFFLINE_OOD_SETS)} (use "
                                 "load_ood_folder for one on disk)")
        except ImportError:
            if not skip_missing:
                raise
    return out


def _size_error(path: Path, got: tuple[int, ...], want: tuple[int, int]) -> ValueError:
    return ValueError(
        f"OOD set {path}: images are {got[0]}x{got[1]} but the model takes {want[0]}x{want[1]}; pass resize=True "
        f"(bilinear, antialiased) or resize them beforehand, e.g. torchvision.transforms.v2.Resize({want[0]}) + "
        f"CenterCrop({want[0]}) for photographs")


def load_ood_folder(path: str | os.PathLike, *, size: int | tuple[int, int] | None = None, channels: int | None = None,
                    resize: bool = False, limit: int | None = None, kind: str = "far",
                    name: str | None = None) -> OODSet:
    """An OOD set from disk: a ``.npy`` / ``.npz`` array (``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``,
    uint8 or float in [0, 1]; ``.npz``: the first array, or ``x`` / ``images``) or a folder of images at any
    depth (an ImageFolder tree, labels ignored), read in sorted order.

    ``size`` / ``channels``: what the model takes. Another image size raises a ValueError unless ``resize``;
    colour is converted to ``channels`` (greyscale by luma). ``limit``: the first N images. ``kind``: ``near`` or
    ``far`` (see the module docstring).
    """
    p = Path(path)
    want = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    if p.is_file() and p.suffix in (".npy", ".npz"):
        arr = np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            keys = list(arr.keys())
            arr = arr["x" if "x" in keys else "images" if "images" in keys else keys[0]]
        arr = np.asarray(arr[:limit] if limit else arr)
        t = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
        if t.ndim == 3:
            t = t.unsqueeze(1)
        elif t.ndim == 4 and t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3):
            t = t[..., :3].permute(0, 3, 1, 2)
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise ValueError(f"OOD set {p}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) images, got {arr.shape}")
        if float(t.min()) < 0 or float(t.max()) > 1 + 1e-6:
            raise ValueError(f"OOD set {p}: float images must lie in [0, 1] (uint8 in [0, 255])")
        if want is not None and tuple(t.shape[-2:]) != want and not resize:
            raise _size_error(p, tuple(t.shape[-2:]), want)
    elif p.is_dir():
        from PIL import Image

        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMAGE_EXTS and f.is_file())[:limit]
        if not files:
            raise FileNotFoundError(f"OOD set {p}: no images ({', '.join(_IMAGE_EXTS)}) found under it")
        mode = "L" if channels == 1 else "RGB"
        imgs = []
        for f in files:  # decoding files one by one (I/O, not a tensor loop)
            with Image.open(f) as im:
                im = im.convert(mode)
                if want is not None and (im.height, im.width) != want:
                    if not resize:
                        raise _size_error(f, (im.height, im.width), want)
                    im = im.resize((want[1], want[0]), Image.BILINEAR, reducing_gap=None)
                imgs.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()))
        t = torch.stack(imgs).float().div_(255.0)
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    else:
        raise FileNotFoundError(f"OOD set {p}: expected a .npy/.npz file or a folder of images")
    if kind not in ("near", "far"):
        raise ValueError(f"kind must be 'near' or 'far', got {kind!r}")
    t = _fit(t, want if want is not None else tuple(t.shape[-2:]), channels or t.shape[1])
    return OODSet(name or p.stem, t, kind, str(p))
