"""Digital corruptions (Hendrycks & Dietterich 2019) on float ``(B, C, H, W)`` batches in [0, 1]: contrast,
saturation, elastic transform, pixelate and JPEG. Each takes the severity's parameter from
:data:`robaug.eval.catalogue.CORRUPTION_PARAMS`."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .._core import rng
from .kernels import as_rgb, back_to_channels, box_resize_matrix, gaussian_filter, hsv_to_rgb, rgb_to_hsv

__all__ = ["contrast", "saturate", "elastic", "pixelate", "jpeg"]


def contrast(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """``clip((x - mean) c + mean)`` with the per-image, per-channel mean."""
    means = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def saturate(x: torch.Tensor, p: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """HSV saturation ``s -> clip(s * mult + add)``; ``p = (mult, add)``."""
    mult, add = p
    hsv = rgb_to_hsv(as_rgb(x))
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * mult + add).clamp(0, 1), hsv[:, 2]], 1)
    return back_to_channels(hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1)


def pixelate(x: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """PIL BOX down-sampling by ``c`` and back up (as one matrix per axis)."""
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    ah = box_resize_matrix(sh, h, x.device) @ box_resize_matrix(h, sh, x.device)
    aw = box_resize_matrix(sw, w, x.device) @ box_resize_matrix(w, sw, x.device)
    return (ah @ x @ aw.T).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int, generator: torch.Generator | None) -> torch.Tensor:
    """libjpeg through PIL at ``quality``, as the reference (torchvision.io's JPEG codec is deprecated since 0.29)."""
    u8 = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    mode = "L" if u8.shape[-1] == 1 else "RGB"
    out = np.empty_like(u8)
    for i in range(len(u8)):  # the codec works on one image at a time
        buf = io.BytesIO()
        PIL.Image.fromarray(u8[i, ..., 0] if mode == "L" else u8[i], mode=mode).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        dec = np.asarray(PIL.Image.open(buf).convert(mode))
        out[i] = dec[..., None] if mode == "L" else dec
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device).float().div(255)


# Own elastic transform: kornia's elastic_transform2d draws its own field and has no random affine step.
def elastic(x: torch.Tensor, p: tuple[float, float, float], generator: torch.Generator | None) -> torch.Tensor:
    """Random affine warp, then a Gaussian-smoothed random displacement field; ``p = (alpha, sigma, affine
    jitter)`` as fractions of the image size."""
    alpha_f, sigma_f, jitter_f = p
    b, c, h, w = x.shape
    size = float(min(h, w))
    alpha, sigma, jitter = alpha_f * size, sigma_f * size, jitter_f * size
    dev = x.device

    # 1) random affine: three points around the centre moved by U(-jitter, jitter) (OpenCV coordinates, x
    #    right / y down, pixel centres at integers); warpAffine samples the source at M^-1 p, border reflect-101.
    cx, cy = float(w // 2), float(h // 2)
    sq = float(int(size) // 3)
    pts1 = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], device=dev)
    pts2 = pts1 + (rng.rand((b, 3, 2), generator, dev) * 2 - 1) * jitter
    ones = torch.ones(b, 3, 1, device=dev)
    inv = torch.linalg.solve(torch.cat([pts2, ones], 2).double(), pts1.expand(b, 3, 2).double()).float()  # (B, 3, 2)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3)
    src = (pix @ inv).view(b, h, w, 2)  # (x, y) source coordinates
    grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)

    # 2) smooth random displacement: gaussian(U(-1, 1), sigma, mode reflect, truncate 3) * alpha, sampled
    #    with scipy map_coordinates(order=1, mode="reflect") (half-sample symmetric).
    if alpha > 0 and sigma > 0:
        d = rng.rand((b, 2, h, w), generator, dev) * 2 - 1
        d = gaussian_filter(d, sigma, truncate=3.0, mode="reflect") * alpha
        sx, sy = xs + d[:, 0], ys + d[:, 1]
        grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return y.clamp(0, 1)
