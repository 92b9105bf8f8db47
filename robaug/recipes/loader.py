"""Turning the batch order of :mod:`robaug.data.samplers` into training batches.

The samplers (:class:`ShardedBatchSampler`, :class:`MixedBatchSampler`) live in :mod:`robaug.data` and are
re-exported here. Two ways to produce batches:

* :func:`tensor_batches`: in-memory ``uint8`` images gathered by index in the main process, no per-sample
  transform (augmentation happens batched on the training device);
* a ``DataLoader`` over :class:`SampleDataset` with :class:`ShardedBatchSampler`: per-sample transforms in
  worker processes (ImageFolder decoding, torchvision AugMix, IPMix per sample).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from robaug.data.mixed import MixedBatchSampler, synthetic_count
from robaug.data.samplers import ShardedBatchSampler, epoch_permutation

__all__ = [
    "epoch_permutation",
    "ShardedBatchSampler",
    "MixedBatchSampler",
    "synthetic_count",
    "SampleDataset",
    "tensor_batches",
    "make_loader",
    "random_crop_flip",
]


class SampleDataset(Dataset):
    """Applies ``transform(item, sample_seed)`` to ``base[index]``'s image; returns ``(image(s), label)``."""

    def __init__(self, base: Dataset, transform: Callable[[Any, int], Any] | None) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Any, int]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        image, label = self.base[index]
        if self.transform is not None:
            image = self.transform(image, seed)
        return image, label


def tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, sampler: ShardedBatchSampler
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches gathered by index from in-memory tensors (no workers, no per-sample transform)."""
    for idx in sampler:
        index = torch.as_tensor([i[0] for i in idx] if sampler.with_seeds else idx, dtype=torch.long)
        index = index.to(images.device, non_blocking=True)
        yield images[index], labels[index]


def make_loader(
    dataset: Dataset,
    sampler: ShardedBatchSampler,
    transform: Callable[[Any, int], Any] | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader applying ``transform`` per sample (in ``num_workers`` worker processes)."""
    return DataLoader(
        SampleDataset(dataset, transform),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def random_crop_flip(
    x: torch.Tensor,
    padding: int,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
    total: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Batched ``RandomCrop(size, padding)`` (zero fill) + ``RandomHorizontalFlip`` with per-sample draws.

    The offsets and flips are drawn for ``total`` samples (default ``B``) and samples
    ``[offset, offset + B)`` of them are used: with ``total`` = the global batch and ``offset`` = this
    process's position, every DDP process draws the same numbers and the result equals a single-process run.
    Works for any dtype (uint8 included): the result is a gather of the padded batch.
    """
    b, c, h, w = x.shape
    n = b if total is None else total
    dev = generator.device if generator is not None else x.device
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)[offset: offset + b].to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)[offset: offset + b].to(x.device)
    fl = (torch.rand(n, generator=generator, device=dev) < 0.5)[offset: offset + b].to(x.device)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
    if flip:
        cols = torch.where(fl[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x[bi, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def stack_views(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[v0 | v1 | ...]`` along the batch dimension."""
    return views[0] if len(views) == 1 else torch.cat(list(views))
