"""Deterministic, resumable, DDP-sharded batch order.

A run with global batch ``B`` and ``W`` processes sees, at step ``s`` of epoch ``e``, the global batch
``perm_e[s*B : (s+1)*B]`` (``perm_e`` a permutation seeded by ``(seed, e)``); process ``r`` takes the slice
``[r*B/W : (r+1)*B/W]`` of it. Sample-level random draws (worker-side augmentation) use a seed derived from
``(seed, epoch, step, position in the global batch)``, so they are the same for any number of workers or
processes, and a run resumed at step ``s`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from .seeding import derive_seed, make_generator

__all__ = ["epoch_permutation", "ShardedBatchSampler"]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch`` (same on every process)."""
    return torch.randperm(n, generator=make_generator("cpu", seed, "order", epoch))


class ShardedBatchSampler(Sampler[list]):
    """Yields this process's share of the global batches of one epoch, steps ``[start, stop)``.

    Each element is ``(index, sample_seed)`` when ``with_seeds`` (for a per-sample transform), else an index.
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
