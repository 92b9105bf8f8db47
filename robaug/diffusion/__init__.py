"""Diffusion models behind one interface: ``D(x, sigma, class_labels=None) -> x0_hat``.

Data in ``[-1, 1]``, noisy input ``x = x0 + sigma * n`` (the variance-exploding view of Karras et al. 2022).

Modules: :mod:`.denoiser` (the interface), :mod:`.adapters` (diffusers, EDM), :mod:`.schedule` (noise schedules),
:mod:`.sampling` (one function per solver), :mod:`.samplers` (:class:`GuidedDiffusion`), :mod:`.guidance`,
:mod:`.contrastive`. Names load on first use (PEP 562), so plain data such as the default DDPM schedule config
(``robaug.diffusion._ddpm``) can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import schedule
    from .adapters import ADMDenoiser, DDPMDenoiser, DiffusersDenoiser, EDMDenoiser, NoisyClassifier
    from .denoiser import CallableDenoiser, Denoiser

__all__ = ["Denoiser", "DDPMDenoiser", "DiffusersDenoiser", "ADMDenoiser", "NoisyClassifier", "EDMDenoiser",
           "CallableDenoiser", "schedule"]

_HOMES = {"Denoiser": ".denoiser", "CallableDenoiser": ".denoiser", "DiffusersDenoiser": ".adapters",
          "EDMDenoiser": ".adapters", "ADMDenoiser": ".adapters",
          "DDPMDenoiser": ".adapters", "NoisyClassifier": ".adapters"}
_SUBMODULES = ("adapters", "contrastive", "denoiser", "guidance", "nets", "samplers", "sampling", "schedule")


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
