"""Calibration metrics against direct re-computations (ECE of Guo et al.; the RMS error of Hendrycks et al.'s
``calib_err`` re-computed here as written, last bin left out)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robaug.eval.calibration import calibration_metrics, reliability_bins, reliability_diagram


def _probs(n: int, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.where(rng.random(n) < 0.7, p.argmax(1), rng.integers(0, k, n))
    return p, y


def _ece_direct(p, y, m):
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(m):
        lo, hi = b / m, (b + 1) / m
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    return total


def _calib_err_reference(confidence, correct, beta=100):
    # Hendrycks et al.'s calib_err (p='2') as published, with a stable sort
    idxs = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[idxs], correct[idxs]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    cerr, total = 0.0, len(confidence)
    for i in range(len(bins) - 1):
        c, a = confidence[bins[i][0]:bins[i][1]], correct[bins[i][0]:bins[i][1]]
        cerr += len(c) / total * (np.nanmean(c) - np.nanmean(a)) ** 2
    return np.sqrt(cerr)


@pytest.mark.parametrize("n", [250, 1000, 1234])
def test_metrics_equal_direct_computation(n: int) -> None:
    p, y = _probs(n, seed=n)
    m = calibration_metrics(torch.from_numpy(p), torch.from_numpy(y), n_bins=15)
    assert m["ece"] == pytest.approx(_ece_direct(p, y, 15), abs=1e-12)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    assert m["rms"] == pytest.approx(_calib_err_reference(conf, correct), abs=1e-12)
    # all bins: the last (most confident, 100 + remainder samples) bin included
    order = np.argsort(conf, kind="stable")
    c, a = conf[order], correct[order]
    edges = list(range(0, (n // 100) * 100, 100)) + [n]
    full = sum((e - s) / n * (c[s:e].mean() - a[s:e].mean()) ** 2 for s, e in zip(edges[:-1], edges[1:]))
    assert m["rms_all_bins"] == pytest.approx(np.sqrt(full), abs=1e-12)
    assert m["nll"] == pytest.approx(-np.mean(np.log(p[np.arange(n), y])), rel=1e-12)
    onehot = np.eye(10)[y]
    assert m["brier"] == pytest.approx(np.mean(((p - onehot) ** 2).sum(1)), rel=1e-12)
    assert m["accuracy"] == pytest.approx(correct.mean())


def test_perfectly_calibrated_and_bin_edges() -> None:
    # confidence exactly on a bin edge belongs to the bin below: (lo, hi]
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.8, 0.2]])
    b = reliability_bins(p, np.array([0, 1, 0]), n_bins=5)
    assert b["count"].tolist() == [0, 0, 2, 1, 0]
    assert np.isclose(b["accuracy"][2], 0.5) and np.isclose(b["confidence"][3], 0.8)


def test_errors() -> None:
    p, y = _probs(20)
    with pytest.raises(ValueError, match="softmax"):
        calibration_metrics(np.log(p), y)
    with pytest.raises(ValueError, match="labels"):
        calibration_metrics(p, y[:5])
    with pytest.raises(ValueError, match="NaN"):
        calibration_metrics(np.full_like(p, np.nan), y)


def test_reliability_diagram_png(tmp_path) -> None:
    from PIL import Image

    p, y = _probs(500)
    out = reliability_diagram(p, y, tmp_path / "rel.png", title="test")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 100
