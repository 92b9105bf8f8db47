"""robaug.data.datasets: Fashion-MNIST / ImageFolder loading and generated sets (shards, .npz) in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robaug.data.datasets import DatasetInfo, TensorImages, load_dataset, load_synthetic

FMNIST = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2)


def test_load_dataset_fashion_mnist_subset_and_errors():
    ds, info = load_dataset("fmnist", train=False, subset=50)
    assert isinstance(ds, TensorImages) and len(ds) == 50 and info.in_channels == 1 and info.num_classes == 10
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist-c")
    with pytest.raises(ValueError, match="root"):
        load_dataset("cifar10")


def test_load_synthetic_from_shards_and_npz(shard_dir):
    a = load_synthetic(shard_dir / "shards", FMNIST)
    b = load_synthetic(shard_dir / "syn.npz", FMNIST)
    assert a.images.shape == (96, 1, 28, 28) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    raw = np.load(shard_dir / "syn.npz")["image"]
    assert torch.equal(a.images[5, 0], torch.from_numpy(raw[5, :, :, 0]))
    cifar = DatasetInfo("cifar10", 10, 3, 32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="generate at the dataset's size"):
        load_synthetic(shard_dir / "shards", cifar)
    with pytest.raises(ValueError, match="labels must lie"):
        load_synthetic(shard_dir / "shards", DatasetInfo("x", 5, 1, 28, (0.5,), (0.5,)))
    with pytest.raises(FileNotFoundError, match="robaug generate"):
        load_synthetic(shard_dir / "missing", FMNIST)
