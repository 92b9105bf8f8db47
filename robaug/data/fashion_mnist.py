"""Fashion-MNIST from local idx files (torchvision layout or Debian's ``dataset-fashion-mnist``).

Search order for ``root=None``: ``$ROBAUG_DATA``, ``./data``, ``~/.cache/robaug/data``, and Debian's
``/usr/share/datasets/fashion-mnist``. In each root the idx ``.gz`` (or uncompressed) files may sit
directly in it, in ``FashionMNIST/raw/`` (torchvision's layout) or in ``fashion-mnist/``. When no copy is
found and ``download=True``, torchvision's ``FashionMNIST`` downloader is used.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_fashion_mnist", "FASHION_MNIST_CLASSES", "find_fashion_mnist"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_HOW_TO_GET = (
    "Fashion-MNIST was not found. Get it in one of these ways:\n"
    "  * Debian/Ubuntu (as root): apt-get install -y dataset-fashion-mnist"
    "   (files in /usr/share/datasets/fashion-mnist)\n"
    "  * with internet: python -c \"import torchvision; torchvision.datasets.FashionMNIST('data', download=True)\"\n"
    "  * copy the four idx .gz files into a folder and pass root=<folder> (or set ROBAUG_DATA=<folder>)"
)


def _candidate_roots(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("ROBAUG_DATA"):
        roots.append(Path(os.environ["ROBAUG_DATA"]))
    roots += [Path("data"), Path.home() / ".cache" / "robaug" / "data", _DEBIAN_DIR]
    return roots


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None, train: bool = True) -> tuple[Path, Path] | None:
    """Return the (images, labels) idx file paths, or None when no copy is found."""
    img_stem, lbl_stem = _FILES[train]
    for r in _candidate_roots(root):
        for folder in (r, r / "FashionMNIST" / "raw", r / "fashion-mnist"):
            img, lbl = _find_file(folder, img_stem), _find_file(folder, lbl_stem)
            if img is not None and lbl is not None:
                return img, lbl
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated idx file ({arr.size} values, expected {int(np.prod(dims))})")
    return arr.reshape(dims)


def load_fashion_mnist(
    root: str | os.PathLike | None = None, train: bool = True, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load Fashion-MNIST as ``(images uint8 (N, 1, 28, 28), labels int64 (N,))``."""
    found = find_fashion_mnist(root, train)
    if found is None and download:
        import torchvision

        target = Path(root) if root is not None else Path.home() / ".cache" / "robaug" / "data"
        torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
        found = find_fashion_mnist(target, train)
    if found is None:
        searched = ", ".join(str(r) for r in _candidate_roots(root))
        raise FileNotFoundError(f"{_HOW_TO_GET}\n(searched: {searched})")
    images = torch.from_numpy(_read_idx(found[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(found[1]).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST files disagree: {images.shape[0]} images, {labels.shape[0]} labels")
    return images, labels
