"""The batch transform robaug's augmentations build on: one float batch in, per-sample parameters drawn, one kernel.

A :class:`BatchTransform` is a torchvision v2 ``Transform`` whose ``transform(inpt, params)`` does, for every image
input (PIL, ``(C, H, W)`` / ``(..., C, H, W)`` uint8 or float tensors, ``tv_tensors.Image``):

1. ``x, restore = to_float_batch(inpt)``: a float32 ``(B, C, H, W)`` batch in ``[0, 1]`` on the input's device;
2. ``params = self.draw_params(x, rng)``: every random choice of the call, as per-sample tensors (kornia
   augmentation's "parameter tensors"), drawn through ``rng`` (:class:`robaug._core.rng.Rng`: on the generator's
   device, or the global RNG of ``x``'s device);
3. ``y = self.kernel(x, params)``: deterministic given ``params``;
4. ``restore(y)``: back to the input's type, dtype, device and shape.

torchvision's own ``make_params(flat_inputs)`` runs once per call on the raw inputs, before they are converted, so
it cannot see the batch size or device; the per-sample draws therefore happen in :meth:`draw_params`, which plays
its role for the converted batch. Labels and other non-image inputs pass through unchanged, but a call must hold an
image: a numpy array or a list of numbers is refused with a ``TypeError`` saying how to convert it (torchvision
would pass it through unaugmented).

Random draws use ``generator`` in the main process; inside a DataLoader worker, the worker's copy of it is re-seeded
from its seed and the worker's seed on first use (:func:`robaug._core.rng.worker_generator`), so workers do not
repeat each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import is_pure_tensor

from .._core.checks import check_int, check_real
from .._core.image import not_an_image, to_float_batch
from .._core.rng import GeneratorMixin, Rng, worker_generator

__all__ = ["BatchTransform", "is_image_tensor", "check_real", "check_int"]


class _NoImage(Exception):
    """Raised inside ``forward`` when a call holds no image; turned into a TypeError describing the call."""

    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner


def is_image_tensor(inpt: Any) -> bool:
    """Inputs a batch transform acts on besides PIL images: plain tensors, ``tv_tensors.Image`` and ``Video``."""
    return is_pure_tensor(inpt) or isinstance(inpt, (tv_tensors.Image, tv_tensors.Video))


class BatchTransform(GeneratorMixin, Transform):
    """Base class: convert the input to a float batch, :meth:`draw_params`, :meth:`kernel`, restore.

    Args:
        generator: optional ``torch.Generator`` for every draw (else the global RNG of the input's device). In a
            DataLoader worker, the worker's copy is re-seeded on first use from its seed and the worker's seed, so
            workers do not repeat each other, unless the worker's own code seeds it (per-sample seeding); see
            :func:`robaug._core.rng.worker_generator`. The main process uses it as is.
        validate: check float input for NaN/inf and the ``[0, 1]`` range (one host-device sync).
        p: per-sample probability of applying the transform (see :meth:`draw_apply`); ``None`` for transforms
            that always apply.
    """

    _transformed_types = (PIL.Image.Image, is_image_tensor)

    def __init__(self, *, generator: torch.Generator | None = None, validate: bool = True,
                 p: float | None = None) -> None:  # fmt: skip
        super().__init__()
        name = type(self).__name__
        self.generator = generator  # checked, and tracked for DataLoader workers
        if p is not None:
            self.p = check_real(p, "p", name, 0.0, 1.0)
        self.validate = bool(validate)

    # -- to override ---------------------------------------------------------------------------------------

    def draw_params(self, batch: torch.Tensor, rng: Rng) -> Any:
        """Every random choice of one call on the float batch ``(B, C, H, W)``, drawn from ``rng`` (usually a
        dict of per-sample tensors)."""
        raise NotImplementedError

    def kernel(self, batch: torch.Tensor, params: Any) -> torch.Tensor:
        """The transform of the float batch with the drawn ``params``: a float ``(B, C, H', W')`` batch."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------------

    def draw_apply(self, batch_size: int, rng: Rng) -> torch.Tensor | None:
        """Per-sample coins for ``p``: a bool ``(B,)`` mask of the samples to transform (``u < p`` with
        ``u ~ U[0, 1)``), or ``None`` without a draw when every sample is transformed (``p`` is 1 or unset)."""
        p = getattr(self, "p", 1.0)
        if p >= 1.0:
            return None
        return rng.rand(batch_size) < p

    def rng(self, device: torch.device) -> Rng:
        """The draws of one call for a batch on ``device`` (per DataLoader worker, a stream of its own)."""
        return Rng(device, worker_generator(self.generator))

    def forward(self, *inputs: Any) -> Any:
        try:
            return super().forward(*inputs)
        except _NoImage as e:
            if e.owner is not self:
                raise
            raise not_an_image(inputs if len(inputs) > 1 else inputs[0], f"{type(self).__name__} input") from None

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        needs = super()._needs_transform_list(flat_inputs)
        # torchvision passes what it does not recognise through; a robaug transform refuses a call without an image,
        # and a numpy array where the image would be a plain tensor (it is an image the user forgot to convert)
        if not any(needs) or (
            not any(isinstance(i, (PIL.Image.Image, tv_tensors.Image, tv_tensors.Video)) for i in flat_inputs)
            and any(isinstance(i, np.ndarray) and i.ndim >= 2 for i in flat_inputs)
        ):
            raise _NoImage(self)
        return needs

    def to_batch(self, inpt: Any) -> tuple[torch.Tensor, Any]:
        """``(float batch, restore)`` of an input (see :func:`robaug._core.image.to_float_batch`)."""
        return to_float_batch(inpt, name=f"{type(self).__name__} input", validate=self.validate)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, restore = self.to_batch(inpt)
        return restore(self.kernel(x, self.draw_params(x, self.rng(x.device))))
