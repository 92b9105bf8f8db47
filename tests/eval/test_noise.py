"""Tests for robaug.eval.noise: the noise corruptions against their formulas and statistics."""

from __future__ import annotations

import torch

from robaug.eval import corruptions as C

from ._helpers import _images


def test_gaussian_noise_formula():
    x = _images(3, 32)
    out = C.corrupt(x, "gaussian_noise", 4, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = (x + 0.09 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(out, ref)


def test_speckle_noise_formula():
    x = _images(3, 32)
    out = C.corrupt(x, "speckle_noise", 5, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = (x + x * 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(out, ref)


def test_shot_noise_statistics():
    # Poisson(x c) / c: mean x and variance x / c (c = 50 at severity 5); away from the clip at 1.
    x = torch.full((64, 1, 32, 32), 0.3)
    out = C.corrupt(x, "shot_noise", 5, seed=0)
    assert abs(out.mean().item() - 0.3) < 0.005
    assert abs(out.var().item() - 0.3 / 50) < 0.0006
    assert torch.allclose(out * 50, (out * 50).round(), atol=1e-4)  # values are multiples of 1 / c


def test_impulse_noise_statistics():
    x = torch.full((64, 3, 32, 32), 0.5)
    out = C.corrupt(x, "impulse_noise", 5, seed=0)  # amount 0.07, salt vs pepper 0.5
    changed = out != 0.5
    assert abs(changed.float().mean().item() - 0.07) < 0.005
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}
    assert abs((out[changed] == 1).float().mean().item() - 0.5) < 0.03
