"""Tests for robaug.eval.weather: brightness, fog and spatter against colorsys, the plasma formula and a numpy re-run
of the reference pipeline."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from robaug.eval import _cv_ops as O
from robaug.eval import corruptions as C
from robaug.eval import kernels as K

from ._helpers import _images, _luma, _naive_canny, _naive_chamfer


def test_brightness_grey_is_clipped_shift_and_rgb_matches_colorsys():
    g = _images(1, 28)
    torch.testing.assert_close(C.corrupt(g, "brightness", 5), (g + 0.3).clamp(0, 1), atol=1e-6, rtol=0)
    x = _images(3, 8, n=1)
    out = C.corrupt(x, "brightness", 3)
    ref = torch.empty_like(x)
    for i in range(8):
        for j in range(8):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            ref[0, :, i, j] = torch.tensor(colorsys.hsv_to_rgb(h, s, min(v + 0.15, 1.0)))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fog_plasma_and_formula():
    p = K.plasma_fractal(3, 32, 2.0, torch.zeros(1), torch.Generator().manual_seed(0))
    assert p.shape == (3, 32, 32)
    assert torch.allclose(p.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(p.flatten(1).max(1).values, torch.ones(3))
    assert not torch.equal(p[0], p[1])
    # fog = clip((x + c p[:H, :W]) * max(x) / (max(x) + c)), plasma on the next power of two (32 for 28x28)
    x = _images(1, 28)
    out = C.corrupt(x, "fog", 5, seed=0)  # c = 1.5, wibble decay 1.75
    p = K.plasma_fractal(len(x), 32, 1.75, x, torch.Generator().manual_seed(0))[:, None, :28, :28]
    m = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, ((x + 1.5 * p) * m / (m + 1.5)).clamp(0, 1))


@pytest.mark.parametrize("severity,seed", [(1, 7), (3, 1)])
def test_spatter_water_matches_a_reference_pipeline(severity, seed):
    # make_cifar_c.py's water branch re-run in numpy on the same liquid layer, with the naive Canny / Dijkstra
    # distance above: liquid_u8 = (liquid * 255).astype(np.uint8) (wraps above 1), dist = blur(min(distance to
    # edges, 20)) -> uint8 -> equalizeHist -> emboss -> uint8 -> blur, m = liquid_u8 * dist / max * amount,
    # out = clip(x + m * (175, 238, 238) / 255)
    mean, std, sigma, thresh, amount, _ = C.CORRUPTION_PARAMS["spatter"][severity - 1]
    x = _images(3, 24, n=3)
    out = C.corrupt(x, "spatter", severity, seed=seed)
    g = torch.Generator().manual_seed(seed)
    liquid = K.gaussian_filter(mean + std * torch.randn(3, 1, 24, 24, generator=g), sigma, 4.0, "nearest")
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    if severity == 3:
        assert liquid.max() > 1  # exercises the uint8 wrap-around
    l8 = (liquid[:, 0].double().numpy() * 255).astype(np.int64) % 256

    def box3(a):
        p = np.pad(a, 1, mode="reflect")  # OpenCV's default border, reflect-101
        return sum(p[i: i + a.shape[0], j: j + a.shape[1]] for i in range(3) for j in range(3)) / 9

    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
    water = np.array([175, 238, 238]) / 255
    for k in range(3):
        edges = _naive_canny(l8[k], 50, 150)
        dist = np.floor(box3(np.minimum(_naive_chamfer(edges), 20.0)))
        dist = O.equalize_hist(torch.from_numpy(dist).view(1, 1, 24, 24))[0, 0].double().numpy()
        p = np.pad(dist, 1, mode="reflect")
        emb = sum(ker[i, j] * p[i: i + 24, j: j + 24] for i in range(3) for j in range(3))
        dist = np.round(box3(np.clip(np.round(emb), 0, 255)))
        m = l8[k] * dist
        m = m / m.max() * amount
        ref = np.clip(x[k].double().numpy() + m[None] * water[:, None, None], 0, 1)
        np.testing.assert_allclose(out[k].double().numpy(), ref, atol=1e-5)
    assert (out >= x - 1e-6).all()  # water only adds light


def test_spatter_mud_is_the_formula():
    x = _images(3, 32, n=4)
    out = C.corrupt(x, "spatter", 5, seed=2)  # (0.65, 0.1, 0.5, 0.68, 0.6, mud)
    g = torch.Generator().manual_seed(2)
    liquid = K.gaussian_filter(0.65 + 0.1 * torch.randn(4, 1, 32, 32, generator=g), 0.5, 4.0, "nearest")
    liquid = torch.where(liquid < 0.68, torch.zeros_like(liquid), liquid)
    m = K.gaussian_filter((liquid > 0.68).float(), 0.6, 4.0, "nearest")
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    brown = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    torch.testing.assert_close(out, (x * (1 - m) + brown * m).clamp(0, 1), atol=1e-6, rtol=0)
    assert (m > 0).any()
    # greyscale: the RGB result converted with luma
    grey = _images(1, 32, n=4)
    torch.testing.assert_close(C.corrupt(grey, "spatter", 5, seed=2),
                               _luma((grey * (1 - m) + brown * m).clamp(0, 1)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_spatter_strength_rises_within_water_and_within_mud(channels, size):
    x = _images(channels, size, n=16, seed=3)
    dist = [float((C.corrupt(x, "spatter", s, seed=0) - x).abs().mean()) for s in range(1, 6)]
    assert dist[0] < dist[1] < dist[2], dist  # water
    assert dist[3] < dist[4], dist  # mud
