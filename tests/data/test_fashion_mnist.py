import gzip
import shutil
from pathlib import Path

import pytest
import torch

from robaug.data import find_fashion_mnist, load_fashion_mnist

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")


@needs_fmnist
def test_real_fashion_mnist_shapes_and_labels():
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [1000] * 10  # the test split is class-balanced
    assert 0 < x.float().mean() < 255


@needs_fmnist
def test_torchvision_layout_and_uncompressed_files_load_the_same(tmp_path):
    src = find_fashion_mnist(train=False)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in src:  # torchvision keeps both .gz and decompressed files; write decompressed only
        with gzip.open(p) as f, open(raw / p.name.removesuffix(".gz"), "wb") as g:
            shutil.copyfileobj(f, g)
    x_ref, y_ref = load_fashion_mnist(train=False)
    x, y = load_fashion_mnist(tmp_path, train=False)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_missing_dataset_error_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere", train=True)


def test_truncated_idx_file_is_rejected(tmp_path):
    header = (0x0803).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + bytes(100))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes((0x0801).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path, train=False)
