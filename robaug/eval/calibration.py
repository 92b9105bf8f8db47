"""Calibration of a classifier's probabilities: ECE, RMS calibration error, NLL, Brier score, reliability diagram.

With confidence ``c_i = max_k p_ik``, prediction ``argmax_k p_ik`` and correctness ``a_i``:

- ``ece`` (Guo et al., ICML 2017): ``sum_b |B_b| / N * |mean_{B_b} a - mean_{B_b} c|`` over ``n_bins``
  equal-width confidence bins ``((b-1)/M, b/M]``;
- ``rms`` (Hendrycks et al.; the number AugMix and IPMix report): sort by confidence, bins of 100 consecutive
  samples (the last one also takes the remainder), ``sqrt(sum_b |B_b| / N (mean a - mean c)^2)``. The reference
  code (``calib_err`` in hendrycks/outlier-exposure and google-research/augmix) loops over all bins *but the last*
  (``for i in range(len(bins) - 1)``) while dividing by all N samples, i.e. it leaves out the 100-199 most
  confident samples. ``rms`` reproduces that, so numbers compare with the papers; ``rms_all_bins`` includes the
  last bin. Both give 0 below 200 samples for the reference (no bin left) and ``rms_all_bins`` is the one-bin
  value there. Samples with tied confidences are ordered stably (the reference's ``np.argsort`` is not stable,
  which can move tied samples between bins);
- ``nll``: ``-mean log p_{i, y_i}``; ``brier``: ``mean_i sum_k (p_ik - [k = y_i])^2`` (the multi-class Brier
  score, in [0, 2]).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

__all__ = ["calibration_metrics", "reliability_bins", "rms_calibration_error", "reliability_diagram"]


def _inputs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(probs, torch.Tensor) and isinstance(labels, torch.Tensor) and probs.device != labels.device:
        raise ValueError(f"probs are on {probs.device} but labels on {labels.device}; move both to one device")
    p = probs.detach().double().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N, num_classes >= 2), got shape {p.shape}")
    y = y.reshape(-1)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"got {p.shape[0]} probability rows but {y.shape[0]} labels")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or inf")
    if (p < -1e-6).any() or (p > 1 + 1e-6).any() or np.abs(p.sum(1) - 1).max() > 1e-3:
        raise ValueError("probs must be probabilities (rows in [0, 1] summing to 1); pass softmax(logits, dim=1), "
                         "not logits")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError(f"labels must be integers in [0, {p.shape[1]})")
    return np.clip(p, 0.0, 1.0), y.astype(np.int64)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin ``((b-1)/M, b/M]``: ``count``, mean ``confidence``, ``accuracy`` (NaN
    where empty) and the bin ``edges``."""
    p, y = _inputs(probs, labels)
    return _bins(p.max(1), (p.argmax(1) == y).astype(np.float64), n_bins)


def _bins(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)  # (lo, hi]; conf 0 -> bin 0
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=n_bins) / count
        acc = np.bincount(idx, correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def rms_calibration_error(conf: np.ndarray, correct: np.ndarray, bin_size: int = 100,
                          reference_last_bin: bool = True) -> float:
    """RMS calibration error over bins of ``bin_size`` samples sorted by confidence (see the module docstring
    for ``reference_last_bin``)."""
    n = len(conf)
    order = np.argsort(conf, kind="stable")
    c, a = conf[order], correct[order]
    nb = n // int(bin_size)
    if nb == 0:
        starts = np.array([0])
        ends = np.array([n])
    else:
        starts = np.arange(nb) * int(bin_size)
        ends = np.r_[starts[1:], n]
    if reference_last_bin:
        starts, ends = starts[:-1], ends[:-1]
        if nb == 0:
            return 0.0
    total = 0.0
    for s, e in zip(starts, ends):  # a loop over bins
        total += (e - s) / n * (c[s:e].mean() - a[s:e].mean()) ** 2
    return float(np.sqrt(total))


def calibration_metrics(probs: Any, labels: Any, n_bins: int = 15, *, rms_bin_size: int = 100) -> dict[str, float]:
    """``ece``, ``rms`` (reference last-bin handling), ``rms_all_bins``, ``nll``, ``brier``, plus ``accuracy``
    and mean ``confidence``, of class probabilities ``(N, K)`` against integer labels ``(N,)``."""
    p, y = _inputs(probs, labels)
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    b = _bins(conf, correct, n_bins)
    filled = b["count"] > 0
    ece = float(np.sum(b["count"][filled] / len(y) * np.abs(b["accuracy"][filled] - b["confidence"][filled])))
    p_true = p[np.arange(len(y)), y]
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return {
        "ece": ece,
        "rms": rms_calibration_error(conf, correct, rms_bin_size, True),
        "rms_all_bins": rms_calibration_error(conf, correct, rms_bin_size, False),
        "nll": float(-np.mean(np.log(np.maximum(p_true, 1e-12)))),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "accuracy": float(correct.mean()),
        "confidence": float(conf.mean()),
    }


def reliability_diagram(probs: Any, labels: Any, path: str | os.PathLike, *, n_bins: int = 15,
                        title: str | None = None, bins: dict[str, Any] | None = None) -> str:
    """Write a reliability diagram PNG (accuracy per confidence bin against the diagonal, with ECE); matplotlib
    when installed (``pip install robaug[recipes]``), otherwise a plain PIL drawing. ``bins`` (from
    :func:`reliability_bins`) replaces ``probs``/``labels``. Returns the path."""
    if bins is None:
        bins = reliability_bins(probs, labels, n_bins)
    edges = np.asarray(bins["edges"], dtype=np.float64)
    count = np.asarray(bins["count"], dtype=np.float64)
    acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=np.float64))
    conf = np.asarray(bins["confidence"], dtype=np.float64)
    filled = count > 0
    ece = float(np.sum(count[filled] / max(count.sum(), 1) * np.abs(acc[filled] - conf[filled])))
    label = f"{title + ': ' if title else ''}ECE {100 * ece:.2f}%"
    from .report_figures import save_png

    def draw_mpl(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
        w = np.diff(edges)
        ax.bar(edges[:-1], acc, width=w, align="edge", edgecolor="k", color="tab:blue", label="accuracy")
        gap = np.where(filled, np.abs(conf - acc), 0.0)
        ax.bar(edges[:-1], gap, bottom=np.minimum(acc, np.nan_to_num(conf)), width=w, align="edge", color="tab:red",
               alpha=0.3, label="|confidence - accuracy|")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=label)
        ax.legend(loc="upper left")
        return fig

    def draw_pil(img: Any, draw: Any, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        for lo, hi, a, n in zip(edges[:-1], edges[1:], acc, count):
            if n > 0:
                draw.rectangle([x0 + lo * (x1 - x0), y1 - a * (y1 - y0), x0 + hi * (x1 - x0), y1],
                               fill=(70, 120, 200), outline=(0, 0, 0))
        draw.line([x0, y1, x1, y0], fill=(0, 0, 0))
        draw.text((x0, 4), label, fill=(0, 0, 0))

    return save_png(path, draw_mpl, draw_pil)
