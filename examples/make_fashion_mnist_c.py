"""Build Fashion-MNIST-C: the 10,000 Fashion-MNIST test images under robaug's re-implemented corruptions.

    python examples/make_fashion_mnist_c.py --out data/fashion-mnist-c [--seed 0] [--corruptions fog contrast]
        [--frost-images path/to/frost-photos]   # the reference's frost photographs (else a procedural texture)

Writes the CIFAR-10-C layout (``<corruption>.npy`` (5 x 10000, 28, 28, 1) uint8, ``labels.npy``, ``meta.json``),
which ``robaug.eval.evaluate_corruptions(model, "data/fashion-mnist-c")`` reads. These corruptions are
re-implementations (see docs/evaluation.md); CIFAR-10-C / ImageNet-C numbers must use the published files.
"""

from __future__ import annotations

import argparse
import time

from robaug.data.fashion_mnist import load_fashion_mnist
from robaug.eval.corruptions import DEFAULT_CORRUPTIONS, FrostImages, make_corrupted_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corruptions", nargs="+", default=list(DEFAULT_CORRUPTIONS))
    p.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--num-images", type=int, default=None, help="use only the first N test images")
    p.add_argument("--frost-images", default=None,
                   help="folder or image file of frost photographs for the frost corruption (default: procedural)")
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: search the usual places)")
    args = p.parse_args()

    images, labels = load_fashion_mnist(args.root, train=False)
    if args.num_images is not None:
        images, labels = images[: args.num_images], labels[: args.num_images]
    t0 = time.perf_counter()
    bench = make_corrupted_dataset(
        images, labels, args.corruptions, args.severities, seed=args.seed, out_dir=args.out,
        batch_size=args.batch_size, progress=True,
        frost_images=FrostImages(args.frost_images) if args.frost_images else None,
    )
    print(f"wrote {bench} to {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
