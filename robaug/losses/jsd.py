"""Jensen-Shannon consistency loss of AugMix (Hendrycks et al., 2020) and IPMix (Wu et al., 2023).

With ``p_0 = softmax(f(x))`` for the clean images and ``p_1, p_2`` for two augmented views,

    L = CE(f(x), y) + lambda * JS(p_0, p_1, p_2),   JS = 1/3 sum_i KL(p_i || M),   M = clamp(mean_i p_i, 1e-7, 1)

with ``lambda = 12`` and the KL divergences averaged over the batch, exactly as the AugMix and IPMix training
scripts compute it (the clamp keeps ``log M`` finite). Logits come either as one tensor ``[clean | aug1 | aug2]``
of ``3B`` rows (what ``IPMix(num_views=2)`` returns for a batch and what timm's ``JsdCrossEntropy`` splits) or
as a sequence of ``B``-row tensors.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["JSDLoss", "js_divergence", "jsd_loss"]

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


def js_divergence(*logits: torch.Tensor, clamp_min: float = 1e-7) -> torch.Tensor:
    """``1/n sum_i KL(p_i || M)`` with ``p_i = softmax(logits[i])``, ``M = clamp(mean_i p_i, clamp_min, 1)``.

    Each KL is summed over classes and averaged over the batch (``reduction="batchmean"``). Computed in
    float32 (or float64) even for half-precision logits.
    """
    if len(logits) < 2:
        raise ValueError(f"js_divergence needs at least two sets of logits, got {len(logits)}")
    shape = logits[0].shape
    if logits[0].ndim != 2 or any(z.shape != shape for z in logits):
        raise ValueError(
            f"js_divergence expects logits of equal shape (B, num_classes), got {[tuple(z.shape) for z in logits]}"
        )
    dtype = torch.promote_types(logits[0].dtype, torch.float32)
    probs = [F.softmax(z.to(dtype), dim=1) for z in logits]
    log_mixture = torch.clamp(torch.stack(probs).mean(0), clamp_min, 1.0).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


def _split(logits: Logits, num_splits: int) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        if logits.ndim != 2:
            raise ValueError(f"expected logits of shape ({num_splits} * B, num_classes), got {tuple(logits.shape)}")
        if logits.shape[0] % num_splits:
            raise ValueError(
                f"{logits.shape[0]} logit rows cannot be split into {num_splits} equal parts "
                f"[clean | aug1 | ...]; pass logits of {num_splits} * B rows or a sequence of {num_splits} tensors"
            )
        return list(logits.split(logits.shape[0] // num_splits))
    parts = list(logits)
    if len(parts) != num_splits:
        raise ValueError(f"expected {num_splits} logit tensors [clean, aug1, ...], got {len(parts)}")
    return parts


def jsd_loss(
    logits: Logits,
    target: torch.Tensor,
    *,
    weight: float = 12.0,
    num_splits: int = 3,
    label_smoothing: float = 0.0,
    clamp_min: float = 1e-7,
) -> torch.Tensor:
    """``CE(clean, target) + weight * JS(clean, aug1, ...)``; see :class:`JSDLoss`."""
    parts = _split(logits, num_splits)
    b = parts[0].shape[0]
    if target.ndim != 1 or target.shape[0] not in (b, num_splits * b):
        raise ValueError(
            f"target must hold B = {b} class indices (or {num_splits} * B repeated, as timm's collate makes), "
            f"got shape {tuple(target.shape)}"
        )
    ce = F.cross_entropy(parts[0], target[:b], label_smoothing=label_smoothing)
    return ce + weight * js_divergence(*parts, clamp_min=clamp_min)


class JSDLoss(nn.Module):
    """Cross-entropy on the clean split plus ``weight`` x the Jensen-Shannon consistency term.

    ``forward(logits, target)``: ``logits`` is ``[clean | aug1 | aug2]`` stacked along dim 0 (``num_splits * B``
    rows, e.g. ``model(IPMix(num_views=2)(batch))``) or a sequence of ``num_splits`` ``(B, K)`` tensors;
    ``target`` holds ``B`` class indices (or ``num_splits * B``, of which the first ``B`` are used, as with timm's
    collate). Defaults follow the AugMix/IPMix code: ``weight=12``, no label smoothing, mixture clamped at 1e-7.
    """

    def __init__(
        self, weight: float = 12.0, num_splits: int = 3, label_smoothing: float = 0.0, clamp_min: float = 1e-7
    ) -> None:
        super().__init__()
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if num_splits < 2:
            raise ValueError(f"num_splits must be >= 2 (clean + at least one view), got {num_splits}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.weight = float(weight)
        self.num_splits = int(num_splits)
        self.label_smoothing = float(label_smoothing)
        self.clamp_min = float(clamp_min)

    def forward(self, logits: Logits, target: torch.Tensor) -> torch.Tensor:
        return jsd_loss(
            logits,
            target,
            weight=self.weight,
            num_splits=self.num_splits,
            label_smoothing=self.label_smoothing,
            clamp_min=self.clamp_min,
        )

    def extra_repr(self) -> str:
        return f"weight={self.weight}, num_splits={self.num_splits}, label_smoothing={self.label_smoothing}"
