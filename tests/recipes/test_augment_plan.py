"""robaug.recipes.plan: where each augmentation step of a recipe runs, read by both the worker transform and the
device augmentation."""

from __future__ import annotations

import pytest
import torch

from robaug.data.datasets import DatasetInfo
from robaug.recipes.augment import DeviceAugment, SampleAugment
from robaug.recipes.plan import AugmentPlan
from robaug.recipes.spec import RECIPES

FMNIST = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2)


@pytest.mark.parametrize("recipe,in_memory,ipmix_on,base,mixer,views", [
    ("baseline", True, "device", "device", None, ("clean",)),
    ("diffaug", True, "device", "device", None, ("clean",)),
    ("trades", True, "device", "device", None, ("clean",)),
    ("augmix", True, "device", "workers", "workers", ("augmix",)),  # AugMix always per sample
    ("augmix_jsd", True, "device", "workers", "workers", ("clean", "augmix1", "augmix2")),
    ("ipmix", True, "device", "device", "device", ("clean",)),
    ("ipmix_jsd", True, "workers", "workers", "workers", ("clean", "ipmix1", "ipmix2")),
    ("diffaug_ipmix_jsd", True, "device", "device", "device", ("clean",)),
    ("baseline", False, "device", "workers", None, ("clean",)),  # ImageFolder: decoded and cropped in workers
    ("ipmix_jsd", False, "device", "workers", "device", ("clean",)),
])
def test_plan_for_run(recipe, in_memory, ipmix_on, base, mixer, views):
    plan = AugmentPlan.for_run(RECIPES[recipe], in_memory=in_memory, ipmix_on=ipmix_on)
    assert (plan.base, plan.mixer, plan.loader_views) == (base, mixer, views)
    assert plan.use_loader == (base == "workers" or mixer == "workers")
    tf = SampleAugment.for_plan(plan, FMNIST)
    assert (tf.base is not None) == (base == "workers")
    assert tf.mixer_kind == (RECIPES[recipe].mixer if mixer == "workers" else None)


def test_plan_rejects_inconsistent_placements():
    with pytest.raises(ValueError, match="only IPMix"):
        AugmentPlan(RECIPES["augmix"], "workers", "device")
    with pytest.raises(ValueError, match="no mixer"):
        AugmentPlan(RECIPES["baseline"], "device", "device")
    with pytest.raises(ValueError, match="mixer must be"):
        AugmentPlan(RECIPES["ipmix"], "device", None)
    with pytest.raises(ValueError, match="base augmentation in workers"):
        AugmentPlan(RECIPES["ipmix"], "device", "workers")
    with pytest.raises(ValueError, match="ipmix_on"):
        AugmentPlan.for_run(RECIPES["ipmix"], in_memory=True, ipmix_on="gpu")


def test_device_augment_reads_the_plan_and_checks_the_loader_views():
    plan = AugmentPlan.for_run(RECIPES["augmix_jsd"], in_memory=True)
    dev = DeviceAugment(FMNIST, plan)
    assert dev.plan is plan and not dev.base_on_device and not dev.mixer_on_device
    legacy = DeviceAugment(FMNIST, RECIPES["augmix_jsd"], base_on_device=False, mixer_on_device=False)
    assert legacy.plan == plan
    views = [torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8) for _ in range(3)]
    out = dev(views, 0)
    assert len(out) == 3 and all(torch.equal(o, v.float() / 255) for o, v in zip(out, views))
    with pytest.raises(ValueError, match="loader's views"):
        dev(views[0], 0)  # the plan says the loader yields three views
    with pytest.raises(TypeError, match="AugmentPlan"):
        DeviceAugment(FMNIST, RECIPES["baseline"])
