"""IPMix's kernels: the four patch mixes follow the official formulas; windowed partner ops are crops of the full op."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robaug._core.rng import Rng
from robaug.transforms.ipmix import MIXING_OPS, IPMix
from robaug.transforms.ipmix.ops import image_ops, mix_patches
from robaug.transforms.ipmix.plan import op_params

MIX = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # small mixing set for speed


def make(**kw):
    kw.setdefault("mixing_set", MIX)
    return IPMix(**kw)


def _batch(b=8, c=3, h=32, w=32, seed=1):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_patch_mixes_follow_the_official_formulas():
    """``mix_patches`` against the official add/multiply/random_pixels/random_elems (then clipped, pasted in the
    patch)."""
    g = torch.Generator().manual_seed(0)
    n = 4
    x1, x2 = torch.rand(n, 3, 8, 8, generator=g), torch.rand(n, 3, 8, 8, generator=g)
    x2[:, :, 0, 0] = 0  # exercise the 1e-37 clip of multiply
    rect = torch.zeros(n, 1, 8, 8)
    rect[:, :, 2:6, 1:7] = 1
    a = torch.tensor([0.7, 1.4, 0.3, 1.9])
    b = torch.tensor([0.2, -0.6, 0.9, -0.1])
    p = torch.tensor([0.0, 0.3, 0.6, 1.0])
    prm = torch.zeros(n, 8)
    prm[:, 4], prm[:, 5], prm[:, 6], prm[:, 7] = a, b, (1 - a - b) / 2, torch.round(p * 256)
    masks = Rng(torch.device("cpu"), torch.Generator().manual_seed(1)).bytes(n * 3 * 8 * 8)
    inside = rect.bool().expand(n, 3, 8, 8)
    for k, op in enumerate(MIXING_OPS):
        counts = [0] * 4
        counts[k] = n
        out = x1.clone()
        mix_patches(out, x2, rect, prm, counts, masks)
        assert torch.equal(out[~inside], x1[~inside])  # outside the patch: untouched
        A, Bv = a.view(-1, 1, 1, 1), b.view(-1, 1, 1, 1)
        if op == "add":
            ref = ((A * (2 * x1 - 1) + Bv * (2 * x2 - 1)) + 1) / 2
        elif op == "multiply":
            ref = (2 * x1) ** A * (2 * x2).clip(1e-37) ** Bv / 2
        if op in ("add", "multiply"):
            torch.testing.assert_close(out[inside], ref.clamp(0, 1)[inside], atol=1e-5, rtol=1e-5)
        else:
            took_x1 = (out == x1) & inside
            took_x2 = (out == x2) & inside
            assert (took_x1 | took_x2)[inside].all()  # every patch value comes from x1 or x2
            share = took_x1.flatten(1).sum(1).float() / inside.flatten(1).sum(1)
            torch.testing.assert_close(share, p, atol=0.2, rtol=0)  # mask = rand < p keeps x1
            if op == "random_pixels":  # one mask for all channels
                assert (took_x1[:, 0] == took_x1[:, 1]).all() and (took_x1[:, 1] == took_x1[:, 2]).all()


@pytest.mark.parametrize("all_ops", [False, True])
def test_partner_op_windows_are_crops_of_the_full_op(all_ops):
    """Partners are computed on the patch window only; every op must give the crop of its full-image result."""
    t = make(all_ops=all_ops)
    ops = t._ops
    n = len(ops) * 3
    x = _batch(n, h=24, w=20).float() / 255
    op = np.arange(n) % len(ops)
    rng = np.random.default_rng(1)
    prm = op_params(t, op, rng.random(n).astype(np.float32), rng.random(n).astype(np.float32), 24, 20)
    group = t._op2group.numpy()[op]
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=20).tolist()
    rows, p = torch.from_numpy(order), torch.from_numpy(prm[order])
    full = torch.empty_like(x)
    image_ops(x, rows, full, rows, p, counts)
    sh, sw = 9, 6
    top = torch.from_numpy(rng.integers(0, 24 - sh + 1, n)).float()
    left = torch.from_numpy(rng.integers(0, 20 - sw + 1, n)).float()
    win = torch.empty(n, 3, sh, sw)
    image_ops(x, rows, win, rows, p, counts, window=(top[rows], left[rows], sh, sw))
    for i in range(n):
        r, c_ = int(top[i]), int(left[i])
        torch.testing.assert_close(win[i], full[i, :, r : r + sh, c_ : c_ + sw], atol=0, rtol=0,
                                   msg=lambda m: f"{ops[int(op[i])]}: {m}")  # fmt: skip
