"""Figure of docs/evaluation.md: frost (procedural texture) and spatter at severities 1..5 on colour images.

    python examples/frost_spatter_figure.py [--out docs/img/frost_spatter.png] [--seed 0] [--frost-images DIR]

Rows: a clean 32x32 synthetic colour scene and frost at severities 1..5; six procedural frost textures (what is
blended in without the reference's photographs); the scene under spatter at severities 1..5 (water 1-3, mud
4-5). With ``--frost-images`` (e.g. the reference's frost1.png .. frost5.jpg) the frost rows use the photographs.
"""

from __future__ import annotations

import argparse

import torch

from robaug.eval.corruptions import FrostImages, _procedural_frost, corrupt
from robaug.viz import save_labeled_grid


def scene(size: int = 32) -> torch.Tensor:
    """A small colour scene in [0, 1]: sky gradient, green ground, a red house with a dark door, a yellow sun."""
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([0.35 + 0.3 * yy, 0.55 + 0.3 * yy, 0.95 - 0.1 * yy])
    ground = yy > 0.62
    img[:, ground] = torch.tensor([0.2, 0.55, 0.2]).view(3, 1) * (1.1 - 0.4 * yy[ground])
    house = (xx > 0.2) & (xx < 0.55) & (yy > 0.4) & (yy < 0.75)
    img[:, house] = torch.tensor([0.8, 0.15, 0.1]).view(3, 1)
    door = (xx > 0.32) & (xx < 0.42) & (yy > 0.58) & (yy < 0.75)
    img[:, door] = torch.tensor([0.25, 0.12, 0.05]).view(3, 1)
    sun = (xx - 0.8) ** 2 + (yy - 0.2) ** 2 < 0.012
    img[:, sun] = torch.tensor([1.0, 0.9, 0.2]).view(3, 1)
    return img.clamp(0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/img/frost_spatter.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frost-images", default=None, help="folder or file(s) of frost photographs")
    args = p.parse_args()

    x = scene().unsqueeze(0)
    photos = FrostImages(args.frost_images) if args.frost_images else None
    frost_row = torch.cat([x] + [corrupt(x, "frost", s, seed=args.seed, frost_images=photos) for s in range(1, 6)])
    g = torch.Generator().manual_seed(args.seed)
    if photos is None:
        textures = _procedural_frost(6, 32, 32, x, g)
        tex_label = "procedural frost textures"
    else:
        textures = photos.sample(6, 32, 32, x, g)
        tex_label = "frost photograph crops"
    spatter_row = torch.cat([x] + [corrupt(x, "spatter", s, seed=args.seed) for s in range(1, 6)])
    kind = "photographs" if photos is not None else "procedural"
    out = save_labeled_grid(
        [frost_row, textures, spatter_row],
        [f"clean, frost 1-5 ({kind})", tex_label, "clean, spatter 1-5"],
        args.out,
        scale=4,
        title="robaug.eval.corruptions: frost and spatter on a 32x32 colour image",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
