"""The batched IPMix against a straightforward per-image, per-chain, per-step implementation of the algorithm.

The reference below loops over images, chains and steps and applies each step to one image, from the same random
draws as the batched code: the call's uniforms (one ``rand`` draw) and the random-mask bytes (one ``bytes`` draw
per chunk of images and patch step). Everything the batched code adds for speed is absent here: grouping by op,
gathers and scatters, patch windows instead of images, partner images computed on the window only, chunks,
step-to-step buffers and accumulation as chains finish. The per-step parameters come from ``step_params``, whose
decoding is checked against torchvision's ops and the paper's distributions in ``test_ipmix.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import robaug.transforms.ipmix.patch as patch_module
import robaug.transforms.ipmix.plan as plan_module
from robaug._core.rng import Rng
from robaug.transforms import image_ops as O
from robaug.transforms.ipmix import MIXING_OPS, IPMix
from robaug.transforms.ipmix.plan import patch_pixels, step_params

U_COLUMNS = 18
OP_COLUMNS = 10


def _record_draws(monkeypatch):
    draws = []
    rand, bytes_ = Rng.rand, Rng.bytes

    def spy_rand(self, *shape):
        draws.append(("rand", rand(self, *shape).clone()))
        return draws[-1][1]

    def spy_bytes(self, *shape):
        draws.append(("bytes", bytes_(self, *shape).clone()))
        return draws[-1][1]

    monkeypatch.setattr(Rng, "rand", spy_rand)
    monkeypatch.setattr(Rng, "bytes", spy_bytes)
    return draws


def _image_op(name: str, img: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """One image-level op on one image ``(C, H, W)`` with its parameter columns ``p``."""
    x = img.unsqueeze(0)
    if name in ("rotate", "shear_x", "shear_y"):
        y = O.warp(x, p[4:10].unsqueeze(0))
    elif name in ("translate_x", "translate_y"):
        y = O.warp(x, p[4:10].unsqueeze(0), mode="nearest")
    elif name in ("solarize", "invert"):
        y = O.solarize(x, p[1:2])
    elif name == "equalize":
        y = O.equalize(x)
    elif name == "posterize":
        y = O.posterize(x, p[0:1])
    elif name == "mirror":
        y = O.hflip(x)
    elif name == "autocontrast":
        y = O.autocontrast(x, p[2:3])
    else:
        fn = {"color": O.adjust_saturation, "contrast": O.adjust_contrast,
              "brightness": O.adjust_brightness, "sharpness": O.adjust_sharpness}[name]  # fmt: skip
        y = fn(x, p[3:4])
    return y[0]


def _mix(op: str, x1: torch.Tensor, x2: torch.Tensor, a: float, b: float, mask_bytes, keep_thr: float):
    """The four mixes of the method notes on one window (then clamped to [0, 1])."""
    if op == "add":
        return ((a * (2 * x1 - 1) + b * (2 * x2 - 1)) + 1).div(2).clamp(0, 1)
    if op == "multiply":
        return ((2 * x1).pow(a) * (2 * x2).clamp(min=1e-37).pow(b) / 2).clamp(0, 1)
    keep_x1 = mask_bytes.float() < keep_thr  # a byte < 256 p keeps x1: mask = rand < p
    return torch.where(keep_x1, x1, x2)


def reference(t: IPMix, x: torch.Tensor, mixing: torch.Tensor, draws: list, per_chunk: int) -> torch.Tensor:
    """IPMix of a float batch ``x`` image by image; ``mixing`` float (M, C, H, W) pictures at x's size."""
    b, c, h, w = x.shape
    k, depth, views = t.width, t.depth, t.num_views
    nv, n = views * b, views * b * k
    kind, u_all = draws[0]
    assert kind == "rand"
    pools = [d for kind, d in draws[1:] if kind == "bytes"]
    u_all = u_all.numpy()
    u_pic, u_chain, u = np.split(u_all, np.cumsum([b, nv * (3 * k + 1)]))
    pic = np.minimum((u_pic * len(mixing)).astype(np.int64), len(mixing) - 1)
    m = u_chain[nv * 3 * k :]
    u_chain = u_chain[: nv * 3 * k].reshape(nv, k, 3)
    e = -np.log1p(-u_chain[..., 0].astype(np.float64))
    weights = e / e.sum(1, keepdims=True)
    ntypes = len(t.chain_types)
    kinds = [t.chain_types[min(int(v * ntypes), ntypes - 1)] for v in u_chain[..., 1].reshape(-1)]
    steps = [min(int(v * (depth + 1)), depth) for v in u_chain[..., 2].reshape(-1)]
    u = u.reshape(n, depth, U_COLUMNS)
    ops, nmix = t._ops, len(MIXING_OPS)
    op = np.minimum((u[..., 0] * len(ops)).astype(np.int64), len(ops) - 1)
    partner_op = np.minimum((u[..., 1] * len(ops)).astype(np.int64), len(ops) - 1)
    mix_op = np.minimum((u[..., 2] * nmix).astype(np.int64), nmix - 1)
    partner_aug = u[..., 3] < t.partner_aug_prob
    params = torch.from_numpy(step_params(t, u, op, partner_op, h, w))
    hs, ws = patch_pixels(t.patch_sizes, h, w)

    # Mask bytes: per (view, chunk of images, step), the chains taking a patch step with a random mix, ordered
    # by (patch size, mixing op) and then chain index, each take C (or 1) x window bytes from that step's draw.
    masks = {}
    for v in range(views):
        for i0 in range(0, b, per_chunk):
            chunk_chains = range((v * b + i0) * k, (v * b + min(b, i0 + per_chunk)) * k)
            for d in range(depth):
                running = [j for j in chunk_chains if kinds[j] == "patch" and steps[j] > d]
                running = sorted(running, key=lambda j: (int(params[j, d, -1]) * nmix + mix_op[j, d], j))
                need = [(j, (1 if mix_op[j, d] == 2 else c) * hs[int(params[j, d, -1])] * ws[int(params[j, d, -1])])
                        for j in running if mix_op[j, d] >= 2]  # fmt: skip
                if not need:
                    continue
                pool = pools.pop(0)
                assert pool.numel() == sum(count for _, count in need)
                at = 0
                for j, count in need:
                    masks[j, d] = pool[at : at + count]
                    at += count
    assert not pools

    out = torch.empty(nv, c, h, w, dtype=torch.float64)
    for vi in range(nv):
        img = x[vi % b]
        total = (1 - float(m[vi])) * img.double()
        for ci in range(k):
            j = vi * k + ci
            cur = img.clone()
            for d in range(steps[j]):
                p = params[j, d]
                if kinds[j] == "image":
                    cur = _image_op(ops[op[j, d]], cur, p[:OP_COLUMNS])
                    continue
                top, left, ph, pw, a, bb, _, keep = (float(v) for v in p[2 * OP_COLUMNS : 2 * OP_COLUMNS + 8])
                si = int(p[-1])
                sh, sw = hs[si], ws[si]
                top, left, ph, pw = int(top), int(left), int(ph), int(pw)
                if partner_aug[j, d]:
                    partner = _image_op(ops[partner_op[j, d]], img, p[OP_COLUMNS : 2 * OP_COLUMNS])
                else:
                    partner = mixing[pic[vi % b]]
                x1 = cur[:, top : top + sh, left : left + sw]
                x2 = partner[:, top : top + sh, left : left + sw]
                mb = masks.get((j, d))
                if mb is not None:
                    mb = mb.view(-1, sh, sw)
                mixed = _mix(MIXING_OPS[mix_op[j, d]], x1, x2, a, bb, mb, keep)
                cur = cur.clone()
                cur[:, top : top + ph, left : left + pw] = mixed[:, :ph, :pw]  # the patch: the window's top-left part
            total += float(m[vi]) * weights[vi, ci] * cur.double()
        out[vi] = total
    return out.clamp(0, 1).float()


