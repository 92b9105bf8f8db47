"""DM-Improves-AT's single-file format (Wang et al. 2023): one ``np.savez`` file with ``image`` (uint8 NHWC) and
``label``. :func:`read_npz` / :func:`write_npz` read and write it, :func:`npz_to_shards` and :func:`shards_to_npz`
convert to and from robaug's shard folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._core.io import atomic_save
from .format import FORMAT, FORMAT_VERSION, LAYOUTS, write_manifest
from .reader import load_shards
from .writer import shard_file, write_shard

__all__ = ["read_npz", "write_npz", "npz_to_shards", "shards_to_npz"]


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a DM-Improves-AT ``.npz`` (``image`` uint8 ``(N, H, W, C)``, ``label``); never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("image", "label") if k not in f.files]
        if missing:
            raise KeyError(f"{path}: missing array(s) {missing}; a DM-Improves-AT file holds 'image' and 'label' "
                           f"(found {f.files})")
        images, labels = f["image"], f["label"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: 'image' must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{path}: 'label' must have shape ({images.shape[0]},), got {labels.shape}")
    return images, labels.astype(np.int64, copy=False)


def write_npz(path: str | os.PathLike, images: Any, labels: Any, *, layout: str = "NHWC") -> None:
    """Write the DM-Improves-AT format (``np.savez`` with ``image`` uint8 NHWC and ``label`` int64), atomically.
    ``images`` in ``layout`` (``"NCHW"`` input is transposed to NHWC)."""
    img = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if img.dtype != np.uint8 or img.ndim != 4:
        raise ValueError(f"images must be uint8 4-d, got {img.dtype} {img.shape}")
    if layout == "NCHW":
        img = img.transpose(0, 2, 3, 1)
    elif layout != "NHWC":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the file name must end in .npz (np.savez appends it otherwise)")
    atomic_save(path, lambda tmp: np.savez(tmp, image=np.ascontiguousarray(img), label=lab.astype(np.int64)))


def npz_to_shards(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 10_000,
    num_classes: int | None = None,
    source: str | None = None,
) -> dict:
    """Convert a DM-Improves-AT ``.npz`` into a shard folder (NHWC shards) and return its manifest."""
    images, labels = read_npz(path)
    out = Path(out_dir)
    n = images.shape[0]
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = []
    for k, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        rel = shard_file(k)
        sha = write_shard(out / rel, images[start:stop], labels[start:stop])
        shards.append({"index": k, "file": rel, "start": start, "count": stop - start, "sha256": sha})
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "complete": True, "num_samples": n, "shard_size": shard_size,
        "num_shards": len(shards), "image_shape": [int(images.shape[3]), int(images.shape[1]), int(images.shape[2])],
        "layout": "NHWC", "num_classes": num_classes, "source": source or f"npz:{Path(path).name}",
        "shards": shards, "selection": None,
    }
    write_manifest(out, manifest)
    return manifest


def shards_to_npz(root: str | os.PathLike, path: str | os.PathLike, *, subset: str = "auto") -> None:
    """Write a shard folder as one DM-Improves-AT ``.npz`` (loads everything into RAM, as that format does)."""
    x, y = load_shards(root, subset=subset, layout="NHWC")
    write_npz(path, x, y, layout="NHWC")
