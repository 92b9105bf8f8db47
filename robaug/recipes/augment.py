"""The augmentation recipes selectable by ``--recipe`` and the loss each one trains with.

==================  ==========================================================  ==================================
recipe              loss                                                        views in the one forward pass
==================  ==========================================================  ==================================
baseline            CE(f(x))                                                    [x]
augmix              CE(f(AugMix(x)))                                            [AugMix(x)]
augmix_jsd          CE(f(x)) + 12 JS(x, AugMix_1(x), AugMix_2(x))               [x | a1 | a2]
ipmix               CE(f(IPMix(x)))                                             [IPMix(x)]
ipmix_jsd           CE(f(x)) + 12 JS(x, IPMix_1(x), IPMix_2(x))                 [x | m1 | m2]
diffaug             CE(f(x)) + CE(f(DiffAug(x)))                                [x | d]
diffaug_ipmix_jsd   CE(f(x)) + CE(f(DiffAug(x))) + 12 JS(x, IPMix_1, IPMix_2)   [x | d | m1 | m2]
trades              CE_ls(f(x)) + beta KL(f(x) || f(x_adv))                     [x], then x_adv (two forwards)
==================  ==========================================================  ==================================

``x`` is the image after the standard augmentation (random crop with padding + horizontal flip, or
RandomResizedCrop + flip for ImageFolder data). JS is the Jensen-Shannon divergence of the three softmax
outputs with the mixture clamped to ``[1e-7, 1]`` (AugMix/IPMix code); the DiffAug view is not in the JS term
(DiffAug paper, section on combining with AugMix). All views go through the model in one concatenated
forward, so BatchNorm statistics cover every view, as in the papers' code.

Where the augmentation runs: DiffAug always batched on the training device; IPMix batched on the device
(``ipmix_on="device"``, the default) or per sample in DataLoader workers (``"workers"``); torchvision's AugMix
per sample in workers (it shares its random ops across a batch otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .datasets import DatasetInfo
from .loader import random_crop_flip
from .seeding import derive_seed

__all__ = [
    "RecipeSpec",
    "RECIPES",
    "get_recipe",
    "recipe_loss",
    "js_divergence",
    "SampleAugment",
    "DeviceAugment",
]


@dataclass(frozen=True)
class RecipeSpec:
    """What a recipe does: which mixer (``None``, ``"augmix"``, ``"ipmix"``), JSD or not, DiffAug or not."""

    name: str
    mixer: str | None
    jsd: bool
    diffaug: bool
    loss: str
    adversarial: bool = False  #: TRADES: the loop adds the adversarial view x_adv (robaug.losses.trades)

    @property
    def view_names(self) -> tuple[str, ...]:
        """Names of the views, in the order they are concatenated for the forward pass."""
        first = "clean" if (self.jsd or self.diffaug or self.mixer is None) else self.mixer
        names = [first]
        if self.diffaug:
            names.append("diffaug")
        if self.jsd:
            names += [f"{self.mixer}1", f"{self.mixer}2"]
        if self.adversarial:
            names.append("adversarial")
        return tuple(names)

    @property
    def num_views(self) -> int:
        return len(self.view_names)


RECIPES: dict[str, RecipeSpec] = {
    r.name: r
    for r in (
        RecipeSpec("baseline", None, False, False, "CE(f(x))"),
        RecipeSpec("augmix", "augmix", False, False, "CE(f(AugMix(x)))"),
        RecipeSpec("augmix_jsd", "augmix", True, False, "CE(f(x)) + 12 JS(x, AugMix1(x), AugMix2(x))"),
        RecipeSpec("ipmix", "ipmix", False, False, "CE(f(IPMix(x)))"),
        RecipeSpec("ipmix_jsd", "ipmix", True, False, "CE(f(x)) + 12 JS(x, IPMix1(x), IPMix2(x))"),
        RecipeSpec("diffaug", None, False, True, "CE(f(x)) + CE(f(DiffAug(x)))"),
        RecipeSpec(
            "diffaug_ipmix_jsd", "ipmix", True, True, "CE(f(x)) + CE(f(DiffAug(x))) + 12 JS(x, IPMix1(x), IPMix2(x))"
        ),
        RecipeSpec("trades", None, False, False, "CE_ls(f(x)) + beta KL(f(x) || f(x_adv))", adversarial=True),
    )
}


def get_recipe(name: str) -> RecipeSpec:
    key = name.lower().replace("-", "_").replace("+", "_")
    if key not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[key]


# --------------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------------


def js_divergence(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """``JS(p_clean, p_aug1, p_aug2) = 1/3 sum_i KL(p_i || M)``, ``M`` = mean of the softmaxes clamped to
    ``[1e-7, 1]`` (as in the AugMix and IPMix code), averaged over the batch (:func:`robaug.losses.js_divergence`)."""
    from robaug.losses.jsd import js_divergence as _js

    return _js(logits_clean, logits_aug1, logits_aug2)


def recipe_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    spec: RecipeSpec,
    *,
    jsd_weight: float = 12.0,
    label_smoothing: float = 0.0,
    trades_beta: float = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of ``spec`` on the logits of the concatenated views ``spec.view_names``.

    Returns ``(loss, terms)`` with ``terms`` holding each summand (``ce``, ``ce_diffaug``, ``jsd``, ``trades_kl``;
    the JS term already multiplied by ``jsd_weight``, the TRADES KL by ``trades_beta``) as detached tensors;
    ``loss`` is their sum.
    """
    b = targets.shape[0]
    if logits.shape[0] != spec.num_views * b:
        raise ValueError(
            f"recipe {spec.name!r} expects {spec.num_views} views x {b} samples = {spec.num_views * b} logits rows, "
            f"got {logits.shape[0]}"
        )
    chunks = logits.float().split(b)
    names = spec.view_names
    terms: dict[str, torch.Tensor] = {"ce": F.cross_entropy(chunks[0], targets, label_smoothing=label_smoothing)}
    if spec.diffaug:
        terms["ce_diffaug"] = F.cross_entropy(chunks[names.index("diffaug")], targets, label_smoothing=label_smoothing)
    if spec.jsd:
        i = names.index(f"{spec.mixer}1")
        terms["jsd"] = jsd_weight * js_divergence(chunks[0], chunks[i], chunks[i + 1])
    if spec.adversarial:
        from robaug.losses.trades import trades_kl

        terms["trades_kl"] = trades_beta * trades_kl(chunks[0], chunks[names.index("adversarial")])
    loss = sum(terms.values())
    return loss, {k: v.detach() for k, v in terms.items()}


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

    ``forward(batch, step_seed, *, rank_seed, total, offset)``: ``batch`` is what the loader produced -- a ``uint8``
    ``(B, C, H, W)`` tensor, or a list of views when the mixer ran in workers -- and the result is the list of
    float ``[0, 1]`` views in ``spec.view_names`` order. The base augmentation (random crop + flip) runs here
    when ``base_on_device``; its draws use the global batch (``total``, ``offset``) so DDP runs match a
    single-process run. IPMix and DiffAug get generators seeded from ``rank_seed`` (per step and process).
    """

    def __init__(
        self,
        info: DatasetInfo,
        spec: RecipeSpec,
        *,
        base_on_device: bool,
        mixer_on_device: bool,
        denoiser: nn.Module | None = None,
        diffaug_kwargs: dict[str, Any] | None = None,
        ipmix_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.info, self.spec = info, spec
        self.base_on_device = base_on_device
        self.mixer_on_device = mixer_on_device and spec.mixer is not None
        if self.mixer_on_device and spec.mixer != "ipmix":
            raise ValueError(f"{spec.mixer} runs per sample in DataLoader workers; only IPMix runs batched on the device")
        self.ipmix = make_ipmix(2 if spec.jsd else 1, None, **(ipmix_kwargs or {})) if self.mixer_on_device else None
        self.diffaug = None
        if spec.diffaug:
            if denoiser is None:
                raise ValueError(f"recipe {spec.name!r} needs a denoiser (--denoiser)")
            from robaug.transforms.diffaug import DiffAug

            self.diffaug = DiffAug(denoiser, validate=False, **(diffaug_kwargs or {}))

    def _generator(self, device: torch.device, *parts: int | str) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(*parts))
        return g

    @torch.no_grad()
    def forward(
        self, batch: Any, step_seed: int, *, rank_seed: int | None = None, total: int | None = None, offset: int = 0
    ) -> list[torch.Tensor]:
        rank_seed = step_seed if rank_seed is None else rank_seed
        if isinstance(batch, (list, tuple)):
            views_in = [v for v in batch]
        else:
            views_in = [batch]
        device = views_in[0].device
        x = views_in[0]
        if self.base_on_device:
            g = self._generator(device, step_seed, "base")
            x = random_crop_flip(x, self.info.crop_padding, g, total=total, offset=offset)
        x = _to_float(x)
        spec = self.spec
        if spec.mixer is not None and not self.mixer_on_device:
            mixed = [_to_float(v) for v in views_in[1:]] if spec.jsd else [_to_float(views_in[0])]
            if not spec.jsd:
                # the loader produced only the mixed image; it is the first (and only) view
                return [mixed[0]]
        elif self.ipmix is not None:
            self.ipmix.generator = self._generator(device, rank_seed, "device", 1)
            mixed = list(self.ipmix.augment(x).float().unbind(0))
            if not spec.jsd:
                return [mixed[0]]
        else:
            mixed = []
        views = [x]
        if self.diffaug is not None:
            self.diffaug.generator = self._generator(device, rank_seed, "device", 2)
            views.append(self.diffaug(x).float())
        return views + mixed


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
