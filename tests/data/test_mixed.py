"""robaug.data.mixed: real + generated samples in every batch (DM-Improves-AT) and the object that owns the index
contract (the concatenated set and its sampler)."""

from __future__ import annotations

import pytest
import torch

from robaug.data.datasets import TensorImages
from robaug.data.mixed import MixedBatchSampler, RealSyntheticMix, synthetic_count
from robaug.data.samplers import ShardedBatchSampler, epoch_permutation


def test_every_batch_has_round_fraction_synthetic_samples():
    n_real, n_syn, b = 200, 57, 20
    s = MixedBatchSampler(n_real, n_syn, b, 0.7, seed=3, epoch=1, with_seeds=False)
    batches = list(s)
    assert len(batches) == s.steps_per_epoch == n_real // 6
    perm = epoch_permutation(n_real, 3, 1)
    for step, idx in enumerate(batches):
        t = torch.tensor(idx)
        assert len(idx) == b and int((t >= n_real).sum()) == round(0.7 * b) == 14
        assert int(t.max()) < n_real + n_syn
        # the real part is the epoch's next slice of the permutation: every real sample once per epoch
        assert sorted(t[t < n_real].tolist()) == sorted(perm[step * 6:(step + 1) * 6].tolist())
        assert (t < n_real).nonzero().min() > 0 or (t >= n_real).nonzero().min() > 0  # shuffled together
    assert synthetic_count(512, 0.7) == 358 and synthetic_count(10, 0.0) == 0
    with pytest.raises(ValueError, match="no real sample"):
        synthetic_count(4, 0.9)


def test_mixed_batches_are_deterministic_resumable_and_ddp_sliced():
    kw = dict(seed=5, epoch=2)
    full = list(MixedBatchSampler(300, 40, 16, 0.7, **kw))
    assert full == list(MixedBatchSampler(300, 40, 16, 0.7, **kw))
    assert full != list(MixedBatchSampler(300, 40, 16, 0.7, seed=6, epoch=2))
    assert list(MixedBatchSampler(300, 40, 16, 0.7, start=4, **kw)) == full[4:]
    ranks = [list(MixedBatchSampler(300, 40, 16, 0.7, rank=r, world_size=2, **kw)) for r in range(2)]
    for step in range(len(full)):
        assert ranks[0][step] + ranks[1][step] == full[step]  # same indices and per-sample seeds
    # same interface as the plain sampler: (index, seed) pairs
    plain = list(ShardedBatchSampler(300, 16, **kw))[0]
    assert type(full[0][0]) is type(plain[0]) and len(full[0][0]) == 2


def _images(n: int, value: int) -> TensorImages:
    return TensorImages(torch.full((n, 1, 4, 4), value, dtype=torch.uint8), torch.arange(n) % 10)


def test_real_synthetic_mix_owns_the_index_contract():
    """The concatenated set puts the real images first, so every index the sampler draws below num_real is a real
    image and every other one a generated image (real images are 0, generated ones 255 here)."""
    mix = RealSyntheticMix(_images(50, 0), _images(13, 255), 0.7)
    assert (mix.num_real, mix.num_synthetic, len(mix), len(mix.dataset)) == (50, 13, 63, 63)
    assert mix.per_batch(10) == synthetic_count(10, 0.7) == 7
    assert mix.steps_per_epoch(10) == 50 // 3
    sampler = mix.batch_sampler(10, seed=1, epoch=0, with_seeds=False)
    assert isinstance(sampler, MixedBatchSampler) and sampler.steps_per_epoch == mix.steps_per_epoch(10)
    seen_real = []
    for idx in sampler:
        pixels = mix.dataset.images[torch.tensor(idx)][:, 0, 0, 0]
        assert int((pixels == 255).sum()) == 7 and int((pixels == 0).sum()) == 3
        seen_real += [i for i in idx if i < mix.num_real]
    assert len(set(seen_real)) == len(seen_real) == 3 * (50 // 3)  # one pass over the real data, no repeats
    assert torch.equal(mix.dataset.labels[:50], torch.arange(50) % 10)


def test_real_synthetic_mix_errors_and_device_move():
    with pytest.raises(ValueError, match="empty"):
        RealSyntheticMix(_images(10, 0), _images(0, 255), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        RealSyntheticMix(_images(10, 0), _images(3, 255), 1.0)
    other = TensorImages(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="synthetic ones"):
        RealSyntheticMix(_images(10, 0), other, 0.5)
    mix = RealSyntheticMix(_images(10, 0), _images(3, 255), 0.5)
    assert mix.to("cpu") is mix and mix.dataset.images.device.type == "cpu"
    with pytest.raises(ValueError, match="fewer than"):
        mix.batch_sampler(40, seed=0, epoch=0)
    assert mix.steps_per_epoch(40) == 0


def test_sharded_and_mixed_samplers_agree_on_the_batch_slicing():
    """Both samplers give process r the slice [r B/W, (r+1) B/W) of the same global batch."""
    for make in (lambda **k: ShardedBatchSampler(64, 8, seed=2, epoch=1, **k),
                 lambda **k: MixedBatchSampler(64, 9, 8, 0.5, seed=2, epoch=1, **k)):
        one = make(with_seeds=False)
        two = [make(rank=r, world_size=2, with_seeds=False) for r in range(2)]
        for step, (a, b) in enumerate(zip(*two)):
            assert a + b == one.global_batch_indices(step).tolist()
    assert epoch_permutation(64, 2, 1).tolist() != epoch_permutation(64, 2, 2).tolist()
