"""The DiffAug training objective (Sastry et al. 2024): ``CE(f(x), y) + CE(f(DiffAug(x)), y)``.

Both views go through the classifier in one concatenated forward (batch ``[clean | diffaug]``), as in the
paper's code, so BatchNorm sees both. To add AugMix/IPMix's JSD term, call the model yourself on
``[clean | diffaug | aug1 | aug2]`` and add ``jsd(...)`` over the clean and mixed splits only (the DiffAug view
is not part of the JSD in the paper); :func:`diffaug_cross_entropy` then scores the first two splits.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["diffaug_loss", "diffaug_cross_entropy"]


def diffaug_cross_entropy(
    logits_clean: torch.Tensor,
    logits_diffaug: torch.Tensor,
    targets: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``CE(logits_clean, y) + CE(logits_diffaug, y)``, each averaged over the batch."""
    ce_clean = F.cross_entropy(logits_clean, targets, label_smoothing=label_smoothing)
    ce_aug = F.cross_entropy(logits_diffaug, targets, label_smoothing=label_smoothing)
    return ce_clean + ce_aug


def diffaug_loss(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    diffaug: nn.Module,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's loss ``CE(f(x), y) + CE(f(DiffAug(x)), y)``.

    ``images`` is a float ``(B, C, H, W)`` batch in ``[0, 1]`` (what DiffAug takes); ``preprocess`` (e.g. a
    ``Normalize``) is applied to both views before ``model``. Returns ``(loss, logits_clean)``; the clean
    logits are handy for training accuracy. The DiffAug view carries no gradient to the denoiser.
    """
    if images.ndim != 4:
        raise ValueError(f"diffaug_loss expects a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"diffaug_loss expects float images in [0, 1], got dtype {images.dtype}; convert with "
                        "images.float() / 255")
    augmented = diffaug(images)
    both = torch.cat([images, augmented.to(images.dtype)])
    if preprocess is not None:
        both = preprocess(both)
    logits = model(both)
    logits_clean, logits_aug = logits.chunk(2)
    return diffaug_cross_entropy(logits_clean, logits_aug, targets, label_smoothing=label_smoothing), logits_clean
