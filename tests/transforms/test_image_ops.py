"""Every batched per-sample op against torchvision's functional op (or PIL) on the same image and parameter."""

from __future__ import annotations

import math

import PIL.ImageOps
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from robaug.transforms import image_ops as O

BILINEAR = InterpolationMode.BILINEAR


@pytest.fixture(params=[(3, 13, 17), (1, 16, 16)], ids=["rgb-nonsquare", "gray-square"])
def images(request):
    c, h, w = request.param
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (4, c, h, w), dtype=torch.uint8, generator=g)
    return x8, x8.float() / 255


def _per_image(fn, x, params):
    return torch.stack([fn(x[i], params[i]) for i in range(x.shape[0])])


def test_rotate(images):
    _, x = images
    angle = torch.tensor([10.0, -25.0, 3.0, 0.0])
    ref = _per_image(lambda im, a: TF.rotate(im, float(a), interpolation=BILINEAR), x, angle)
    torch.testing.assert_close(O.rotate(x, angle), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_shear_matches_torchvision_augmix_shear(images, axis):
    _, x = images
    f = torch.tensor([0.1, -0.3, 0.05, 0.2])

    def ref_one(im, v):  # torchvision's AugMix/AutoAugment ShearX/ShearY
        deg = math.degrees(math.atan(float(v)))
        shear = [deg, 0.0] if axis == "x" else [0.0, deg]
        return TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=BILINEAR, center=[0, 0])

    op = O.shear_x if axis == "x" else O.shear_y
    torch.testing.assert_close(op(x, f), _per_image(ref_one, x, f), atol=1e-5, rtol=0)


@pytest.mark.parametrize("f", [0.1, -0.25, 0.3])
def test_shear_is_the_official_pil_transform_away_from_the_border(f):
    # The official code shears with PIL's AFFINE (1, f, 0, 0, 1, 0) / (1, 0, 0, f, 1, 0), bilinear. PIL treats
    # samples that straddle the image border differently (about one row/column); everything else agrees.
    import PIL.Image

    x8 = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for op, coeffs in ((O.shear_x, (1, f, 0, 0, 1, 0)), (O.shear_y, (1, 0, 0, f, 1, 0))):
        pil = TF.to_pil_image(x8).transform((16, 16), PIL.Image.AFFINE, coeffs, resample=PIL.Image.BILINEAR)
        ours = (op(x8[None].float() / 255, f) * 255).round()[0]
        close = (ours - TF.pil_to_tensor(pil).float()).abs() <= 1
        assert close.float().mean() >= 0.9


@pytest.mark.parametrize("axis", ["x", "y"])
def test_translate(images, axis):
    _, x = images
    t = torch.tensor([3.0, -5.0, 0.0, 1.0])

    def ref_one(im, v):
        shift = [int(v), 0] if axis == "x" else [0, int(v)]
        return TF.affine(im, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR)

    op = O.translate_x if axis == "x" else O.translate_y
    torch.testing.assert_close(op(x, t), _per_image(ref_one, x, t), atol=1e-5, rtol=0)


def test_general_affine_matrix_matches_torchvision_affine(images):
    _, x = images
    n, _, h, w = x.shape
    angle = torch.tensor([5.0, -12.0, 30.0, 0.0])
    tx, ty = torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.0, 2.0, -1.0, 1.0])
    sx, sy = torch.tensor([4.0, 0.0, -7.0, 2.0]), torch.tensor([0.0, 3.0, 1.0, -5.0])
    cx, cy = torch.tensor([0.0, -w / 2, 2.0, 1.0]), torch.tensor([0.0, -h / 2, -3.0, 0.5])
    mat = O.affine_matrix(n, angle=angle, translate_x=tx, translate_y=ty, shear_x=sx, shear_y=sy,
                          center_x=cx, center_y=cy)
    ref = torch.stack(
        [
            TF.affine(
                x[i], angle=float(angle[i]), translate=[float(tx[i]), float(ty[i])], scale=1.0,
                shear=[float(sx[i]), float(sy[i])], interpolation=BILINEAR,
                center=[float(cx[i]) + w / 2, float(cy[i]) + h / 2],
            )  # fmt: skip
            for i in range(n)
        ]
    )
    torch.testing.assert_close(O.affine(x, mat), ref, atol=1e-5, rtol=0)


def test_posterize_is_torchvision_uint8_posterize(images):
    x8, x = images
    bits = torch.tensor([0, 3, 4, 8])
    ref = _per_image(lambda im, b: TF.posterize(im, int(b)), x8, bits)
    assert torch.equal((O.posterize(x, bits) * 255).round().to(torch.uint8), ref)


