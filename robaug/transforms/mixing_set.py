"""The mixing set IPMix draws its mixing pictures from: procedural fractals (default, optionally cached on disk),
a tensor, a folder of images or a dataset, resized to each input size and kept on each device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from torchvision.transforms.v2 import functional as TF

from .._core.image import float_to_uint8
from .._core.io import atomic_save
from . import image_ops
from ._base import check_int
from .ifs import generate_fractals

__all__ = ["MixingSet", "MixingSource"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_MIN_RENDER = 4  # the smallest size generate_fractals renders
_CACHE_VERSION = 2  # bump when the generator's output changes, so disk caches are not reused

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
        self.num_images = check_int(num_images, "num_images", "MixingSet")
        self.render_size = check_int(render_size, "render_size", "MixingSet", low=_MIN_RENDER)
        self.seed = check_int(seed, "seed", "MixingSet")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_images = None if max_images is None else check_int(max_images, "max_images", "MixingSet", low=1)
        self.float_cache_bytes = 64 * 2**20
        self._files: list[Path] | None = None
        self._tensor: torch.Tensor | None = None
        self._dataset: Any = None
        self._cache: dict[tuple, torch.Tensor] = {}
        if source is None:
            if self.num_images < 1:
                raise ValueError(f"MixingSet: num_images must be >= 1, got {num_images}")
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
        """uint8 fractals of ``side`` px: rendered at ``min(side, render_size)`` px (at least the 4 px
        :func:`generate_fractals` needs), resized when that differs from ``side``."""
        render = max(min(side, self.render_size), _MIN_RENDER)
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

                # atomic: concurrent DataLoader workers never see half a file
                atomic_save(path, lambda tmp: save_file({"images": imgs.cpu().contiguous()}, tmp))
        if render != side:  # upsampled beyond render_size; downsampled (with antialiasing) below 4 px
            imgs = torch.cat(
                [
                    float_to_uint8(TF.resize(imgs[i : i + 64].float().div_(255), [side, side], antialias=render > side))
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
            cached = (float_to_uint8(_convert_channels(base.float().div_(255), channels))
                      if base.shape[1] != channels else base)
            self._cache[key] = cached
        return cached

    def prepare(self, size: int | tuple[int, int], channels: int = 3,
                device: torch.device | str = "cpu") -> "MixingSet":
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
