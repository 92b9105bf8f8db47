"""Re-implementations of the diffusion networks the papers used (ADM, EDM), loadable from their original weights.

Imported lazily: ``from robaug.diffusion.nets import SongUNet`` loads only the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SongUNet": ".edm_unets",
    "DhariwalUNet": ".edm_unets",
    "VPDenoiser": ".edm",
    "VEDenoiser": ".edm",
    "build_edm_denoiser": ".edm",
    "UNetModel": ".adm",
    "EncoderUNetModel": ".adm",
}

__all__ = ["DhariwalUNet", "SongUNet", "VEDenoiser", "VPDenoiser", "build_edm_denoiser", "UNetModel",
           "EncoderUNetModel"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
