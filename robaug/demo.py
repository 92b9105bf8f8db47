"""``robaug demo``: robaug's augmentations on real Fashion-MNIST test images.

Writes a PNG grid (raw images, DiffAug at several fixed noise levels with the built-in
denoiser, IPMix), prints the throughput of each transform on this machine, then trains a
baseline and a robust recipe for a few minutes each and reports clean vs corrupted accuracy
(a short version of the Fashion-MNIST table in docs/results.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .data import FASHION_MNIST_CLASSES, load_fashion_mnist
from .viz import save_labeled_grid


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``robaug demo`` (defined in :mod:`robaug.cli.demo`)."""
    from .cli.demo import add_arguments as add

    add(p)


def _throughput(fn, x: torch.Tensor, repeats: int = 3) -> float:
    fn(x)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * x.shape[0] / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict:
    try:
        timesteps = [int(t) for t in args.timesteps.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--timesteps: expected comma-separated integers such as 100,250,400, got "
                         f"{args.timesteps!r}") from None
    from . import DiffAug, IPMix
    from .hub import load_denoiser

    device = torch.device(args.device)
    out = Path(args.out)
    images, labels = load_fashion_mnist(args.data_root, train=False)
    # one image of each class, the first of its kind in the test split
    picks = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(len(FASHION_MNIST_CLASSES))])
    shown = images[picks].to(device)

    denoiser = load_denoiser(args.denoiser).to(device).eval()
    gen = torch.Generator(device).manual_seed(args.seed)
    rows, names = [shown], ["raw"]
    for t in timesteps:
        rows.append(DiffAug(denoiser, t=t, generator=gen)(shown))
        names.append(f"DiffAug t={t}")
    ipmix = IPMix(generator=gen)
    for i in range(2):
        rows.append(ipmix(shown))
        names.append(f"IPMix #{i + 1}")
    grid = save_labeled_grid(rows, names, out / "augmentations.png", scale=3,
                             title="robaug on Fashion-MNIST test images (one per class)")

    batch = images[: args.batch_size].to(device)
    diffaug = DiffAug(denoiser, generator=gen)
    stats = {
        "figure": str(grid),
        "diffaug_img_per_s": _throughput(diffaug, batch),
        "ipmix_img_per_s": _throughput(ipmix, batch),
    }
    print(f"wrote {grid}")
    print(f"DiffAug ({args.denoiser}, random t per image): {stats['diffaug_img_per_s']:8.1f} images/s "
          f"on {device} (batch {batch.shape[0]}, 28x28)")
    print(f"IPMix (default fractal mixing set):            {stats['ipmix_img_per_s']:8.1f} images/s "
          f"on {device} (batch {batch.shape[0]}, 28x28)")
    if args.compare:
        import importlib.util

        from .recipes import quick_compare

        # decided before training: the bar chart needs matplotlib (the `recipes` extra); the table does not
        plot = out / "compare.png" if importlib.util.find_spec("matplotlib") is not None else None
        if plot is None:
            print("matplotlib is not installed: the comparison is printed as a table without compare.png "
                  "(pip install matplotlib, or robaug[recipes], for the figure)", file=sys.stderr)
        recipes = [r.strip() for r in args.compare_recipes.split(",") if r.strip()]
        cmp = quick_compare(recipes, steps=args.compare_steps, seed=args.seed, data_root=args.data_root,
                            denoiser=args.denoiser, device=args.device, plot=plot)
        stats["compare"] = cmp["rows"]
        if cmp.get("figure"):
            print(f"wrote {cmp['figure']}")
    return stats
