"""Where each step of a recipe runs, said once.

A recipe's views are built in up to two places: per sample in DataLoader workers (:class:`~.augment.SampleAugment`)
and batched on the training device (:class:`~.augment.DeviceAugment`). :class:`AugmentPlan` decides where the base
augmentation (random crop + flip) and the mixer (AugMix / IPMix) run, and therefore what the loader hands to the
device (:attr:`AugmentPlan.loader_views`); both sides read it instead of re-deriving it.

Rules: DiffAug always runs batched on the training device; torchvision's AugMix per sample in workers (it shares its
random ops across a batch otherwise); IPMix batched on the device (``ipmix_on="device"``, the default) or per sample
in workers (``"workers"``). The base augmentation runs batched on the device for in-memory data unless a mixer runs
in workers (which must see the augmented image); ImageFolder data are decoded and augmented in workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import RecipeSpec

__all__ = ["AugmentPlan", "DEVICE", "WORKERS"]

DEVICE, WORKERS = "device", "workers"


@dataclass(frozen=True)
class AugmentPlan:
    """``spec`` with where its base augmentation (``base``) and mixer (``mixer``, ``None`` without one) run:
    ``"device"`` (batched on the training device) or ``"workers"`` (per sample in DataLoader workers)."""

    spec: RecipeSpec
    base: str = DEVICE
    mixer: str | None = None

    def __post_init__(self) -> None:
        if self.base not in (DEVICE, WORKERS):
            raise ValueError(f"base must be 'device' or 'workers', got {self.base!r}")
        if self.spec.mixer is None:
            if self.mixer is not None:
                raise ValueError(f"recipe {self.spec.name!r} has no mixer; got mixer={self.mixer!r}")
        elif self.mixer not in (DEVICE, WORKERS):
            raise ValueError(f"recipe {self.spec.name!r} mixes with {self.spec.mixer}: mixer must be 'device' or "
                             f"'workers', got {self.mixer!r}")
        if self.mixer == DEVICE and self.spec.mixer != "ipmix":
            raise ValueError(f"{self.spec.mixer} runs per sample in DataLoader workers; only IPMix runs batched on the "
                             "device")
        if self.base == DEVICE and self.mixer == WORKERS:
            raise ValueError("the mixer in workers needs the base augmentation in workers too (it mixes the augmented "
                             "image)")

    @classmethod
    def for_run(cls, spec: RecipeSpec, *, in_memory: bool, ipmix_on: str = DEVICE) -> "AugmentPlan":
        """The plan of a training run: ``in_memory`` data (uint8 tensors) or ImageFolder trees, and
        ``TrainConfig.ipmix_on``."""
        if ipmix_on not in (DEVICE, WORKERS):
            raise ValueError(f"ipmix_on must be 'device' or 'workers', got {ipmix_on!r}")
        mixer = None
        if spec.mixer == "augmix":
            mixer = WORKERS
        elif spec.mixer == "ipmix":
            mixer = ipmix_on
        base = DEVICE if in_memory and mixer != WORKERS else WORKERS
        return cls(spec, base, mixer)

    @property
    def use_loader(self) -> bool:
        """Whether batches go through a DataLoader with a per-sample transform (else gathered from tensors)."""
        return self.base == WORKERS or self.mixer == WORKERS

    @property
    def loader_views(self) -> tuple[str, ...]:
        """What each loader batch holds: ``("clean",)``; with the mixer in workers ``(mixer,)``, or
        ``("clean", mixer1, mixer2)`` for JSD recipes."""
        if self.mixer != WORKERS:
            return ("clean",)
        m = self.spec.mixer
        return ("clean", f"{m}1", f"{m}2") if self.spec.jsd else (m,)  # type: ignore[return-value]
