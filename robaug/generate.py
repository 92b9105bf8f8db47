"""Former home of ``robaug generate``, kept so that ``robaug.generate.generate_dataset`` and
``python -m robaug.generate`` (what ``torchrun -m`` needs) keep working.

    robaug generate --model fmnist-ddpm --out data/fmnist-syn --num-samples 100000 --steps 18 --cfg-scale 1.5
    torchrun --nproc_per_node 8 -m robaug.generate --model ... --out ... --num-samples 20000000 --device cuda

The library is :mod:`robaug.recipes.generation`, the command line :mod:`robaug.cli.generate`.
"""

from __future__ import annotations

import sys
from typing import Any

from .recipes.generation import generate_dataset, sample_seed

__all__ = ["generate_dataset", "main_generate", "sample_seed", "add_generate_arguments", "run_generate"]

# old name -> name in robaug.cli.generate (loaded on first use: the library above needs no argparse code)
_CLI_NAMES = {"main_generate": "main", "add_generate_arguments": "add_arguments", "run_generate": "run_generate",
              "load_classifier": "load_classifier"}


def _cli_module():
    try:
        from .cli import generate as cli_generate
    except ImportError:  # robaug/cli.py is still a module, not yet the robaug/cli/ package: load the file
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


def __getattr__(name: str) -> Any:
    if name in _CLI_NAMES:
        return getattr(_cli_module(), _CLI_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(_cli_module().main())
