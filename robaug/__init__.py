"""robaug: robustness augmentations and diffusion-based data generators for image classifiers.

Transforms: :class:`DiffAug`, :class:`DiffAugEnsemble`, :class:`IPMix`. Samplers over any denoiser:
:class:`GuidedDiffusion`, :class:`ContrastiveGuidedSampler`. Weights: :func:`load_denoiser`,
:func:`list_pretrained`. Losses: :class:`JSDLoss`, :func:`diffaug_loss`, :class:`TRADESLoss`.
Evaluation (corruptions, -C benchmarks, PGD / AutoAttack): :mod:`robaug.eval`.

Everything here loads on first use (PEP 562): ``import robaug`` stays cheap, and ``robaug.models``,
``robaug.eval``, ``robaug.data``, ``robaug.recipes`` ... import their subpackage when first touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "DiffAug": "robaug.transforms", "DiffAugEnsemble": "robaug.transforms", "IPMix": "robaug.transforms",
    "GuidedDiffusion": "robaug.diffusion.samplers", "ContrastiveGuidedSampler": "robaug.diffusion.contrastive",
    "Denoiser": "robaug.diffusion", "DiffusersDenoiser": "robaug.diffusion", "EDMDenoiser": "robaug.diffusion",
    "CallableDenoiser": "robaug.diffusion",
    "load_denoiser": "robaug.hub", "list_pretrained": "robaug.hub", "download_weights": "robaug.hub",
    "JSDLoss": "robaug.losses", "diffaug_loss": "robaug.losses", "TRADESLoss": "robaug.losses",
    "trades_loss": "robaug.losses",
}

#: subpackages and modules reachable as attributes (``robaug.models``) without an explicit import
_SUBMODULES = ("cli", "data", "demo", "diffusion", "eval", "generate", "hub", "losses", "models", "recipes",
               "transforms", "viz")

__all__ = [
    "DiffAug", "DiffAugEnsemble", "IPMix",
    "GuidedDiffusion", "ContrastiveGuidedSampler",
    "Denoiser", "DiffusersDenoiser", "EDMDenoiser", "CallableDenoiser",
    "load_denoiser", "list_pretrained", "download_weights",
    "JSDLoss", "diffaug_loss", "TRADESLoss", "trades_loss",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    __version__: str
    from .diffusion import CallableDenoiser, Denoiser, DiffusersDenoiser, EDMDenoiser
    from .diffusion.contrastive import ContrastiveGuidedSampler
    from .diffusion.samplers import GuidedDiffusion
    from .hub import download_weights, list_pretrained, load_denoiser
    from .losses import JSDLoss, TRADESLoss, diffaug_loss, trades_loss
    from .transforms import DiffAug, DiffAugEnsemble, IPMix


def _version() -> str:
    """The installed distribution's version: pyproject.toml is its one source (read lazily: importlib.metadata costs
    ~0.1 s in a process that has not imported torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robaug")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
