"""The catalogue of common corruptions (Hendrycks & Dietterich, ICLR 2019): for every name its family (noise,
blur, weather, digital), whether it is one of the 15 benchmark corruptions or one of the 4 held-out extra ones,
its CIFAR-10-C parameters for severities 1..5 (``make_cifar_c.py``) and the operation that applies it.

``CORRUPTIONS[name]`` is a :class:`CorruptionSpec`; ``CORRUPTIONS.names()`` lists them in the reference order
(benchmark, then extra). :func:`apply_corruption` looks up the severity's parameter and calls the operation
(the parameter table is the only place a severity means something, as timm's ``NAME_TO_OP`` + level tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .._core.registry import Registry, unknown_name_message
from . import blur, digital, noise, weather

__all__ = [
    "CorruptionSpec", "CORRUPTIONS", "SEVERITIES", "BENCHMARK_CORRUPTIONS", "EXTRA_CORRUPTIONS", "DEFAULT_CORRUPTIONS",
    "CORRUPTION_FAMILIES", "CORRUPTION_PARAMS", "available_corruptions", "check_name", "check_severity",
    "corruption_param", "apply_corruption",
]

#: ``op(x, parameter, generator) -> x'`` on float ``(B, C, H, W)`` batches in [0, 1].
CorruptionOp = Callable[[torch.Tensor, Any, "torch.Generator | None"], torch.Tensor]

#: The five severities of every corruption.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: The 15 corruptions of the CIFAR-10-C / ImageNet-C benchmark, in the reference order.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 held-out "extra" corruptions of the reference release.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

#: The corruptions :func:`~robaug.eval.corruptions.make_corrupted_dataset` builds by default: the 15 of
#: CIFAR-10-C, in the reference order.
DEFAULT_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS

CORRUPTION_FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise", "speckle_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "gaussian_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather", "spatter": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
    "saturate": "digital",
}

#: CIFAR-10-C parameters per corruption, severity 1..5 (Hendrycks & Dietterich, ``make_cifar_c.py``).
CORRUPTION_PARAMS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (disk radius, alias blur sigma)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # np.arange(1, end, 0.01) zoom factors
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    # (mean, std, zoom, threshold, blur radius, blur sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (strength, wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (saturation scale, saturation shift)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    # (alpha, sigma, affine jitter) as fractions of the image size
    "elastic_transform": (
        (0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    # (image weight, frost weight): clip(c0 x + c1 frost)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (liquid mean, liquid std, blur sigma, threshold, water intensity or mud blur sigma, 0 water / 1 mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
}

#: name -> operation (timm's ``NAME_TO_OP``).
_NAME_TO_OP: dict[str, CorruptionOp] = {
    "gaussian_noise": noise.gaussian,
    "shot_noise": noise.shot,
    "impulse_noise": noise.impulse,
    "speckle_noise": noise.speckle,
    "gaussian_blur": blur.gaussian,
    "defocus_blur": blur.defocus,
    "glass_blur": blur.glass,
    "motion_blur": blur.motion,
    "zoom_blur": blur.zoom,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": weather.brightness,
    "spatter": weather.spatter,
    "contrast": digital.contrast,
    "saturate": digital.saturate,
    "elastic_transform": digital.elastic,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg,
}


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption: its family, whether it belongs to the 15-corruption benchmark, its five per-severity
    parameters and the operation ``op(x, parameter, generator)``."""

    name: str
    family: str
    benchmark: bool
    params: tuple[Any, ...]
    op: CorruptionOp

    def param(self, severity: int) -> Any:
        """The parameter of ``severity`` (1..5)."""
        return self.params[check_severity(severity) - 1]


CORRUPTIONS: Registry[CorruptionSpec] = Registry("corruption")
for _name in BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS:
    CORRUPTIONS.register(_name, CorruptionSpec(_name, CORRUPTION_FAMILIES[_name], _name in BENCHMARK_CORRUPTIONS,
                                               CORRUPTION_PARAMS[_name], _NAME_TO_OP[_name]))
del _name


def available_corruptions() -> list[str]:
    """Names accepted by :func:`~robaug.eval.corruptions.corrupt` (benchmark order, then the extra corruptions)."""
    return CORRUPTIONS.names()


def check_severity(severity: int) -> int:
    """``severity`` as an int, or a ``ValueError`` unless it is an int in 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    return int(severity)


def check_name(name: str) -> str:
    """``name``, or a ``ValueError`` listing the known corruptions (and the closest one)."""
    if name not in CORRUPTIONS:
        raise ValueError(unknown_name_message("corruption", name, available_corruptions()))
    return name


def corruption_param(name: str, severity: int) -> Any:
    """The CIFAR-10-C parameter of corruption ``name`` at ``severity``."""
    return CORRUPTIONS[check_name(name)].param(severity)


def apply_corruption(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None, **kwargs: Any
) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` on a float ``(B, C, H, W)`` batch in [0, 1] (``kwargs``: extras of the
    operation, e.g. ``photos=`` for frost)."""
    spec = CORRUPTIONS[check_name(name)]
    return spec.op(x, spec.param(severity), generator, **kwargs)
