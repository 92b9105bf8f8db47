"""Old import paths that keep working for a while: a moved module's names resolve from their new home with a
``FutureWarning`` that names the replacement and the release the old path goes away in."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Mapping

__all__ = ["REMOVAL_VERSION", "moved_names"]

#: the release in which the old paths are removed
REMOVAL_VERSION = "0.3.0"


def moved_names(old_module: str, homes: Mapping[str, str], *, public: str | None = None,
                removal: str = REMOVAL_VERSION) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a shim module: ``homes`` maps each old name to the module that now defines it;
    ``public`` is where users should import it from (default: that module)."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        where = public or home
        warnings.warn(f"{old_module}.{name} moved: import it from {where} ({old_module} goes away in robaug "
                      f"{removal})", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
