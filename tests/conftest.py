"""Test-wide settings: one intra-op thread per test process.

The suite runs as ``pytest -n 2`` on 2 cores; with torch's default of one thread per core in each worker
(and in the subprocesses the tests start) the OpenMP threads oversubscribe the cores and spin, which
slows some tests down by 10x. Subprocesses inherit OMP_NUM_THREADS from here.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on a machine with one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def edm_fixtures():
    """The folder of NVIDIA EDM reference fixtures; skips the test when it is absent."""
    import pytest
    from _paths import edm_fixture_dir

    d = edm_fixture_dir()
    if d is None:
        pytest.skip("EDM reference fixtures not found (../shared/fixtures/edm or $ROBAUG_EDM_FIXTURES)")
    return d


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """A tiny generated set in robaug's shard format (NHWC uint8), written with robaug.data.shards."""
    import numpy as np

    from robaug.data.shards import npz_to_shards, write_npz

    d = tmp_path_factory.mktemp("syn")
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(96, dtype=np.int64) % 10
    write_npz(d / "syn.npz", images, labels)
    npz_to_shards(d / "syn.npz", d / "shards", shard_size=40, num_classes=10)
    return d
