"""Procedural fractal images and the mixing set IPMix draws its mixing pictures from.

IPMix's official mixing set is a download of ~13k fractal and feature-visualisation images; the paper's
Table 8 shows procedurally generated sets (FractalDB, RCDB, Dead Leaves) do about as well. robaug makes its
default mixing set on the fly with :func:`generate_fractals`, a batched *iterated function system* (IFS)
renderer in the spirit of FractalDB (Kataoka et al., 2020) and Anderson & Farrell (2022):

1. Each system has ``K`` (2..4) strictly contractive affine maps ``w_k(p) = A_k p + b_k`` with
   ``A_k = R(theta_k) diag(s1_k, s2_k) R(phi_k) D_k`` (rotations ``R``, a random reflection ``D_k``) and singular
   values rescaled so that ``sum_k (s1_k + 2 s2_k)`` falls in Anderson & Farrell's range
   ``[(5 + K) / 2, (6 + K) / 2]``; map ``k`` is chosen with probability proportional to ``|det A_k|``.
2. The chaos game ``p <- w_k(p)`` runs for all systems and all their points at once (one tensor op per
   iteration); after a burn-in every visited point is recorded together with a colour that follows the
   "colour chaos game" ``c <- (c + colour_k) / 2``.
3. The hit histogram of every system is rendered in one ``bincount``; brightness is ``log(1 + hits)``,
   colour the mean colour of the hits, and the fractal is composited over a dim diamond-square plasma
   background (``kornia.contrib.diamond_square``).
4. Systems whose rendering covers too little or too much of the canvas are discarded and replaced.

Everything is drawn from one seeded ``torch.Generator`` on the requested device, so the same ``seed``,
``size`` and device give the same images.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb
from torchvision.transforms.v2 import functional as TF

from .._core.image import float_to_uint8
from . import image_ops

__all__ = ["generate_fractals", "sample_ifs", "chaos_game", "MixingSet", "MixingSource"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_CACHE_VERSION = 2  # bump when the generator's output changes, so disk caches are not reused


# --------------------------------------------------------------------------------------------------
# IFS fractals


def _rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=device)


def sample_ifs(
    n: int,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    min_maps: int = 2,
    max_maps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contractive affine IFS: ``(coeffs (n, K, 6), probs (n, K))`` with ``K = max_maps``.

    ``coeffs[..., :]`` is ``(a, b, e, c, d, f)`` for ``p' = [[a, b], [c, d]] p + [e, f]``. Systems with fewer
    than ``max_maps`` maps have zero probability for the unused ones.
    """
    device = torch.device(device)
    k = max_maps
    u = _rand((n, k, 9), generator, device)
    num_maps = min_maps + torch.floor(_rand((n,), generator, device) * (max_maps - min_maps + 1)).long()
    used = torch.arange(k, device=device).unsqueeze(0) < num_maps.unsqueeze(1)  # (n, K)

    theta, phi = u[..., 0] * 2 * math.pi, u[..., 1] * 2 * math.pi
    s1 = 0.25 + 0.75 * u[..., 2]
    s2 = s1 * (0.1 + 0.9 * u[..., 3])
    flip = torch.where(u[..., 4] < 0.5, -1.0, 1.0)
    # Anderson & Farrell's "sigma factor": sum_k (s1 + 2 s2) in [(5 + K) / 2, (6 + K) / 2].
    budget = (5.0 + num_maps.float() + _rand((n,), generator, device)) / 2.0
    total = ((s1 + 2 * s2) * used).sum(1)
    scale = (budget / total).unsqueeze(1)
    s1 = (s1 * scale).clamp(max=0.95)
    s2 = (s2 * scale).clamp(max=0.95)

    ct, st, cp, sp = torch.cos(theta), torch.sin(theta), torch.cos(phi), torch.sin(phi)
    # A = R(theta) diag(s1, s2) R(phi) diag(1, flip)
    a = ct * s1 * cp - st * s2 * sp
    b = (-ct * s1 * sp - st * s2 * cp) * flip
    c = st * s1 * cp + ct * s2 * sp
    d = (-st * s1 * sp + ct * s2 * cp) * flip
    e = u[..., 5] * 2 - 1
    f = u[..., 6] * 2 - 1
    coeffs = torch.stack([a, b, e, c, d, f], dim=-1)
    det = (s1 * s2).clamp(min=1e-3) * used
    probs = det / det.sum(1, keepdim=True)
    return coeffs, probs


