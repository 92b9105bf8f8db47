"""Applying an IPMix plan: ``out = (1 - m) x + m sum_i w_i chain_i(x)`` for every view-image, chunk by chunk.

Only what a step needs is computed: each op runs on the images whose chain chose it (grouped by op); patch steps
are in :mod:`.patch`; chains add their weighted result to the output as they finish. On CPU the batch is processed
in chunks of images whose buffers are reused, because at 224 px fresh batch-sized temporaries cost more in page
faults than the arithmetic done on them.
"""

from __future__ import annotations

import numpy as np
import torch

from ._buffers import Workspace, sort_by, to_device
from .ops import GROUPS, image_op
from .patch import patch_chains
from .plan import OP_COLUMNS, Plan

__all__ = ["apply_plan"]


def apply_plan(plan: Plan, x: torch.Tensor, mix: torch.Tensor, clamp: bool = True,
               inplace: bool = False) -> torch.Tensor:
    """The views ``(views, B, C, H, W)`` of the contiguous float batch ``x`` under ``plan``; ``mix`` holds the
    mixing pictures at ``x``'s size (float in [0, 1], or uint8). With ``inplace`` (and one view) the result is
    written into ``x`` itself; ``clamp`` clamps it to [0, 1] (rounding errors of order 1e-7)."""
    b, c, h, w = x.shape
    views, k = plan.views, plan.width
    inplace = inplace and views == 1
    out = x if inplace else torch.empty((views * b, c, h, w), dtype=x.dtype, device=x.device)
    ws = Workspace(x.dtype, x.device)  # the chunks' large buffers, reused from chunk to chunk
    for (v, i0, i1), masks in zip(plan.chunks(), plan.masks):
        s0, s1 = v * b + i0, v * b + i1  # view-images; their chains are s0 * k ... s1 * k - 1
        chunk = slice(s0 * k, s1 * k)
        _augment_chunk(
            plan, x[i0:i1], out[s0:s1], mix, plan.pic[i0:i1], plan.coef_x[s0:s1], plan.chain_w[chunk],
            plan.steps[chunk], plan.is_img[chunk], plan.groups[chunk], plan.params[chunk], masks, ws, clamp, inplace,
        )  # fmt: skip
    return out.view(views, b, c, h, w)


def _augment_chunk(
    plan: Plan, x: torch.Tensor, dst: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, coef_x: np.ndarray,
    chain_w: np.ndarray, steps: np.ndarray, is_img: np.ndarray, groups: np.ndarray, params: np.ndarray,
    masks: list, ws: Workspace, clamp: bool, inplace: bool,
) -> None:  # fmt: skip
    """``dst = (1 - m) x + m sum_i w_i chain_i(x)`` for a chunk of images ``x`` (chain ``j`` of the chunk
    belongs to image ``j // width``); ``dst`` may be ``x`` itself (``inplace``).

    Everything that reads ``x`` comes first: the patch-level chains (which change copies of x, or of its
    windows, and read partner windows from x) and the gather of the image-level chains' inputs. Then the output is
    started in ``dst`` (in place when ``dst`` is ``x``) and the image-level chains add their weighted result
    to it at their last step, so no pass over all chain images is left at the end.
    """
    device = x.device
    _, c, h, w = x.shape
    k = plan.width
    active = steps > 0
    img = np.flatnonzero(is_img & active)
    patch = np.flatnonzero(~is_img & active)
    if patch.size:
        state, full, changes = patch_chains(plan, x, mix, pic, patch, steps, groups, params, chain_w, masks, ws)
        # chains that only change windows are x plus their changes: fold their x into x's coefficient
        windowed = np.setdiff1d(patch, full, assume_unique=True)
        coef_x = coef_x + np.bincount(windowed // k, chain_w[windowed], coef_x.size)
    orders = _image_orders(img, steps, groups[:, 0], plan.depth)
    if orders:
        first = orders[0][0]
        src = torch.index_select(x, 0, to_device(first // k, device), out=ws.get("input", (first.size, c, h, w)))
    coef = to_device(coef_x.astype(np.float32), device).view(-1, 1, 1, 1)
    out = x.mul_(coef) if inplace else torch.mul(x, coef, out=dst)  # x is not read any more
    if patch.size:
        if full.size:
            block = state[: full.size].mul_(to_device(chain_w[full], device).view(-1, 1, 1, 1))
            out.index_add_(0, to_device(full // k, device), block)
        for at, change in changes:
            out.view(-1).index_add_(0, at, change)
    if orders:
        _image_chains(src, out, orders, k, steps, params, chain_w, ws)
    if clamp:
        out.clamp_(0, 1)


def _image_orders(chains: np.ndarray, steps: np.ndarray, op_group: np.ndarray, depth: int) -> list:
    """Per step, the image-level chains still running, sorted by op group and, within a group, the chains
    that continue first; with the count of each (group, last step) pair."""
    orders = []
    for d in range(depth):
        run = chains[steps[chains] > d]
        if not run.size:
            break
        orders.append(sort_by(run, op_group[run, d] * 2 + (steps[run] == d + 1), 2 * len(GROUPS)))
    return orders


def _image_chains(
    src: torch.Tensor, out: torch.Tensor, orders: list, k: int, steps: np.ndarray, params: np.ndarray,
    chain_w: np.ndarray, ws: Workspace,
) -> None:  # fmt: skip
    """Image-level chains: ``out[j // k] += w_j chain_j(x)``; ``src`` holds their inputs in step 0's order.

    Each step (:func:`_image_orders`) writes the continuing chains' images in the order the next step sorts
    them, so a step reads every op group's images as one contiguous slice.
    """
    device = src.device
    _, c, h, w = src.shape
    cur = src
    for d, (order, counts2) in enumerate(orders):
        following = orders[d + 1][0] if d + 1 < len(orders) else order[:0]
        position = np.zeros(steps.size, dtype=np.int64)
        position[following] = np.arange(following.size)
        rows = to_device(np.stack([order // k, position[order]]), device)  # image, row at the next step
        owner, dest = rows[0], rows[1]
        prm = to_device(params[order, d, :OP_COLUMNS], device)
        wgt = to_device(chain_w[order], device).view(-1, 1, 1, 1)
        nxt = ws.get(f"image{d % 2}", (following.size, c, h, w)) if following.size else None
        start = 0
        for gi, group in enumerate(GROUPS):
            n_cont, n_end = counts2[2 * gi], counts2[2 * gi + 1]
            if not n_cont + n_end:
                continue
            mid, stop = start + n_cont, start + n_cont + n_end
            y = image_op(group, cur[start:stop], prm[start:stop])
            if n_cont:
                nxt.index_copy_(0, dest[start:mid], y[:n_cont])
            if n_end:
                out.index_add_(0, owner[mid:stop], y[n_cont:].mul_(wgt[mid:stop]))
            start = stop
        cur = nxt
