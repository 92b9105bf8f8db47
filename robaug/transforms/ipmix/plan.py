"""Drawing IPMix's plan: every random choice of one call, decoded on the host.

A call draws, in this order, one ``rand`` of all its uniforms (one mixing picture per image; per chain a weight,
level and length; per image ``m``; per chain and step :data:`U_COLUMNS` uniforms for ops, partners, patch
geometry and mixing strengths), then the random-mask bytes of the random-pixel/-element mixes: one ``bytes``
draw per (view, chunk of images, step) that has any, in that order. The uniforms are decoded with numpy, which
costs one device-to-host copy per call on a GPU and keeps hundreds of tiny tensor ops off the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..._core.rng import Rng
from .ops import MIXING_OPS

if TYPE_CHECKING:
    from .transform import IPMix

__all__ = ["Plan", "draw_plan", "op_params", "step_params", "patch_pixels", "pictures", "images_per_chunk",
           "U_COLUMNS", "OP_COLUMNS"]

U_COLUMNS = 18  # uniforms per (chain, step); see draw_plan() and step_params()
OP_COLUMNS = 10  # bits, threshold, cutoff, factor, 6 affine coefficients
# Per-chunk budget of chain images on CPU (width x images x image bytes). Chunks keep the per-op temporaries
# small: the allocator serves blocks below its mmap threshold (32 MiB at most for glibc) from memory it keeps,
# whereas larger ones are mapped afresh and page-faulted on every call (at 224 px that cost more than the
# arithmetic). The chunks' large buffers come from a Workspace. Larger chunks amortise per-chunk Python work;
# 16-128 MiB measured the same at 224 px.
CHUNK_BYTES = 64 * 2**20


@dataclass
class Plan:
    """The random choices of one IPMix call on ``views x batch`` view-images with ``width`` chains each.

    Chain ``j`` belongs to view-image ``j // width``; view-image ``i`` is image ``i % batch``. Host (numpy)
    arrays: ``pic`` ``(batch,)`` mixing picture per image; ``coef_x`` ``(views * batch,)`` the weight of ``x``
    in the output (``1 - m`` plus the weights of chains that take no step); per chain ``chain_w`` (``m w``),
    ``steps`` and ``is_img``; ``groups`` ``(n, 5, depth)`` op group, partner's op group, mixing op, partner is
    augmented, patch-size index; ``params`` ``(n, depth, P)`` (:func:`step_params`). ``masks[v * chunks + i][d]``
    are the random-mask bytes of chunk ``i`` (``per_chunk`` images) of view ``v`` at step ``d`` (or ``None``).
    """

    views: int
    batch: int
    width: int
    depth: int
    hs: list[int]
    ws: list[int]
    augment_partners: bool
    pic: np.ndarray
    coef_x: np.ndarray
    chain_w: np.ndarray
    steps: np.ndarray
    is_img: np.ndarray
    groups: np.ndarray
    params: np.ndarray
    per_chunk: int
    masks: list[list[torch.Tensor | None]]

    def chunks(self) -> list[tuple[int, int, int]]:
        """``(view, first image, end image)`` of every chunk, in the order they are processed."""
        b = self.batch
        return [(v, i0, min(b, i0 + self.per_chunk)) for v in range(self.views) for i0 in range(0, b, self.per_chunk)]


def patch_pixels(patch_sizes: Sequence[float | int], height: int, width: int) -> tuple[list[int], list[int]]:
    """Patch heights and widths in pixels: fractions of the image side (floats) or pixels (ints), at least 2."""
    hs, ws = [], []
    for s in patch_sizes:
        if isinstance(s, float):
            hs.append(min(height, max(2, round(s * height))))
            ws.append(min(width, max(2, round(s * width))))
        else:
            hs.append(min(height, max(2, int(s))))
            ws.append(min(width, max(2, int(s))))
    return hs, ws


def pictures(u: np.ndarray, num_pics: int) -> np.ndarray:
    """Mixing-picture indices from uniforms ``u`` (one per image), uniform over the mixing set."""
    return np.minimum((u * num_pics).astype(np.int64), num_pics - 1)


def images_per_chunk(batch: int, width: int, image_bytes: int, device: torch.device) -> int:
    """Images per chunk: on CPU, chunks whose chain images fit in ``CHUNK_BYTES``; on other devices, all."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CHUNK_BYTES // max(1, width * image_bytes)))


