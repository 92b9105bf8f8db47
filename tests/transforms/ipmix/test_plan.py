"""IPMix's plan: image-op parameters decode to AugMix's scalings, patch geometry and (a, b) to the official
distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from robaug.transforms.ipmix import IPMix
from robaug.transforms.ipmix.ops import image_ops
from robaug.transforms.ipmix.plan import op_params, step_params

MIX = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # small mixing set for speed


def make(**kw):
    kw.setdefault("mixing_set", MIX)
    return IPMix(**kw)


def _batch(b=8, c=3, h=32, w=32, seed=1):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("all_ops", [False, True])
def test_image_ops_use_augmix_scalings(all_ops):
    """Each op of a step, at level L and sign s, equals torchvision's functional op with the official scaling."""
    t = make(all_ops=all_ops)
    ops = t._ops
    reps = 12
    n = len(ops) * reps
    x = _batch(n, h=24, w=20).float() / 255
    op = np.arange(n) % len(ops)
    level_u = ((np.arange(n) // len(ops) + 0.5) / reps).astype(np.float32)  # every op at levels across [0.1, severity]
    sign_u = np.random.default_rng(0).random(n).astype(np.float32)
    prm = op_params(t, op, level_u, sign_u, 24, 20)
    group = t._op2group.numpy()[op]
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=20).tolist()
    out = torch.empty_like(x)
    rows = torch.from_numpy(order)
    image_ops(x, rows, out, rows, torch.from_numpy(prm[order]), counts)

    B = InterpolationMode.BILINEAR
    for i in range(n):
        L = 0.1 + float(level_u[i]) * (t.severity - 0.1)
        s = -1 if float(sign_u[i]) < 0.5 else 1
        im, im8 = x[i], (x[i] * 255).round().byte()
        name = ops[int(op[i])]
        if name == "rotate":
            ref = TF.rotate(im, s * int(L * 30 / 10), interpolation=B)
        elif name in ("shear_x", "shear_y"):
            deg = math.degrees(math.atan(s * L * 0.3 / 10))
            shear = [deg, 0.0] if name == "shear_x" else [0.0, deg]
            ref = TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=B, center=[0, 0])
        elif name in ("translate_x", "translate_y"):
            px = s * int(L * (20 if name == "translate_x" else 24) / 3 / 10)
            shift = [px, 0] if name == "translate_x" else [0, px]
            ref = TF.affine(im, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=B)
        elif name == "posterize":
            ref = TF.posterize(im8, 4 - int(L * 4 / 10)).float() / 255
        elif name == "solarize":
            ref = TF.solarize(im8, min(255, 256 - int(L * 256 / 10))).float() / 255
            if 256 - int(L * 256 / 10) > 255:
                ref = im
        elif name == "equalize":
            ref = TF.equalize(im8).float() / 255
        elif name == "mirror":
            ref = TF.horizontal_flip(im)
        elif name == "invert":
            ref = TF.invert(im)
        elif name == "autocontrast":
            import PIL.ImageOps

            ref = TF.pil_to_tensor(PIL.ImageOps.autocontrast(TF.to_pil_image(im8), 10 - L)).float() / 255
        else:
            factor = L * 1.8 / 10 + 0.1
            fn = {"color": TF.adjust_saturation, "contrast": TF.adjust_contrast,
                  "brightness": TF.adjust_brightness, "sharpness": TF.adjust_sharpness}[name]  # fmt: skip
            ref = fn(im, factor)
        torch.testing.assert_close(out[i], ref, atol=2e-4, rtol=0, msg=lambda m: f"{name}: {m}")


def test_patch_geometry_and_beta_draws_follow_the_official_distributions():
    t = make()
    n = 20000
    u = np.random.default_rng(0).random((n, 1, 18)).astype(np.float32)
    op = np.zeros((n, 1), dtype=np.int64)
    prm = torch.from_numpy(step_params(t, u, op, op, 32, 32)[:, 0, 20:])
    top, left, ph, pw, a, b, half, keep, size_idx = prm.unbind(1)
    sizes = torch.tensor([4.0, 8, 16, 32])[size_idx.long()]
    assert torch.equal(torch.bincount(size_idx.long()).bool(), torch.ones(4, dtype=torch.bool))
    assert ((top >= 0) & (top + sizes <= 32) & (left >= 0) & (left + sizes <= 32)).all()
    assert ((ph >= 2) & (ph <= sizes) & (pw >= 2) & (pw <= sizes)).all()
    assert ((ph == sizes) & (pw == sizes)).float().mean() > 0.5  # square with p = 0.5 (+ thin ones of full size)
    # (a, b): half Beta(3, 1) / Beta(1, 3); half 1 + Beta(1, 3) / -Beta(1, 3)
    first = a <= 1
    assert abs(first.float().mean() - 0.5) < 0.02
    assert abs(a[first].mean() - 0.75) < 0.01 and abs(b[first].mean() - 0.25) < 0.01  # Beta(3,1) mean 3/4
    assert abs(a[~first].mean() - 1.25) < 0.01 and abs(b[~first].mean() + 0.25) < 0.01
    assert torch.allclose(half, (1 - a - b) / 2)
    assert keep.min() >= 0 and keep.max() <= 256
