"""Tests for robaug.eval.metrics: mean corruption error, mCE and relative mCE against hand-computed values, and the
AlexNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from robaug.eval import metrics as M


def test_mean_corruption_error_by_hand():
    errors = {"a": {1: 0.2, 2: 0.4}, "b": {1: 0.1, 2: 0.3}}
    assert M.mean_corruption_error(errors) == pytest.approx((0.3 + 0.2) / 2)
    assert M.mean_corruption_error({"a": 0.3, "b": 0.2}) == pytest.approx(0.25)


def test_mce_and_relative_mce_by_hand():
    errors = {"a": {1: 0.2, 2: 0.4}, "b": {1: 0.1, 2: 0.3}}  # CE_a = 0.3, CE_b = 0.2
    baseline = {"a": 0.6, "b": 0.5}
    # CE_a = 0.3 / 0.6 = 0.5, CE_b = 0.2 / 0.5 = 0.4
    assert M.mce(errors, baseline) == pytest.approx(0.45)
    # rCE_a = (0.3 - 0.1) / (0.6 - 0.2) = 0.5, rCE_b = (0.2 - 0.1) / (0.5 - 0.2) = 1/3
    assert M.relative_mce(errors, 0.1, baseline, 0.2) == pytest.approx((0.5 + 1 / 3) / 2)
    # sums over severities, not means of ratios: baseline given per severity
    base_sev = {"a": {1: 0.5, 2: 0.7}, "b": {1: 0.2, 2: 0.8}}
    assert M.mce(errors, base_sev) == pytest.approx((0.6 / 1.2 + 0.4 / 1.0) / 2)


def test_alexnet_table_and_normalisation():
    assert len(M.ALEXNET_ERRORS) == 15
    assert M.ALEXNET_ERRORS["gaussian_noise"] == pytest.approx(0.886428)
    assert M.ALEXNET_ERRORS["jpeg_compression"] == pytest.approx(0.6065)
    # AlexNet itself has mCE = relative mCE = 100%
    alex = {c: {s: e for s in range(1, 6)} for c, e in M.ALEXNET_ERRORS.items()}
    r = M.CorruptionResults(alex, clean_error=M.ALEXNET_CLEAN_ERROR).with_baseline("alexnet")
    assert r.mce == pytest.approx(1.0) and r.relative_mce == pytest.approx(1.0)
    # a model with half of AlexNet's error everywhere and clean error 0.2
    half = {c: {s: e / 2 for s in range(1, 6)} for c, e in M.ALEXNET_ERRORS.items()}
    r = M.CorruptionResults(half, clean_error=0.2).with_baseline("alexnet")
    assert r.mce == pytest.approx(0.5)
    expected_rel = np.mean([(e / 2 - 0.2) / (e - M.ALEXNET_CLEAN_ERROR) for e in M.ALEXNET_ERRORS.values()])
    assert r.relative_mce == pytest.approx(expected_rel)


def test_alexnet_needs_all_severities():
    r = M.CorruptionResults({"fog": {5: 0.5}})
    with pytest.raises(ValueError, match="severities 1..5"):
        r.with_baseline("alexnet")
