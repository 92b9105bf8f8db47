"""Figures: labelled image grids saved as PNG (no plotting library needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import PIL.Image
import PIL.ImageDraw
import torch
from torchvision.utils import make_grid

from ._core.io import atomic_path

__all__ = ["save_labeled_grid"]


def save_labeled_grid(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    scale: int = 2,
    title: str | None = None,
) -> Path:
    """Save image rows (each ``(N, C, H, W)`` float in [0, 1] or uint8) as one PNG with a label per row.

    All rows must share N, H and W; grayscale rows are shown as gray, 1-channel and 3-channel rows mix.
    """
    if len(rows) != len(row_labels):
        raise ValueError(f"got {len(rows)} rows but {len(row_labels)} labels")
    prepared = []
    for r in rows:
        r = r.detach().cpu()
        r = r.float().div(255.0) if r.dtype == torch.uint8 else r.float()
        if r.shape[1] == 1:
            r = r.expand(-1, 3, -1, -1)
        prepared.append(r.clamp(0, 1))
    n = prepared[0].shape[0]
    grid = make_grid(torch.cat(prepared), nrow=n, padding=2, pad_value=1.0)
    img = PIL.Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), PIL.Image.NEAREST)
    label_w = 8 + 7 * max(len(s) for s in row_labels)
    top = 18 if title else 0
    canvas = PIL.Image.new("RGB", (img.width + label_w, img.height + top), "white")
    canvas.paste(img, (label_w, top))
    draw = PIL.ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="black")
    row_h = img.height / len(rows)
    for i, label in enumerate(row_labels):
        draw.text((4, top + int(row_h * (i + 0.5)) - 5), label, fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:  # creates the folder; the temporary name keeps the suffix PIL reads the format from
        canvas.save(tmp)
    return path
