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

from .._image import to_float_batch
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
        views = self.augment(x)  # (V, B, C, H, W)
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
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """IPMix views of a float batch ``(B, C, H, W)`` in [0, 1]: a tensor ``(num_views, B, C, H, W)``."""
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"augment() expects a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        device = x.device
        rng = _Rng(device, self.generator)
        views, k, depth = self.num_views, self.width, self.depth
        nv = views * b
        n = nv * k  # chain j belongs to view-image j // k; view-image i is image i % b

        # One mixing picture per image, shared by its views.
        pic = (rng.rand(b) * len(self.mixing_set)).long().clamp_(max=len(self.mixing_set) - 1)
        pics = self.mixing_set.sample(pic, (h, w), c)
        xv = x.repeat(views, 1, 1, 1) if views > 1 else x

        # Per chain: weight w ~ Dirichlet(1, ..., 1), level (image / patch), length U{0..depth}; per image m ~ U(0, 1).
        u_chain = rng.rand(nv, k, 3)
        e = -torch.log1p(-u_chain[..., 0])  # Exp(1) draws; normalised they are Dirichlet(1, ..., 1)
        weights = e / e.sum(1, keepdim=True)
        m = rng.rand(nv)
        ntypes = len(self.chain_types)
        ctype = (u_chain[..., 1] * ntypes).long().clamp_(max=ntypes - 1).view(n)
        is_img = ctype == (self.chain_types.index("image") if "image" in self.chain_types else -1)
        steps = (u_chain[..., 2] * (depth + 1)).long().clamp_(max=depth).view(n)
        # Chains that take no step are x itself: fold their weight into x's coefficient.
        coef_x = (1 - m) + m * (weights * (steps.view(nv, k) == 0)).sum(1)
        out = xv * coef_x.view(nv, 1, 1, 1)
        if depth == 0:
            return out.clamp_(0, 1).view(views, b, c, h, w)

        # Per chain and step: every discrete choice and parameter, drawn at once.
        u = rng.rand(n, depth, _U_COLUMNS)
        nops = len(self._ops)
        op = (u[..., 0] * nops).long().clamp_(max=nops - 1)
        partner_op = (u[..., 1] * nops).long().clamp_(max=nops - 1)
        mix_op = (u[..., 2] * len(MIXING_OPS)).long().clamp_(max=len(MIXING_OPS) - 1)
        partner_aug = (u[..., 3] < self.partner_aug_prob).long()
        params = self._step_params(u, op, partner_op, h, w)  # (n, depth, 2 * _OP_COLUMNS + 9)

        # The plan goes to the host once (numpy): which chains step at each depth, grouped by op.
        op2group = self._op2group.to(device)
        size_idx = params[..., -1].long()
        plan = torch.cat(
            [is_img.long().view(n, 1), steps.view(n, 1), op2group[op], op2group[partner_op], mix_op, partner_aug, size_idx],
            dim=1,
        ).cpu().numpy()  # fmt: skip
        is_img_h, steps_h = plan[:, 0].astype(bool), plan[:, 1]
        groups_h = plan[:, 2:].reshape(n, 5, depth)
        active_h = np.flatnonzero(steps_h > 0)
        if active_h.size == 0:
            return out.clamp_(0, 1).view(views, b, c, h, w)
        slot_h = np.full(n, -1, dtype=np.int64)
        slot_h[active_h] = np.arange(active_h.size)
        active = _to_device(active_h, device)
        owner = active.div(k, rounding_mode="floor")
        # The active chains' images. Every active chain takes step 0, which reads x itself, so rows are only
        # filled with x beforehand where a step writes part of the image (patches smaller than the image).
        state = torch.empty((active_h.size, c, h, w), dtype=x.dtype, device=device)
        source = (xv, owner)  # where step 0 reads each chain's current image (by row)

        for d in range(depth):
            running = steps_h > d
            img_chains = np.flatnonzero(running & is_img_h)
            if img_chains.size:
                chains, counts = _sort_by(img_chains, groups_h[img_chains, 0, d], len(_GROUPS))
                rows, chains_d = _to_device(np.stack([slot_h[chains], chains]), device)
                prm = params[:, d].index_select(0, chains_d)
                src_rows = rows if d else source[1].index_select(0, rows)
                self._image_ops(state if d else xv, src_rows, state, rows, prm[:, :_OP_COLUMNS], counts)
            patch_chains = np.flatnonzero(running & ~is_img_h)
            if patch_chains.size:
                self._patch_step(
                    state, xv, pics, patch_chains, slot_h, groups_h[:, :, d], params[:, d], rng, b, k, first=d == 0
                )

        state.mul_((m.view(nv, 1) * weights).view(n).index_select(0, active).view(-1, 1, 1, 1))
        out.index_add_(0, owner, state)
        return out.clamp_(0, 1).view(views, b, c, h, w)

    # -- parameters -------------------------------------------------------------------------------------

    def _op_params(self, op: torch.Tensor, level_u: torch.Tensor, sign_u: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Per-step image-op parameters with AugMix's scalings (level L ~ U(0.1, severity), PARAMETER_MAX 10).

        Columns: posterize bits 4 - int(0.4 L); solarize threshold (256 - int(25.6 L)) / 255 (0 for invert);
        autocontrast cutoff 10 - L; enhance factor 0.18 L + 0.1; 6 normalised affine coefficients for rotate
        int(3 L) degrees (counter-clockwise), shear 0.03 L (about the top-left corner, as PIL), translate
        int(L * side / 30) px, each with a random sign.
        """
        names = self._ops
        level = 0.1 + level_u * (self.severity - 0.1)
        sign = torch.where(sign_u < 0.5, -1.0, 1.0)
        bits = 4 - torch.floor(level * 0.4)
        thr = (256 - torch.floor(level * 25.6)) / 255.0
        thr = torch.where(op == names.index("invert"), torch.zeros_like(thr), thr)
        cutoff = 10 - level
        factor = level * 0.18 + 0.1
        # Inverse maps (output -> input, pixel coordinates centred on the image, torchvision's convention):
        # rotate(phi) [cos, -sin, 0, sin, cos, 0]; shear_x(f) about the top-left corner [1, f, f h/2, 0, 1, 0];
        # shear_y(f) [1, 0, 0, f, 1, f w/2]; translate (tx, ty) [1, 0, -tx, 0, 1, -ty].
        def pick(name: str, value: torch.Tensor) -> torch.Tensor:
            return value * (op == names.index(name))

        phi = torch.deg2rad(pick("rotate", torch.floor(level * 3) * sign))
        cos, sin = torch.cos(phi), torch.sin(phi)
        shear = level * 0.03 * sign
        fx, fy = pick("shear_x", shear), pick("shear_y", shear)
        tx = pick("translate_x", torch.floor(level * (w / 30)) * sign)
        ty = pick("translate_y", torch.floor(level * (h / 30)) * sign)
        matrix = torch.stack([cos, fx - sin, fx * (h / 2) - tx, sin + fy, cos, fy * (w / 2) - ty], -1)
        theta = O.affine_theta(matrix, h, w).view(*level.shape, 6)
        return torch.cat([torch.stack([bits, thr, cutoff, factor], -1), theta], -1)

    def _step_params(self, u: torch.Tensor, op: torch.Tensor, partner_op: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """All per-(chain, step) parameters ``(n, depth, 2 * _OP_COLUMNS + 9)``.

        Columns: image-op parameters (:meth:`_op_params`), the same for the partner's op, then the patch's top,
        left, height, width, ``a``, ``b``, ``(1 - a - b) / 2``, keep threshold and patch-size index.
        """
        img = self._op_params(op, u[..., 4], u[..., 5], h, w)
        if self.partner_aug_prob > 0:
            partner = self._op_params(partner_op, u[..., 16], u[..., 17], h, w)
        else:
            partner = torch.zeros_like(img)
        # Patch: side from patch_sizes; square with p = 0.5, else sides U{2..s}; top-left corner uniform.
        hs, ws = self._patch_pixels(h, w)
        size_idx = (u[..., 6] * len(hs)).long().clamp_(max=len(hs) - 1)
        sh = torch.tensor(hs, dtype=u.dtype, device=u.device)[size_idx]
        sw = torch.tensor(ws, dtype=u.dtype, device=u.device)[size_idx]
        top = torch.floor(u[..., 7] * (h - sh + 1))
        left = torch.floor(u[..., 8] * (w - sw + 1))
        square = u[..., 9] < 0.5
        ph = torch.where(square, sh, 2 + torch.floor(u[..., 10] * (sh - 1)))
        pw = torch.where(square, sw, 2 + torch.floor(u[..., 11] * (sw - 1)))
        # (a, b): with p = 0.5 a ~ Beta(beta, 1), b ~ Beta(1, beta); else a = 1 + Beta(1, beta), b = -Beta(1, beta).
        # Beta(beta, 1) = U^(1 / beta) and Beta(1, beta) = 1 - U^(1 / beta) by inversion.
        branch = u[..., 12] < 0.5
        ua, ub = u[..., 13].pow(1.0 / self.beta), u[..., 14].pow(1.0 / self.beta)
        a = torch.where(branch, ua, 2 - ua)
        bb = torch.where(branch, 1 - ub, ub - 1)
        keep_thr = torch.round(u[..., 15] * 256)  # random pixels/elements keep x1 where a byte < 256 p, p ~ U(0, 1)
        patch = torch.stack([top, left, ph, pw, a, bb, (1 - a - bb) / 2, keep_thr], -1)
        return torch.cat([img, partner, patch, size_idx.to(u.dtype).unsqueeze(-1)], -1)

    # -- image level -------------------------------------------------------------------------------------

    def _image_ops(
        self, src: torch.Tensor, src_rows: torch.Tensor, dst: torch.Tensor, dst_rows: torch.Tensor,
        prm: torch.Tensor, counts: list[int],
    ) -> None:  # fmt: skip
        """``dst[dst_rows[i]] = op_i(src[src_rows[i]])`` with rows sorted by op group (``counts`` per group)."""
        start = 0
        for group, count in zip(_GROUPS, counts):
            if not count:
                continue
            stop = start + count
            rows = src_rows[start:stop]
            p = prm[start:stop]
            x = src.index_select(0, rows)
            if group == "affine":
                y = O.warp(x, p[:, 4:10])
            elif group == "shift":
                y = O.warp(x, p[:, 4:10], mode="nearest")
            elif group == "solarize":
                y = O.solarize(x, p[:, 1])
            elif group == "equalize":
                y = O.equalize(x)
            elif group == "posterize":
                y = O.posterize(x, p[:, 0])
            elif group == "mirror":
                y = O.hflip(x)
            elif group == "autocontrast":
                y = O.autocontrast(x, p[:, 2])
            else:
                y = _ENHANCE[group](x, p[:, 3])
            dst.index_copy_(0, dst_rows[start:stop], y)
            start = stop

    # -- patch / pixel level ------------------------------------------------------------------------------

    def _patch_step(
        self, state: torch.Tensor, xv: torch.Tensor, pics: torch.Tensor, chains_h: torch.Tensor,
        slot_h: np.ndarray, groups_h: np.ndarray, params: torch.Tensor, rng: _Rng, batch: int, k: int,
        first: bool,
    ) -> None:  # fmt: skip
        """One patch-mixing step for ``chains_h``; ``groups_h`` ``(n, 5)`` and ``params`` are this step's.

        Chains are grouped by patch size, then by mixing op. For patches smaller than the image only the
        ``s x s`` window that holds the patch is gathered, mixed and written back. At the ``first`` step the
        chains' rows of ``state`` are not filled yet: their current image is ``x``.
        """
        device = state.device
        _, c, h, w = state.shape
        hs, ws = self._patch_pixels(h, w)
        nmix = len(MIXING_OPS)
        chains, counts = _sort_by(chains_h, groups_h[chains_h, 4] * nmix + groups_h[chains_h, 2], len(hs) * nmix)
        rows, chains_d = _to_device(np.stack([slot_h[chains], chains]), device)
        prm = params.index_select(0, chains_d)
        owner = chains_d.div(k, rounding_mode="floor")

        # Partner pictures: the mixing picture, or (partner_aug_prob) an image-level-augmented copy of x.
        src2, rows2 = pics, owner.remainder(batch)
        if self.partner_aug_prob > 0:
            aug_h = groups_h[chains, 3].astype(bool)
            if aug_h.any():
                src2, rows2 = pics.index_select(0, rows2), torch.arange(chains.size, device=device)
                pos_h, pcounts = _sort_by(np.flatnonzero(aug_h), groups_h[chains[aug_h], 1], len(_GROUPS))
                pos = _to_device(pos_h, device)
                partner_prm = prm.index_select(0, pos)[:, _OP_COLUMNS : 2 * _OP_COLUMNS]
                self._image_ops(xv, owner.index_select(0, pos), src2, pos, partner_prm, pcounts)

        pp = prm[:, 2 * _OP_COLUMNS :]  # top, left, patch height, patch width, a, b, (1 - a - b) / 2, keep threshold
        chw = c * h * w
        start = 0
        for size_index, (sh, sw) in enumerate(zip(hs, ws)):
            op_counts = counts[size_index * nmix : (size_index + 1) * nmix]
            stop = start + sum(op_counts)
            if stop == start:
                continue
            g = pp[start:stop]
            r1, r2 = rows[start:stop], rows2[start:stop]
            ph, pw = g[:, 2].view(-1, 1, 1), g[:, 3].view(-1, 1, 1)
            if (sh, sw) == (h, w):
                x1 = xv.index_select(0, owner[start:stop]) if first else state.index_select(0, r1)
                x2 = src2.index_select(0, r2)
                ys = torch.arange(sh, device=device, dtype=g.dtype).view(1, sh, 1) - g[:, 0].view(-1, 1, 1)
                xs = torch.arange(sw, device=device, dtype=g.dtype).view(1, 1, sw) - g[:, 1].view(-1, 1, 1)
                rect = (ys >= 0) & (ys < ph) & (xs >= 0) & (xs < pw)
            else:  # the window starts at the patch's corner
                if first:
                    state.index_copy_(0, r1, xv.index_select(0, owner[start:stop]))
                local = _window_offsets(c, h, w, sh, sw, device)
                corner = (g[:, 0] * w + g[:, 1]).long()
                idx1 = ((r1 * chw + corner).view(-1, 1, 1, 1) + local).view(-1)
                idx2 = ((r2 * chw + corner).view(-1, 1, 1, 1) + local).view(-1)
                x1 = state.view(-1).index_select(0, idx1).view(-1, c, sh, sw)
                x2 = src2.view(-1).index_select(0, idx2).view(-1, c, sh, sw)
                ys = torch.arange(sh, device=device, dtype=g.dtype).view(1, sh, 1)
                xs = torch.arange(sw, device=device, dtype=g.dtype).view(1, 1, sw)
                rect = (ys < ph) & (xs < pw)
            rect = rect.unsqueeze(1).to(x1.dtype)  # (n, 1, sh, sw): the patch inside the window
            self._mix(x1, x2, rect, g, op_counts, rng)
            if (sh, sw) == (h, w):
                state.index_copy_(0, r1, x1)
            else:
                state.view(-1).index_copy_(0, idx1, x1.view(-1))
            start = stop

    @staticmethod
    def _mix(
        x1: torch.Tensor, x2: torch.Tensor, rect: torch.Tensor, prm: torch.Tensor, counts: list[int], rng: _Rng
    ) -> None:
        """In place ``x1 <- x1 + rect * (mix(x1, x2) - x1)``, rows sorted by mixing op (``counts`` per op)."""
        cols = prm[:, 4:8].t().reshape(4, -1, 1, 1, 1)  # a, b, (1 - a - b) / 2, keep threshold
        start = 0
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
                _, c, h, w = y1.shape
                drawn = rng.bytes(count, 1 if op == "random_pixels" else c, h, w)
                y1.lerp_(y2, torch.mul(r, drawn >= p))
            start = stop


@functools.lru_cache(maxsize=64)
def _window_offsets(c: int, h: int, w: int, sh: int, sw: int, device: torch.device) -> torch.Tensor:
    """Flat offsets ``(C, sh, sw)`` of an ``sh x sw`` window at the corner of a ``(C, h, w)`` image (cached)."""
    ch = torch.arange(c, device=device).view(c, 1, 1) * (h * w)
    return ch + torch.arange(sh, device=device).view(1, sh, 1) * w + torch.arange(sw, device=device).view(1, 1, sw)


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
_U_COLUMNS = 18  # uniforms per (chain, step); see augment()
_OP_COLUMNS = 10  # bits, threshold, cutoff, factor, 6 affine coefficients
