"""IPMix (Wu et al., NeurIPS 2023, arXiv 2310.04780), batched, with a different random draw for every image.

For every image ``x`` (label unchanged) IPMix draws one mixing picture ``f`` from the mixing set, chain
weights ``w ~ Dirichlet(1, ..., 1)`` over ``width`` chains and ``m ~ Beta(1, 1)``, and returns

    x_ipmix = (1 - m) x + m * sum_i w_i chain_i(x)

where chain ``i`` starts from ``x``, picks its level uniformly from {image, patch} and applies
``n_i ~ U{0, ..., depth}`` steps of that level:

- image level: one op from equalize, posterize, rotate, solarize, shear x/y, translate x/y, mirror, invert
  (``all_ops`` adds autocontrast, colour, contrast, brightness, sharpness) at strength ``L ~ U(0.1, severity)``
  with AugMix's scalings;
- patch/pixel level: a patch of side ``s`` (a random one of ``patch_sizes``; ``s`` = image size is the pixel
  level), square or with random sides in ``{2..s}``, at a random position, is replaced by one of four pixel-wise
  mixes of the current patch ``x1`` with the same patch ``x2`` of the partner (``f``, or with probability
  ``partner_aug_prob`` an image-level-augmented copy of ``x``), with ``(a, b)`` from ``beta``:
  add ``(a(2x1-1) + b(2x2-1) + 1)/2``, multiply ``(2x1)^a max(2x2, 1e-37)^b / 2``, random pixels, random elements.

The official code does this one PIL image at a time in DataLoader workers. Here every random choice above is a
tensor of per-image draws and each step is a handful of batched tensor ops over the images that take it (grouped
by operation), so a batch on any device is augmented in one call with per-image randomness. Results are clamped
to [0, 1] (the official uint8 conversion wraps around instead).

Only what a step needs is computed: each op runs on the images whose chain chose it; a patch step reads, mixes and
writes back only the window holding its patch, and makes only that window of its partner (a window of the mixing
picture, or the partner's image op evaluated on the window's pixels); chains add their weighted result to the
output as they finish. On CPU the batch is processed in chunks of images whose buffers are reused, because at
224 px fresh batch-sized temporaries cost more in page faults than the arithmetic done on them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform

from .._core.image import to_float_batch
from . import image_ops as O
from .fractals import MixingSet, MixingSource, _random_bytes

__all__ = ["IPMix", "IPMIX_PRESETS", "IMAGE_OPS", "ALL_IMAGE_OPS", "MIXING_OPS"]

IMAGE_OPS = (
    "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y", "mirror", "invert",
)  # fmt: skip
ALL_IMAGE_OPS = IMAGE_OPS + ("autocontrast", "color", "contrast", "brightness", "sharpness")
MIXING_OPS = ("add", "multiply", "random_pixels", "random_elems")

#: Defaults of the official CIFAR and ImageNet scripts. Patch sizes are fractions of the image side
#: ({4, 8, 16, 32} px at 32 px; {4, 8, 16, 32, 64, 224} px at 224 px).
IPMIX_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": dict(beta=3.0, severity=3.0, patch_sizes=(1 / 8, 1 / 4, 1 / 2, 1.0), partner_aug_prob=0.0),
    "imagenet": dict(
        beta=4.0,
        severity=1.0,
        patch_sizes=(4 / 224, 8 / 224, 16 / 224, 32 / 224, 64 / 224, 1.0),
        partner_aug_prob=0.5,
    ),
}

_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# Ops that run as one batched call; "invert" is solarize with threshold 0.
_GROUPS = {
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
_CHAIN_TYPES = ("image", "patch")


class _Rng:
    """Random draws for one call, from ``generator`` (on its own device) or the global RNG of ``device``."""

    def __init__(self, device: torch.device, generator: torch.Generator | None) -> None:
        self.device = device
        self.generator = generator
        self.draw_device = generator.device if generator is not None else device

    def rand(self, *shape: int) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, device=self.draw_device)
        return u.to(self.device, non_blocking=True)

    def bytes(self, *shape: int) -> torch.Tensor:
        b = _random_bytes(shape, self.generator, self.draw_device)
        return b.to(self.device, non_blocking=True)


class IPMix(Transform):
    """IPMix data augmentation, batched with per-sample randomness.

    Args:
        mixing_set: where mixing pictures come from: ``None`` for procedurally generated fractals (the
            default; see :class:`~robaug.transforms.fractals.MixingSet`), a tensor ``(M, C, H, W)``, a folder of
            images, a dataset of images, or a :class:`MixingSet`. Pictures are resized to the input size and
            converted to its channel count.
        width: number of augmentation chains ``k`` (3).
        depth: maximum chain length ``t``; each chain takes ``U{0..t}`` steps (3).
        beta: mixing-strength parameter of the patch mixes (preset: 3 CIFAR, 4 ImageNet).
        severity: image-level op strength, ``L ~ U(0.1, severity)`` (preset: 3 CIFAR, 1 ImageNet).
        patch_sizes: patch sides, as fractions of the image side (floats in (0, 1]) or pixels (ints);
            1.0 is the pixel level (preset: {1/8, 1/4, 1/2, 1} CIFAR).
        all_ops: also use autocontrast, colour, contrast, brightness and sharpness (which overlap
            ImageNet-C corruptions).
        num_views: number of augmented views. ``1`` returns the augmented image; ``2`` (or more) returns
            the clean image followed by independent views that share the mixing picture, for the JSD
            loss: a tuple ``(x, view1, view2)`` for a single image (PIL or ``(C, H, W)``), and for a batch
            ``(B, C, H, W)`` one tensor ``[x | view1 | view2]`` of ``3B`` images, the order timm's
            ``JsdCrossEntropy`` and :class:`robaug.losses.JSDLoss` split.
        partner_aug_prob: probability that a patch step mixes with an image-level-augmented copy of the
            input instead of the mixing picture (preset: 0 CIFAR code, 0.5 ImageNet code and paper).
        chain_types: levels chains may take, ``("image", "patch")``; one of them alone gives the ablations
            (and the figures) of a single level.
        preset: ``"cifar"`` or ``"imagenet"``; supplies every argument left at ``None``.
        generator: optional ``torch.Generator`` for all random draws (else the global RNG of the input's
            device; DataLoader workers seed theirs differently, so workers give different augmentations).
        validate: check float input for NaN/inf and the [0, 1] range (one host-device sync).

    Labels and other non-image inputs pass through unchanged. Input: PIL (``L``/``RGB``), ``(C, H, W)`` or
    ``(..., C, H, W)`` uint8 or float tensors, ``tv_tensors.Image``; output has the input's type, dtype and
    device. The discrete choices of a call (chain levels, lengths, ops) are grouped on the host, which costs
    one device-to-host copy per call on a GPU.
    """

    def __init__(
        self,
        mixing_set: MixingSource | MixingSet = None,
        width: int = 3,
        depth: int = 3,
        beta: float | None = None,
        severity: float | None = None,
        patch_sizes: Sequence[float | int] | None = None,
        all_ops: bool = False,
        num_views: int = 1,
        partner_aug_prob: float | None = None,
        chain_types: Sequence[str] = _CHAIN_TYPES,
        preset: str = "cifar",
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if preset not in IPMIX_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(IPMIX_PRESETS)}")
        defaults = IPMIX_PRESETS[preset]
        self.preset = preset
        self.width = int(width)
        self.depth = int(depth)
        self.beta = float(defaults["beta"] if beta is None else beta)
        self.severity = float(defaults["severity"] if severity is None else severity)
        self.patch_sizes = tuple(defaults["patch_sizes"] if patch_sizes is None else patch_sizes)
        self.partner_aug_prob = float(defaults["partner_aug_prob"] if partner_aug_prob is None else partner_aug_prob)
        self.all_ops = bool(all_ops)
        self.num_views = int(num_views)
        self.chain_types = tuple(chain_types)
        self.validate = bool(validate)
        self.generator = generator
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"IPMix needs width >= 1 and depth >= 0, got width={width}, depth={depth}")
        if self.num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if not 0.1 <= self.severity <= 10:
            raise ValueError(f"severity must be in [0.1, 10] (AugMix's level scale), got {self.severity}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0 <= self.partner_aug_prob <= 1:
            raise ValueError(f"partner_aug_prob must be in [0, 1], got {self.partner_aug_prob}")
        if not self.patch_sizes or any(
            (isinstance(s, float) and not 0 < s <= 1) or (not isinstance(s, float) and int(s) < 1)
            for s in self.patch_sizes
        ):
            raise ValueError(
                f"patch_sizes must be fractions in (0, 1] or pixel sizes >= 1, got {self.patch_sizes}"
            )
        if not self.chain_types or any(t not in _CHAIN_TYPES for t in self.chain_types):
            raise ValueError(f"chain_types must be a non-empty subset of {_CHAIN_TYPES}, got {chain_types}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.mixing_set = mixing_set if isinstance(mixing_set, MixingSet) else MixingSet(mixing_set)
        self._ops = ALL_IMAGE_OPS if self.all_ops else IMAGE_OPS
        group_names = list(_GROUPS)
        self._op2group = torch.tensor(
            [next(group_names.index(g) for g, members in _GROUPS.items() if o in members) for o in self._ops]
        )

    # ------------------------------------------------------------------------------------------------
    # torchvision v2 plumbing

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.Video)):
                raise TypeError(
                    f"IPMix got a {type(inpt).__name__}: it is a classification augmentation (a mix of several "
                    "augmented copies), so boxes, masks and videos cannot follow it."
                )

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt
        x, restore = to_float_batch(inpt, name="IPMix input", validate=self.validate)
        # uint8 results are clamped when converted back, so skip the extra pass there; and for uint8 / PIL input
        # ``x`` is a float copy nobody else holds, so the result can overwrite it (no second batch-sized buffer)
        to_uint8 = isinstance(inpt, PIL.Image.Image) or inpt.dtype == torch.uint8
        views = self._augment(x, clamp=not to_uint8, inplace=to_uint8)  # (V, B, C, H, W)
        if self.num_views == 1:
            return restore(views[0])
        outs = [restore(v) for v in views]
        if isinstance(inpt, PIL.Image.Image) or inpt.ndim == 3:
            return (inpt, *outs)
        plain = [inpt.as_subclass(torch.Tensor)] + [o.as_subclass(torch.Tensor) for o in outs]
        out = torch.cat(plain, dim=0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    # ------------------------------------------------------------------------------------------------
    # the algorithm

    def _patch_pixels(self, height: int, width: int) -> tuple[list[int], list[int]]:
        hs, ws = [], []
        for s in self.patch_sizes:
            if isinstance(s, float):
                hs.append(min(height, max(2, round(s * height))))
                ws.append(min(width, max(2, round(s * width))))
            else:
                hs.append(min(height, max(2, int(s))))
                ws.append(min(width, max(2, int(s))))
        return hs, ws

    @torch.no_grad()
    def augment(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """IPMix views of a float batch ``(B, C, H, W)`` in [0, 1]: a tensor ``(num_views, B, C, H, W)``.

        The result is a convex combination of values in [0, 1]; ``clamp=False`` skips the final clamp that
        removes rounding errors of order 1e-7 (for callers that clamp anyway).
        """
        return self._augment(x, clamp, inplace=False)

    def _augment(self, x: torch.Tensor, clamp: bool, inplace: bool) -> torch.Tensor:
        """:meth:`augment`; with ``inplace`` (and one view) the result is written into ``x`` itself."""
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"augment() expects a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
        x = x.contiguous()  # windows are read through flat offsets
        b, c, h, w = x.shape
        device = x.device
        rng = _Rng(device, self.generator)
        views, k, depth = self.num_views, self.width, self.depth
        nv = views * b
        n = nv * k  # chain j belongs to view-image j // k; view-image i is image i % b

        # Every uniform of the call in one draw on the device; decoded on the host (numpy), which costs one
        # device-to-host copy per call on a GPU and keeps hundreds of tiny tensor ops off the device.
        sizes = [b, nv * (3 * k + 1), n * depth * _U_COLUMNS]
        u_pic, u_chain, u = np.split(rng.rand(sum(sizes)).cpu().numpy(), np.cumsum(sizes)[:-1])

        # One mixing picture per image, shared by its views. Only the windows patch steps mix with are read
        # (from the uint8 set), so no float copy of the pictures is made.
        pic = self._pictures(u_pic)
        mix = self.mixing_set.pixels((h, w), c, device)  # float in [0, 1], or uint8 for large sets

        # Per chain: weight w ~ Dirichlet(1, ..., 1), level (image / patch), length U{0..depth}; per image m ~ U(0, 1).
        u_chain, m = u_chain[: nv * 3 * k].reshape(nv, k, 3), u_chain[nv * 3 * k :]
        e = -np.log1p(-u_chain[..., 0])  # Exp(1) draws; normalised they are Dirichlet(1, ..., 1)
        weights = (e / np.maximum(e.sum(1, keepdims=True), 1e-30)).astype(np.float32)
        ntypes = len(self.chain_types)
        ctype = np.minimum((u_chain[..., 1] * ntypes).astype(np.int64), ntypes - 1).reshape(n)
        is_img = ctype == (self.chain_types.index("image") if "image" in self.chain_types else -1)
        steps = np.minimum((u_chain[..., 2] * (depth + 1)).astype(np.int64), depth).reshape(n)
        # Chains that take no step are x itself: fold their weight into x's coefficient.
        coef_x = ((1 - m) + m * (weights * (steps.reshape(nv, k) == 0)).sum(1)).astype(np.float32)
        chain_w = (m.reshape(nv, 1) * weights).reshape(n).astype(np.float32)

        # Per chain and step: every discrete choice and parameter.
        u = u.reshape(n, depth, _U_COLUMNS)
        nops = len(self._ops)
        op = np.minimum((u[..., 0] * nops).astype(np.int64), nops - 1)
        partner_op = np.minimum((u[..., 1] * nops).astype(np.int64), nops - 1)
        mix_op = np.minimum((u[..., 2] * len(MIXING_OPS)).astype(np.int64), len(MIXING_OPS) - 1)
        partner_aug = u[..., 3] < self.partner_aug_prob
        params = self._step_params(u, op, partner_op, h, w)  # (n, depth, _P_COLUMNS) float32
        op2group = self._op2group.numpy()
        # (n, 5, depth): op group, partner's op group, mixing op, partner is augmented, patch-size index
        groups = np.stack([op2group[op], op2group[partner_op], mix_op, partner_aug, params[..., -1].astype(np.int64)], 1)

        # Images are processed in chunks of `per_chunk` images (all their chains), so that every temporary stays
        # small: on CPU, large fresh allocations cost more in page faults than the arithmetic done on them.
        inplace = inplace and views == 1
        out = x if inplace else torch.empty((nv, c, h, w), dtype=x.dtype, device=device)
        per_chunk = _images_per_chunk(b, k, c * h * w * x.element_size(), device)
        ws = _Workspace(x.dtype, device)  # the chunks' large buffers, reused from chunk to chunk
        for v in range(views):
            for i0 in range(0, b, per_chunk):
                i1 = min(b, i0 + per_chunk)
                s0, s1 = v * b + i0, v * b + i1  # view-images; their chains are s0 * k ... s1 * k - 1
                chunk = slice(s0 * k, s1 * k)
                self._augment_chunk(
                    x[i0:i1], out[s0:s1], mix, pic[i0:i1], coef_x[s0:s1], chain_w[chunk], steps[chunk],
                    is_img[chunk], groups[chunk], params[chunk], rng, ws, clamp, inplace,
                )  # fmt: skip
        return out.view(views, b, c, h, w)

    def _pictures(self, u: np.ndarray) -> np.ndarray:
        """Mixing-picture indices from uniforms ``u`` (one per image), uniform over the mixing set."""
        num_pics = len(self.mixing_set)
        return np.minimum((u * num_pics).astype(np.int64), num_pics - 1)

    def _augment_chunk(
        self, x: torch.Tensor, dst: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, coef_x: np.ndarray,
        chain_w: np.ndarray, steps: np.ndarray, is_img: np.ndarray, groups: np.ndarray, params: np.ndarray,
        rng: _Rng, ws: "_Workspace", clamp: bool, inplace: bool,
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
        k = self.width
        active = steps > 0
        img = np.flatnonzero(is_img & active)
        patch = np.flatnonzero(~is_img & active)
        # Only patch steps draw from the RNG (their masks), so the two kinds of chains can run one after the other.
        if patch.size:
            state, full, changes = self._patch_chains(x, mix, pic, patch, steps, groups, params, chain_w, rng, ws)
            # chains that only change windows are x plus their changes: fold their x into x's coefficient
            windowed = np.setdiff1d(patch, full, assume_unique=True)
            coef_x = coef_x + np.bincount(windowed // k, chain_w[windowed], coef_x.size)
        orders = self._image_orders(img, steps, groups[:, 0])
        if orders:
            first = orders[0][0]
            src = torch.index_select(x, 0, _to_device(first // k, device), out=ws.get("input", (first.size, c, h, w)))
        coef = _to_device(coef_x.astype(np.float32), device).view(-1, 1, 1, 1)
        out = x.mul_(coef) if inplace else torch.mul(x, coef, out=dst)  # x is not read any more
        if patch.size:
            if full.size:
                block = state[: full.size].mul_(_to_device(chain_w[full], device).view(-1, 1, 1, 1))
                out.index_add_(0, _to_device(full // k, device), block)
            for at, change in changes:
                out.view(-1).index_add_(0, at, change)
        if orders:
            self._image_chains(src, out, orders, steps, params, chain_w, ws)
        if clamp:
            out.clamp_(0, 1)

    def _image_orders(self, chains: np.ndarray, steps: np.ndarray, op_group: np.ndarray) -> list:
        """Per step, the image-level chains still running, sorted by op group and, within a group, the chains
        that continue first; with the count of each (group, last step) pair."""
        orders = []
        for d in range(self.depth):
            run = chains[steps[chains] > d]
            if not run.size:
                break
            orders.append(_sort_by(run, op_group[run, d] * 2 + (steps[run] == d + 1), 2 * len(_GROUPS)))
        return orders

    def _image_chains(
        self, src: torch.Tensor, out: torch.Tensor, orders: list, steps: np.ndarray, params: np.ndarray,
        chain_w: np.ndarray, ws: "_Workspace",
    ) -> None:  # fmt: skip
        """Image-level chains: ``out[j // width] += w_j chain_j(x)``; ``src`` holds their inputs in step 0's order.

        Each step (:meth:`_image_orders`) writes the continuing chains' images in the order the next step sorts
        them, so a step reads every op group's images as one contiguous slice.
        """
        device = src.device
        _, c, h, w = src.shape
        k = self.width
        cur = src
        for d, (order, counts2) in enumerate(orders):
            following = orders[d + 1][0] if d + 1 < len(orders) else order[:0]
            position = np.zeros(steps.size, dtype=np.int64)
            position[following] = np.arange(following.size)
            rows = _to_device(np.stack([order // k, position[order]]), device)  # image, row at the next step
            owner, dest = rows[0], rows[1]
            prm = _to_device(params[order, d, :_OP_COLUMNS], device)
            wgt = _to_device(chain_w[order], device).view(-1, 1, 1, 1)
            nxt = ws.get(f"image{d % 2}", (following.size, c, h, w)) if following.size else None
            start = 0
            for gi, group in enumerate(_GROUPS):
                n_cont, n_end = counts2[2 * gi], counts2[2 * gi + 1]
                if not n_cont + n_end:
                    continue
                mid, stop = start + n_cont, start + n_cont + n_end
                y = self._image_op(group, cur[start:stop], prm[start:stop])
                if n_cont:
                    nxt.index_copy_(0, dest[start:mid], y[:n_cont])
                if n_end:
                    out.index_add_(0, owner[mid:stop], y[n_cont:].mul_(wgt[mid:stop]))
                start = stop
            cur = nxt

    def _patch_chains(
        self, x: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, chains: np.ndarray, steps: np.ndarray,
        groups: np.ndarray, params: np.ndarray, chain_w: np.ndarray, rng: _Rng, ws: "_Workspace",
    ) -> tuple[torch.Tensor, np.ndarray, list]:
        """Patch-level chains, one patch step after another on copies of x.

        Chains that take a whole-image step (patch size = image) run on full copies of x, rows ``0 .. n - 1`` of
        the returned state, for chains ``full``: their result is ``state[:n]``. The others only ever change
        windows, so only their windows are copied from x, and each step's change inside the window, times the
        chain's weight, is recorded in ``changes`` as ``(flat offsets into the output, values)``: their result
        is ``x`` plus those changes. Returns ``(state, full, changes)``.
        """
        device = x.device
        _, c, h, w = x.shape
        k, chw = self.width, c * h * w
        hs, ws_ = self._patch_pixels(h, w)
        whole_index = [i for i, size in enumerate(zip(hs, ws_)) if size == (h, w)]
        taken = np.arange(self.depth) < steps[chains][:, None]  # (chains, depth): the steps each chain takes
        size_idx = groups[chains, 4]  # (chains, depth)
        has_whole = (np.isin(size_idx, whole_index) & taken).any(1)
        if h * w < _WINDOWED_STATE_PIXELS:  # small images: full copies for all (fewer, larger ops)
            has_whole[:] = True
        order = np.concatenate([np.flatnonzero(has_whole), np.flatnonzero(~has_whole)])
        full = chains[order[: int(has_whole.sum())]]
        slot = np.full(steps.size, -1, dtype=np.int64)
        slot[chains[order]] = np.arange(chains.size)
        state = ws.get("patch", (chains.size, c, h, w))
        if full.size:
            torch.index_select(x, 0, _to_device(full // k, device), out=state[: full.size])
        windowed = ~has_whole[:, None] & taken
        for si, (sh, sw) in enumerate(zip(hs, ws_)):  # copy x into every window the other chains will read
            pos, d = np.nonzero(windowed & (size_idx == si))
            if not pos.size:
                continue
            j = chains[pos]
            prm = params[j, d]
            corner = (prm[:, 2 * _OP_COLUMNS] * w + prm[:, 2 * _OP_COLUMNS + 1]).astype(np.int64)
            offsets = _to_device(np.stack([slot[j] * chw + corner, (j // k) * chw + corner]), device)
            local = _window_offsets(c, h, w, sh, sw, device).view(1, -1)
            values = x.view(-1).index_select(0, (offsets[1].view(-1, 1) + local).view(-1))
            state.view(-1).index_copy_(0, (offsets[0].view(-1, 1) + local).view(-1), values)
        changes: list = []
        change_w = None
        if full.size < chains.size:
            change_w = np.where(np.isin(np.arange(steps.size), full), 0, chain_w).astype(np.float32)
        for d in range(self.depth):
            run = chains[steps[chains] > d]
            if not run.size:
                break
            self._patch_step(state, x, mix, pic, run, slot, groups[:, :, d], params[:, d], rng, change_w, changes)
        return state, full, changes

    # -- parameters (host, numpy float32) -----------------------------------------------------------------

    def _op_params(self, op: np.ndarray, level_u: np.ndarray, sign_u: np.ndarray, h: int, w: int) -> np.ndarray:
        """Per-step image-op parameters with AugMix's scalings (level L ~ U(0.1, severity), PARAMETER_MAX 10).

        Columns: posterize bits 4 - int(0.4 L); solarize threshold (256 - int(25.6 L)) / 255 (0 for invert);
        autocontrast cutoff 10 - L; enhance factor 0.18 L + 0.1; 6 normalised affine coefficients for rotate
        int(3 L) degrees (counter-clockwise), shear 0.03 L (about the top-left corner, as PIL), translate
        int(L * side / 30) px, each with a random sign.
        """
        f32 = np.float32
        names = self._ops
        level = (f32(0.1) + level_u * f32(self.severity - 0.1)).astype(f32)
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

    def _step_params(self, u: np.ndarray, op: np.ndarray, partner_op: np.ndarray, h: int, w: int) -> np.ndarray:
        """All per-(chain, step) parameters ``(n, depth, _P_COLUMNS)`` (float32).

        Columns: image-op parameters (:meth:`_op_params`), the same for the partner's op, then the patch's top,
        left, height, width, ``a``, ``b``, ``(1 - a - b) / 2``, keep threshold and patch-size index.
        """
        f32 = np.float32
        img = self._op_params(op, u[..., 4], u[..., 5], h, w)
        if self.partner_aug_prob > 0:
            partner = self._op_params(partner_op, u[..., 16], u[..., 17], h, w)
        else:
            partner = np.zeros_like(img)
        # Patch: side from patch_sizes; square with p = 0.5, else sides U{2..s}; top-left corner uniform.
        hs, ws = self._patch_pixels(h, w)
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
        ua, ub = u[..., 13] ** f32(1.0 / self.beta), u[..., 14] ** f32(1.0 / self.beta)
        a = np.where(branch, ua, 2 - ua)
        bb = np.where(branch, 1 - ub, ub - 1)
        keep_thr = np.round(u[..., 15] * 256)  # random pixels/elements keep x1 where a byte < 256 p, p ~ U(0, 1)
        patch = np.stack([top, left, ph, pw, a, bb, (1 - a - bb) / 2, keep_thr, size_idx], -1).astype(f32)
        return np.concatenate([img, partner, patch], -1)

    # -- image level -------------------------------------------------------------------------------------

    def _image_ops(
        self, src: torch.Tensor, src_rows: torch.Tensor, dst: torch.Tensor, dst_rows: torch.Tensor,
        prm: torch.Tensor, counts: list[int], dst_start: int | None = None, window: tuple | None = None,
    ) -> None:  # fmt: skip
        """``dst[dst_rows[i]] = op_i(src[src_rows[i]])`` with rows sorted by op group (``counts`` per group).

        With ``dst_start`` the destination rows are known to be ``dst_start, dst_start + 1, ...`` (written as slices).
        With ``window=(top, left, height, width)`` (``top``/``left`` one entry per row) only that window of each
        result is computed and written (``dst`` has windows for rows): the same values as cropping the full result.
        """
        start = 0
        for group, count in zip(_GROUPS, counts):
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
                    y = O.hflip(_windows(src, rows, top, src.shape[-1] - ww - left, wh, ww))
                else:  # point-wise ops
                    y = self._image_op(group, _windows(src, rows, top, left, wh, ww), p)
            else:
                y = self._image_op(group, src.index_select(0, rows), p)
                if window is not None:  # ops that need the whole image: crop the result
                    top, left, wh, ww = window
                    y = _windows(y, None, top[start:stop], left[start:stop], wh, ww)
            if dst_start is None:
                dst.index_copy_(0, dst_rows[start:stop], y)
            else:
                dst[dst_start + start : dst_start + stop].copy_(y)
            start = stop

    @staticmethod
    def _image_op(group: str, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """One op group on a batch with its rows' parameter columns ``p``."""
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

    # -- patch / pixel level ------------------------------------------------------------------------------

    def _patch_step(
        self, state: torch.Tensor, x: torch.Tensor, mix: torch.Tensor, pic: np.ndarray, chains_h: np.ndarray,
        slot: np.ndarray, groups: np.ndarray, params: np.ndarray, rng: _Rng, change_w: np.ndarray | None,
        changes: list,
    ) -> None:  # fmt: skip
        """One patch-mixing step for ``chains_h``; ``groups`` ``(n, 5)`` and ``params`` are this step's.

        ``state[slot[j]]`` is chain ``j``'s current image, ``x`` holds the images (chain ``j``'s is row
        ``j // width``), ``mix`` the mixing set and ``pic`` the mixing picture of each image. Chains are grouped
        by patch size, then by mixing op. For patches smaller than the image only the ``s x s`` window that holds
        the patch is gathered, mixed and written back, and only that window of the partner is made (read from
        the mixing picture, or computed by the partner's image op). The change inside each window times
        ``change_w`` of its chain is appended to ``changes`` (see :meth:`_patch_chains`; not when ``None``).
        """
        device = state.device
        _, c, h, w = state.shape
        hs, ws = self._patch_pixels(h, w)
        nmix = len(MIXING_OPS)
        chains, counts = _sort_by(chains_h, groups[chains_h, 4] * nmix + groups[chains_h, 2], len(hs) * nmix)
        prm_h = params[chains]
        owner_h = chains // self.width
        corner_h = (prm_h[:, 2 * _OP_COLUMNS] * w + prm_h[:, 2 * _OP_COLUMNS + 1]).astype(np.int64)  # top * w + left
        # rows of: state, x (owner), the mixing picture; flat offsets of the windows' corners
        idx = _to_device(np.stack([slot[chains], owner_h, pic[owner_h], corner_h]), device)
        rows, owner, pic_rows, corner = idx[0], idx[1], idx[2], idx[3]
        prm = _to_device(prm_h, device)
        # the partner is an image-level-augmented copy of x (probability partner_aug_prob) or the mixing picture
        aug_h = groups[chains, 3].astype(bool) if self.partner_aug_prob > 0 else None

        pp = prm[:, 2 * _OP_COLUMNS :]  # top, left, patch height, patch width, a, b, (1 - a - b) / 2, keep threshold
        chw = c * h * w
        pool_sizes = []
        for size_index, (sh, sw) in enumerate(zip(hs, ws)):
            for op, count in zip(MIXING_OPS, counts[size_index * nmix : (size_index + 1) * nmix]):
                pool_sizes.append(count * (1 if op == "random_pixels" else c) * sh * sw if op.startswith("random") else 0)
        pool = rng.bytes(sum(pool_sizes)) if sum(pool_sizes) else None  # the masks' random bytes, one draw per step
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
                local = _window_offsets(c, h, w, sh, sw, device)
                idx1 = (r1.mul(chw).add_(corner[start:stop]).view(-1, 1, 1, 1) + local).view(-1)
                x1 = state.view(-1).index_select(0, idx1).view(-1, c, sh, sw)
                ys, xs = _window_grid(sh, sw, device)
                in_rows, in_cols = ys < ph, xs < pw
                # the windows' flat offsets in their images (shared by x, the mixing set and the partners)
                flat = (corner[start:stop].view(-1, 1, 1, 1) + local).view(-1, c * sh * sw)
            before = None if whole or change_w is None else x1.clone()
            x2 = self._partners(x, mix, owner, pic_rows, flat, pp, prm, chains, groups, aug_h, start, stop, sh, sw)
            # (n, 1, sh, sw): the patch inside the window, as the product of small row and column masks
            rect = (in_rows.to(x1.dtype) * in_cols.to(x1.dtype)).unsqueeze(1)
            sizes = pool_sizes[size_index * nmix : (size_index + 1) * nmix]
            masks = pool[pool_at : pool_at + sum(sizes)] if pool is not None else None
            self._mix(x1, x2, rect, g, op_counts, masks)
            pool_at += sum(sizes)
            if whole:
                state.index_copy_(0, r1, x1)
            else:
                state.view(-1).index_copy_(0, idx1, x1.view(-1))
            if before is not None:
                wgt = _to_device(change_w[chains[start:stop]], device).view(-1, 1, 1, 1)
                out_at = flat + owner[start:stop].view(-1, 1) * chw
                changes.append((out_at.view(-1), before.sub_(x1).mul_(wgt.neg()).view(-1)))  # w (mixed - current)
            start = stop

    def _partners(
        self, x: torch.Tensor, mix: torch.Tensor, owner: torch.Tensor, pic_rows: torch.Tensor,
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
            plain_t = _to_device(plain, device)
            offsets = None if flat is None else flat.index_select(0, plain_t)
            x2.index_copy_(0, plain_t, pictures(plain_t + start, offsets))
        pos_h, pcounts = _sort_by(np.flatnonzero(aug), groups[chains[start:stop][aug], 1], len(_GROUPS))
        pos = _to_device(pos_h, device)
        sel = pos + start
        partner_prm = prm.index_select(0, sel)[:, _OP_COLUMNS : 2 * _OP_COLUMNS]
        window = None if flat is None else (pp[:, 0].index_select(0, sel), pp[:, 1].index_select(0, sel), sh, sw)
        self._image_ops(x, owner.index_select(0, sel), x2, pos, partner_prm, pcounts, window=window)
        return x2

    @staticmethod
    def _mix(
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
            elif op == "multiply":  # (2 x1)^a max(2 x2, 1e-37)^b / 2 = exp(a log x1 + b log max(x2, 5e-38) + (a + b - 1) log 2)
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


class _Workspace:
    """Named scratch buffers of one call, reused (as views) by every chunk; grown when a chunk needs more.

    Fresh CPU allocations above the allocator's mmap threshold are page-faulted on first write, which costs
    more than the arithmetic done on them; reusing the chunks' large buffers pays that once per call.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self._buffers[name] = torch.empty(numel, dtype=self.dtype, device=self.device)
        return buf[:numel].view(*shape)


@functools.lru_cache(maxsize=64)
def _window_grid(sh: int, sw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates ``(1, sh, 1)`` and ``(1, 1, sw)`` of a window (cached)."""
    return (
        torch.arange(sh, device=device, dtype=torch.float32).view(1, sh, 1),
        torch.arange(sw, device=device, dtype=torch.float32).view(1, 1, sw),
    )


@functools.lru_cache(maxsize=64)
def _window_offsets(c: int, h: int, w: int, sh: int, sw: int, device: torch.device) -> torch.Tensor:
    """Flat offsets ``(C, sh, sw)`` of an ``sh x sw`` window at the corner of a ``(C, h, w)`` image (cached)."""
    ch = torch.arange(c, device=device).view(c, 1, 1) * (h * w)
    return ch + torch.arange(sh, device=device).view(1, sh, 1) * w + torch.arange(sw, device=device).view(1, 1, sw)


def _windows(
    src: torch.Tensor, rows: torch.Tensor | None, top: torch.Tensor, left: torch.Tensor, sh: int, sw: int
) -> torch.Tensor:
    """The ``sh x sw`` windows at ``(top[i], left[i])`` of images ``src[rows[i]]`` (``rows=None``: ``src[i]``)."""
    _, c, h, w = src.shape
    device = src.device
    base = torch.arange(top.shape[0], device=device) if rows is None else rows
    corner = top.long() * w + left.long()
    flat = base.mul(c * h * w).add_(corner).view(-1, 1, 1, 1) + _window_offsets(c, h, w, sh, sw, device)
    return src.reshape(-1).index_select(0, flat.view(-1)).view(-1, c, sh, sw)


def _images_per_chunk(batch: int, width: int, image_bytes: int, device: torch.device) -> int:
    """Images per chunk: on CPU, chunks whose chain images fit in ``_CHUNK_BYTES``; on other devices, all."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, _CHUNK_BYTES // max(1, width * image_bytes)))


def _sort_by(items: np.ndarray, keys: np.ndarray, num_keys: int) -> tuple[np.ndarray, list[int]]:
    """``items`` reordered so equal ``keys`` are contiguous, and the count of each key (host arrays)."""
    order = np.argsort(keys, kind="stable")
    return items[order], np.bincount(keys, minlength=num_keys).tolist()


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


_ENHANCE = {
    "color": O.adjust_saturation,
    "contrast": O.adjust_contrast,
    "brightness": O.adjust_brightness,
    "sharpness": O.adjust_sharpness,
}
_U_COLUMNS = 18  # uniforms per (chain, step); see augment() and _step_params()
_OP_COLUMNS = 10  # bits, threshold, cutoff, factor, 6 affine coefficients
_P_COLUMNS = 2 * _OP_COLUMNS + 9  # image op, partner op, 9 patch columns
# Op groups whose window can be computed from the window (or, for warps, the window's sampling points) alone.
_WINDOWED = ("affine", "shift", "solarize", "posterize", "mirror", "brightness", "color")
# Per-chunk budget of chain images on CPU (width x images x image bytes). Chunks keep the per-op temporaries
# small: the allocator serves blocks below its mmap threshold (32 MiB at most for glibc) from memory it keeps,
# whereas larger ones are mapped afresh and page-faulted on every call (at 224 px that cost more than the
# arithmetic). The chunks' large buffers come from a _Workspace. Larger chunks amortise per-chunk Python work;
# 16-128 MiB measured the same at 224 px.
_CHUNK_BYTES = 64 * 2**20
# From this many pixels per image on, patch chains that never take a whole-image step copy only their windows of
# x and add their windows' changes to the output, instead of copying, weighting and adding whole images.
_WINDOWED_STATE_PIXELS = 96 * 96
