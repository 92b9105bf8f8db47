"""IPMix's operations on batches: the op names, the image-level op groups (whole images or windows of them) and
the four patch mixes. Rows are sorted by op group (or mixing op) and each group runs as one batched call."""

from __future__ import annotations

import math

import torch

from .. import image_ops as O
from ._buffers import windows

__all__ = ["IMAGE_OPS", "ALL_IMAGE_OPS", "MIXING_OPS", "GROUPS", "image_op", "image_ops",
           "mix_patches", "op_groups"]

IMAGE_OPS = (
    "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
    "mirror", "invert",
)  # fmt: skip
ALL_IMAGE_OPS = IMAGE_OPS + ("autocontrast", "color", "contrast", "brightness", "sharpness")
MIXING_OPS = ("add", "multiply", "random_pixels", "random_elems")

# Ops that run as one batched call; "invert" is solarize with threshold 0.
GROUPS = {
    "affine": ("rotate", "shear_x", "shear_y"),  # bilinear warp
    "shift": ("translate_x", "translate_y"),  # integer shifts: the same warp, nearest sampling is exact
    "solarize": ("solarize", "invert"),
    "equalize": ("equalize",),
    "posterize": ("posterize",),
    "mirror": ("mirror",),
    "autocontrast": ("autocontrast",),
    "color": ("color",),
    "contrast": ("contrast",),
    "brightness": ("brightness",),
    "sharpness": ("sharpness",),
}
# Op groups whose window can be computed from the window (or, for warps, the window's sampling points) alone.
_WINDOWED = ("affine", "shift", "solarize", "posterize", "mirror", "brightness", "color")
_ENHANCE = {
    "color": O.adjust_saturation,
    "contrast": O.adjust_contrast,
    "brightness": O.adjust_brightness,
    "sharpness": O.adjust_sharpness,
}


def op_groups(ops: tuple[str, ...]) -> torch.Tensor:
    """Index into :data:`GROUPS` of each op of ``ops`` (int64 ``(len(ops),)``)."""
    group_names = list(GROUPS)
    return torch.tensor([next(group_names.index(g) for g, members in GROUPS.items() if o in members) for o in ops])


def image_op(group: str, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """One op group on a batch with its rows' parameter columns ``p`` (see ``plan.op_params``)."""
    if group == "affine":
        return O.warp(x, p[:, 4:10])
    if group == "shift":
        return O.warp(x, p[:, 4:10], mode="nearest")
    if group == "solarize":
        return O.solarize(x, p[:, 1])
    if group == "equalize":
        return O.equalize(x)
    if group == "posterize":
        return O.posterize(x, p[:, 0])
    if group == "mirror":
        return O.hflip(x)
    if group == "autocontrast":
        return O.autocontrast(x, p[:, 2])
    return _ENHANCE[group](x, p[:, 3])


def image_ops(
    src: torch.Tensor, src_rows: torch.Tensor, dst: torch.Tensor, dst_rows: torch.Tensor,
    prm: torch.Tensor, counts: list[int], dst_start: int | None = None, window: tuple | None = None,
) -> None:  # fmt: skip
    """``dst[dst_rows[i]] = op_i(src[src_rows[i]])`` with rows sorted by op group (``counts`` per group).

    With ``dst_start`` the destination rows are known to be ``dst_start, dst_start + 1, ...`` (written as slices).
    With ``window=(top, left, height, width)`` (``top``/``left`` one entry per row) only that window of each
    result is computed and written (``dst`` has windows for rows): the same values as cropping the full result.
    """
    start = 0
    for group, count in zip(GROUPS, counts):
        if not count:
            continue
        stop = start + count
        rows = src_rows[start:stop]
        p = prm[start:stop]
        if window is not None and group in _WINDOWED:
            top, left, wh, ww = window
            top, left = top[start:stop], left[start:stop]
            if group in ("affine", "shift"):  # sample the window's pixels only
                mode = "bilinear" if group == "affine" else "nearest"
                y = O.warp(src.index_select(0, rows), p[:, 4:10], mode=mode, window=(top, left, wh, ww))
            elif group == "mirror":  # the window of the flip is the flip of the mirrored window
                y = O.hflip(windows(src, rows, top, src.shape[-1] - ww - left, wh, ww))
            else:  # point-wise ops
                y = image_op(group, windows(src, rows, top, left, wh, ww), p)
        else:
            y = image_op(group, src.index_select(0, rows), p)
            if window is not None:  # ops that need the whole image: crop the result
                top, left, wh, ww = window
                y = windows(y, None, top[start:stop], left[start:stop], wh, ww)
        if dst_start is None:
            dst.index_copy_(0, dst_rows[start:stop], y)
        else:
            dst[dst_start + start : dst_start + stop].copy_(y)
        start = stop


def mix_patches(
    x1: torch.Tensor, x2: torch.Tensor, rect: torch.Tensor, prm: torch.Tensor, counts: list[int],
    masks: torch.Tensor | None,
) -> None:  # fmt: skip
    """In place ``x1 <- x1 + rect * (mix(x1, x2) - x1)``, rows sorted by mixing op (``counts`` per op).

    ``masks`` holds the uniform random bytes of the random-pixel (``(1, h, w)`` per row) and random-element
    (``(C, h, w)`` per row) mixes, in that order.
    """
    cols = prm[:, 4:8].t().reshape(4, -1, 1, 1, 1)  # a, b, (1 - a - b) / 2, keep threshold
    _, c, h, w = x1.shape
    start = used = 0
    for op, count in zip(MIXING_OPS, counts):
        if not count:
            continue
        stop = start + count
        a, b, half, p = cols[:, start:stop].unbind(0)
        y1, y2, r = x1[start:stop], x2[start:stop], rect[start:stop]
        if op == "add":  # [a (2 x1 - 1) + b (2 x2 - 1) + 1] / 2
            mixed = torch.addcmul(half, a, y1).addcmul_(b, y2).clamp_(0, 1)
            y1.lerp_(mixed, r)
        elif op == "multiply":
            # (2 x1)^a max(2 x2, 1e-37)^b / 2 = exp(a log x1 + b log max(x2, 5e-38) + (a + b - 1) log 2)
            log_mix = torch.addcmul(half * (-2 * math.log(2)), a, y1.log())
            mixed = log_mix.addcmul_(b, y2.clamp(min=5e-38).log_()).exp_().clamp_(0, 1)
            y1.lerp_(mixed, r)
        else:  # mask x1 + (1 - mask) x2, mask = rand < p over pixels (1, h, w) or elements (C, h, w)
            mc = 1 if op == "random_pixels" else c
            drawn = masks[used : used + count * mc * h * w].view(count, mc, h, w)
            used += drawn.numel()
            take_x2 = torch.ge(drawn, p, out=torch.empty(drawn.shape, dtype=y1.dtype, device=y1.device))
            y1.lerp_(y2, take_x2.mul_(r))  # (0/1 floats straight from the comparison: bool tensors are slow)
        start = stop
