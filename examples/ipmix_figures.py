"""Figures of docs/ipmix.md: the procedural fractal mixing set and IPMix's three levels on Fashion-MNIST.

    python examples/ipmix_figures.py [--out-dir docs/img] [--seed 0]

Writes ``ipmix_fractals.png`` (a grid of generated fractals) and ``ipmix_levels.png`` (Fashion-MNIST test images,
then the same images augmented with image-level chains only, patch-level chains only, pixel-level chains only
and full IPMix).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from robaug.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402
from robaug.transforms import MixingSet, generate_fractals  # noqa: E402
from robaug.transforms.ipmix import IPMix  # noqa: E402


def fractal_grid(out: Path, seed: int) -> None:
    imgs = generate_fractals(48, 64, seed=seed)
    grid = make_grid(imgs, nrow=8, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(9, 6.9), dpi=110)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("robaug's default IPMix mixing set: IFS fractals generated on the fly (64x64 shown)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def levels_figure(out: Path, seed: int) -> None:
    images, labels = load_fashion_mnist(train=False)
    pick = torch.tensor([0, 1, 2, 3, 4, 8, 9, 11, 13, 18])  # several classes
    x, y = images[pick], labels[pick]
    mixing = MixingSet(num_images=256, seed=seed)
    rows = [
        ("original", None),
        ("image level\n(ops chains)", dict(chain_types=("image",))),
        ("patch level\n(patches 1/8-1/2)", dict(chain_types=("patch",), patch_sizes=(1 / 8, 1 / 4, 1 / 2))),
        ("pixel level\n(whole image)", dict(chain_types=("patch",), patch_sizes=(1.0,))),
        ("IPMix\n(all three)", dict()),
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 6.4), dpi=110)
    for ax, (name, kwargs) in zip(axes, rows):
        if kwargs is None:
            out_imgs = x
        else:
            t = IPMix(mixing_set=mixing, generator=torch.Generator().manual_seed(seed), **kwargs)
            out_imgs = t(x)
        grid = make_grid(out_imgs.float() / 255, nrow=len(pick), padding=2, pad_value=1.0)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    axes[0].set_title(
        "IPMix on Fashion-MNIST test images: " + ", ".join(FASHION_MNIST_CLASSES[int(i)] for i in y[:5]) + ", ...",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("docs/img"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fractal_grid(args.out_dir / "ipmix_fractals.png", args.seed)
    levels_figure(args.out_dir / "ipmix_levels.png", args.seed)
    print("wrote", args.out_dir / "ipmix_fractals.png", args.out_dir / "ipmix_levels.png")


if __name__ == "__main__":
    main()
