"""The ``robaug`` command: ``robaug demo``, ``robaug download``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robaug", description="Robustness augmentations and diffusion data generators.")
    sub = parser.add_subparsers(dest="command", required=True)

    from . import demo

    p_demo = sub.add_parser("demo", help="augment real Fashion-MNIST images, write a PNG grid, print throughput")
    demo.add_arguments(p_demo)
    p_demo.set_defaults(func=demo.run)

    p_list = sub.add_parser("list", help="list the registered pretrained denoisers")
    p_list.set_defaults(func=_list)

    p_dl = sub.add_parser("download", help="pre-download registered weights into the cache (for offline clusters)")
    p_dl.add_argument("names", nargs="+")
    p_dl.add_argument("--cache-dir", default=None)
    p_dl.set_defaults(func=_download)

    args = parser.parse_args(argv)
    args.func(args)
    return 0


def _list(args: argparse.Namespace) -> None:
    from .hub import list_pretrained

    for name in list_pretrained():
        print(name)


def _download(args: argparse.Namespace) -> None:
    from .hub import download_weights

    for name in args.names:
        path = download_weights(name, cache_dir=args.cache_dir)
        print(f"{name}: {path}")


if __name__ == "__main__":
    sys.exit(main())
