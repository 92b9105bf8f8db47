"""Readers for the standard corruption benchmark layouts ("-C" sets), each a :class:`CorruptionBenchmark`
that yields ``(images float (B, C, H, W) in [0, 1], labels int64 (B,))`` per (corruption, severity):

- **CIFAR-10-C / CIFAR-100-C** (:class:`NpyCorruptionBenchmark`): ``<root>/<corruption>.npy`` with
  ``(5 * N, H, W, C)`` uint8 images, severities 1..5 stacked in order (N = 10,000), and ``labels.npy`` with
  ``5 * N`` (or ``N``) labels. Sets written by :func:`robaug.eval.corruptions.make_corrupted_dataset` use the
  same layout plus a ``meta.json`` naming their severities.
- **ImageNet-C** (:class:`ImageFolderCorruptionBenchmark`): ``<root>/<corruption>/<severity>/<wnid>/<image>``,
  read with torchvision's ``ImageFolder`` (class index = position of the wnid in sorted order, as for the
  ImageNet validation set).
- In memory (:class:`InMemoryCorruptionBenchmark`): uint8 tensors, as ``make_corrupted_dataset`` returns them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._core.image import to_float_batch
from .._core.io import atomic_save, atomic_write_text
from .catalogue import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

__all__ = [
    "CorruptionBenchmark",
    "NpyCorruptionBenchmark",
    "ImageFolderCorruptionBenchmark",
    "InMemoryCorruptionBenchmark",
    "open_corruption_benchmark",
]


def collate_images(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(image, label), ...]`` (any image type robaug accepts) -> float ``(B, C, H, W)`` in [0, 1], int64 labels."""
    xs = [to_float_batch(img, name="image", validate=False)[0][0] for img, _ in items]
    ys = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return torch.stack(xs), ys


