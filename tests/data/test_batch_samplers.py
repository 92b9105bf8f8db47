"""robaug.data.samplers / seeding: the deterministic, resumable, DDP-sharded batch order and the seed mixer."""

from __future__ import annotations

import pytest

from robaug.data.samplers import ShardedBatchSampler, epoch_permutation
from robaug.data.seeding import derive_seed


def test_sharded_sampler_covers_global_batches_and_resumes():
    n, gb = 103, 8
    single = list(ShardedBatchSampler(n, gb, seed=3, epoch=2))
    perm = epoch_permutation(n, 3, 2)
    assert len(single) == n // gb
    assert [i for i, _ in single[4]] == perm[32:40].tolist()
    ranks = [list(ShardedBatchSampler(n, gb, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    for step in range(len(single)):
        assert ranks[0][step] + ranks[1][step] == single[step]  # same indices and the same per-sample seeds
    resumed = list(ShardedBatchSampler(n, gb, seed=3, epoch=2, start=5))
    assert resumed == single[5:]
    assert list(ShardedBatchSampler(n, gb, seed=3, epoch=3))[0] != single[0]
    with pytest.raises(ValueError, match="divisible"):
        ShardedBatchSampler(n, 9, seed=0, epoch=0, world_size=2)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "order", 1) == derive_seed(0, "order", 1)
    assert len({derive_seed(0, p, 1) for p in ("order", "base", "sample", "device")}) == 4
    assert 0 <= derive_seed(2**70, -5) < 2**63