def draw_plan(t: IPMix, x: torch.Tensor, rng: Rng) -> Plan:
    """Draw and decode every random choice of one call of ``t`` on the float batch ``x`` ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    views, k, depth = t.num_views, t.width, t.depth
    nv = views * b
    n = nv * k

    sizes = [b, nv * (3 * k + 1), n * depth * U_COLUMNS]
    u_pic, u_chain, u = np.split(rng.rand(sum(sizes)).cpu().numpy(), np.cumsum(sizes)[:-1])
    pic = pictures(u_pic, len(t.mixing_set))  # one mixing picture per image, shared by its views

    # Per chain: weight w ~ Dirichlet(1, ..., 1), level (image / patch), length U{0..depth}; per image m ~ U(0, 1).
    u_chain, m = u_chain[: nv * 3 * k].reshape(nv, k, 3), u_chain[nv * 3 * k :]
    e = -np.log1p(-u_chain[..., 0])  # Exp(1) draws; normalised they are Dirichlet(1, ..., 1)
    weights = (e / np.maximum(e.sum(1, keepdims=True), 1e-30)).astype(np.float32)
    ntypes = len(t.chain_types)
    ctype = np.minimum((u_chain[..., 1] * ntypes).astype(np.int64), ntypes - 1).reshape(n)
    is_img = ctype == (t.chain_types.index("image") if "image" in t.chain_types else -1)
    steps = np.minimum((u_chain[..., 2] * (depth + 1)).astype(np.int64), depth).reshape(n)
    # Chains that take no step are x itself: fold their weight into x's coefficient.
    coef_x = ((1 - m) + m * (weights * (steps.reshape(nv, k) == 0)).sum(1)).astype(np.float32)
    chain_w = (m.reshape(nv, 1) * weights).reshape(n).astype(np.float32)

    # Per chain and step: every discrete choice and parameter.
    u = u.reshape(n, depth, U_COLUMNS)
    nops = len(t._ops)
    op = np.minimum((u[..., 0] * nops).astype(np.int64), nops - 1)
    partner_op = np.minimum((u[..., 1] * nops).astype(np.int64), nops - 1)
    mix_op = np.minimum((u[..., 2] * len(MIXING_OPS)).astype(np.int64), len(MIXING_OPS) - 1)
    partner_aug = u[..., 3] < t.partner_aug_prob
    params = step_params(t, u, op, partner_op, h, w)  # (n, depth, P) float32
    op2group = t._op2group.numpy()
    size_idx = params[..., -1].astype(np.int64)
    groups = np.stack([op2group[op], op2group[partner_op], mix_op, partner_aug, size_idx], 1)

    hs, ws = patch_pixels(t.patch_sizes, h, w)
    per_chunk = images_per_chunk(b, k, c * h * w * x.element_size(), x.device)
    plan = Plan(views, b, k, depth, hs, ws, t.partner_aug_prob > 0, pic, coef_x, chain_w, steps, is_img, groups,
                params, per_chunk, [])  # fmt: skip
    plan.masks = _draw_masks(plan, mix_op, size_idx, c, rng)
    return plan


def _draw_masks(plan: Plan, mix_op: np.ndarray, size_idx: np.ndarray, c: int, rng: Rng) -> list:
    """The random-mask bytes of every (chunk, step): one draw for the patch steps of a chunk's chains that take a
    random-pixel (``1 x window`` bytes) or random-element (``C x window``) mix, in chunk then step order."""
    depth = plan.depth
    window = (np.asarray(plan.hs, dtype=np.int64) * np.asarray(plan.ws, dtype=np.int64))[size_idx]  # (n, depth)
    per_window = np.select([mix_op == MIXING_OPS.index("random_pixels"), mix_op == MIXING_OPS.index("random_elems")],
                           [1, c], 0)  # fmt: skip
    taken = (~plan.is_img)[:, None] & (np.arange(depth) < plan.steps[:, None])  # patch steps taken (n, depth)
    need = np.where(taken, per_window * window, 0)  # bytes per chain and step
    k, b = plan.width, plan.batch
    masks = []
    for v, i0, i1 in plan.chunks():
        rows = need[(v * b + i0) * k : (v * b + i1) * k].sum(0).tolist()
        masks.append([rng.bytes(size) if size else None for size in rows])
    return masks


def op_params(t: IPMix, op: np.ndarray, level_u: np.ndarray, sign_u: np.ndarray, h: int, w: int) -> np.ndarray:
    """Per-step image-op parameters with AugMix's scalings (level L ~ U(0.1, severity), PARAMETER_MAX 10).

    Columns: posterize bits 4 - int(0.4 L); solarize threshold (256 - int(25.6 L)) / 255 (0 for invert);
    autocontrast cutoff 10 - L; enhance factor 0.18 L + 0.1; 6 normalised affine coefficients for rotate
    int(3 L) degrees (counter-clockwise), shear 0.03 L (about the top-left corner, as PIL), translate
    int(L * side / 30) px, each with a random sign.
    """
    f32 = np.float32
    names = t._ops
    level = (f32(0.1) + level_u * f32(t.severity - 0.1)).astype(f32)
    sign = np.where(sign_u < 0.5, f32(-1), f32(1))
    bits = 4 - np.floor(level * f32(0.4))
    thr = np.where(op == names.index("invert"), f32(0), (256 - np.floor(level * f32(25.6))) / f32(255))
    cutoff = 10 - level
    factor = level * f32(0.18) + f32(0.1)

    # Inverse maps (output -> input, pixel coordinates centred on the image, torchvision's convention):
    # rotate(phi) [cos, -sin, 0, sin, cos, 0]; shear_x(f) about the top-left corner [1, f, f h/2, 0, 1, 0];
    # shear_y(f) [1, 0, 0, f, 1, f w/2]; translate (tx, ty) [1, 0, -tx, 0, 1, -ty].
    def pick(name: str, value: np.ndarray) -> np.ndarray:
        return value * (op == names.index(name))

    phi = np.deg2rad(pick("rotate", np.floor(level * f32(3)) * sign))
    cos, sin = np.cos(phi), np.sin(phi)
    shear = level * f32(0.03) * sign
    fx, fy = pick("shear_x", shear), pick("shear_y", shear)
    tx = pick("translate_x", np.floor(level * f32(w / 30)) * sign)
    ty = pick("translate_y", np.floor(level * f32(h / 30)) * sign)
    matrix = np.stack([cos, fx - sin, fx * f32(h / 2) - tx, sin + fy, cos, fy * f32(w / 2) - ty], -1)
    theta = matrix * np.array([1, h / w, 2 / w, w / h, 1, 2 / h], dtype=f32)  # to grid_sample's [-1, 1]
    return np.concatenate([np.stack([bits, thr, cutoff, factor], -1), theta], -1).astype(f32)


def step_params(t: IPMix, u: np.ndarray, op: np.ndarray, partner_op: np.ndarray, h: int, w: int) -> np.ndarray:
    """All per-(chain, step) parameters ``(n, depth, 2 * OP_COLUMNS + 9)`` (float32).

    Columns: image-op parameters (:func:`op_params`), the same for the partner's op, then the patch's top,
    left, height, width, ``a``, ``b``, ``(1 - a - b) / 2``, keep threshold and patch-size index.
    """
    f32 = np.float32
    img = op_params(t, op, u[..., 4], u[..., 5], h, w)
    if t.partner_aug_prob > 0:
        partner = op_params(t, partner_op, u[..., 16], u[..., 17], h, w)
    else:
        partner = np.zeros_like(img)
    # Patch: side from patch_sizes; square with p = 0.5, else sides U{2..s}; top-left corner uniform.
    hs, ws = patch_pixels(t.patch_sizes, h, w)
    size_idx = np.minimum((u[..., 6] * len(hs)).astype(np.int64), len(hs) - 1)
    sh, sw = np.asarray(hs, dtype=f32)[size_idx], np.asarray(ws, dtype=f32)[size_idx]
    top = np.floor(u[..., 7] * (h - sh + 1))
    left = np.floor(u[..., 8] * (w - sw + 1))
    square = u[..., 9] < 0.5
    ph = np.where(square, sh, 2 + np.floor(u[..., 10] * (sh - 1)))
    pw = np.where(square, sw, 2 + np.floor(u[..., 11] * (sw - 1)))
    # (a, b): with p = 0.5 a ~ Beta(beta, 1), b ~ Beta(1, beta); else a = 1 + Beta(1, beta), b = -Beta(1, beta).
    # Beta(beta, 1) = U^(1 / beta) and Beta(1, beta) = 1 - U^(1 / beta) by inversion.
    branch = u[..., 12] < 0.5
    ua, ub = u[..., 13] ** f32(1.0 / t.beta), u[..., 14] ** f32(1.0 / t.beta)
    a = np.where(branch, ua, 2 - ua)
    bb = np.where(branch, 1 - ub, ub - 1)
    keep_thr = np.round(u[..., 15] * 256)  # random pixels/elements keep x1 where a byte < 256 p, p ~ U(0, 1)
    patch = np.stack([top, left, ph, pw, a, bb, (1 - a - bb) / 2, keep_thr, size_idx], -1).astype(f32)
    return np.concatenate([img, partner, patch], -1)
