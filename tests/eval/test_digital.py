"""Tests for robaug.eval.digital: contrast, saturation, pixelate, JPEG and the elastic transform against
colorsys / PIL."""

from __future__ import annotations

import colorsys
import io

import PIL.Image
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from robaug.eval import corruptions as C

from ._helpers import _images


def test_contrast_formula():
    x = _images(3, 32)
    means = x.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(C.corrupt(x, "contrast", 5), ((x - means) * 0.15 + means).clamp(0, 1))


def test_saturate_matches_colorsys():
    x = _images(3, 8, n=1)
    out = C.corrupt(x, "saturate", 5)  # s * 2.5 + 0.2
    ref = torch.empty_like(x)
    for i in range(8):
        for j in range(8):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            ref[0, :, i, j] = torch.tensor(colorsys.hsv_to_rgb(h, min(s * 2.5 + 0.2, 1.0), v))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_pil_box(severity):
    x = (_images(3, 32) * 255).round().to(torch.uint8)
    out = C.corrupt(x, "pixelate", severity)
    c = C.CORRUPTION_PARAMS["pixelate"][severity - 1]
    for i in range(len(x)):
        pil = TF.to_pil_image(x[i])
        ref = pil.resize((int(32 * c),) * 2, PIL.Image.BOX).resize((32, 32), PIL.Image.BOX)
        ref = TF.pil_to_tensor(ref)
        # PIL rounds to uint8 between its passes: at most 1 level apart
        assert (out[i].int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pil(severity):
    x = (_images(3, 32) * 255).round().to(torch.uint8)
    out = C.corrupt(x, "jpeg_compression", severity)
    q = C.CORRUPTION_PARAMS["jpeg_compression"][severity - 1]
    for i in range(len(x)):
        buf = io.BytesIO()
        TF.to_pil_image(x[i]).save(buf, "JPEG", quality=q)
        ref = TF.pil_to_tensor(PIL.Image.open(buf))
        assert torch.equal(out[i], ref)  # PIL's libjpeg, same quality


def test_elastic_severity1_is_a_pure_affine_warp():
    # severity 1 has alpha = 0: only the random affine; a constant image stays constant
    x = torch.full((2, 3, 32, 32), 0.4)
    torch.testing.assert_close(C.corrupt(x, "elastic_transform", 1, seed=0), x)
    torch.testing.assert_close(C.corrupt(x, "elastic_transform", 5, seed=0), x)
