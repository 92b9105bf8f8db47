"""The data of a training run: the training and test sets (with generated data mixed in, :mod:`robaug.data.mixed`),
the :class:`~.plan.AugmentPlan` that says where each augmentation step runs, and the batches of one epoch."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from robaug._core.dist import DistInfo
from robaug.data.datasets import DatasetInfo, TensorImages, load_dataset
from robaug.data.mixed import RealSyntheticMix
from robaug.data.samplers import ShardedBatchSampler

from .augment import SampleAugment
from .config import TrainConfig
from .loader import make_loader, tensor_batches
from .plan import AugmentPlan
from .spec import RecipeSpec

__all__ = ["TrainingData", "load_training_data"]


def log(msg: str, d: DistInfo) -> None:
    """Print ``msg`` to stderr on the main process."""
    if d.main:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class TrainingData:
    """The training and test sets of a run and how batches are drawn from them."""

    train: Any  #: TensorImages (in memory; with the synthetic part when mixed) or FolderImages
    test: Any
    info: DatasetInfo
    plan: AugmentPlan
    mix: RealSyntheticMix | None
    num_real: int
    sample_tf: SampleAugment | None  #: the per-sample worker transform (None: batches gathered from tensors)

    @property
    def num_synthetic(self) -> int:
        return self.mix.num_synthetic if self.mix is not None else 0

    def steps_per_epoch(self, batch_size: int) -> int:
        n = self.mix.steps_per_epoch(batch_size) if self.mix is not None else len(self.train) // batch_size
        if n < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({self.num_real} real samples); "
                             "use a smaller --batch-size or more data (--train-subset)")
        return n

    def sampler(self, batch_size: int, **kwargs: Any) -> ShardedBatchSampler:
        """The batch sampler of one epoch (``kwargs``: seed, epoch, rank, world_size, start, stop, with_seeds)."""
        if self.mix is not None:
            return self.mix.batch_sampler(batch_size, **kwargs)
        return ShardedBatchSampler(len(self.train), batch_size, **kwargs)

    def batches(self, sampler: ShardedBatchSampler, pin_memory: bool, num_workers: int) -> Iterable:
        if self.plan.use_loader:
            return make_loader(self.train, sampler, self.sample_tf, num_workers=num_workers, pin_memory=pin_memory)
        return tensor_batches(self.train.images, self.train.labels, sampler)


def load_training_data(cfg: TrainConfig, spec: RecipeSpec, d: DistInfo, training: bool) -> TrainingData:
    """The datasets (with the synthetic mix unless only evaluating), the augment plan and the worker transform."""
    train_ds, info = load_dataset(cfg.dataset, cfg.data_root, train=True, subset=cfg.train_subset,
                                  download=cfg.download, img_size=cfg.img_size)
    test_ds, _ = load_dataset(cfg.dataset, cfg.data_root, train=False, subset=cfg.test_subset,
                              download=cfg.download, img_size=cfg.img_size)
    num_real, mix = len(train_ds), None
    if cfg.synthetic_data is not None and training:  # a re-evaluation needs neither the file nor the copy
        mix = _synthetic_mix(cfg, train_ds, info, d)
        train_ds = mix.dataset
    plan = AugmentPlan.for_run(spec, in_memory=isinstance(train_ds, TensorImages), ipmix_on=cfg.ipmix_on)
    sample_tf = SampleAugment.for_plan(plan, info, ipmix_kwargs=cfg.ipmix_kwargs,
                                       augmix_severity=cfg.augmix_severity) if plan.use_loader else None
    data = TrainingData(train_ds, test_ds, info, plan, mix, num_real, sample_tf)
    if not plan.use_loader and d.device.type == "cuda" and training:
        _to_gpu_if_it_fits(data, d)
    return data


def _synthetic_mix(cfg: TrainConfig, train_ds: Any, info: DatasetInfo, d: DistInfo) -> RealSyntheticMix:
    if not isinstance(train_ds, TensorImages):
        raise ValueError("synthetic_data: mixing generated images is implemented for in-memory datasets "
                         "(Fashion-MNIST, CIFAR), not for ImageFolder trees")
    from robaug.data.datasets import load_synthetic

    synthetic = load_synthetic(cfg.synthetic_data, info)
    if cfg.synthetic_subset is not None:
        if cfg.synthetic_subset > len(synthetic):
            raise ValueError(f"synthetic_subset={cfg.synthetic_subset} but {cfg.synthetic_data} holds "
                             f"{len(synthetic)} images: use at most {len(synthetic)}")
        synthetic = TensorImages(synthetic.images[:cfg.synthetic_subset], synthetic.labels[:cfg.synthetic_subset])
    mix = RealSyntheticMix(train_ds, synthetic, cfg.synthetic_fraction)
    log(f"synthetic data: {mix.num_synthetic} images from {cfg.synthetic_data}, "
         f"{mix.per_batch(cfg.batch_size)} of every {cfg.batch_size} per batch", d)
    return mix


def _to_gpu_if_it_fits(data: TrainingData, d: DistInfo) -> None:
    """CIFAR-size uint8 sets fit on the GPU: batches are then gathered there, no host-device copies. Large sets
    (millions of generated images) stay on the host and each batch is gathered there and copied."""
    budget = torch.cuda.get_device_properties(d.device).total_memory // 4
    if data.train.images.numel() > budget:
        log(f"training set of {data.train.images.numel() / 2**30:.1f} GiB kept in host memory "
             "(more than a quarter of the GPU's)", d)
    elif data.mix is not None:
        data.train = data.mix.to(d.device).dataset
    else:
        data.train = TensorImages(data.train.images.to(d.device), data.train.labels.to(d.device))
