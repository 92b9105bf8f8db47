"""``robaug demo``: robaug's augmentations on real Fashion-MNIST test images (see :mod:`robaug.demo`)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ._common import make_parser, run_main

DESCRIPTION = ("Augment real Fashion-MNIST test images: write a PNG grid (DiffAug at several noise levels with the "
               "built-in denoiser, IPMix), print each transform's throughput, then train a baseline and a robust "
               "recipe for a few minutes each and report clean vs corrupted accuracy.")
EPILOG = """examples:
  robaug demo --no-compare
  robaug demo --compare-recipes baseline,ipmix_jsd --compare-steps 200"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--out", default="outputs/demo", help="folder for the figures")
    p.add_argument("--denoiser", default="fmnist-ddpm", help="registry name or local path of the denoiser")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST root (default: search the usual places)")
    p.add_argument("--timesteps", default="100,250,400,600,800", help="comma-separated DiffAug t values to show")
    p.add_argument("--batch-size", type=int, default=256, help="batch size for the throughput figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the images shown and the draws")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the short baseline-vs-robust training comparison")
    p.add_argument("--compare-recipes", default="baseline,diffaug",
                   help="recipes trained side by side (see robaug train --help)")
    p.add_argument("--compare-steps", type=int, default=300, help="training steps per recipe in the comparison")


def run(args: argparse.Namespace) -> int:
    from robaug.demo import run as run_demo

    run_demo(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("demo", DESCRIPTION, EPILOG)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("demo", build_parser(), run, argv)
