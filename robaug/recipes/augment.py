"""The views of a recipe: per sample in DataLoader workers (:class:`SampleAugment`) and batched on the training
device (:class:`DeviceAugment`), each reading the :class:`~.plan.AugmentPlan` that says where every step runs.

The recipe table (:data:`RECIPES`, :func:`get_recipe`, :func:`recipe_loss`) lives in :mod:`.spec` and the JS
divergence in :mod:`robaug.losses.jsd`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from robaug.data.datasets import DatasetInfo
from robaug.data.seeding import derive_seed, make_generator
from robaug.losses.jsd import js_divergence

from .loader import random_crop_flip
from .plan import DEVICE, WORKERS, AugmentPlan
from .spec import RECIPES, RecipeSpec, get_recipe, recipe_loss

__all__ = [
    "RecipeSpec",
    "RECIPES",
    "get_recipe",
    "recipe_loss",
    "js_divergence",
    "AugmentPlan",
    "SampleAugment",
    "DeviceAugment",
]


# --------------------------------------------------------------------------------------------------------
# mixers
# --------------------------------------------------------------------------------------------------------


def make_ipmix(num_views: int, generator: torch.Generator | None, **kwargs: Any) -> nn.Module:
    """``robaug.IPMix`` with ``num_views`` (1, or 2 for JSD: the views share the mixing picture)."""
    from robaug.transforms.ipmix import IPMix

    return IPMix(num_views=num_views, generator=generator, **kwargs)


def _ipmix_views(ipmix: nn.Module, x: torch.Tensor, num_views: int) -> list[torch.Tensor]:
    """Run IPMix on a batch (or one image) and return the augmented views as a list (clean view excluded)."""
    out = ipmix(x)
    if num_views == 1:
        return [out]
    if isinstance(out, (tuple, list)):
        views = list(out)
        return views[-num_views:]
    # a tensor [clean | aug1 | aug2] along dim 0 (timm's split order)
    return list(out.chunk(num_views + 1))[1:]


def make_augmix(severity: int = 3, all_ops: bool = False) -> nn.Module:
    """torchvision's AugMix (per image). ``all_ops=False`` drops the operations that overlap the -C
    corruptions (brightness, contrast, color, sharpness), as the AugMix paper's CIFAR/ImageNet code does."""
    from torchvision.transforms import v2

    return v2.AugMix(severity=severity, all_ops=all_ops)


