"""The denoiser interface every robaug diffusion feature goes through.

    D(x, sigma, class_labels=None) -> x0_hat

``x = x0 + sigma * n`` with clean data ``x0`` in ``[-1, 1]`` and ``n ~ N(0, I)`` (the variance-exploding
view of Karras et al. 2022). Adapters for diffusers UNets, EDM networks and plain callables live in
:mod:`robaug.diffusion.adapters`; they only implement :meth:`Denoiser.denoise`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .schedule import default_timestep_sigmas, sigma_to_t

__all__ = ["Denoiser", "CallableDenoiser", "LabelsLike", "SigmaLike"]

SigmaLike = float | torch.Tensor
LabelsLike = int | torch.Tensor | None


def _table_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the schedule tables stay float64.
    return torch.float32 if device.type == "mps" else torch.float64


class Denoiser(nn.Module):
    """Base class: ``forward(x, sigma, class_labels=None)`` returns the clean-image estimate ``x0_hat``.

    ``x`` is a ``(B, C, H, W)`` float tensor ``x0 + sigma * n`` (data scale ``[-1, 1]``); ``sigma`` is a float,
    a 0-d tensor or a ``(B,)`` tensor. ``class_labels`` is ``None`` (use :attr:`null_label`), an int or a
    ``(B,)`` int tensor. The result has ``x``'s shape and dtype.

    Attributes: ``in_channels``, ``sample_size`` (native resolution or ``None``), ``num_classes`` (number of real
    classes, ``None`` = unconditional), ``null_label`` (the "no class" label of models trained with label
    dropout), ``sigma_min`` / ``sigma_max`` (valid range), ``size_multiple`` (H and W must be multiples of it),
    ``discrete`` (trained on a timestep table) and ``timestep_sigmas``: ascending sigma per integer timestep, a
    float64 non-persistent buffer (float32 on MPS) that keeps its dtype under ``.half()`` / ``.to(dtype)``.
    Continuous-time models get the DDPM linear 1e-4..0.02, T = 1000 table by default so that ``t`` means the
    same as for the DiffAug paper's models.

    Subclasses implement :meth:`denoise`; :meth:`forward` normalises ``sigma`` and ``class_labels`` first.
    """

    discrete: bool = False
    #: True when :meth:`denoise` casts the network input to the network's dtype itself, so callers may hand over
    #: ``x`` in any float dtype (e.g. a float64 sampler state); otherwise guidance casts ``x`` to the weights' dtype.
    casts_network_input: bool = False

    def __init__(
        self,
        *,
        in_channels: int,
        sample_size: int | None = None,
        num_classes: int | None = None,
        null_label: int | None = None,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        timestep_sigmas: torch.Tensor | None = None,
        size_multiple: int = 1,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {num_classes}")
        if null_label is not None and num_classes is None:
            raise ValueError("null_label given for an unconditional denoiser (num_classes=None)")
        table = default_timestep_sigmas() if timestep_sigmas is None else torch.as_tensor(timestep_sigmas)
        table = table.detach().to("cpu", torch.float64).flatten()
        if table.numel() < 1 or not bool((table > 0).all()) or not bool((table[1:] > table[:-1]).all()):
            raise ValueError("timestep_sigmas must be a non-empty, strictly increasing table of positive sigmas")
        self.in_channels = int(in_channels)
        self.sample_size = None if sample_size is None else int(sample_size)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.null_label = None if null_label is None else int(null_label)
        self.sigma_min = float(table[0]) if sigma_min is None else float(sigma_min)
        self.sigma_max = float(table[-1]) if sigma_max is None else float(sigma_max)
        self.size_multiple = max(1, int(size_multiple))
        self.register_buffer("timestep_sigmas", table, persistent=False)

    # -- the interface -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: SigmaLike, class_labels: LabelsLike = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}: x must be a float (B, C, H, W) tensor, got "
                f"{type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: x has {x.shape[1]} channels but the model takes {self.in_channels}"
            )
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"{type(self).__name__}: image size {tuple(x.shape[-2:])} is not a multiple of {m}, which this "
                "model needs (its downsampling factor); pad the image (robaug.DiffAug pads and crops for you)."
            )
        sig = self._sigma_batch(sigma, x)
        labels = self._resolve_labels(class_labels, x.shape[0], x.device)
        return self.denoise(x, sig, labels)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        """Subclass hook: ``sigma`` is a float ``(B,)`` tensor on ``x.device``, labels already resolved."""
        raise NotImplementedError

    # -- timesteps -----------------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self.timestep_sigmas.shape[0])

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma of integer timesteps (a lookup in :attr:`timestep_sigmas`, float64 on ``t``'s device)."""
        t = torch.as_tensor(t)
        if t.is_floating_point():
            raise TypeError("sigma_at takes integer timesteps; use schedule.t_to_sigma for fractional t")
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise IndexError(f"timesteps must lie in [0, {self.num_timesteps - 1}], got {t.min()}..{t.max()}")
        return self.timestep_sigmas.to(t.device)[t]

    def sigma_to_t(self, sigma: SigmaLike, mode: str = "interpolate") -> torch.Tensor:
        """(Fractional) timestep of a noise level in :attr:`timestep_sigmas`; see :func:`schedule.sigma_to_t`."""
        return sigma_to_t(torch.as_tensor(sigma), self.timestep_sigmas, mode)

    def round_sigma(self, sigma: SigmaLike) -> torch.Tensor:
        """Discrete models: the nearest table sigma (in log sigma); continuous models: ``sigma`` unchanged."""
        sigma = torch.as_tensor(sigma)
        if not self.discrete:
            return sigma
        table = self.timestep_sigmas.to(sigma.device)
        return table[sigma_to_t(sigma, table, "nearest")].to(sigma.dtype if sigma.is_floating_point() else table.dtype)

    # -- helpers -------------------------------------------------------------------------------------------
    def _sigma_batch(self, sigma: SigmaLike, x: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(sigma, device=x.device)
        if not s.is_floating_point():
            s = s.to(x.dtype)
        b = x.shape[0]
        if s.numel() == 1:
            return s.reshape(1).expand(b)
        if s.ndim != 1 or s.shape[0] != b:
            raise ValueError(f"sigma must be a float, a 0-d tensor or a ({b},) tensor, got shape {tuple(s.shape)}")
        return s

    def _resolve_labels(self, class_labels: LabelsLike, batch: int, device: torch.device) -> torch.Tensor | None:
        name = type(self).__name__
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError(f"{name} is unconditional (num_classes=None) but got class_labels")
            return None
        if class_labels is None:
            if self.null_label is None:
                raise ValueError(
                    f"{name} is class-conditional without a null label: pass class_labels, or null_label=... "
                    "if the model was trained with label dropout"
                )
            return torch.full((batch,), self.null_label, dtype=torch.long, device=device)
        labels = torch.as_tensor(class_labels, device=device)
        if labels.ndim == 0:
            labels = labels.reshape(1).expand(batch)
        if labels.shape[0] != batch:
            raise ValueError(f"{name}: class_labels has {labels.shape[0]} entries for a batch of {batch}")
        return labels if labels.is_floating_point() else labels.long()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "Denoiser":
        # Keep the schedule table in float64 through .half() / .to(dtype); only follow the device.
        table = self._buffers.get("timestep_sigmas")
        if table is not None:
            self._buffers["timestep_sigmas"] = table.float()
        out = super()._apply(fn, recurse)
        if table is not None:
            device = self._buffers["timestep_sigmas"].device
            self._buffers["timestep_sigmas"] = table.to(device=device, dtype=_table_dtype(device))
        return out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, sample_size={self.sample_size}, num_classes={self.num_classes}, "
            f"null_label={self.null_label}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g}, "
            f"num_timesteps={self.num_timesteps}"
        )


class CallableDenoiser(Denoiser):
    """Wrap any ``fn(x, sigma, class_labels) -> x0_hat`` (``sigma`` a ``(B,)`` tensor) as a :class:`Denoiser`.

    An ``nn.Module`` ``fn`` is registered as a submodule (so ``.to(device)`` moves it).
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        *,
        in_channels: int = 3,
        sample_size: int | None = None,
        num_classes: int | None = None,
        null_label: int | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        timestep_sigmas: torch.Tensor | None = None,
        size_multiple: int = 1,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        super().__init__(
            in_channels=in_channels,
            sample_size=sample_size,
            num_classes=num_classes,
            null_label=null_label,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            timestep_sigmas=timestep_sigmas,
            size_multiple=size_multiple,
        )
        self.fn = fn

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        return _unwrap(self.fn(x, sigma, class_labels)).to(x.dtype)


def _unwrap(out: Any) -> torch.Tensor:
    """Model outputs may be tensors, diffusers ``*Output`` objects (``.sample``) or tuples."""
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"denoiser network returned {type(out).__name__}; expected a tensor")
