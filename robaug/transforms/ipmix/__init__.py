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

Layout: :mod:`.transform` (the :class:`IPMix` transform), :mod:`.plan` (drawing every random choice of a call),
:mod:`.apply` and :mod:`.patch` (carrying a plan out, chunk by chunk), :mod:`.ops` (the op names and the op and
mix kernels).
"""

from .ops import ALL_IMAGE_OPS, IMAGE_OPS, MIXING_OPS
from .transform import IPMIX_PRESETS, IPMix

__all__ = ["IPMix", "IPMIX_PRESETS", "IMAGE_OPS", "ALL_IMAGE_OPS", "MIXING_OPS"]