CASES = {
    "cifar": dict(),
    "imagenet-all-ops": dict(preset="imagenet", all_ops=True, patch_sizes=(3, 5, 8, 1.0), partner_aug_prob=0.5),
    "jsd-partners-deep": dict(num_views=2, depth=4, width=4, partner_aug_prob=0.7, patch_sizes=(2, 7, 0.5, 1.0)),
    "gray-image-only": dict(chain_types=("image",), all_ops=True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("per_chunk", [2, 64])
@pytest.mark.parametrize("windowed_state", [True, False], ids=["window-copies", "image-copies"])
def test_batched_ipmix_equals_the_per_image_reference(monkeypatch, case, per_chunk, windowed_state):
    kw = CASES[case]
    # patch chains without a whole-image step copy only their windows (large images) or whole images
    monkeypatch.setattr(patch_module, "WINDOWED_STATE_PIXELS", 0 if windowed_state else 10**9)
    c = 1 if case.startswith("gray") else 3
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, c, 20, 18, generator=g)
    x[0, :, :4] = 0  # exact zeros (multiply's log, equalize's empty levels)
    mixing = torch.randint(0, 256, (4, c, 20, 18), generator=g) / 255  # the set stores uint8 pictures
    t = IPMix(mixing_set=mixing, generator=torch.Generator().manual_seed(11), **kw)
    monkeypatch.setattr(plan_module, "images_per_chunk", lambda batch, *args: min(batch, per_chunk))
    for _ in range(3):  # several calls: the RNG stream moves on
        draws = _record_draws(monkeypatch)
        out = t.augment(x)
        ref = reference(t, x, mixing, draws, per_chunk)
        assert out.shape == (t.num_views, 5, c, 20, 18)
        torch.testing.assert_close(out.reshape(-1, c, 20, 18), ref, atol=2e-5, rtol=0)


def test_reference_is_not_trivially_satisfied(monkeypatch):
    """The comparison above fails when one random draw is used differently (a swapped mask byte)."""
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mixing = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(1)) / 255
    t = IPMix(mixing_set=mixing, chain_types=("patch",), patch_sizes=(1.0,), generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(plan_module, "images_per_chunk", lambda batch, *args: batch)
    draws = _record_draws(monkeypatch)
    out = t.augment(x).reshape(-1, 3, 16, 16)
    ref = reference(t, x, mixing, draws, 4)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    pools = [d for kind, d in draws if kind == "bytes"]
    assert pools, "expected random-mask draws"
    pools[0].copy_(255 - pools[0])  # the reference now reads other mask bytes
    assert not torch.allclose(reference(t, x, mixing, draws, 4), out, atol=1e-3)
    assert math.isfinite(float(out.sum()))
