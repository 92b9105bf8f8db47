"""Tests for robaug.eval._cv_ops: the OpenCV operations against values computed by OpenCV and naive loop
implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robaug.eval import _cv_ops as O
from robaug.eval import kernels as K

from ._helpers import _images, _naive_canny, _naive_chamfer

# A 16x16 uint8 test image: two "drops" and a horizontal ramp (Sobel 104 < 150: weak edges only reached by
# hysteresis). The expected values were computed with OpenCV 5.0 (opencv-python-headless, cv2.ipp.setUseIPP(False);
# OpenCV's IPP build computes the distances slightly differently, by up to 1e-4):
# cv2.Canny(img, 50, 150), cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5), cv2.equalizeHist(img).
_CV_IMG = [
    [0] * 16, [0, 0, 230] + [0] * 13, [0, 230, 230, 230, 0, 0, 0, 0, 180, 178, 176, 0, 0, 0, 0, 0],
    [230, 230, 230, 230, 230, 0, 187, 185, 183, 181, 179, 177, 175, 0, 0, 0],
    [0, 230, 230, 230, 0, 0, 190, 188, 186, 184, 182, 180, 178, 0, 0, 0],
    [0, 0, 230, 0, 0, 195, 193, 191, 189, 187, 185, 183, 181, 179, 0, 0],
    [0, 0, 0, 0, 0, 198, 196, 194, 192, 190, 188, 186, 184, 182, 0, 0],
    [0, 0, 0, 0, 0, 201, 199, 197, 195, 193, 191, 189, 187, 185, 0, 0],
    [0, 0, 0, 0, 0, 0, 202, 200, 198, 196, 194, 192, 190, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 205, 203, 201, 199, 197, 195, 193, 0, 0, 0],
    [0] * 8 + [204, 202, 200] + [0] * 5, [0] * 16,
] + [[13 * j for j in range(16)]] * 4


_CV_CANNY = [
    "0000000000000000", "0111000000000000", "1101110111110000", "1000101000001000", "1101001000000100",
    "0111010000000100", "0000010000000100", "0000010000000100", "0000010000000100", "0000001000001000",
    "0000000111110000", "0000000000000000", "0111111111111111", "0100000000000000", "0100000000000000",
    "0100000000000000",
]


_CV_DIST_ROW5 = [65536, 0, 0, 0, 65536, 0, 65536, 91750, 143976, 196608, 183500, 131072, 65536, 0, 65536, 131072]


_CV_DIST_SUM = 21545174  # sum of distance * 65536


_CV_EQ_ROW5 = [0, 0, 255, 0, 0, 198, 181, 171, 162, 154, 145, 135, 120, 112, 0, 0]


_CV_EQ_ROW12 = [0, 8, 15, 23, 30, 38, 46, 53, 61, 69, 76, 84, 91, 99, 131, 198]


def test_opencv_ops_match_opencv_values():
    img = torch.tensor(_CV_IMG, dtype=torch.float32).view(1, 1, 16, 16)
    edges = O.canny(img, 50, 150)[0, 0]
    assert ["".join("1" if v else "0" for v in row) for row in edges.tolist()] == _CV_CANNY
    dist = O.chamfer_distance(edges.view(1, 1, 16, 16), 1000.0)[0, 0].double() * 65536
    assert dist[5].round().long().tolist() == _CV_DIST_ROW5
    assert int(dist.sum().round()) == _CV_DIST_SUM
    eq = O.equalize_hist(img)[0, 0]
    assert eq[5].long().tolist() == _CV_EQ_ROW5 and eq[12].long().tolist() == _CV_EQ_ROW12


def _liquid_u8(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    liquid = K.gaussian_filter(0.65 + 0.3 * torch.randn(n, 1, size, size, generator=g), 1.0, 4.0, "nearest")
    return torch.where(liquid < 0.69, 0.0, torch.floor(liquid * 255).remainder(256))


def test_canny_and_chamfer_match_naive_references():
    imgs = torch.cat([_liquid_u8(6, 20, 0), (_images(1, 20, n=2) * 255).round()])
    edges = O.canny(imgs, 50, 150)
    assert edges.any()
    for e, img in zip(edges[:, 0].numpy(), imgs[:, 0].numpy()):
        np.testing.assert_array_equal(e, _naive_canny(img, 50, 150))
        d = O.chamfer_distance(torch.from_numpy(e).view(1, 1, 20, 20), 20.0)[0, 0].double().numpy()
        np.testing.assert_allclose(d, np.minimum(_naive_chamfer(e), 20.0), atol=1e-6)
    # no source at all: the truncation value everywhere (OpenCV: "infinite", then truncated)
    none = O.chamfer_distance(torch.zeros(1, 1, 8, 8, dtype=torch.bool), 20.0)
    assert torch.equal(none, torch.full_like(none, 20.0))


def test_equalize_hist_matches_the_opencv_formula():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(30, 200, (3, 1, 12, 12), generator=g).float()
    imgs[2] = 77.0  # constant image: unchanged
    out = O.equalize_hist(imgs)
    for img, o in zip(imgs[:2, 0].long().numpy(), out[:2, 0].numpy()):
        hist = np.bincount(img.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        i0 = img.min()
        lut = np.round((cdf - cdf[i0]) * np.float32(255.0 / (img.size - hist[i0])))
        np.testing.assert_array_equal(o, lut[img])
    assert torch.equal(out[2], imgs[2])


@pytest.mark.parametrize("factor", [0.5, 2.0, 0.3])
def test_linear_resize_matrix_matches_half_pixel_bilinear(factor):
    # cv2.resize(INTER_LINEAR, fx) = half-pixel-centre bilinear without anti-aliasing, edges clamped:
    # torch's bilinear interpolate with align_corners=False and the same scale factor
    x = torch.rand(1, 1, 20, 30)
    ah, aw = O.linear_resize_matrix(20, factor), O.linear_resize_matrix(30, factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    assert ah.shape == (round(20 * factor), 20)
    torch.testing.assert_close(ah @ x[0, 0] @ aw.T, ref[0, 0], atol=1e-5, rtol=0)
