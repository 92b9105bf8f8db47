"""Deterministic, resumable, DDP-sharded batches.

A run with global batch ``B`` and ``W`` processes sees, at step ``s`` of epoch ``e``, the global batch
``perm_e[s*B : (s+1)*B]`` (``perm_e`` a permutation seeded by ``(seed, e)``); process ``r`` takes the slice
``[r*B/W : (r+1)*B/W]`` of it. Sample-level random draws (worker-side augmentation) use a seed derived from
``(seed, epoch, step, position in the global batch)``, so they are the same for any number of workers or
processes, and a run resumed at step ``s`` sees exactly the batches it would have seen.

Two ways to produce batches:

* :func:`tensor_batches`: in-memory ``uint8`` images gathered by index in the main process, no per-sample
  transform (augmentation happens batched on the training device);
* a ``DataLoader`` over :class:`SampleDataset` with :class:`ShardedBatchSampler`: per-sample transforms in
  worker processes (ImageFolder decoding, torchvision AugMix, IPMix per sample).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .seeding import derive_seed, make_generator

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


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch`` (same on every process)."""
    return torch.randperm(n, generator=make_generator("cpu", seed, "order", epoch))


class ShardedBatchSampler(Sampler[list]):
    """Yields this process's share of the global batches of one epoch, steps ``[start, stop)``.

    Each element is ``(index, sample_seed)`` when ``with_seeds`` (for :class:`SampleDataset`), else an index.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        stop: int | None = None,
        with_seeds: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"the global batch size {global_batch} must be divisible by the {world_size} processes")
        self.n, self.global_batch, self.seed, self.epoch = n, global_batch, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.local = global_batch // world_size
        self.steps_per_epoch = self._count_steps()
        self.start = start
        self.stop = self.steps_per_epoch if stop is None else min(stop, self.steps_per_epoch)
        self.with_seeds = with_seeds

    def _count_steps(self) -> int:
        steps = self.n // self.global_batch
        if steps < 1:
            raise ValueError(f"the dataset has {self.n} samples, fewer than one global batch of {self.global_batch}")
        return steps

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def global_batch_indices(self, step: int, perm: torch.Tensor | None = None) -> torch.Tensor:
        """The global batch of ``step`` (indices into the dataset), all processes' shares in order."""
        if perm is None:
            perm = epoch_permutation(self.n, self.seed, self.epoch)
        return perm[step * self.global_batch:(step + 1) * self.global_batch]

    def __iter__(self) -> Iterator[list]:
        perm = epoch_permutation(self.n, self.seed, self.epoch)
        lo = self.rank * self.local
        for step in range(self.start, self.stop):
            idx = self.global_batch_indices(step, perm)[lo:lo + self.local].tolist()
            if self.with_seeds:
                yield [(i, derive_seed(self.seed, "sample", self.epoch, step, lo + k)) for k, i in enumerate(idx)]
            else:
                yield idx


def synthetic_count(global_batch: int, fraction: float) -> int:
    """Synthetic samples per global batch: ``round(fraction * global_batch)`` (at least one real sample)."""
    n = int(round(fraction * global_batch))
    if not 0 <= n < global_batch:
        raise ValueError(f"synthetic fraction {fraction} leaves no real sample in a batch of {global_batch}")
    return n


class MixedBatchSampler(ShardedBatchSampler):
    """Global batches of ``n_real`` real + ``n_syn = round(fraction * B)`` synthetic samples (DM-Improves-AT).

    Indices ``[0, num_real)`` are the real set, ``[num_real, num_real + num_synthetic)`` the generated set (one
    concatenated dataset). Step ``s`` of epoch ``e`` takes the real samples ``perm_e[s*n_real : (s+1)*n_real]``
    (an epoch is one pass over the real data) and ``n_syn`` synthetic indices drawn uniformly with replacement
    (as the reference's sampler does), then shuffles the ``B`` indices; everything is seeded by
    ``(seed, e, s)``, so a resumed run draws the same batches. Process ``r`` of ``W`` takes the slice
    ``[r B/W, (r+1) B/W)`` of the shuffled global batch (the same samples as one process, as
    :class:`ShardedBatchSampler`). Elements as in :class:`ShardedBatchSampler`.
    """

    def __init__(
        self,
        num_real: int,
        num_synthetic: int,
        global_batch: int,
        fraction: float,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        stop: int | None = None,
        with_seeds: bool = True,
    ) -> None:
        if num_synthetic < 1:
            raise ValueError("the synthetic dataset is empty")
        self.num_real, self.num_synthetic = int(num_real), int(num_synthetic)
        self.n_syn = synthetic_count(global_batch, fraction)
        self.n_real = global_batch - self.n_syn
        super().__init__(self.num_real, int(global_batch), seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                         start=start, stop=stop, with_seeds=with_seeds)

    def _count_steps(self) -> int:
        steps = self.num_real // self.n_real
        if steps < 1:
            raise ValueError(f"the real dataset has {self.num_real} samples, fewer than the {self.n_real} real "
                             "samples of one batch")
        return steps

    def global_batch_indices(self, step: int, perm: torch.Tensor | None = None) -> torch.Tensor:
        """The shuffled global batch of ``step`` (indices into the concatenated real + synthetic set)."""
        if perm is None:
            perm = epoch_permutation(self.num_real, self.seed, self.epoch)
        g = make_generator("cpu", self.seed, "synthetic", self.epoch, step)
        real = perm[step * self.n_real:(step + 1) * self.n_real]
        syn = self.num_real + torch.randint(self.num_synthetic, (self.n_syn,), generator=g)
        both = torch.cat([real, syn])
        return both[torch.randperm(self.global_batch, generator=g)]


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
