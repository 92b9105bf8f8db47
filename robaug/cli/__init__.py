"""The ``robaug`` command (also ``python -m robaug``): one module per sub-command.

Each command module has ``add_arguments(parser)``, ``run(args) -> int`` and ``main(argv) -> int``. This package
only knows the commands' names and one-line help (:data:`COMMANDS`) and imports a command's module when it runs, so
``robaug --help``, ``robaug list`` and ``robaug download --help`` start without importing torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["COMMANDS", "Command", "main"]


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line help and where its ``main(argv) -> int`` lives (``"module:function"``; the first
    of ``targets`` whose module exists is used)."""

    help: str
    targets: tuple[str, ...]

    def load(self) -> Callable[[list[str]], int] | None:
        """The command's main function, or None when none of its modules is part of this installation."""
        for target in self.targets:
            module, _, func = target.partition(":")
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as err:
                if err.name is not None and module.startswith(err.name):  # the module itself (or its package) is absent
                    continue
                raise
            return getattr(mod, func or "main")
        return None


#: name -> Command, in the order ``robaug --help`` lists them
COMMANDS: dict[str, Command] = {
    "demo": Command("augment real Fashion-MNIST images, write a PNG grid, print throughput", ("robaug.cli.demo:main",)),
    "list": Command("list the registered pretrained denoisers", ("robaug.cli.list_:main",)),
    "download": Command("pre-download weights into the cache (for offline clusters)", ("robaug.cli.download:main",)),
    "generate": Command("write a class-balanced synthetic dataset in resumable shards (torchrun for several GPUs)",
                        ("robaug.cli.generate:main", "robaug.generate:main_generate")),
    "train": Command("train a classifier with a robustness recipe (baseline, augmix, ipmix, diffaug, trades, ...)",
                     ("robaug.cli.train:main",)),
    "eval": Command("evaluate a trained classifier and write a report", ("robaug.cli.eval:main",)),
    "convert": Command("convert third-party denoiser weights to robaug's safetensors format",
                       ("robaug.cli.convert:main",)),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="robaug",
        description="Robustness augmentations and diffusion data generators. 'robaug COMMAND --help' describes a "
                    "command.",
        epilog="examples:\n  robaug list\n  robaug download google/ddpm-cifar10-32\n"
               "  robaug train --preset fmnist-cpu --download --recipe ipmix_jsd --epochs 1\n"
               "  python -m robaug demo --no-compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from robaug import __version__

    p.add_argument("--version", action="version", version=f"robaug {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (any command)")
    sub = p.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        sub.add_parser(name, help=cmd.help, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``robaug ARGV`` and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while args and args[0] == "--debug":  # `robaug --debug train ...` == `robaug train --debug ...`
        debug, args = True, args[1:]
    if not args or args[0].startswith("-"):
        parser = _top_parser()
        if not args:
            parser.print_usage(sys.stderr)
            print("robaug: error: choose a COMMAND (robaug --help lists them)", file=sys.stderr)
            return 2
        parser.parse_args(args)  # --help / --version exit here; anything else is an error (exit 2)
        return 2
    name, rest = args[0], args[1:] + (["--debug"] if debug else [])
    cmd = COMMANDS.get(name)
    if cmd is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"robaug: error: unknown command {name!r}; {hint}choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    run = cmd.load()
    if run is None:
        print(f"robaug {name}: error: not available in this installation ({', '.join(cmd.targets)} not found); "
              "update robaug", file=sys.stderr)
        return 2
    return int(run(rest) or 0)