class SampleAugment:
    """Per-sample transform run in DataLoader workers: base augmentation, then (optionally) the mixer.

    ``__call__(image, sample_seed)`` is deterministic in ``sample_seed``: torchvision's random transforms run
    under a forked global RNG seeded with it, the mixer with a generator seeded from it. Returns a ``uint8``
    ``(C, H, W)`` tensor, or a tuple of views ``(x, aug1, aug2)`` for JSD recipes.
    """

    def __init__(
        self,
        info: DatasetInfo,
        spec: RecipeSpec | None,
        *,
        train: bool = True,
        base: bool = True,
        mixer_in_worker: bool = False,
        ipmix_kwargs: dict[str, Any] | None = None,
        augmix_severity: int = 3,
    ) -> None:
        from torchvision.transforms import v2

        self.info, self.spec, self.train = info, spec, train
        folder = info.crop_padding == 0
        steps: list[Callable] = []
        if folder:
            if train and base:
                steps += [v2.RandomResizedCrop(info.img_size, antialias=True), v2.RandomHorizontalFlip()]
            elif not train:
                steps += [v2.Resize(round(info.img_size / 0.875), antialias=True), v2.CenterCrop(info.img_size)]
            steps.append(v2.PILToTensor())
            steps.append(v2.RGB())
        elif train and base:
            steps += [v2.RandomCrop(info.img_size, padding=info.crop_padding), v2.RandomHorizontalFlip()]
        self.base = v2.Compose(steps) if steps else None
        self.mixer_kind = spec.mixer if (spec is not None and mixer_in_worker) else None
        self.jsd = bool(spec is not None and spec.jsd)
        self._generator: torch.Generator | None = None
        self.mixer: nn.Module | None = None
        if self.mixer_kind == "augmix":
            self.mixer = make_augmix(augmix_severity)
        elif self.mixer_kind == "ipmix":
            self._generator = torch.Generator()
            self.mixer = make_ipmix(2 if self.jsd else 1, self._generator, **(ipmix_kwargs or {}))

    @classmethod
    def for_plan(cls, plan: AugmentPlan, info: DatasetInfo, *, ipmix_kwargs: dict[str, Any] | None = None,
                 augmix_severity: int = 3) -> "SampleAugment":
        """The training-time worker transform of ``plan``: the base augmentation and mixer it puts in workers."""
        return cls(info, plan.spec, train=True, base=plan.base == WORKERS, mixer_in_worker=plan.mixer == WORKERS,
                   ipmix_kwargs=ipmix_kwargs, augmix_severity=augmix_severity)

    def __call__(self, image: Any, seed: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = self.base(image) if self.base is not None else image
            if self.mixer is None:
                return x
            if self._generator is not None:
                self._generator.manual_seed(derive_seed(seed, 1))
            if self.mixer_kind == "augmix":
                views = [self.mixer(x) for _ in range(2 if self.jsd else 1)]
            else:
                views = _ipmix_views(self.mixer, x, 2 if self.jsd else 1)
            return (x, *views) if self.jsd else views[0]


class DeviceAugment(nn.Module):
    """Builds the views of a recipe from a batch on the training device.

    ``DeviceAugment(info, plan, ...)`` with an :class:`~.plan.AugmentPlan`; the older form
    ``DeviceAugment(info, spec, base_on_device=..., mixer_on_device=...)`` builds the plan from the two flags.
    ``forward(batch, step_seed, *, rank_seed, total, offset)``: ``batch`` is what the loader produced
    (``plan.loader_views``: a ``uint8`` ``(B, C, H, W)`` tensor, or a list of views when the mixer ran in workers)
    and the result is the list of float ``[0, 1]`` views in ``spec.view_names`` order. The base augmentation
    (random crop + flip) runs here when ``plan.base == "device"``; its draws use the global batch (``total``,
    ``offset``) so DDP runs match a single-process run. IPMix and DiffAug get generators seeded from ``rank_seed``
    (per step and process).
    """

    def __init__(
        self,
        info: DatasetInfo,
        plan: AugmentPlan | RecipeSpec,
        *,
        base_on_device: bool | None = None,
        mixer_on_device: bool | None = None,
        denoiser: nn.Module | None = None,
        diffaug_kwargs: dict[str, Any] | None = None,
        ipmix_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(plan, RecipeSpec):
            if base_on_device is None or mixer_on_device is None:
                raise TypeError("DeviceAugment(info, spec, ...) needs base_on_device and mixer_on_device; or pass an "
                                "AugmentPlan")
            mixer = None if plan.mixer is None else (DEVICE if mixer_on_device else WORKERS)
            plan = AugmentPlan(plan, DEVICE if base_on_device else WORKERS, mixer)
        spec = plan.spec
        self.info, self.spec, self.plan = info, spec, plan
        self.base_on_device = plan.base == DEVICE
        self.mixer_on_device = plan.mixer == DEVICE
        self.ipmix = make_ipmix(2 if spec.jsd else 1, None, **(ipmix_kwargs or {})) if self.mixer_on_device else None
        self.diffaug = None
        if spec.diffaug:
            if denoiser is None:
                raise ValueError(f"recipe {spec.name!r} needs a denoiser (--denoiser)")
            from robaug.transforms.diffaug import DiffAug

            self.diffaug = DiffAug(denoiser, validate=False, **(diffaug_kwargs or {}))

    @torch.no_grad()
    def forward(
        self, batch: Any, step_seed: int, *, rank_seed: int | None = None, total: int | None = None, offset: int = 0
    ) -> list[torch.Tensor]:
        rank_seed = step_seed if rank_seed is None else rank_seed
        views_in = list(batch) if isinstance(batch, (list, tuple)) else [batch]
        if len(views_in) != len(self.plan.loader_views):
            raise ValueError(f"expected the loader's views {self.plan.loader_views}, got {len(views_in)} tensors")
        x = views_in[0]
        if self.base_on_device:
            g = make_generator(x.device, step_seed, "base")
            x = random_crop_flip(x, self.info.crop_padding, g, total=total, offset=offset)
        x = _to_float(x)
        if self.plan.mixer == WORKERS:
            if not self.spec.jsd:  # the loader produced only the mixed image; it is the first (and only) view
                return [x]
            mixed = [_to_float(v) for v in views_in[1:]]
        elif self.ipmix is not None:
            self.ipmix.generator = make_generator(x.device, rank_seed, "device", 1)
            mixed = list(self.ipmix.augment(x).float().unbind(0))
            if not self.spec.jsd:
                return [mixed[0]]
        else:
            mixed = []
        views = [x]
        if self.diffaug is not None:
            self.diffaug.generator = make_generator(x.device, rank_seed, "device", 2)
            views.append(self.diffaug(x).float())
        return views + mixed


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
