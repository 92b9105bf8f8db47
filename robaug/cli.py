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

    sub.add_parser("download", help="pre-download weights into the cache (for offline clusters); see --help",
                   add_help=False)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "download":  # the hub owns its own parser (names, --list, all, --revision, ...)
        from .hub import main_download

        return main_download(argv[1:])
    args = parser.parse_args(argv)
    args.func(args)
    return 0


def _list(args: argparse.Namespace) -> None:
    from .hub import list_pretrained

    for name in list_pretrained():
        print(name)


if __name__ == "__main__":
    sys.exit(main())
