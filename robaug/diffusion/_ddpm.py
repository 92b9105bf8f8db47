"""The DDPM training schedule of Ho et al. (2020) as a diffusers scheduler config: the one definition of robaug's
default schedule. Plain data with no torch import, so the weights registry can use it without loading torch;
:mod:`robaug.diffusion.schedule` re-exports it and turns it into noise levels."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["DDPM_SCHEDULER_CONFIG", "ddpm_scheduler_config"]

#: Linear betas 1e-4..0.02 over T = 1000 steps, epsilon prediction (read-only; copy with :func:`ddpm_scheduler_config`).
DDPM_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType({
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
})


def ddpm_scheduler_config(**overrides: Any) -> dict[str, Any]:
    """A fresh dict of :data:`DDPM_SCHEDULER_CONFIG` updated with ``overrides`` (e.g. ``clip_sample=True``)."""
    return {**DDPM_SCHEDULER_CONFIG, **overrides}
