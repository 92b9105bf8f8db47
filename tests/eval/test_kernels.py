"""Tests for robaug.eval.kernels: padding, motion blur and zoom against numpy / naive loops, and every kornia
replacement against robaug's own kernel within the stated tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robaug.eval import kernels as K

from ._helpers import _images


def test_padding_modes_match_numpy():
    a = torch.arange(5.0).view(1, 1, 1, 5)
    for mode, np_mode in (("nearest", "edge"), ("reflect", "symmetric"), ("mirror", "reflect")):
        ref = np.pad(np.arange(5.0), 3, mode=np_mode)
        assert K.pad(a, 0, 3, mode)[0, 0, 0].tolist() == ref.tolist(), mode
    # pads longer than the axis keep reflecting
    ref = np.pad(np.arange(3.0), 7, mode="symmetric")
    assert K.pad(torch.arange(3.0).view(1, 1, 1, 3), 0, 7, "reflect")[0, 0, 0].tolist() == ref.tolist()


def test_motion_blur_matches_naive_loop():
    x = _images(3, 12, n=2)
    radius, sigma = 6, 2
    angles = torch.tensor([30.0, -40.0])
    out = K.motion_blur_batch(x, radius, sigma, angles)
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    k /= k.sum()
    ref = np.zeros_like(x.numpy())
    for b, a in enumerate(angles.tolist()):
        for i in range(width):
            ox = math.ceil(i * math.cos(math.radians(a)) - 0.5)
            oy = math.ceil(i * math.sin(math.radians(a)) - 0.5)
            for yy in range(12):
                for xx in range(12):
                    ref[b, :, yy, xx] += k[i] * x[b, :, min(max(yy + oy, 0), 11), min(max(xx + ox, 0), 11)].numpy()
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("zoom", [1.0, 1.06, 1.13, 1.25, 2.25])
def test_clipped_zoom_matches_crop_and_corner_aligned_resize(zoom):
    # scipy.ndimage.zoom(order=1) uses a corner-aligned grid, i.e. bilinear with align_corners=True
    x = _images(3, 28, n=2)
    h = 28
    ch = math.ceil(h / zoom)
    top = (h - ch) // 2
    out_size = round(ch * zoom)
    crop = x[..., top: top + ch, top: top + ch]
    z = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=True)
    trim = (out_size - h) // 2
    ref = z[..., trim: trim + h, trim: trim + h]
    torch.testing.assert_close(K.clipped_zoom(x, zoom), ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- kornia replacements (tolerances)


@pytest.mark.parametrize("sigma,truncate", [(0.05, 4.0), (0.35, 4.0), (0.7, 4.0), (1.0, 3.0), (2.5, 4.0), (6.4, 3.0)])
def test_gaussian_kernel_from_kornia_is_the_hand_written_scipy_kernel(sigma, truncate):
    # tolerance 0: kornia's get_gaussian_kernel1d in float64, normalised and cast to float32, is bit-identical to
    # the kernel robaug wrote by hand before, exp(-(t / sigma)^2 / 2) / sum over t = -r..r,
    # r = int(truncate sigma + 0.5)
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    old = torch.exp(-0.5 * (t / sigma) ** 2)
    old = (old / old.sum()).float()
    assert torch.equal(K.gaussian_kernel1d(sigma, truncate, torch.device("cpu")), old)
    # and it is scipy.ndimage's kernel (the response to a unit impulse), to float32 precision
    from scipy import ndimage

    impulse = np.zeros(2 * r + 1)
    impulse[r] = 1.0
    ref = ndimage.gaussian_filter1d(impulse, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(old.double().numpy(), ref, atol=1e-7, rtol=0)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
def test_gaussian_filter_matches_scipy(mode):
    # tolerance 1e-6 (float32 convolution against scipy's float64); sigma 3 on 8x8 pads wider than the image
    from scipy import ndimage

    x = torch.rand(2, 1, 8, 11, generator=torch.Generator().manual_seed(0))
    for sigma in (0.6, 3.0):
        out = K.gaussian_filter(x, sigma, 4.0, mode)
        ref = ndimage.gaussian_filter(x.double().numpy(), (0, 0, sigma, sigma), truncate=4.0, mode=mode)
        np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-6, rtol=0)


def test_luma_from_kornia_matches_the_weighted_sum():
    # tolerance 2.4e-7 (two float32 ulps at 1): kornia's rgb_to_grayscale with the ITU-R 601 weights against the
    # hand-written (x * w).sum(1) it replaced (the two add the products in a different order)
    x = torch.rand(16, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    ref = (x * torch.tensor(K.LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(K.to_gray(x), ref, atol=2.4e-7, rtol=0)
    grey = x[:, :1]
    assert K.to_gray(grey) is grey


def test_hsv_is_kept_because_kornia_differs_on_dark_pixels():
    # the reason robaug keeps its own HSV: scikit-image's rgb2hsv (robaug's) is exact on very dark pixels,
    # kornia's adds an eps to the denominators
    import colorsys

    import kornia

    x = torch.tensor([2e-5, 1e-5, 1.5e-5]).view(1, 3, 1, 1)
    ref = colorsys.rgb_to_hsv(*x.flatten().tolist())
    ours = K.rgb_to_hsv(x).flatten().tolist()
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    theirs = kornia.color.rgb_to_hsv(x).flatten()
    assert abs(float(theirs[1]) - ref[1]) > 1e-4
