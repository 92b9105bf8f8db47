"""robaug: robustness augmentations and diffusion-based data generators for image classifiers.

Transforms: :class:`DiffAug`, :class:`DiffAugEnsemble`, :class:`IPMix`. Samplers over any denoiser:
:class:`GuidedDiffusion`, :class:`ContrastiveGuidedSampler`. Weights: :func:`load_denoiser`,
:func:`list_pretrained`. Losses: :class:`JSDLoss`, :func:`diffaug_loss`, :class:`TRADESLoss`.
Evaluation (corruptions, -C benchmarks, PGD / AutoAttack): :mod:`robaug.eval`.
"""

from .diffusion import CallableDenoiser, Denoiser, DiffusersDenoiser, EDMDenoiser
from .diffusion.contrastive import ContrastiveGuidedSampler
from .diffusion.samplers import GuidedDiffusion
from .hub import download_weights, list_pretrained, load_denoiser
from .losses import JSDLoss, TRADESLoss, diffaug_loss, trades_loss
from .transforms import DiffAug, DiffAugEnsemble, IPMix

__version__ = "0.1.0"

__all__ = [
    "DiffAug", "DiffAugEnsemble", "IPMix",
    "GuidedDiffusion", "ContrastiveGuidedSampler",
    "Denoiser", "DiffusersDenoiser", "EDMDenoiser", "CallableDenoiser",
    "load_denoiser", "list_pretrained", "download_weights",
    "JSDLoss", "diffaug_loss", "TRADESLoss", "trades_loss",
]
