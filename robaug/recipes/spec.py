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
outputs with the mixture clamped to ``[1e-7, 1]`` (:func:`robaug.losses.js_divergence`); the DiffAug view is not
in the JS term (DiffAug paper, section on combining with AugMix). All views go through the model in one
concatenated forward, so BatchNorm statistics cover every view, as in the papers' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robaug._core.registry import Registry, unknown_name_message
from robaug.losses.jsd import js_divergence

__all__ = ["RecipeSpec", "RECIPES", "get_recipe", "recipe_loss"]


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


class _RecipeTable(Registry[RecipeSpec], Mapping):
    """The recipe registry, readable as a mapping (``RECIPES["ipmix"]``, ``RECIPES.items()``)."""


#: name -> :class:`RecipeSpec` (a read-only mapping; new recipes via ``RECIPES.register(name, spec)``)
RECIPES: _RecipeTable = _RecipeTable("recipe")
for _spec in (
    RecipeSpec("baseline", None, False, False, "CE(f(x))"),
    RecipeSpec("augmix", "augmix", False, False, "CE(f(AugMix(x)))"),
    RecipeSpec("augmix_jsd", "augmix", True, False, "CE(f(x)) + 12 JS(x, AugMix1(x), AugMix2(x))"),
    RecipeSpec("ipmix", "ipmix", False, False, "CE(f(IPMix(x)))"),
    RecipeSpec("ipmix_jsd", "ipmix", True, False, "CE(f(x)) + 12 JS(x, IPMix1(x), IPMix2(x))"),
    RecipeSpec("diffaug", None, False, True, "CE(f(x)) + CE(f(DiffAug(x)))"),
    RecipeSpec("diffaug_ipmix_jsd", "ipmix", True, True,
               "CE(f(x)) + CE(f(DiffAug(x))) + 12 JS(x, IPMix1(x), IPMix2(x))"),
    RecipeSpec("trades", None, False, False, "CE_ls(f(x)) + beta KL(f(x) || f(x_adv))", adversarial=True),
):
    RECIPES.register(_spec.name, _spec)
del _spec


def get_recipe(name: str) -> RecipeSpec:
    """The recipe ``name`` (case, ``-`` and ``+`` forgiven); ``ValueError`` listing the known ones otherwise."""
    key = name.lower().replace("-", "_").replace("+", "_")
    if key not in RECIPES:
        raise ValueError(unknown_name_message("recipe", name, RECIPES.names()) + " (--recipe)")
    return RECIPES[key]


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
