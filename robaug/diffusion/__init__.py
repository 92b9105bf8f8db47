"""Diffusion models behind one interface: ``D(x, sigma, class_labels=None) -> x0_hat``.

Data in ``[-1, 1]``, noisy input ``x = x0 + sigma * n`` (the variance-exploding view of Karras et al. 2022).
"""

from . import schedule
from .adapters import ADMDenoiser, DDPMDenoiser, DiffusersDenoiser, EDMDenoiser, NoisyClassifier
from .denoiser import CallableDenoiser, Denoiser

__all__ = [
    "Denoiser",
    "DDPMDenoiser",
    "DiffusersDenoiser",
    "ADMDenoiser",
    "NoisyClassifier",
    "EDMDenoiser",
    "CallableDenoiser",
    "schedule",
]
