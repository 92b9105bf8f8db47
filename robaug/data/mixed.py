"""Real + generated training data in every batch (DM-Improves-AT, Wang et al. 2023).

:class:`RealSyntheticMix` owns the index contract: it concatenates the two sets itself (indices ``[0, num_real)``
real, ``[num_real, num_real + num_synthetic)`` generated) and hands out the :class:`MixedBatchSampler` that relies on
that order, so no caller can build one without the other.
"""

from __future__ import annotations

import torch

from .datasets import TensorImages
from .samplers import ShardedBatchSampler, epoch_permutation
from .seeding import make_generator

__all__ = ["synthetic_count", "MixedBatchSampler", "RealSyntheticMix"]


def synthetic_count(global_batch: int, fraction: float) -> int:
    """Synthetic samples per global batch: ``round(fraction * global_batch)`` (at least one real sample)."""
    n = int(round(fraction * global_batch))
    if not 0 <= n < global_batch:
        raise ValueError(f"synthetic fraction {fraction} leaves no real sample in a batch of {global_batch}")
    return n


class MixedBatchSampler(ShardedBatchSampler):
    """Global batches of ``n_real`` real + ``n_syn = round(fraction * B)`` synthetic samples (DM-Improves-AT).

    Indices ``[0, num_real)`` are the real set, ``[num_real, num_real + num_synthetic)`` the generated set (one
    concatenated dataset, as :class:`RealSyntheticMix` builds it). Step ``s`` of epoch ``e`` takes the real samples
    ``perm_e[s*n_real : (s+1)*n_real]`` (an epoch is one pass over the real data) and ``n_syn`` synthetic indices
    drawn uniformly with replacement (as the reference's sampler does), then shuffles the ``B`` indices; everything
    is seeded by ``(seed, e, s)``, so a resumed run draws the same batches. Process ``r`` of ``W`` takes the slice
    ``[r B/W, (r+1) B/W)`` of the shuffled global batch (the same samples as one process, as
    :class:`~robaug.data.samplers.ShardedBatchSampler`). Elements as in that class.
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


class RealSyntheticMix:
    """A real and a generated in-memory set as one dataset, plus the sampler that draws ``fraction`` of every
    global batch from the generated part.

    ``mix.dataset`` is the concatenated :class:`~robaug.data.datasets.TensorImages` (real first);
    ``mix.batch_sampler(B, seed=..., epoch=...)`` the matching :class:`MixedBatchSampler`;
    ``mix.steps_per_epoch(B)`` the steps of one pass over the real data.
    """

    def __init__(self, real: TensorImages, synthetic: TensorImages, fraction: float) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"synthetic fraction must lie in [0, 1), got {fraction}")
        if len(synthetic) < 1:
            raise ValueError("the synthetic dataset is empty")
        if real.images.shape[1:] != synthetic.images.shape[1:]:
            raise ValueError(f"real images are {tuple(real.images.shape[1:])} but synthetic ones "
                             f"{tuple(synthetic.images.shape[1:])} (C, H, W)")
        self.num_real, self.num_synthetic, self.fraction = len(real), len(synthetic), float(fraction)
        self.dataset = TensorImages(torch.cat([real.images, synthetic.images]),
                                    torch.cat([real.labels, synthetic.labels]))

    def __len__(self) -> int:
        return self.num_real + self.num_synthetic

    def per_batch(self, global_batch: int) -> int:
        """Synthetic samples in each global batch."""
        return synthetic_count(global_batch, self.fraction)

    def steps_per_epoch(self, global_batch: int) -> int:
        """Steps of one pass over the real data at its share ``B - per_batch(B)`` of every batch (may be 0)."""
        return self.num_real // (global_batch - self.per_batch(global_batch))

    def to(self, device: torch.device | str) -> "RealSyntheticMix":
        """The same mix with its images and labels on ``device`` (in place; returns ``self``)."""
        self.dataset = TensorImages(self.dataset.images.to(device), self.dataset.labels.to(device))
        return self

    def batch_sampler(self, global_batch: int, **kwargs) -> MixedBatchSampler:
        """:class:`MixedBatchSampler` over :attr:`dataset` (``kwargs``: seed, epoch, rank, world_size, start, stop,
        with_seeds)."""
        return MixedBatchSampler(self.num_real, self.num_synthetic, global_batch, self.fraction, **kwargs)