def test_solarize(images):
    x8, x = images
    thr = torch.tensor([0.1, 0.5, 0.9, 0.0])
    ref = _per_image(lambda im, t: TF.solarize(im, float(t)), x, thr)
    torch.testing.assert_close(O.solarize(x, thr), ref, atol=0, rtol=0)
    # uint8 thresholds as the official code uses them (256 - int(25.6 L) on 8-bit levels)
    thr8 = torch.tensor([200, 128, 255, 1])
    ref8 = _per_image(lambda im, t: TF.solarize(im, int(t)), x8, thr8)
    assert torch.equal((O.solarize(x, thr8 / 255.0) * 255).round().to(torch.uint8), ref8)
    assert torch.equal(O.solarize(x, torch.full((4,), 256 / 255)), x)  # threshold above 1: unchanged


def test_equalize_is_torchvision_and_kornia_equalize(images):
    import kornia

    x8, x = images
    ref = torch.stack([TF.equalize(x8[i]) for i in range(4)])
    assert torch.equal((O.equalize(x) * 255).round().to(torch.uint8), ref)
    torch.testing.assert_close(O.equalize(x), kornia.enhance.equalize(x), atol=1e-6, rtol=0)
    flat = torch.full((1, x.shape[1], 5, 5), 0.4)  # a constant image: step == 0, unchanged
    assert torch.equal(O.equalize(flat), flat)


def test_autocontrast_is_pil_autocontrast_with_cutoff(images):
    x8, x = images
    cutoff = torch.tensor([0.0, 2.5, 7.0, 9.9])
    out = (O.autocontrast(x, cutoff) * 255).round().to(torch.uint8)
    for i in range(4):
        pil = TF.to_pil_image(x8[i])
        assert torch.equal(out[i], TF.pil_to_tensor(PIL.ImageOps.autocontrast(pil, float(cutoff[i]))))
    # cutoff 0 is torchvision's autocontrast (its PIL kernel)
    ref0 = torch.stack([TF.pil_to_tensor(TF.autocontrast(TF.to_pil_image(x8[i]))) for i in range(4)])
    assert torch.equal((O.autocontrast(x, 0.0) * 255).round().to(torch.uint8), ref0)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (O.adjust_brightness, TF.adjust_brightness),
        (O.adjust_contrast, TF.adjust_contrast),
        (O.adjust_saturation, TF.adjust_saturation),
        (O.adjust_sharpness, TF.adjust_sharpness),
    ],
    ids=["brightness", "contrast", "saturation", "sharpness"],
)
def test_enhance_ops(images, ours, theirs):
    _, x = images
    factor = torch.tensor([0.1, 0.5, 1.0, 1.7])
    ref = _per_image(lambda im, f: theirs(im, float(f)), x, factor)
    # kornia's grey weights are (0.299, 0.587, 0.114), torchvision's (0.2989, 0.587, 0.114)
    torch.testing.assert_close(ours(x, factor), ref, atol=2e-4, rtol=0)


def test_invert_mirror_grayscale(images):
    _, x = images
    torch.testing.assert_close(O.invert(x), TF.invert(x))
    torch.testing.assert_close(O.hflip(x), TF.horizontal_flip(x))
    if x.shape[1] == 3:
        torch.testing.assert_close(O.to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_scalar_parameters_broadcast_and_bad_shapes_raise(images):
    _, x = images
    torch.testing.assert_close(O.rotate(x, 7.0), O.rotate(x, torch.full((4,), 7.0)))
    torch.testing.assert_close(O.posterize(x, 3), O.posterize(x, torch.full((4,), 3)))
    with pytest.raises(ValueError, match="one parameter per sample"):
        O.posterize(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="matrices of shape"):
        O.affine(x, torch.zeros(3, 2, 3))


def test_theta_round_trip_matches_affine(images):
    _, x = images
    n, _, h, w = x.shape
    mat = O.affine_matrix(n, angle=torch.tensor([3.0, 9.0, -4.0, 20.0]))
    torch.testing.assert_close(O.warp(x, O.affine_theta(mat, h, w)), O.affine(x, mat))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_warp_window_is_the_crop_of_the_full_warp(images, mode):
    _, x = images
    n, _, h, w = x.shape
    mat = O.affine_matrix(n, angle=torch.tensor([3.0, 9.0, -4.0, 20.0]), translate_x=torch.tensor([2.0, -1, 0, 3]),
                          shear_y=torch.tensor([0.0, 5.0, -8.0, 2.0]))  # fmt: skip
    theta = O.affine_theta(mat, h, w)
    full = O.warp(x, theta, mode=mode)
    top, left = torch.tensor([0.0, 3, h - 5, 1]), torch.tensor([w - 7, 0.0, 2, 5])
    win = O.warp(x, theta, mode=mode, window=(top, left, 5, 7))
    assert win.shape == (n, x.shape[1], 5, 7)
    for i in range(n):
        t, lf = int(top[i]), int(left[i])
        assert torch.equal(win[i], full[i, :, t : t + 5, lf : lf + 7])  # the same sampling, bit for bit
