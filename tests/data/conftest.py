"""Fixtures of the data tests: a tiny generated set in robaug's shard format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robaug.data.shards import npz_to_shards, write_npz


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """A tiny generated set in robaug's shard format (NHWC uint8), written with robaug.data.shards."""
    d = tmp_path_factory.mktemp("syn")
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(96, dtype=np.int64) % 10
    write_npz(d / "syn.npz", images, labels)
    npz_to_shards(d / "syn.npz", d / "shards", shard_size=40, num_classes=10)
    return d
