"""Tests for robaug.eval.kernels: padding, motion blur and zoom against numpy / naive loops, and every kornia replacement
against robaug's own kernel within the stated tolerance."""

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