def _random_bytes(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform random uint8 tensor of ``shape``, ~10x faster than ``torch.rand`` on CPU.

    Draws int64 words uniform over the full 64 bits (``random_()`` without bounds would leave the top bit 0)
    and reads them as bytes.
    """
    numel = math.prod(shape)
    words = torch.empty((numel + 7) // 8, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    return words.view(torch.uint8)[:numel].view(*shape)


def chaos_game(
    coeffs: torch.Tensor,
    probs: torch.Tensor,
    *,
    num_points: int,
    num_iters: int,
    warmup: int = 4,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the chaos game for ``n`` systems with ``num_points`` walkers each, all at once.

    Walkers start at the fixed point of each system's first map (a point of the attractor), take
    ``warmup`` unrecorded steps to spread out, then ``num_iters`` recorded ones; every step is one set of
    tensor ops over all systems and walkers. Maps are chosen with ``probs`` quantised to 1/256.
    Returns the visited points ``x, y`` of shape ``(num_iters, n, num_points)`` and the index of the map
    that produced each of them (same shape, int64).
    """
    n, k, _ = coeffs.shape
    device = coeffs.device
    # 256-entry inverse-CDF table per system: random byte -> map -> global column of ``table``.
    edges = (torch.cumsum(probs, 1) * 256).round().clamp(max=256).long()  # (n, K)
    levels = torch.arange(256, device=device)
    local_lut = (levels.view(1, 256, 1) >= edges.view(n, 1, k)).sum(-1).clamp_(max=k - 1)  # (n, 256)
    row_lut = (local_lut + torch.arange(n, device=device).unsqueeze(1) * k).view(-1)
    table = coeffs.reshape(n * k, 6).t().contiguous()  # (6, n * K): gathered rows come out contiguous
    steps = warmup + num_iters
    draws = _random_bytes((steps, n, num_points), generator, device)
    offsets = (torch.arange(n, device=device, dtype=torch.int32) * 256).view(1, n, 1)
    rows = row_lut.index_select(0, (draws.int() + offsets).view(-1)).view(steps, n * num_points)

    # Start at the fixed point p* = (I - A)^-1 b of map 0.
    a, b, e, c, d, f = coeffs[:, 0].unbind(-1)
    det = (1 - a) * (1 - d) - b * c
    x = (((1 - d) * e + b * f) / det).view(n, 1).expand(n, num_points).reshape(-1)
    y = ((c * e + (1 - a) * f) / det).view(n, 1).expand(n, num_points).reshape(-1)
    xs = torch.empty(num_iters, n * num_points, device=device)
    ys = torch.empty(num_iters, n * num_points, device=device)
    for t in range(steps):
        m = table.index_select(1, rows[t])  # (6, n * P)
        if t >= warmup:
            x_new, y_new = xs[t - warmup], ys[t - warmup]
        else:
            x_new, y_new = torch.empty_like(x), torch.empty_like(y)
        torch.addcmul(m[2], m[0], x, out=x_new).addcmul_(m[1], y)
        torch.addcmul(m[5], m[3], x, out=y_new).addcmul_(m[4], y)
        x, y = x_new, y_new
    maps = rows[warmup:].view(num_iters, n, num_points) - torch.arange(n, device=device).view(1, n, 1) * k
    return xs.view(num_iters, n, num_points), ys.view(num_iters, n, num_points), maps


def _render(
    xs: torch.Tensor, ys: torch.Tensor, maps: torch.Tensor, palette: torch.Tensor, size: int, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hit counts ``(n, size, size)``, mean hit colour ``(n, 3, size, size)`` and extent ``(n,)``.

    ``xs, ys`` are ``(T, n, P)`` points and ``maps`` the map that produced each. A hit takes the colour of
    its map, so each of the ``K`` sub-copies that make up the attractor has its own hue; hits are counted
    per (pixel, map) in one ``bincount`` and the colours averaged per pixel.
    """
    _, n, _ = xs.shape
    k = palette.shape[1]
    device = xs.device
    xlo, xhi = torch.aminmax(xs, dim=2)
    ylo, yhi = torch.aminmax(ys, dim=2)
    xlo, xhi, ylo, yhi = xlo.amin(0), xhi.amax(0), ylo.amin(0), yhi.amax(0)
    extent = torch.maximum(xhi - xlo, yhi - ylo).clamp(min=1e-6)  # same scale on both axes
    gain = (size * (1 - 2 * margin) / extent).view(1, n, 1)
    px = ((xs - ((xlo + xhi) / 2).view(1, n, 1)) * gain + size / 2).clamp_(0, size - 1).to(torch.int32)
    py = ((ys - ((ylo + yhi) / 2).view(1, n, 1)) * gain + size / 2).clamp_(0, size - 1).to(torch.int32)
    base = (torch.arange(n, device=device, dtype=torch.int32) * (size * size)).view(1, n, 1)
    index = ((py * size + px + base) * k + maps.to(torch.int32)).view(-1)
    counts = torch.bincount(index, minlength=n * size * size * k).view(n, size * size, k).float()
    colsum = torch.bmm(counts, palette)  # (n, size*size, 3)
    hits = counts.sum(-1)
    colour = (colsum / hits.clamp(min=1).unsqueeze(-1)).transpose(1, 2).reshape(n, 3, size, size)
    return hits.view(n, size, size), colour, extent


def _interp_matrix(cells: int, size: int, device: torch.device) -> torch.Tensor:
    """``(size, cells + 1)`` linear-interpolation weights from a ``cells + 1`` lattice to ``size`` pixels."""
    pos = torch.linspace(0, cells, size, device=device)
    left = pos.floor().clamp(max=cells - 1)
    frac = pos - left
    w = torch.zeros(size, cells + 1, device=device)
    w.scatter_(1, left.long().unsqueeze(1), (1 - frac).unsqueeze(1))
    w.scatter_add_(1, left.long().unsqueeze(1) + 1, frac.unsqueeze(1))
    return w


def _plasma(m: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Smooth random colour fields ``(m, 3, size, size)`` in [0, 1]: three octaves of value noise."""
    out = torch.zeros(m * 3, size, size, device=device)
    total = 0.0
    for cells, amp in ((2, 1.0), (4, 0.5), (8, 0.25)):
        w = _interp_matrix(cells, size, device)
        noise = _rand((m * 3, cells + 1, cells + 1), generator, device)
        out.add_(w @ noise @ w.t(), alpha=amp)  # separable bilinear upsampling as two matmuls
        total += amp
    return out.div_(total).view(m, 3, size, size)


def generate_fractals(
    n: int,
    size: int = 32,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    points_per_pixel: float = 6.0,
    min_coverage: float = 0.08,
    max_coverage: float = 0.75,
    background: bool = True,
    chunk_bins: int = 2**19,
) -> torch.Tensor:
    """``n`` RGB fractal images ``(n, 3, size, size)`` in ``[0, 1]``, deterministic given ``seed`` and device.

    ``points_per_pixel`` sets the chaos-game budget (recorded points per canvas pixel); systems whose hits
    cover less than ``min_coverage`` or more than ``max_coverage`` of the canvas are replaced by new ones.
    Systems are processed in chunks of about ``chunk_bins / (4 size^2)`` to bound memory.
    """
    if n < 0 or size < 4:
        raise ValueError(f"generate_fractals needs n >= 0 and size >= 4, got n={n}, size={size}")
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    max_maps = 4
    walkers = max(64, min(4096, size * size // 4))
    iters = max(8, math.ceil(points_per_pixel * size * size / walkers))
    chunk = max(1, chunk_bins // (size * size * max_maps))
    out: list[torch.Tensor] = []
    have = 0
    while have < n:
        m = min(chunk, max(8, math.ceil((n - have) * 1.4)))
        coeffs, probs = sample_ifs(m, generator=gen, device=device, max_maps=max_maps)
        hue = _rand((m, 1), gen, device) + _rand((m, max_maps), gen, device) * 0.5
        sat = 0.4 + 0.6 * _rand((m, max_maps), gen, device)
        val = 0.75 + 0.25 * _rand((m, max_maps), gen, device)
        hsv = torch.stack([(hue % 1.0) * 2 * math.pi, sat, val], dim=1).unsqueeze(-1)  # (m, 3, K, 1)
        palette = hsv_to_rgb(hsv).squeeze(-1).transpose(1, 2).contiguous()  # (m, K, 3)
        warmup = 4
        xs, ys, maps = chaos_game(coeffs, probs, num_points=walkers, num_iters=iters, warmup=warmup, generator=gen)
        hits, colour, extent = _render(xs, ys, maps, palette, size, margin=0.06)
        coverage = (hits > 0).float().mean((1, 2))
        ok = (coverage >= min_coverage) & (coverage <= max_coverage) & (extent > 1e-3) & torch.isfinite(extent)
        keep = ok.nonzero().squeeze(1)  # a host sync per chunk; generation is a one-off
        hits, colour = hits[keep], colour[keep]
        kept = hits.shape[0]
        density = torch.log1p(hits)
        density = density / density.amax((1, 2), keepdim=True).clamp(min=1e-6)
        alpha = density.sqrt().unsqueeze(1)  # lift faint regions
        fg = (colour * (0.8 + 0.4 * _rand((kept, 1, 1, 1), gen, device))).clamp(0, 1)
        if background:
            bg = _plasma(kept, size, gen, device) * (0.15 + 0.35 * _rand((kept, 1, 1, 1), gen, device))
            img = bg * (1 - alpha) + fg * alpha
        else:
            img = fg * alpha
        out.append(img.clamp(0, 1))
        have += kept
    if not out:
        return torch.zeros(0, 3, size, size, device=device)
    return torch.cat(out)[:n].contiguous()


# --------------------------------------------------------------------------------------------------
# mixing sets

MixingSource = Union[None, torch.Tensor, str, os.PathLike, Sequence[Any], "torch.utils.data.Dataset[Any]"]


def _fit(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize the shorter side to cover ``(height, width)`` and centre-crop (like ``Resize`` + ``CenterCrop``)."""
    h, w = images.shape[-2:]
    if (h, w) == (height, width):
        return images
    scale = max(height / h, width / w)
    new = (max(height, round(h * scale)), max(width, round(w * scale)))
    out = TF.resize(images, list(new), antialias=True) if new != (h, w) else images
    return TF.center_crop(out, [height, width])


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:
        return image_ops.to_grayscale(images)
    return images.expand(-1, 3, -1, -1)


def _item_to_tensor(item: Any, index: int) -> torch.Tensor:
    """One dataset item (image or ``(image, ...)``) as a float ``(C, H, W)`` tensor in ``[0, 1]``."""
    import PIL.Image

    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError(f"mixing set item {index} is an empty sequence")
        item = item[0]
    if isinstance(item, PIL.Image.Image):
        item = item.convert("RGB") if item.mode not in ("L", "RGB") else item
        return TF.pil_to_tensor(item).float().div_(255)
    if isinstance(item, torch.Tensor):
        t = item.as_subclass(torch.Tensor)
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(
                f"mixing set item {index} has shape {tuple(t.shape)}; expected a (C, H, W) image with 1 or 3 channels"
            )
        return t.float().div_(255) if t.dtype == torch.uint8 else t.float().clamp(0, 1)
    raise TypeError(
        f"mixing set item {index} is a {type(item).__name__}; expected a PIL image or a (C, H, W) tensor "
        "(or a tuple whose first element is one)"
    )


class MixingSet:
    """The pictures IPMix mixes with, resized to each input size and cached on each device.

    ``source`` may be

    - ``None``: ``num_images`` procedural fractals (:func:`generate_fractals`, seed ``seed``), generated
      lazily at the input's size (rendered at most ``render_size`` px and upsampled beyond that) on the input's
      device the first time they are needed, kept in memory and, with ``cache_dir``, also saved as safetensors
      and reloaded next time;
    - a tensor ``(M, C, H, W)`` (or ``(M, H, W)``), uint8 in ``[0, 255]`` or float in ``[0, 1]``, ``C`` 1 or 3;
    - a folder (searched recursively for image files);
    - a dataset or sequence whose items are images (PIL or ``(C, H, W)`` tensors) or ``(image, label)`` tuples.

    Images are resized (shorter side, then centre crop) to the input's size; an RGB set is converted to grey
    for 1-channel input and a grey set repeated for RGB input. Folders and datasets are read once per input
    size and held in memory as uint8 (``M * C * H * W`` bytes); pass ``max_images`` to cap that.
    """

    def __init__(
        self,
        source: MixingSource = None,
        *,
        num_images: int = 1024,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        max_images: int | None = None,
        render_size: int = 128,
    ) -> None:
        self.num_images = int(num_images)
        self.render_size = int(render_size)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_images = max_images
        self.float_cache_bytes = 64 * 2**20
        self._files: list[Path] | None = None
        self._tensor: torch.Tensor | None = None
        self._dataset: Any = None
        self._cache: dict[tuple, torch.Tensor] = {}
        if source is None:
            if self.num_images < 1:
                raise ValueError(f"num_images must be >= 1, got {num_images}")
            self.kind = "fractals"
        elif isinstance(source, torch.Tensor):
            t = source.detach().as_subclass(torch.Tensor)
            if t.ndim == 3:
                t = t.unsqueeze(1)
            if t.ndim != 4 or t.shape[1] not in (1, 3):
                raise ValueError(
                    f"a mixing-set tensor must have shape (M, C, H, W) with C = 1 or 3 channels, got "
                    f"{tuple(source.shape)}; convert RGBA images to RGB first."
                )
            if t.shape[0] == 0:
                raise ValueError("the mixing-set tensor is empty (M = 0)")
            if t.dtype != torch.uint8:
                if not t.dtype.is_floating_point:
                    raise TypeError(f"mixing-set tensor must be uint8 or float, got {t.dtype}")
                if not bool(torch.isfinite(t).all()):
                    raise ValueError("the mixing-set tensor contains NaN or inf")
                t = float_to_uint8(t.float())
            self._tensor = t[: self.max_images] if self.max_images else t
            self.kind = "tensor"
        elif isinstance(source, (str, os.PathLike)):
            root = Path(source)
            if not root.is_dir():
                raise FileNotFoundError(f"mixing-set folder {str(root)!r} does not exist or is not a directory")
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file())
            if not files:
                raise ValueError(f"no image files ({', '.join(_IMAGE_EXTENSIONS)}) found under {str(root)!r}")
            self._files = files[: self.max_images] if self.max_images else files
            self.kind = "folder"
        elif hasattr(source, "__getitem__") and hasattr(source, "__len__"):
            if len(source) == 0:
                raise ValueError("the mixing-set dataset is empty")
            self._dataset = source
            self.kind = "dataset"
        else:
            raise TypeError(
                "mixing_set must be None (procedural fractals), a tensor (M, C, H, W), a folder path or a "
                f"dataset of images, got {type(source).__name__}"
            )

    def __len__(self) -> int:
        if self.kind == "fractals":
            return self.num_images
        if self.kind == "tensor":
            return self._tensor.shape[0]
        if self.kind == "folder":
            return len(self._files)
        n = len(self._dataset)
        return min(n, self.max_images) if self.max_images else n

    def __repr__(self) -> str:
        extra = f", seed={self.seed}" if self.kind == "fractals" else ""
        return f"MixingSet(kind={self.kind!r}, size={len(self)}{extra})"

    # -- loading -----------------------------------------------------------------------------------

    def _load_rgb(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """uint8 ``(M, C, height, width)`` on ``device`` from the source (C as stored, or 3 for fractals)."""
        if self.kind == "fractals":
            side = max(height, width)
            imgs = self._fractals(side, device)
            return imgs if (height, width) == (side, side) else TF.center_crop(imgs, [height, width])
        if self.kind == "tensor":
            src = self._tensor
            chunks = [
                float_to_uint8(_fit(src[i : i + 256].to(device).float().div_(255), height, width))
                for i in range(0, src.shape[0], 256)
            ]
            return torch.cat(chunks)
        items = []
        if self.kind == "folder":
            import PIL.Image

            for i, path in enumerate(self._files):
                with PIL.Image.open(path) as im:
                    items.append(_item_to_tensor(im.convert("RGB"), i))
        else:
            for i in range(len(self)):
                items.append(_item_to_tensor(self._dataset[i], i))
        channels = 3 if any(t.shape[0] == 3 for t in items) else 1
        out = torch.empty(len(items), channels, height, width, dtype=torch.uint8)
        for i, t in enumerate(items):
            out[i] = float_to_uint8(_fit(_convert_channels(t.unsqueeze(0), channels), height, width))[0]
        return out.to(device)

    def _fractals(self, side: int, device: torch.device) -> torch.Tensor:
        """uint8 fractals of ``side`` px: rendered at ``min(side, render_size)`` px, upsampled when larger."""
        render = min(side, self.render_size)
        path = None
        imgs = None
        if self.cache_dir is not None:
            name = f"robaug-fractals-v{_CACHE_VERSION}-n{self.num_images}-s{render}-seed{self.seed}.safetensors"
            path = self.cache_dir / name
            if path.is_file():
                from safetensors.torch import load_file

                imgs = load_file(str(path))["images"].to(device)
        if imgs is None:
            imgs = float_to_uint8(generate_fractals(self.num_images, render, seed=self.seed, device=device))
            if path is not None:
                from safetensors.torch import save_file

                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                save_file({"images": imgs.cpu().contiguous()}, str(tmp))
                os.replace(tmp, path)  # atomic: concurrent DataLoader workers never see half a file
        if render < side:
            imgs = torch.cat(
                [
                    float_to_uint8(TF.resize(imgs[i : i + 64].float().div_(255), [side, side], antialias=False))
                    for i in range(0, imgs.shape[0], 64)
                ]
            )
        return imgs

    def images(self, size: tuple[int, int], channels: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All mixing pictures as uint8 ``(M, channels, H, W)`` on ``device`` (built once, then cached)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        height, width = int(size[0]), int(size[1])
        key = (height, width, channels, str(device))
        cached = self._cache.get(key)
        if cached is None:
            base_key = (height, width, 0, str(device))
            base = self._cache.get(base_key)
            if base is None:
                base = self._load_rgb(height, width, device)
                self._cache[base_key] = base
            cached = float_to_uint8(_convert_channels(base.float().div_(255), channels)) if base.shape[1] != channels else base
            self._cache[key] = cached
        return cached

    def prepare(self, size: int | tuple[int, int], channels: int = 3, device: torch.device | str = "cpu") -> "MixingSet":
        """Build the set for an input size ahead of time (e.g. before forking DataLoader workers)."""
        if isinstance(size, int):
            size = (size, size)
        self.images(size, channels, device)
        return self

    def pixels(self, size: tuple[int, int], channels: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All pictures as float32 in ``[0, 1]`` when the set takes at most ``float_cache_bytes`` as floats (kept),
        else as uint8 (divide by 255 after reading): what IPMix reads its patch windows from."""
        imgs = self.images(size, channels, device)
        if imgs.numel() * 4 > self.float_cache_bytes:
            return imgs
        key = (int(size[0]), int(size[1]), channels, str(imgs.device), "float")
        as_float = self._cache.get(key)
        if as_float is None:
            as_float = self._cache[key] = imgs.float().div_(255)
        return as_float

    def sample(self, index: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
        """Float ``(len(index), channels, H, W)`` pictures in ``[0, 1]`` on ``index``'s device.

        Sets of at most ``float_cache_bytes`` are also kept as float32, so drawing pictures is a single gather.
        """
        imgs = self.pixels(size, channels, index.device)
        picked = imgs.index_select(0, index)
        return picked.float().div_(255) if picked.dtype == torch.uint8 else picked

    def clear_cache(self) -> None:
        self._cache.clear()

    def __getstate__(self) -> dict:
        # Pickled (e.g. to spawned DataLoader workers) without the float32 copies; they are rebuilt on use.
        state = self.__dict__.copy()
        state["_cache"] = {key: v for key, v in self._cache.items() if key[-1] != "float"}
        return state
