"""The IPMix transform: arguments, input types and views; :mod:`.plan` draws a call's random choices and
:mod:`.apply` carries them out."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, Sequence

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2._utils import is_pure_tensor

from ..._core.rng import Rng
from .._base import BatchTransform, check_int, check_real
from ..mixing_set import MixingSet, MixingSource
from .apply import apply_plan
from .ops import ALL_IMAGE_OPS, IMAGE_OPS, op_groups
from .plan import Plan, draw_plan

__all__ = ["IPMix", "IPMIX_PRESETS", "CHAIN_TYPES"]

CHAIN_TYPES = ("image", "patch")

#: Smallest image side IPMix accepts: patches are at least 2 x 2 pixels.
MIN_SIDE = 2

#: Defaults of the official CIFAR and ImageNet scripts. Patch sizes are fractions of the image side
#: ({4, 8, 16, 32} px at 32 px; {4, 8, 16, 32, 64, 224} px at 224 px).
IPMIX_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": dict(beta=3.0, severity=3.0, patch_sizes=(1 / 8, 1 / 4, 1 / 2, 1.0), partner_aug_prob=0.0),
    "imagenet": dict(
        beta=4.0,
        severity=1.0,
        patch_sizes=(4 / 224, 8 / 224, 16 / 224, 32 / 224, 64 / 224, 1.0),
        partner_aug_prob=0.5,
    ),
}


def _patch_sizes(sizes: Sequence[float | int]) -> tuple[float | int, ...]:
    """``patch_sizes`` checked: non-integers are fractions of the image side in (0, 1], integers pixels >= 1."""
    bad = ValueError(f"IPMix: patch_sizes must be fractions in (0, 1] or pixel sizes >= 1, got {sizes!r}")
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise bad
    out: list[float | int] = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise bad
        if isinstance(s, numbers.Integral):
            out.append(int(s))
        elif math.isfinite(s) and 0 < s <= 1:
            out.append(float(s))
        else:
            raise bad
    if not out or any(v < 1 for v in out if isinstance(v, int)):
        raise bad
    return tuple(out)


class IPMix(BatchTransform):
    """IPMix data augmentation, batched with per-sample randomness.

    Args:
        mixing_set: where mixing pictures come from: ``None`` for procedurally generated fractals (the
            default; see :class:`~robaug.transforms.mixing_set.MixingSet`), a tensor ``(M, C, H, W)``, a folder of
            images, a dataset of images, or a :class:`MixingSet`. Pictures are resized to the input size and
            converted to its channel count.
        width: number of augmentation chains ``k`` (3).
        depth: maximum chain length ``t``; each chain takes ``U{0..t}`` steps (3).
        beta: mixing-strength parameter of the patch mixes (preset: 3 CIFAR, 4 ImageNet).
        severity: image-level op strength, ``L ~ U(0.1, severity)`` (preset: 3 CIFAR, 1 ImageNet).
        patch_sizes: patch sides, as fractions of the image side (floats in (0, 1]) or pixels (ints);
            1.0 is the pixel level (preset: {1/8, 1/4, 1/2, 1} CIFAR).
        all_ops: also use autocontrast, colour, contrast, brightness and sharpness (which overlap
            ImageNet-C corruptions).
        num_views: number of augmented views. ``1`` returns the augmented image; ``2`` (or more) returns
            the clean image followed by independent views that share the mixing picture, for the JSD
            loss: a tuple ``(x, view1, view2)`` for a single image (PIL or ``(C, H, W)``), and for a batch
            ``(B, C, H, W)`` one tensor ``[x | view1 | view2]`` of ``3B`` images, the order timm's
            ``JsdCrossEntropy`` and :class:`robaug.losses.JSDLoss` split.
        partner_aug_prob: probability that a patch step mixes with an image-level-augmented copy of the
            input instead of the mixing picture (preset: 0 CIFAR code, 0.5 ImageNet code and paper).
        chain_types: levels chains may take, ``("image", "patch")``; one of them alone gives the ablations
            (and the figures) of a single level.
        preset: ``"cifar"`` or ``"imagenet"``; supplies every argument left at ``None``.
        generator: optional ``torch.Generator`` for all random draws (else the global RNG of the input's
            device, which DataLoader seeds differently in each worker). In a DataLoader worker the worker's copy
            of ``generator`` is re-seeded on first use from its seed and the worker's seed, so workers do not repeat
            each other (unless the worker's own code seeds it); see :func:`robaug._core.rng.worker_generator`.
        validate: check float input for NaN/inf and the [0, 1] range (one host-device sync).

    Labels and other non-image inputs pass through unchanged. Input: PIL (``L``/``RGB``), ``(C, H, W)`` or
    ``(..., C, H, W)`` uint8 or float tensors, ``tv_tensors.Image``; output has the input's type, dtype and
    device. The discrete choices of a call (chain levels, lengths, ops) are grouped on the host, which costs
    one device-to-host copy per call on a GPU.
    """

    def __init__(
        self,
        mixing_set: MixingSource | MixingSet = None,
        width: int = 3,
        depth: int = 3,
        beta: float | None = None,
        severity: float | None = None,
        patch_sizes: Sequence[float | int] | None = None,
        all_ops: bool = False,
        num_views: int = 1,
        partner_aug_prob: float | None = None,
        chain_types: Sequence[str] = CHAIN_TYPES,
        preset: str = "cifar",
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(generator=generator, validate=validate)
        if preset not in IPMIX_PRESETS:
            raise ValueError(f"IPMix: unknown preset {preset!r}; choose one of {sorted(IPMIX_PRESETS)}")
        defaults = IPMIX_PRESETS[preset]
        self.preset = preset
        self.width = check_int(width, "width", "IPMix", low=1)
        self.depth = check_int(depth, "depth", "IPMix", low=0)
        self.beta = check_real(defaults["beta"] if beta is None else beta, "beta", "IPMix", low=0.0, low_open=True)
        # severity is AugMix's level scale: L ~ U(0.1, severity) of PARAMETER_MAX = 10
        self.severity = check_real(defaults["severity"] if severity is None else severity, "severity", "IPMix",
                                   0.1, 10.0)  # fmt: skip
        self.patch_sizes = _patch_sizes(defaults["patch_sizes"] if patch_sizes is None else patch_sizes)
        self.partner_aug_prob = check_real(
            defaults["partner_aug_prob"] if partner_aug_prob is None else partner_aug_prob, "partner_aug_prob",
            "IPMix", 0.0, 1.0,
        )  # fmt: skip
        self.all_ops = bool(all_ops)
        self.num_views = check_int(num_views, "num_views", "IPMix", low=1)
        self.chain_types = tuple(chain_types)
        if not self.chain_types or any(t not in CHAIN_TYPES for t in self.chain_types):
            raise ValueError(f"IPMix: chain_types must be a non-empty subset of {CHAIN_TYPES}, got {chain_types}")
        self.mixing_set = mixing_set if isinstance(mixing_set, MixingSet) else MixingSet(mixing_set)
        self._ops = ALL_IMAGE_OPS if self.all_ops else IMAGE_OPS
        self._op2group = op_groups(self._ops)

    # ------------------------------------------------------------------------------------------------
    # torchvision v2 plumbing

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.Video)):
                raise TypeError(
                    f"IPMix got a {type(inpt).__name__}: it is a classification augmentation (a mix of several "
                    "augmented copies), so boxes, masks and videos cannot follow it."
                )

    @torch.compiler.disable  # host-side planning (numpy) and host-driven kernels: run eagerly under torch.compile
    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, restore = self.to_batch(inpt)
        # uint8 results are clamped when converted back, so skip the extra pass there; and for uint8 / PIL input
        # ``x`` is a float copy nobody else holds, so the result can overwrite it (no second batch-sized buffer)
        to_uint8 = isinstance(inpt, PIL.Image.Image) or inpt.dtype == torch.uint8
        views = self._augment(x, clamp=not to_uint8, inplace=to_uint8)  # (V, B, C, H, W)
        if self.num_views == 1:
            return restore(views[0])
        outs = [restore(v) for v in views]
        if isinstance(inpt, PIL.Image.Image) or inpt.ndim == 3:
            if is_pure_tensor(inpt):
                # v2 transforms only the first plain tensor of a sample (the rest count as labels): return the three
                # images as tv_tensors.Image so that later transforms (v2.ToImage, v2.ToDtype, ...) convert them all
                return tuple(o.as_subclass(tv_tensors.Image) for o in (inpt, *outs))
            return (inpt, *outs)
        plain = [inpt.as_subclass(torch.Tensor)] + [o.as_subclass(torch.Tensor) for o in outs]
        out = torch.cat(plain, dim=0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    # ------------------------------------------------------------------------------------------------
    # the algorithm

    @torch.compiler.disable
    def augment(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """IPMix views of a float batch ``(B, C, H, W)`` in [0, 1]: a tensor ``(num_views, B, C, H, W)``.

        The result is a convex combination of values in [0, 1]; ``clamp=False`` skips the final clamp that
        removes rounding errors of order 1e-7 (for callers that clamp anyway). It carries no gradient.
        """
        return self._augment(x, clamp, inplace=False)

    def draw_params(self, batch: torch.Tensor, rng: Rng) -> Plan:
        """Every random choice of one call on the contiguous float batch ``(B, C, H, W)`` (see :mod:`.plan`)."""
        return draw_plan(self, batch, rng)

    def kernel(self, batch: torch.Tensor, params: Plan, clamp: bool = True, inplace: bool = False) -> torch.Tensor:
        """The views ``(num_views, B, C, H, W)`` of the contiguous float batch under the plan ``params``."""
        _, c, h, w = batch.shape
        mix = self.mixing_set.pixels((h, w), c, batch.device)  # float in [0, 1], or uint8 for large sets
        return apply_plan(params, batch, mix, clamp=clamp, inplace=inplace)

    @torch.no_grad()  # the ops (posterize, equalize, ...) are not differentiable: the views are detached
    def _augment(self, x: torch.Tensor, clamp: bool, inplace: bool) -> torch.Tensor:
        """:meth:`augment`; with ``inplace`` (and one view) the result is written into ``x`` itself."""
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"augment() expects a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise ValueError(
                f"IPMix: images of {h}x{w} pixels are too small; IPMix needs at least {MIN_SIDE}x{MIN_SIDE} pixels "
                "(its smallest patches are 2x2). Resize the images first, e.g. v2.Resize(32)."
            )
        x = x.detach().contiguous()  # windows are read through flat offsets
        plan = self.draw_params(x, self.rng(x.device))
        return self.kernel(x, plan, clamp=clamp, inplace=inplace)
