"""robaug.recipes.augment (+ loader.random_crop_flip): the worker-side and device-side views of a recipe."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from robaug.data.datasets import DatasetInfo
from robaug.data.seeding import derive_seed
from robaug.recipes.augment import RECIPES, DeviceAugment, SampleAugment, get_recipe
from robaug.recipes.loader import random_crop_flip

FMNIST = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2)

try:
    import robaug.transforms.ipmix  # noqa: F401

    HAVE_IPMIX = True
except ImportError:  # pragma: no cover
    HAVE_IPMIX = False
needs_ipmix = pytest.mark.skipif(not HAVE_IPMIX, reason="robaug.transforms.ipmix not available")


def test_random_crop_flip_matches_torchvision_per_sample():
    torch.manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 8, 10), dtype=torch.uint8)
    pad = 2
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the documented draw order: rows, columns, flips
    oy = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    fl = torch.rand(6, generator=g) < 0.5
    assert fl.any() and (~fl).any()
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [pad]), int(oy[i]), int(ox[i]), 8, 10)
        if fl[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=0)


def test_random_crop_flip_global_batch_slices_equal_single_process():
    x = torch.rand(8, 1, 12, 12)
    full = random_crop_flip(x, 3, torch.Generator().manual_seed(2))
    halves = [random_crop_flip(x[r * 4:(r + 1) * 4], 3, torch.Generator().manual_seed(2), total=8, offset=4 * r)
              for r in range(2)]
    torch.testing.assert_close(torch.cat(halves), full, rtol=0, atol=0)


def test_sample_augment_is_deterministic_in_the_seed():
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    tf = SampleAugment(FMNIST, get_recipe("baseline"), train=True)
    state = torch.get_rng_state()
    a, b, c = tf(img, 11), tf(img, 11), tf(img, 12)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == img.shape
    assert len({tf(img, s).sum().item() for s in range(20)}) > 3  # different seeds, different crops/flips
    del c


def test_device_augment_diffaug_view_is_diffaug_of_the_cropped_batch(tiny_denoiser_path):
    from robaug.hub import load_denoiser
    from robaug.transforms.diffaug import DiffAug

    den = load_denoiser(tiny_denoiser_path)
    spec = RECIPES["diffaug"]
    dev_aug = DeviceAugment(FMNIST, spec, base_on_device=True, mixer_on_device=True, denoiser=den)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    views = dev_aug(x, 7, rank_seed=9)
    assert [v.shape for v in views] == [(4, 1, 28, 28)] * 2 and all(v.dtype == torch.float32 for v in views)
    crop = random_crop_flip(x, 2, torch.Generator().manual_seed(derive_seed(7, "base"))).float() / 255
    torch.testing.assert_close(views[0], crop)
    ref = DiffAug(den, generator=torch.Generator().manual_seed(derive_seed(9, "device", 2)))(crop)
    torch.testing.assert_close(views[1], ref)
    assert not torch.allclose(views[1], views[0], atol=1e-2)


@needs_ipmix
def test_device_augment_ipmix_jsd_views():
    spec = RECIPES["ipmix_jsd"]
    dev_aug = DeviceAugment(FMNIST, spec, base_on_device=False, mixer_on_device=True)
    x = torch.rand(4, 1, 28, 28)
    views = dev_aug(x, 1, rank_seed=2)
    assert len(views) == 3 and all(v.shape == x.shape for v in views)
    torch.testing.assert_close(views[0], x)
    assert not torch.allclose(views[1], views[2])
    again = dev_aug(x, 1, rank_seed=2)
    for a, b in zip(views, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_device_augment_errors():
    with pytest.raises(ValueError, match="denoiser"):
        DeviceAugment(FMNIST, RECIPES["diffaug"], base_on_device=True, mixer_on_device=True)
    with pytest.raises(ValueError, match="workers"):
        DeviceAugment(FMNIST, RECIPES["augmix"], base_on_device=False, mixer_on_device=True)


def test_sample_augment_augmix_jsd_views():
    tf = SampleAugment(FMNIST, RECIPES["augmix_jsd"], train=True, mixer_in_worker=True)
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    views = tf(img, 3)
    assert isinstance(views, tuple) and len(views) == 3 and all(v.shape == img.shape for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, tf(img, 3)))
