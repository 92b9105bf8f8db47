"""IPMix's patch level: each step replaces a patch of a chain's image by a pixel-wise mix with a partner.

A patch step reads, mixes and writes back only the window holding its patch, and makes only that window of its
partner (a window of the mixing picture, or the partner's image op evaluated on the window's pixels).
"""

from __future__ import annotations

import numpy as np
import torch

from ._buffers import Workspace, sort_by, to_device, window_grid, window_offsets
from .ops import GROUPS, MIXING_OPS, image_ops, mix_patches
from .plan import OP_COLUMNS, Plan

__all__ = ["patch_chains"]

# From this many pixels per image on, patch chains that never take a whole-image step copy only their windows of
# x and add their windows' changes to the output, instead of copying, weighting and adding whole images.
WINDOWED_STATE_PIXELS = 96 * 96


def patch_chains(
    plan: Plan, x: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, chains: np.ndarray, steps: np.ndarray,
    groups: np.ndarray, params: np.ndarray, chain_w: np.ndarray, masks: list, ws: Workspace,
) -> tuple[torch.Tensor, np.ndarray, list]:  # fmt: skip
    """Patch-level chains of a chunk, one patch step after another on copies of x (``masks[d]``: step ``d``'s
    random-mask bytes).

    Chains that take a whole-image step (patch size = image) run on full copies of x, rows ``0 .. n - 1`` of
    the returned state, for chains ``full``: their result is ``state[:n]``. The others only ever change
    windows, so only their windows are copied from x, and each step's change inside the window, times the
    chain's weight, is recorded in ``changes`` as ``(flat offsets into the output, values)``: their result
    is ``x`` plus those changes. Returns ``(state, full, changes)``.
    """
    device = x.device
    _, c, h, w = x.shape
    k, chw = plan.width, c * h * w
    hs, ws_ = plan.hs, plan.ws
    whole_index = [i for i, size in enumerate(zip(hs, ws_)) if size == (h, w)]
    taken = np.arange(plan.depth) < steps[chains][:, None]  # (chains, depth): the steps each chain takes
    size_idx = groups[chains, 4]  # (chains, depth)
    has_whole = (np.isin(size_idx, whole_index) & taken).any(1)
    if h * w < WINDOWED_STATE_PIXELS:  # small images: full copies for all (fewer, larger ops)
        has_whole[:] = True
    order = np.concatenate([np.flatnonzero(has_whole), np.flatnonzero(~has_whole)])
    full = chains[order[: int(has_whole.sum())]]
    slot = np.full(steps.size, -1, dtype=np.int64)
    slot[chains[order]] = np.arange(chains.size)
    state = ws.get("patch", (chains.size, c, h, w))
    if full.size:
        torch.index_select(x, 0, to_device(full // k, device), out=state[: full.size])
    windowed = ~has_whole[:, None] & taken
    for si, (sh, sw) in enumerate(zip(hs, ws_)):  # copy x into every window the other chains will read
        pos, d = np.nonzero(windowed & (size_idx == si))
        if not pos.size:
            continue
        j = chains[pos]
        prm = params[j, d]
        corner = (prm[:, 2 * OP_COLUMNS] * w + prm[:, 2 * OP_COLUMNS + 1]).astype(np.int64)
        offsets = to_device(np.stack([slot[j] * chw + corner, (j // k) * chw + corner]), device)
        local = window_offsets(c, h, w, sh, sw, device).view(1, -1)
        values = x.view(-1).index_select(0, (offsets[1].view(-1, 1) + local).view(-1))
        state.view(-1).index_copy_(0, (offsets[0].view(-1, 1) + local).view(-1), values)
    changes: list = []
    change_w = None
    if full.size < chains.size:
        change_w = np.where(np.isin(np.arange(steps.size), full), 0, chain_w).astype(np.float32)
    for d in range(plan.depth):
        run = chains[steps[chains] > d]
        if not run.size:
            break
        _patch_step(plan, state, x, mix, pic, run, slot, groups[:, :, d], params[:, d], masks[d], change_w, changes)
    return state, full, changes


def _patch_step(
    plan: Plan, state: torch.Tensor, x: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, chains_h: np.ndarray,
    slot: np.ndarray, groups: np.ndarray, params: np.ndarray, pool: torch.Tensor | None, change_w: np.ndarray | None,
    changes: list,
) -> None:  # fmt: skip
    """One patch-mixing step for ``chains_h``; ``groups`` ``(n, 5)`` and ``params`` are this step's, ``pool`` its
    random-mask bytes.

    ``state[slot[j]]`` is chain ``j``'s current image, ``x`` holds the images (chain ``j``'s is row
    ``j // width``), ``mix`` the mixing set and ``pic`` the mixing picture of each image. Chains are grouped
    by patch size, then by mixing op. For patches smaller than the image only the ``s x s`` window that holds
    the patch is gathered, mixed and written back, and only that window of the partner is made (read from
    the mixing picture, or computed by the partner's image op). The change inside each window times
    ``change_w`` of its chain is appended to ``changes`` (see :func:`patch_chains`; not when ``None``).
    """
    device = state.device
    _, c, h, w = state.shape
    hs, ws = plan.hs, plan.ws
    nmix = len(MIXING_OPS)
    chains, counts = sort_by(chains_h, groups[chains_h, 4] * nmix + groups[chains_h, 2], len(hs) * nmix)
    prm_h = params[chains]
    owner_h = chains // plan.width
    corner_h = (prm_h[:, 2 * OP_COLUMNS] * w + prm_h[:, 2 * OP_COLUMNS + 1]).astype(np.int64)  # top * w + left
    # rows of: state, x (owner), the mixing picture; flat offsets of the windows' corners
    idx = to_device(np.stack([slot[chains], owner_h, pic[owner_h], corner_h]), device)
    rows, owner, pic_rows, corner = idx[0], idx[1], idx[2], idx[3]
    prm = to_device(prm_h, device)
    # the partner is an image-level-augmented copy of x (probability partner_aug_prob) or the mixing picture
    aug_h = groups[chains, 3].astype(bool) if plan.augment_partners else None

    pp = prm[:, 2 * OP_COLUMNS :]  # top, left, patch height, patch width, a, b, (1 - a - b) / 2, keep threshold
    chw = c * h * w
    pool_sizes = []
    for size_index, (sh, sw) in enumerate(zip(hs, ws)):
        for op, count in zip(MIXING_OPS, counts[size_index * nmix : (size_index + 1) * nmix]):
            pool_sizes.append(count * (1 if op == "random_pixels" else c) * sh * sw if op.startswith("random") else 0)
    pool_at = 0
    start = 0
    for size_index, (sh, sw) in enumerate(zip(hs, ws)):
        op_counts = counts[size_index * nmix : (size_index + 1) * nmix]
        stop = start + sum(op_counts)
        if stop == start:
            continue
        g = pp[start:stop]
        r1 = rows[start:stop]
        ph, pw = g[:, 2].view(-1, 1, 1), g[:, 3].view(-1, 1, 1)
        whole = (sh, sw) == (h, w)
        if whole:
            x1 = state.index_select(0, r1)
            ys = torch.arange(sh, device=device, dtype=g.dtype).view(1, sh, 1) - g[:, 0].view(-1, 1, 1)
            xs = torch.arange(sw, device=device, dtype=g.dtype).view(1, 1, sw) - g[:, 1].view(-1, 1, 1)
            in_rows, in_cols = (ys >= 0) & (ys < ph), (xs >= 0) & (xs < pw)
            flat = None
        else:  # the window starts at the patch's corner
            local = window_offsets(c, h, w, sh, sw, device)
            idx1 = (r1.mul(chw).add_(corner[start:stop]).view(-1, 1, 1, 1) + local).view(-1)
            x1 = state.view(-1).index_select(0, idx1).view(-1, c, sh, sw)
            ys, xs = window_grid(sh, sw, device)
            in_rows, in_cols = ys < ph, xs < pw
            # the windows' flat offsets in their images (shared by x, the mixing set and the partners)
            flat = (corner[start:stop].view(-1, 1, 1, 1) + local).view(-1, c * sh * sw)
        before = None if whole or change_w is None else x1.clone()
        x2 = _partners(x, mix, owner, pic_rows, flat, pp, prm, chains, groups, aug_h, start, stop, sh, sw)
        # (n, 1, sh, sw): the patch inside the window, as the product of small row and column masks
        rect = (in_rows.to(x1.dtype) * in_cols.to(x1.dtype)).unsqueeze(1)
        sizes = pool_sizes[size_index * nmix : (size_index + 1) * nmix]
        masks = pool[pool_at : pool_at + sum(sizes)] if pool is not None else None
        mix_patches(x1, x2, rect, g, op_counts, masks)
        pool_at += sum(sizes)
        if whole:
            state.index_copy_(0, r1, x1)
        else:
            state.view(-1).index_copy_(0, idx1, x1.view(-1))
        if before is not None:
            wgt = to_device(change_w[chains[start:stop]], device).view(-1, 1, 1, 1)
            out_at = flat + owner[start:stop].view(-1, 1) * chw
            changes.append((out_at.view(-1), before.sub_(x1).mul_(wgt.neg()).view(-1)))  # w (mixed - current)
        start = stop


def _partners(
    x: torch.Tensor, mix: torch.Tensor, owner: torch.Tensor, pic_rows: torch.Tensor,
    flat: torch.Tensor | None, pp: torch.Tensor, prm: torch.Tensor, chains: np.ndarray, groups: np.ndarray,
    aug_h: np.ndarray | None, start: int, stop: int, sh: int, sw: int,
) -> torch.Tensor:  # fmt: skip
    """The partner windows ``(stop - start, C, sh, sw)`` of the patch-step rows ``start:stop`` (one patch size).

    ``flat`` holds each window's flat offsets within an image (``None`` for whole images).
    """
    device = x.device
    _, c, h, w = x.shape

    def pictures(sel: torch.Tensor | slice, offsets: torch.Tensor | None) -> torch.Tensor:
        if offsets is None:
            pics = mix.index_select(0, pic_rows[sel])
        else:
            pics = mix.view(-1).index_select(0, offsets.add(pic_rows[sel].view(-1, 1) * (c * h * w)).view(-1))
        pics = pics.view(-1, c, sh, sw)
        return torch.div(pics, 255.0).to(x.dtype) if mix.dtype == torch.uint8 else pics.to(x.dtype)

    aug = None if aug_h is None else aug_h[start:stop]
    if aug is None or not aug.any():
        return pictures(slice(start, stop), flat)
    x2 = torch.empty((stop - start, c, sh, sw), dtype=x.dtype, device=device)
    plain = np.flatnonzero(~aug)
    if plain.size:
        plain_t = to_device(plain, device)
        offsets = None if flat is None else flat.index_select(0, plain_t)
        x2.index_copy_(0, plain_t, pictures(plain_t + start, offsets))
    pos_h, pcounts = sort_by(np.flatnonzero(aug), groups[chains[start:stop][aug], 1], len(GROUPS))
    pos = to_device(pos_h, device)
    sel = pos + start
    partner_prm = prm.index_select(0, sel)[:, OP_COLUMNS : 2 * OP_COLUMNS]
    window = None if flat is None else (pp[:, 0].index_select(0, sel), pp[:, 1].index_select(0, sel), sh, sw)
    image_ops(x, owner.index_select(0, sel), x2, pos, partner_prm, pcounts, window=window)
    return x2
