"""Tests for robaug.eval.blur: the blur corruptions against torchvision, direct convolutions and the reference loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from robaug.eval import blur
from robaug.eval import corruptions as C

from ._helpers import _images


def test_gaussian_blur_matches_torchvision_inside_the_border():
    x = _images(3, 32)
    for severity, sigma in enumerate((0.4, 0.6, 0.7, 0.8, 1.0), start=1):
        out = C.corrupt(x, "gaussian_blur", severity)
        radius = int(4 * sigma + 0.5)  # scikit-image / scipy kernel radius
        ref = TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
        r = radius
        torch.testing.assert_close(out[..., r:-r, r:-r], ref[..., r:-r, r:-r], atol=1e-5, rtol=0)


def test_gaussian_blur_scales_with_image_size():
    # at 64x64 the pixel sigma doubles: blurring a 2x upsampled image ~ upsampling the blurred image
    x = _images(1, 32)
    big = F.interpolate(x, scale_factor=2, mode="nearest")
    out_big = C.corrupt(big, "gaussian_blur", 5)
    assert (out_big - big).abs().mean() > (C.corrupt(x, "gaussian_blur", 5) - x).abs().mean() * 0.5
    small = C.corrupt(x, "gaussian_blur", 5)
    torch.testing.assert_close(F.avg_pool2d(out_big, 2), small, atol=0.05, rtol=0)


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    # the reference's disk(): 17x17 grid for radius <= 8, normalised, then a 3x3 Gaussian with OpenCV's
    # default reflect-101 border (numpy "reflect")
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    d = ((X**2 + Y**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur**2))
    g /= g.sum()
    p = np.pad(d, 1, mode="reflect")
    rows = sum(g[i] * p[i: i + 17, :] for i in range(3))
    return sum(g[j] * rows[:, j: j + 17] for j in range(3))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_defocus_blur_matches_direct_convolution(severity):
    radius, alias = C.CORRUPTION_PARAMS["defocus_blur"][severity - 1]
    k = _reference_disk(radius, alias)
    x = _images(1, 32, n=1)
    out = C.corrupt(x, "defocus_blur", severity)
    xp = np.pad(x[0, 0].double().numpy(), 8, mode="reflect")  # cv2.filter2D default border
    ref = np.zeros((32, 32))
    for i in range(17):
        for j in range(17):
            ref += k[i, j] * xp[i: i + 32, j: j + 32]
    np.testing.assert_allclose(out[0, 0].numpy(), np.clip(ref, 0, 1), atol=1e-5)


def test_zoom_blur_uses_the_reference_factor_lists():
    # np.arange(1, 1.06, 0.01) has 7 entries (a float artefact of the reference), the others 11..25 + 1
    assert [len(blur.zoom_factors(C.CORRUPTION_PARAMS["zoom_blur"][s - 1])) for s in range(1, 6)] == [7, 12, 16, 21, 26]


@pytest.mark.parametrize("iterations", [1, 2])
def test_glass_shuffle_matches_the_reference_loop(iterations):
    # The reference statement, run literally on an (H, W, 3) numpy array with the same random offsets:
    # on numpy row views the tuple "swap" copies the neighbour into x[h, w].
    x = _images(3, 12, n=2)
    g = torch.Generator().manual_seed(4)
    out = blur.glass_shuffle(x.clone(), 1, iterations, g)
    offs = torch.randint(-1, 1, (iterations, 10, 10, 2, 2), generator=torch.Generator().manual_seed(4))
    for b in range(2):
        ref = x[b].permute(1, 2, 0).numpy().copy()
        for it in range(iterations):
            for ih, h in enumerate(range(12 - 1, 1, -1)):
                for iw, w in enumerate(range(12 - 1, 1, -1)):
                    dx, dy = offs[it, ih, iw, :, b].tolist()
                    h_prime, w_prime = h + dy, w + dx
                    ref[h, w], ref[h_prime, w_prime] = ref[h_prime, w_prime], ref[h, w]
        np.testing.assert_array_equal(out[b].permute(1, 2, 0).numpy(), ref)
    # the parallel gather equals the sequential scan
    seq = blur.glass_shuffle(x.clone(), 1, iterations, torch.Generator().manual_seed(4), sequential=True)
    torch.testing.assert_close(out, seq, rtol=0, atol=0)


def test_glass_shuffle_large_delta_runs_sequentially():
    x = _images(1, 10, n=2)
    out = blur.glass_shuffle(x.clone(), 2, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    # every output value is some input value of the same image
    for b in range(2):
        assert torch.isin(out[b], x[b]).all()
