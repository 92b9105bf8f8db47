"""Datasets of robaug: Fashion-MNIST, CIFAR and ImageFolder trees (:mod:`.datasets`), generated shards
(:mod:`.shards`), the real + generated mix (:mod:`.mixed`), and the deterministic DDP batch order
(:mod:`.samplers`, seeds in :mod:`.seeding`)."""

from .datasets import (
    DATASETS,
    DatasetInfo,
    FolderImages,
    TensorImages,
    load_dataset,
    load_synthetic,
)
from .fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist
from .mixed import MixedBatchSampler, RealSyntheticMix, synthetic_count
from .samplers import ShardedBatchSampler, epoch_permutation

__all__ = [
    "FASHION_MNIST_CLASSES", "find_fashion_mnist", "load_fashion_mnist",
    "DATASETS", "DatasetInfo", "TensorImages", "FolderImages", "load_dataset", "load_synthetic",
    "RealSyntheticMix", "MixedBatchSampler", "synthetic_count", "ShardedBatchSampler", "epoch_permutation",
]
