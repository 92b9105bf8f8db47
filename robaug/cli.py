"""The ``robaug`` command: ``demo``, ``list``, ``download``, ``convert``, ``generate``, ``train``, ``eval``."""

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

    for name, help_text in _DELEGATED_HELP.items():
        sub.add_parser(name, help=help_text + " (see 'robaug %s --help')" % name, add_help=False)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED_HELP:  # these subcommands own their parsers
        return int(_delegated(argv[0])(argv[1:]) or 0)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


_DELEGATED_HELP = {
    "download": "pre-download weights into the cache (for offline clusters)",
    "convert": "convert an ADM .pt / EDM .pkl checkpoint into a safetensors folder (no code from the file runs)",
    "generate": "write a class-balanced synthetic dataset in resumable shards (torchrun for several GPUs)",
    "train": "train a classifier with a robustness recipe (baseline, augmix, ipmix, diffaug, ...)",
    "eval": "robustness report of a trained run: clean, corruptions, adversarial, certified, OOD, calibration",
}


def _delegated(name: str):
    if name == "download":
        from .hub import main_download

        return main_download
    if name == "convert":
        from .hub.convert import main_convert

        return main_convert
    if name == "generate":
        from .generate import main_generate

        return main_generate
    if name == "eval":
        from .eval.report_cli import main_eval

        return main_eval
    from .recipes.cli import main as main_train

    return main_train


def _list(args: argparse.Namespace) -> None:
    from .hub import list_pretrained

    for name in list_pretrained():
        print(name)


if __name__ == "__main__":
    sys.exit(main())
