"""Old home of ``robaug generate`` (warns; goes away in robaug 0.3.0). The library is
:mod:`robaug.recipes.generation` (``generate_dataset``, ``sample_seed``), the command line :mod:`robaug.cli.generate`.
``python -m robaug.generate ...`` still runs the command; use ``robaug generate ...`` or, for several processes,
``torchrun --nproc_per_node 8 -m robaug generate ...``."""

from __future__ import annotations

import sys
import warnings

from ._core.deprecation import REMOVAL_VERSION, moved_names

_HOMES = {**dict.fromkeys(["generate_dataset", "sample_seed"], "robaug.recipes.generation"),
          **dict.fromkeys(["main_generate", "load_classifier"], "robaug.cli.generate")}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)

if __name__ == "__main__":
    warnings.warn("`python -m robaug.generate` is deprecated: use `robaug generate` or `torchrun ... -m robaug "
                  f"generate` (removed in robaug {REMOVAL_VERSION})", FutureWarning, stacklevel=1)
    from .cli.generate import main

    sys.exit(main())
