"""The one way every public class and function turns its ``model`` / ``denoiser`` argument into a model.

Accepted everywhere (DiffAug, DiffAugEnsemble, GuidedDiffusion, ContrastiveGuidedSampler, generation, certification,
the CLI's ``--model``): a registry name (``robaug list``), a local folder or file (a diffusers folder, a
``.safetensors`` file, a ``robaug convert`` output), or an object — a :class:`~robaug.diffusion.Denoiser` for
diffusion models, any ``nn.Module`` for classifiers.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["resolve_denoiser"]


def resolve_denoiser(model: Any, *, owner: str = "denoiser", **load_kwargs: Any):
    """A :class:`~robaug.diffusion.Denoiser` from a registry name, a local path or a Denoiser (returned as is).

    ``load_kwargs`` go to :func:`robaug.hub.load_denoiser` for names and paths (``device``, ``dtype``, ...).
    """
    from ..diffusion.denoiser import Denoiser

    if isinstance(model, (str, os.PathLike)):
        from . import load_denoiser

        return load_denoiser(os.fspath(model), **load_kwargs)
    if isinstance(model, Denoiser):
        return model
    hint = ""
    if type(model).__name__ == "UNet2DModel":
        hint = " (wrap a diffusers UNet with robaug.diffusion.DiffusersDenoiser(unet, scheduler_config))"
    elif callable(model):
        hint = " (wrap a network or function with robaug.diffusion.EDMDenoiser or CallableDenoiser)"
    raise TypeError(
        f"{owner}: the denoiser must be a registry name (see `robaug list`), a local model folder/file or a robaug "
        "Denoiser, "
        f"got {type(model).__name__}{hint}"
    )
