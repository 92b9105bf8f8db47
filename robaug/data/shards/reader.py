"""Reading a shard dataset: :class:`ShardDataset` (random access, memory-mapped, one sample at a time),
:class:`ShardStream` (shard by shard, split over DDP ranks and DataLoader workers) and :func:`load_shards`
(everything in memory, for small sets)."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .format import (
    LAYOUTS,
    ShardIndex,
    check_complete,
    load_manifest,
    open_shard,
    read_selection,
    read_shard,
    to_chw,
    verify_file,
)

__all__ = ["ShardDataset", "ShardStream", "load_shards"]


class ShardDataset(Dataset):
    """Map-style dataset over a shard folder: ``ds[i] -> (image, label)`` with ``image`` a uint8 ``(C, H, W)``
    tensor (passed through ``transform``). Samples are read one at a time from memory-mapped shards, so the
    dataset never holds more than the requested images in RAM.

    ``subset``: ``"auto"`` (the confidence-filtered selection when the dataset has one, else everything),
    ``"all"`` or ``"selected"``. ``verify=True`` checks each shard's sha256 against the manifest when
    the shard is first opened (in each DataLoader worker: a damaged shard raises a ``ValueError`` naming the file;
    a manifest without checksums cannot be verified and raises too). Without it, a truncated file is still caught
    when opened, but a flipped bit inside the data is not.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        subset: str = "auto",
        verify: bool = False,
        max_open_shards: int = 32,
    ) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        check_complete(self.root, self.manifest)
        self._index = ShardIndex(self.root, self.manifest)
        self.selection = read_selection(self.root, self.manifest, subset)
        self.transform, self.target_transform = transform, target_transform
        self.verify = verify
        self.max_open_shards = max(1, int(max_open_shards))
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._verified: set[int] = set()
        self.classes = self.manifest.get("classes")
        self.num_classes = self.manifest.get("num_classes")

    def __len__(self) -> int:
        return int(self.selection.shape[0]) if self.selection is not None else int(self._index.counts.sum())

    def __getstate__(self) -> dict:  # DataLoader workers open their own handles
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    def _handle(self, k: int):
        h = self._handles.get(k)
        if h is None:
            path = self._index.path(k)
            if self.verify and k not in self._verified:
                verify_file(path, self._index.shards[k].get("sha256"))
                self._verified.add(k)
            h = open_shard(path)
            self._handles[k] = h
            while len(self._handles) > self.max_open_shards:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(k)
        return h

    def global_index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        return int(self.selection[i]) if self.selection is not None else i

    def __getitem__(self, i: int):
        k, off = self._index.locate(self.global_index(i))
        h = self._handle(k)
        img = to_chw(h.get_slice("image")[off: off + 1], self._index.layout)[0]
        label = int(h.get_slice("label")[off: off + 1][0])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label


class ShardStream(IterableDataset):
    """Stream a shard folder one shard at a time: yields ``(image uint8 (C, H, W), label)``.

    Shards are split over DDP ranks (``rank``/``world_size``, default from ``torch.distributed`` when
    initialised) and DataLoader workers; with ``shuffle`` the shard order and the samples inside each shard are
    permuted from ``seed + epoch`` (call :meth:`set_epoch` each epoch). Memory: one shard at a time per worker.
    Ranks may receive a different number of samples when the shards do not split evenly; use
    ``drop_uneven=True`` to give every rank the same number of shards. ``verify=True`` checks each shard's sha256
    against the manifest before reading it (a damaged shard raises a ``ValueError`` naming the file).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        subset: str = "auto",
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_uneven: bool = False,
        verify: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        check_complete(self.root, self.manifest)
        self._index = ShardIndex(self.root, self.manifest)
        self.selection = read_selection(self.root, self.manifest, subset)
        self.transform, self.target_transform = transform, target_transform
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        if rank is None or world_size is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world_size = 0, 1
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_uneven = bool(drop_uneven)
        self.verify = verify

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank_shards(self) -> list[int]:
        n = len(self._index.shards)
        order = list(range(n))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        if self.drop_uneven:
            order = order[: n - n % self.world_size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator:
        shards = self._rank_shards()
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id:: info.num_workers]
        layout = self._index.layout
        for k in shards:
            rec = self._index.shards[k]
            data = read_shard(self._index.path(k), rec.get("sha256"), verify=self.verify)
            imgs, labels = to_chw(data["image"], layout), data["label"]
            idx = torch.arange(imgs.shape[0])
            if self.selection is not None:
                start = int(rec["start"])
                lo = int(torch.searchsorted(self.selection, torch.tensor(start)))
                hi = int(torch.searchsorted(self.selection, torch.tensor(start + imgs.shape[0])))
                idx = self.selection[lo:hi] - start
            if self.shuffle:
                g = torch.Generator().manual_seed((self.seed + self.epoch) * 1_000_003 + k)
                idx = idx[torch.randperm(idx.shape[0], generator=g)]
            for j in idx.tolist():
                img, label = imgs[j], int(labels[j])
                if self.transform is not None:
                    img = self.transform(img)
                if self.target_transform is not None:
                    label = self.target_transform(label)
                yield img, label


def load_shards(root: str | os.PathLike, *, subset: str = "auto", layout: str = "NCHW",
                verify: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a (small) shard dataset into memory: ``(images uint8 (N, C, H, W) or NHWC, labels int64)``;
    ``verify=True`` checks every shard's sha256 against the manifest first."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    m = load_manifest(root)
    check_complete(root, m)
    index = ShardIndex(root, m)
    imgs, labels = [], []
    for k, rec in enumerate(index.shards):
        d = read_shard(index.path(k), rec.get("sha256"), verify=verify)
        imgs.append(d["image"])
        labels.append(d["label"])
    x, y = torch.cat(imgs), torch.cat(labels)
    sel = read_selection(root, m, subset)
    if sel is not None:
        x, y = x[sel], y[sel]
    if index.layout != layout:
        x = x.permute(0, 3, 1, 2) if layout == "NCHW" else x.permute(0, 2, 3, 1)
    return x.contiguous(), y
