"""Former home of ``robaug generate``, kept so that ``robaug.generate.generate_dataset`` and
``python -m robaug.generate`` (what ``torchrun -m`` needs) keep working.

    robaug generate --model fmnist-ddpm --out data/fmnist-syn --num-samples 100000 --steps 18 --cfg-scale 1.5
    torchrun --nproc_per_node 8 -m robaug.generate --model ... --out ... --num-samples 20000000 --device cuda

The library is :mod:`robaug.recipes.generation`, the command line :mod:`robaug.cli.generate`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .recipes.generation import generate_dataset, sample_seed

__all__ = ["generate_dataset", "main_generate", "sample_seed", "add_generate_arguments", "run_generate"]


def _cli_module():
    try:
        from .cli import generate as cli_generate
    except ImportError:  # robaug/cli.py is still a module, not yet the robaug/cli/ package: load the file
        # (remove this branch once robaug/cli/ is a package)
        import importlib.util
        from pathlib import Path

        name = f"{__package__ or 'robaug'}.cli.generate"
        cli_generate = sys.modules.get(name)
        if cli_generate is None:
            spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "cli" / "generate.py")
            cli_generate = importlib.util.module_from_spec(spec)
            sys.modules[name] = cli_generate
            spec.loader.exec_module(cli_generate)
    return cli_generate


def main_generate(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as ``robaug generate`` does and generate; errors propagate as exceptions (``robaug generate``
    itself reports them in one line)."""
    p = argparse.ArgumentParser(prog="robaug generate", description=_cli.DESCRIPTION, epilog=_cli.EXAMPLES,
                                formatter_class=_HelpFormatter)
    add_generate_arguments(p)
    run_generate(p.parse_args(argv))
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, examples kept as written."""


_cli = _cli_module()
add_generate_arguments = _cli.add_arguments
run_generate = _cli.run_generate
load_classifier = _cli.load_classifier


def _cli_package_ready() -> bool:
    """Whether the robaug/cli/ package (with its shared one-line error reporting) is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec(f"{__package__ or 'robaug'}.cli._common") is not None
    except ModuleNotFoundError:  # robaug/cli.py is still a module
        return False


if __name__ == "__main__":  # `python -m robaug.generate` / `torchrun -m robaug.generate`: errors in one line, exit 2
    sys.exit(_cli.main() if _cli_package_ready() else main_generate())
