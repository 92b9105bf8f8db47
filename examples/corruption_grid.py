"""Plot every robaug corruption at severities 1..5 on Fashion-MNIST test images (docs/img/fashion_mnist_c_grid.png).

    python examples/corruption_grid.py [--out docs/img/fashion_mnist_c_grid.png] [--seed 0]

Rows: corruptions (benchmark ones, then the extra ones); columns: the clean image and severities 1..5.
Each row uses another test image so that the grid shows several classes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from robaug.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from robaug.eval.corruptions import CORRUPTION_FAMILIES, available_corruptions, corrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/img/fashion_mnist_c_grid.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: search the usual places)")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = load_fashion_mnist(args.root, train=False)
    names = available_corruptions()
    # one image per row, cycling through the classes
    idx = [int((labels == (i % 10)).nonzero()[i // 10 + 3]) for i in range(len(names))]

    t0 = time.perf_counter()
    rows = []
    for name, i in zip(names, idx):
        x = images[i: i + 1]
        row = [x[0, 0]] + [corrupt(x, name, s, seed=args.seed)[0, 0] for s in range(1, 6)]
        rows.append(row)
    elapsed = time.perf_counter() - t0

    fig, axes = plt.subplots(len(names), 6, figsize=(6 * 1.1, len(names) * 1.15))
    for r, (name, row, i) in enumerate(zip(names, rows, idx)):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{name}\n({CORRUPTION_FAMILIES[name]})", fontsize=7, rotation=0, ha="right", va="center")
        axes[r, 0].set_xlabel(FASHION_MNIST_CLASSES[int(labels[i])], fontsize=6, labelpad=1)
    fig.suptitle("robaug.eval.corruptions on Fashion-MNIST (re-implemented CIFAR-10-C corruptions)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(names)} corruptions x 5 severities, corruptions took {elapsed:.2f} s)")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
