"""Post-hoc out-of-distribution detection: per-image scores of a classifier and the standard metrics.

Scores (higher = more in-distribution), from the logits ``z`` of ``f(x)`` at temperature ``T``:

- ``msp``: maximum softmax probability ``max_c softmax(z / T)_c`` (Hendrycks & Gimpel, ICLR 2017);
- ``max_logit``: ``max_c z_c`` (Hendrycks et al., ICML 2022, "Scaling out-of-distribution detection");
- ``energy``: the negative free energy ``T logsumexp(z / T)`` (Liu et al., NeurIPS 2020);
- ``odin``: MSP at ``T = 1000`` of the input moved by ``eps`` against the gradient of the loss of the predicted
  class, ``x~ = x - eps sign(-grad_x log softmax(z(x) / T)_yhat)`` (Liang et al., ICLR 2018; one extra forward
  and backward). ``eps`` is in [0, 1] pixel units (default 0.0014 as in the paper, where it applied to
  normalised images).

Metrics (in-distribution = positive class), equal to scikit-learn's:

- ``auroc``: ``roc_auc_score`` (ties count one half);
- ``aupr_in``: ``average_precision_score`` with in-distribution positive; ``aupr_out``: with OOD positive and
  negated scores;
- ``fpr95``: the false-positive rate on OOD data at the largest threshold whose true-positive rate on
  in-distribution data is >= 95% (``fpr[argmax(tpr >= 0.95)]`` of ``roc_curve(..., drop_intermediate=False)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OOD_METHODS", "ood_scores", "ood_metrics", "auroc", "average_precision", "fpr_at_tpr"]

OOD_METHODS = ("msp", "max_logit", "energy", "odin")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return (batch, num_classes >= 2) logits, got {shape} for a batch of "
                         f"{x.shape[0]} images")
    return out.float()


def _check_images(images: Any) -> torch.Tensor:
    from .certify import _check_images as check

    return check(images)


def _device(model: Any, fallback: torch.device) -> torch.device:
    from .certify import _model_device

    return _model_device(model, fallback)


def ood_scores(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "msp",
    *,
    temperature: float | None = None,
    odin_eps: float = 0.0014,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """One score per image (float64 (N,), CPU), higher = more in-distribution; see the module docstring.

    ``temperature``: default 1 (``msp``, ``energy``; unused by ``max_logit``) and 1000 (``odin``). ``model`` maps
    float images in [0, 1] to logits; it is evaluated in eval mode (mode restored after).
    """
    if method not in OOD_METHODS:
        raise ValueError(f"method must be one of {OOD_METHODS}, got {method!r}")
    t = (1000.0 if method == "odin" else 1.0) if temperature is None else float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_all = _check_images(images)
    dev = torch.device(device) if device is not None else _device(model, x_all.device)
    was = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    try:
        for start in range(0, x_all.shape[0], int(batch_size)):
            x = x_all[start:start + int(batch_size)].to(dev)
            if method == "odin":
                out.append(_odin(model, x, t, float(odin_eps)))
                continue
            with torch.no_grad():
                z = _logits(model, x)
            if method == "msp":
                s = F.softmax(z / t, dim=1).amax(1)
            elif method == "max_logit":
                s = z.amax(1)
            else:
                s = t * torch.logsumexp(z / t, dim=1)
            out.append(s)
    finally:
        if was is not None:
            model.train(was)
    return torch.cat(out).double().cpu()


def _odin(model: nn.Module, x: torch.Tensor, t: float, eps: float) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        z = _logits(model, x) / t
        loss = F.cross_entropy(z, z.argmax(1), reduction="sum")  # -log softmax at the predicted class
        (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        return F.softmax(_logits(model, x.detach() - eps * grad.sign()) / t, dim=1).amax(1)


# ------------------------------------------------------------------------------------------------------------
# metrics


def _as_scores(s: Any, name: str) -> np.ndarray:
    if isinstance(s, torch.Tensor):
        s = s.detach().double().cpu().numpy()
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of per-image scores, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf ({int((~np.isfinite(a)).sum())} values); check the model's "
                         "outputs (e.g. energy with an overflowing temperature)")
    return a


def _check_pair(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(scores_in, torch.Tensor) and isinstance(scores_out, torch.Tensor) \
            and scores_in.device != scores_out.device:
        raise ValueError(f"scores_in is on {scores_in.device} but scores_out on {scores_out.device}; move both to "
                         "the same device (e.g. .cpu())")
    return _as_scores(scores_in, "scores_in"), _as_scores(scores_out, "scores_out")


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    grp = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(a))
    ranks[order] = avg[grp]
    return ranks


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """Area under the ROC curve, in-distribution positive (Mann-Whitney U / (n_in n_out), ties count 1/2)."""
    n_in, n_out = len(scores_in), len(scores_out)
    r = _rankdata(np.concatenate([scores_in, scores_out]))
    return float((r[:n_in].sum() - n_in * (n_in + 1) / 2.0) / (n_in * n_out))


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest first."""
    s = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last index of every group of tied scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1.0 - y)[last]
    return tp, fp


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over thresholds (scikit-learn's ``average_precision_score``)."""
    tp, fp = _curve(pos, neg)
    precision = tp / (tp + fp)
    recall = tp / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(scores_in: np.ndarray, scores_out: np.ndarray, tpr: float = 0.95) -> float:
    """FPR on OOD at the largest threshold reaching TPR >= ``tpr`` on in-distribution scores."""
    tp, fp = _curve(scores_in, scores_out)
    k = int(np.argmax(tp / len(scores_in) >= tpr - 1e-12))
    return float(fp[k] / len(scores_out))


def ood_metrics(scores_in: Any, scores_out: Any) -> dict[str, float]:
    """``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr95`` of in-distribution vs OOD scores (higher = more
    in-distribution); 1-d tensors or arrays on the same device, no NaN."""
    a, b = _check_pair(scores_in, scores_out)
    return {
        "auroc": auroc(a, b),
        "aupr_in": average_precision(a, b),
        "aupr_out": average_precision(-b, -a),
        "fpr95": fpr_at_tpr(a, b, 0.95),
    }
