"""Input/output normalisation shared by every robaug transform.

Every transform works internally on a float tensor of shape ``(B, C, H, W)`` with values in
``[0, 1]`` on the input's device. :func:`to_float_batch` converts whatever the user passed (PIL
image, ``(C, H, W)`` / ``(..., C, H, W)`` tensor in uint8 or float, ``tv_tensors.Image``) into that
form and returns a function that converts a result back into the input's type, dtype, device and
shape. uint8 is converted back with rounding, not truncation.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

__all__ = ["to_float_batch", "check_finite", "is_image_input", "ImageRestorer", "describe_input", "not_an_image"]

ImageRestorer = Callable[[torch.Tensor], Any]


def is_image_input(inpt: Any) -> bool:
    """True for the inputs robaug transforms act on (PIL images and image tensors)."""
    return isinstance(inpt, (PIL.Image.Image, torch.Tensor))


#: What to pass, said by every "not an image" error.
_WHAT_TO_PASS = (
    "robaug takes images as a PIL image, a torch.Tensor (C, H, W) or (..., C, H, W) (uint8 in [0, 255] or float in "
    "[0, 1]) or a tv_tensors.Image"
)


def describe_input(inpt: Any) -> str:
    """A short description of what a user passed, for error messages: ``numpy.ndarray of shape (28, 28, 1) and
    dtype uint8``, ``list of 3 floats``, ``tuple (numpy.ndarray of shape ..., int)``."""
    if isinstance(inpt, np.ndarray):
        return f"numpy.ndarray of shape {tuple(inpt.shape)} and dtype {inpt.dtype}"
    if isinstance(inpt, tuple) and len(inpt) <= 4:
        return "tuple (" + ", ".join(describe_input(v) for v in inpt) + ")"
    if isinstance(inpt, (list, tuple)):
        kinds = "/".join(sorted({type(v).__name__ for v in inpt})) or "item"
        return f"{type(inpt).__name__} of {len(inpt)} {kinds}{'' if len(inpt) == 1 else 's'}"
    if isinstance(inpt, dict):
        return "dict with keys " + ", ".join(repr(k) for k in list(inpt)[:6])
    if isinstance(inpt, torch.Tensor):
        return f"{type(inpt).__name__} of shape {tuple(inpt.shape)} and dtype {inpt.dtype}"
    return type(inpt).__name__


def not_an_image(inpt: Any, name: str = "input") -> TypeError:
    """The TypeError for an input that is not an image robaug converts (numpy arrays, lists of numbers, ...),
    saying what was passed and how to convert it. The one place every robaug transform decides this."""
    msg = f"{name}: got {describe_input(inpt)}, which holds no image; {_WHAT_TO_PASS}."
    if isinstance(inpt, np.ndarray) or _holds_array(inpt):
        msg += (
            " Numpy arrays are not converted: turn an (H, W, C) array into a tensor with "
            "torch.from_numpy(a).permute(2, 0, 1) (a (C, H, W) array: torch.from_numpy(a)), or put v2.ToImage() "
            "before the transform."
        )
    elif isinstance(inpt, (list, tuple)):
        msg += " For a list of pixel values use torch.tensor(values).view(C, H, W)."
    return TypeError(msg)


def _holds_array(inpt: Any) -> bool:
    if isinstance(inpt, (list, tuple)):
        return any(isinstance(v, np.ndarray) or _holds_array(v) for v in inpt)
    if isinstance(inpt, dict):
        return any(_holds_array(v) or isinstance(v, np.ndarray) for v in inpt.values())
    return False


def check_finite(x: torch.Tensor, name: str = "input") -> None:
    """Raise a ValueError when ``x`` holds NaN or inf (one host-device sync)."""
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(
            f"{name} contains NaN or inf values; robaug transforms need finite pixel values "
            "(check the preceding transforms, e.g. a Normalize with std=0)."
        )


def to_float_batch(
    inpt: Any, *, name: str = "input", validate: bool = True, range_tol: float = 1e-3
) -> tuple[torch.Tensor, ImageRestorer]:
    """Convert ``inpt`` to a float32 ``(B, C, H, W)`` tensor in ``[0, 1]``.

    Returns ``(batch, restore)`` where ``restore(y)`` turns a float ``(B, C, H, W)`` result in
    ``[0, 1]`` (same B and C, any H/W) back into the type, dtype, device and leading shape of
    ``inpt``. ``validate`` checks for NaN/inf and, for float input, the ``[0, 1]`` range; it costs
    one host-device sync and can be turned off in hot loops.
    """
    if isinstance(inpt, PIL.Image.Image):
        mode = inpt.mode
        if mode not in ("L", "RGB"):
            raise TypeError(
                f"{name}: PIL images must be mode 'L' or 'RGB', got {mode!r}; "
                "convert first, e.g. img.convert('RGB')."
            )
        batch = TF.pil_to_tensor(inpt).unsqueeze(0).float().div_(255.0)

        def restore_pil(y: torch.Tensor) -> PIL.Image.Image:
            out = float_to_uint8(y[0])
            return TF.to_pil_image(out, mode=mode)

        return batch, restore_pil

    if not isinstance(inpt, torch.Tensor):
        raise not_an_image(inpt, name)

    is_tv_image = isinstance(inpt, tv_tensors.Image)
    plain = inpt.as_subclass(torch.Tensor)
    if plain.ndim < 3:
        raise ValueError(
            f"{name}: expected shape (C, H, W) or (B, C, H, W), got {tuple(plain.shape)}; "
            "add a channel dimension, e.g. x.unsqueeze(0) for a (H, W) grayscale image."
        )
    lead = plain.shape[:-3]
    c, h, w = plain.shape[-3:]
    if plain.numel() == 0:
        raise ValueError(f"{name}: got an empty batch or image of shape {tuple(plain.shape)}.")
    if c not in (1, 3):
        raise ValueError(
            f"{name}: expected 1 or 3 channels in dim -3, got shape {tuple(plain.shape)} "
            f"({c} channels); robaug uses the (..., C, H, W) layout. For (H, W, C) arrays use "
            "x.permute(2, 0, 1)."
        )
    dtype = plain.dtype
    if dtype == torch.uint8:
        batch = plain.reshape(-1, c, h, w).float().div_(255.0)
    elif dtype.is_floating_point:
        batch = plain.reshape(-1, c, h, w).float()
        if validate:
            check_finite(batch, name)
            lo, hi = torch.aminmax(batch.detach())
            if float(lo) < -range_tol or float(hi) > 1.0 + range_tol:
                raise ValueError(
                    f"{name}: float images must lie in [0, 1], got values in [{float(lo):.3g}, {float(hi):.3g}]. "
                    "Apply robaug transforms before Normalize, or pass uint8 images in [0, 255]."
                )
            batch = batch.clamp(0.0, 1.0)
    else:
        raise TypeError(
            f"{name}: unsupported dtype {dtype}; use uint8 in [0, 255] or a float dtype in [0, 1]."
        )

    def restore_tensor(y: torch.Tensor) -> torch.Tensor:
        if y.shape[0] != batch.shape[0]:
            raise RuntimeError("internal: restore() got a batch of a different size")
        if dtype == torch.uint8:
            out = float_to_uint8(y)
        else:
            out = y.to(dtype)
        out = out.reshape(*lead, y.shape[1], y.shape[2], y.shape[3])
        return tv_tensors.wrap(out, like=inpt) if is_tv_image else out

    return batch, restore_tensor


#: On CPU, float -> uint8 conversion works through the batch in pieces of about this many elements, so its two
#: float temporaries stay small and reused instead of batch-sized fresh allocations (page faults dominated).
_UINT8_CHUNK_ELEMENTS = 1 << 21


def float_to_uint8(y: torch.Tensor) -> torch.Tensor:
    """``round(255 * clip(y, 0, 1))`` as uint8: the one float [0, 1] -> uint8 conversion of the package."""
    if y.device.type != "cpu" or y.ndim == 0 or y.numel() <= _UINT8_CHUNK_ELEMENTS:
        return y.clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    out = torch.empty(y.shape, dtype=torch.uint8)
    step = max(1, _UINT8_CHUNK_ELEMENTS // max(1, y[0].numel()))
    for i in range(0, y.shape[0], step):  # a loop over memory-sized pieces, not over samples
        out[i : i + step] = y[i : i + step].clamp(0.0, 1.0).mul_(255.0).round_()
    return out

