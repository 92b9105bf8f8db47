"""Datasets of the training recipes: Fashion-MNIST, CIFAR-10/100 (torchvision layout) and ImageFolder trees.

Every dataset yields ``uint8`` images. Fashion-MNIST and CIFAR are held in memory as one ``(N, C, H, W)``
uint8 tensor (:class:`TensorImages`), so batches can be gathered and augmented on the training device;
``ImageFolder`` trees (ImageNet layout ``root/train/<class>/*.JPEG``, ``root/val/<class>/*.JPEG``) are decoded
per sample in DataLoader workers (:class:`FolderImages`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DatasetInfo", "TensorImages", "FolderImages", "load_dataset", "load_synthetic", "DATASETS"]

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")


@dataclass(frozen=True)
class DatasetInfo:
    """What a recipe needs to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0  #: RandomCrop padding of the standard augmentation (0: RandomResizedCrop instead)
    classes: tuple[str, ...] = field(default=(), compare=False)


class TensorImages(torch.utils.data.Dataset):
    """In-memory images ``uint8 (N, C, H, W)`` with ``int64 (N,)`` labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, n: int | None) -> "TensorImages":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return TensorImages(self.images[:n], self.labels[:n])


class FolderImages(torch.utils.data.Dataset):
    """An ``ImageFolder`` tree; ``__getitem__`` returns ``(PIL image in RGB, label)``."""

    def __init__(self, root: str | os.PathLike) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(root))
        self.labels = torch.as_tensor(self.folder.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.folder[i]

    def subset(self, n: int | None) -> "FolderImages":
        if n is None or n >= len(self):
            return self
        # an evenly spaced subset so that every class is represented
        step = len(self) / n
        keep = [int(k * step) for k in range(n)]
        self.folder.samples = [self.folder.samples[k] for k in keep]
        self.folder.targets = [self.folder.targets[k] for k in keep]
        self.folder.imgs = self.folder.samples
        self.labels = self.labels[keep]
        return self


_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _normalise_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    aliases = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "imagenet": "imagefolder"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    subset: int | None = None,
    download: bool = False,
    img_size: int | None = None,
) -> tuple[TensorImages | FolderImages, DatasetInfo]:
    """Load a split of ``name`` and describe it.

    * ``fashion_mnist``: idx files found by :func:`robaug.data.load_fashion_mnist` (``root`` optional).
    * ``cifar10`` / ``cifar100``: torchvision's layout under ``root`` (``cifar-10-batches-py`` /
      ``cifar-100-python``); ``download=True`` fetches them with torchvision.
    * ``imagefolder``: ``root/train`` and ``root/val`` class folders (ImageNet layout); ``img_size`` (224).

    ``subset`` keeps the first ``subset`` samples (evenly spaced ones for folders).
    """
    key = _normalise_name(name)
    if key == "fashion_mnist":
        from robaug.data import FASHION_MNIST_CLASSES, load_fashion_mnist

        images, labels = load_fashion_mnist(root, train=train, download=download)
        info = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2,
                           classes=tuple(FASHION_MNIST_CLASSES))
        return TensorImages(images, labels).subset(subset), info
    if key in ("cifar10", "cifar100"):
        from torchvision import datasets

        if root is None:
            raise ValueError(f"{key}: pass the folder holding torchvision's CIFAR files as root (--data-root)")
        cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as err:
            raise FileNotFoundError(
                f"{key} not found under {root!r} ({err}); pass download=True (--download) or point root at the folder "
                "that holds cifar-10-batches-py / cifar-100-python"
            ) from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(ds.targets, dtype=torch.long)
        mean, std = _CIFAR_STATS[key]
        info = DatasetInfo(key, len(ds.classes), 3, 32, mean, std, crop_padding=4, classes=tuple(ds.classes))
        return TensorImages(images, labels).subset(subset), info
    if root is None:
        raise ValueError("imagefolder: pass the dataset root (with train/ and val/ class folders) as root")
    split = Path(root) / ("train" if train else "val")
    if not split.is_dir():
        raise FileNotFoundError(f"imagefolder: expected class folders under {split}")
    ds = FolderImages(split)
    info = DatasetInfo("imagefolder", len(ds.folder.classes), 3, img_size or 224,
                       (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_padding=0,
                       classes=tuple(ds.folder.classes))
    return ds.subset(subset), info


def load_synthetic(path: str | os.PathLike, info: DatasetInfo, *, subset: str = "auto") -> TensorImages:
    """A generated training set in memory: a ``robaug generate`` folder (:mod:`robaug.data.shards`; the
    confidence-filtered selection when there is one) or a DM-Improves-AT ``.npz`` (``image`` uint8 NHWC,
    ``label``). Images must match the real data's channels and size and labels its classes.

    Like the reference code (which loads its ``.npz`` whole), the set is held in RAM as uint8: 1M CIFAR images
    are 3.1 GB.
    """
    from robaug.data import shards

    p = Path(path)
    if p.is_dir():
        images, labels = shards.load_shards(p, subset=subset, layout="NCHW")
    elif p.suffix == ".npz" and p.is_file():
        img, lab = shards.read_npz(p)
        images, labels = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(lab)
    else:
        raise FileNotFoundError(f"synthetic data {str(p)!r}: expected a `robaug generate` output folder (with "
                                "manifest.json) or a DM-Improves-AT .npz file")
    want = (info.in_channels, info.img_size, info.img_size)
    if tuple(images.shape[1:]) != want:
        raise ValueError(f"synthetic data {p}: images are {tuple(images.shape[1:])} (C, H, W) but {info.name} has "
                         f"{want}; generate at the dataset's size and channel count")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise ValueError(f"synthetic data {p}: labels must lie in [0, {info.num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if images.shape[0] == 0:
        raise ValueError(f"synthetic data {p} holds no images")
    return TensorImages(images, labels)