def _hwc_to_batch(arr: np.ndarray) -> torch.Tensor:
    """(B, H, W[, C]) numpy uint8/float -> float (B, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(arr))  # copy: memory-mapped slices are read-only
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if t.dtype.is_floating_point:
        return t.float()
    raise TypeError(f"unsupported image dtype {t.dtype} in the .npy file (expected uint8)")


def _select_corruptions(
    found: Sequence[str], requested: Iterable[str] | None, root: Path, item: str, layout: str
) -> list[str]:
    """The corruptions to evaluate: ``requested`` (all must be in ``found``) or every one found, benchmark order
    first."""
    if requested is None:
        order = list(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
        chosen = [c for c in order if c in found] + [c for c in found if c not in order]
    else:
        chosen = list(requested)
        missing = [c for c in chosen if c not in found]
        if missing:
            raise FileNotFoundError(f"no {', '.join(item.format(m) for m in missing)} in {root}")
    if not chosen:
        raise FileNotFoundError(f"no {layout} in {root}")
    return chosen


class CorruptionBenchmark:
    """A set of (corruption, severity) test sets. Subclasses implement :meth:`dataset` and may override
    :meth:`batches` with something faster than a DataLoader."""

    corruptions: list[str]
    severities: list[int]

    def dataset(self, corruption: str, severity: int) -> Dataset:
        raise NotImplementedError

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images float (B, C, H, W) in [0, 1], labels int64 (B,))``."""
        self._check(corruption, severity)
        loader = DataLoader(
            self.dataset(corruption, severity), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, collate_fn=collate_images,
        )
        yield from loader

    def _check(self, corruption: str, severity: int) -> None:
        if corruption not in self.corruptions:
            raise KeyError(f"corruption {corruption!r} is not in this benchmark; it has {self.corruptions}")
        if severity not in self.severities:
            raise KeyError(f"severity {severity} is not in this benchmark; it has {self.severities}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.corruptions)} corruptions, severities {self.severities})"


class _ArrayDataset(Dataset):
    def __init__(self, images: Any, labels: np.ndarray | torch.Tensor, chw: bool) -> None:
        self.images, self.labels, self.chw = images, labels, chw

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.chw:
            x = img.float() / 255.0
        else:
            x = _hwc_to_batch(np.asarray(img)[None])[0]
        return x, int(self.labels[i])


class NpyCorruptionBenchmark(CorruptionBenchmark):
    """CIFAR-10-C / CIFAR-100-C layout (see the module docstring); arrays are memory-mapped."""

    def __init__(self, root: str | Path, corruptions: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a directory")
        labels_path = self.root / "labels.npy"
        if not labels_path.is_file():
            raise FileNotFoundError(
                f"{labels_path} not found: a CIFAR-10-C style folder holds <corruption>.npy files and labels.npy"
            )
        found = sorted(p.stem for p in self.root.glob("*.npy") if p.stem != "labels")
        meta_path = self.root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.severities = [int(s) for s in meta.get("severities", SEVERITIES)]
        self.corruptions = _select_corruptions(found, corruptions, self.root, "{}.npy", "<corruption>.npy files")
        self._labels = np.load(labels_path, mmap_mode="r")
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, corruption: str) -> np.ndarray:
        if corruption not in self._arrays:
            arr = np.load(self.root / f"{corruption}.npy", mmap_mode="r")
            if arr.ndim not in (3, 4) or len(arr) % len(self.severities):
                raise ValueError(
                    f"{corruption}.npy has shape {arr.shape}; expected ({len(self.severities)} * N, H, W[, C])"
                )
            self._arrays[corruption] = arr
        return self._arrays[corruption]

    def _rows(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        self._check(corruption, severity)
        arr = self._array(corruption)
        n = len(arr) // len(self.severities)
        si = self.severities.index(severity)
        if len(self._labels) == len(arr):
            labels = self._labels[si * n: (si + 1) * n]
        elif len(self._labels) == n:
            labels = self._labels
        else:
            raise ValueError(
                f"labels.npy has {len(self._labels)} entries; expected {len(arr)} (one per row of "
                f"{corruption}.npy) or {n} (one per image)"
            )
        return arr[si * n: (si + 1) * n], labels

    def dataset(self, corruption: str, severity: int) -> Dataset:
        images, labels = self._rows(corruption, severity)
        return _ArrayDataset(images, labels, chw=False)

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self._rows(corruption, severity)
        for start in range(0, len(labels), batch_size):
            x = _hwc_to_batch(images[start: start + batch_size])
            y = torch.from_numpy(np.asarray(labels[start: start + batch_size]).astype(np.int64))
            yield x, y


class InMemoryCorruptionBenchmark(CorruptionBenchmark):
    """Corrupted sets held as uint8 tensors: ``data[corruption]`` has shape ``(S, N, C, H, W)`` for the
    ``severities`` in order, ``labels`` shape ``(N,)``. Returned by ``make_corrupted_dataset``."""

    def __init__(self, data: Mapping[str, torch.Tensor], labels: torch.Tensor,
                 severities: Sequence[int] = SEVERITIES) -> None:
        self.data = dict(data)
        self.labels = torch.as_tensor(labels).long().reshape(-1)
        self.severities = [int(s) for s in severities]
        self.corruptions = list(self.data)
        for c, t in self.data.items():
            if t.ndim != 5 or t.shape[0] != len(self.severities) or t.shape[1] != len(self.labels):
                raise ValueError(
                    f"data[{c!r}] has shape {tuple(t.shape)}; "
                    f"expected ({len(self.severities)}, {len(self.labels)}, C, H, W)"
                )

    def images(self, corruption: str, severity: int) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` images of one corruption and severity."""
        self._check(corruption, severity)
        return self.data[corruption][self.severities.index(severity)]

    def dataset(self, corruption: str, severity: int) -> Dataset:
        return _ArrayDataset(self.images(corruption, severity), self.labels, chw=True)

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        imgs = self.images(corruption, severity)
        for start in range(0, len(self.labels), batch_size):
            yield imgs[start: start + batch_size].float().div_(255.0), self.labels[start: start + batch_size]

    def save(self, out_dir: str | Path) -> "NpyCorruptionBenchmark":
        """Write the CIFAR-10-C layout (``<corruption>.npy`` (S*N, H, W, C) uint8, ``labels.npy``, ``meta.json``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for c, t in self.data.items():
            s, n, ch, h, w = t.shape
            arr = t.permute(0, 1, 3, 4, 2).reshape(s * n, h, w, ch).numpy()
            atomic_save(out / f"{c}.npy", lambda f: np.save(f, arr))
        labels = self.labels.repeat(len(self.severities)).numpy()
        atomic_save(out / "labels.npy", lambda f: np.save(f, labels))
        meta = {"corruptions": self.corruptions, "severities": self.severities, "num_images": len(self.labels)}
        atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
        return NpyCorruptionBenchmark(out)


class ImageFolderCorruptionBenchmark(CorruptionBenchmark):
    """ImageNet-C layout: ``<root>/<corruption>/<severity>/<class>/<image>``.

    ``transform`` maps a PIL image to a tensor (default: ``ToImage`` + ``ToDtype(float32, scale=True)``; the
    published ImageNet-C images are already 224x224). Keep normalisation out of it (pass ``normalize=`` to
    :func:`evaluate_corruptions`) so that the DiffAug ensemble sees [0, 1] images.
    """

    def __init__(self, root: str | Path, transform: Any = None, corruptions: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a directory")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.corruptions = _select_corruptions(found, corruptions, self.root, "folder {}/",
                                               "<corruption>/<severity>/ folders")
        sevs = sorted(
            {int(p.name) for c in self.corruptions for p in (self.root / c).iterdir()
             if p.is_dir() and p.name.isdigit()}
        )
        if not sevs:
            raise FileNotFoundError(f"no severity folders (1..5) under {self.root / self.corruptions[0]}")
        self.severities = sevs
        if transform is None:
            from torchvision.transforms import v2

            transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        self.transform = transform

    def dataset(self, corruption: str, severity: int) -> Dataset:
        from torchvision.datasets import ImageFolder

        self._check(corruption, severity)
        folder = self.root / corruption / str(severity)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        return ImageFolder(str(folder), transform=self.transform)


def open_corruption_benchmark(root: str | Path, **kwargs: Any) -> CorruptionBenchmark:
    """Open ``root`` as a CIFAR-10-C style (``*.npy``) or ImageNet-C style (folders) benchmark."""
    root = Path(root)
    if (root / "labels.npy").is_file():
        return NpyCorruptionBenchmark(root, **kwargs)
    if root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return ImageFolderCorruptionBenchmark(root, **kwargs)
    raise FileNotFoundError(
        f"{root}: neither a CIFAR-10-C style folder (<corruption>.npy + labels.npy) nor an ImageNet-C style "
        "folder (<corruption>/<severity>/<class>/<image>)"
    )
