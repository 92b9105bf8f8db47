"""Batched, per-sample-random augmentations: DiffAug (diffuse-and-denoise) and IPMix (with fractal mixing sets)."""

from .diffaug import DiffAug, DiffAugEnsemble, diffuse_and_denoise
from .ifs import generate_fractals
from .ipmix import IPMIX_PRESETS, IPMix
from .mixing_set import MixingSet

__all__ = ["DiffAug", "DiffAugEnsemble", "diffuse_and_denoise", "IPMix", "IPMIX_PRESETS", "MixingSet",
           "generate_fractals"]
