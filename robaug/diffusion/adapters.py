"""Adapters that turn existing diffusion networks into a :class:`~robaug.diffusion.Denoiser`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._core.modules import module_dtype
from .denoiser import Denoiser, LabelsLike, _unwrap
from .schedule import scheduler_config_dict, sigma_to_t, sigmas_from_scheduler_config

__all__ = ["DiffusersDenoiser", "EDMDenoiser", "PREDICTION_TYPES"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DiffusersDenoiser(Denoiser):
    """A diffusers ``UNet2DModel`` trained with a DDPM-family schedule, seen as ``D(x, sigma)``.

    With ``sigma_t = sqrt((1 - abar_t) / abar_t)`` the DDPM state is ``x_t = x / sqrt(1 + sigma^2)`` and

    - ``epsilon``:      ``x0_hat = x - sigma * eps_hat(x_t, t)``
    - ``sample``:       ``x0_hat = out(x_t, t)``
    - ``v_prediction``: ``x0_hat = sqrt(abar) x_t - sqrt(1 - abar) v_hat = x / (1 + sigma^2) - sigma v_hat / sqrt(1 + sigma^2)``

    which are exactly diffusers' ``pred_original_sample`` formulas. Supports the ``linear``, ``scaled_linear``
    and ``squaredcos_cap_v2`` beta schedules (or ``trained_betas``) of ``scheduler_config`` (a dict such as
    ``scheduler_config.json`` or a diffusers scheduler). Learned-variance UNets (``out_channels = 2 * in_channels``)
    are accepted; the variance half is dropped.

    Timesteps from sigma: ``timestep_mode="interpolate"`` (default) maps sigma to a fractional timestep,
    linear in ``log(sigma)`` between the two neighbouring table entries (a table sigma gives exactly its integer
    t; UNet2DModel's sinusoidal embedding takes fractional t, as in k-diffusion). ``"nearest"`` uses the
    nearest table entry. Sigmas outside the table use t = 0 or t = T - 1 for the network's time input while the
    input scaling and the x0 formula still use the true sigma.

    Class-conditional UNets (``num_class_embeds``): ``num_classes`` defaults to ``num_class_embeds - 1`` when
    ``null_label`` is the last embedding (label-dropout training), else ``num_class_embeds``.
    """

    discrete = True
    casts_network_input = True  # the UNet gets its weights' dtype (module_dtype); x0 math stays in x's dtype

    def __init__(
        self,
        unet: nn.Module,
        scheduler_config: Any,
        *,
        null_label: int | None = None,
        num_classes: int | None = None,
        timestep_mode: str = "interpolate",
    ) -> None:
        ucfg = getattr(unet, "config", None)
        if ucfg is None:
            raise TypeError(
                f"DiffusersDenoiser expects a diffusers UNet2DModel, got {type(unet).__name__}; "
                "wrap other networks with EDMDenoiser or CallableDenoiser"
            )
        cfg = scheduler_config_dict(scheduler_config)
        prediction_type = cfg.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} not supported; use one of {PREDICTION_TYPES}")
        if timestep_mode not in ("interpolate", "nearest"):
            raise ValueError(f"timestep_mode must be 'interpolate' or 'nearest', got {timestep_mode!r}")
        if ucfg.get("time_embedding_type", "positional") == "fourier":
            raise ValueError(
                "this UNet2DModel uses Fourier time embeddings (a score-SDE VE model), not a DDPM timestep; "
                "wrap it with CallableDenoiser"
            )
        in_ch, out_ch = int(ucfg["in_channels"]), int(ucfg["out_channels"])
        if out_ch not in (in_ch, 2 * in_ch):
            raise ValueError(f"UNet out_channels={out_ch} is neither in_channels={in_ch} nor 2*in_channels")
        n_embeds = ucfg.get("num_class_embeds")
        if n_embeds is None and getattr(unet, "class_embedding", None) is not None:
            raise ValueError("only num_class_embeds-style class conditioning is supported (not class_embed_type)")
        if n_embeds is None:
            if null_label is not None or num_classes is not None:
                raise ValueError("null_label/num_classes given but the UNet is unconditional (num_class_embeds=None)")
        else:
            n_embeds = int(n_embeds)
            if null_label is not None and not 0 <= null_label < n_embeds:
                raise ValueError(f"null_label={null_label} outside the UNet's {n_embeds} class embeddings")
            if num_classes is None:
                num_classes = n_embeds - 1 if null_label == n_embeds - 1 else n_embeds
        sample_size = ucfg.get("sample_size")
        if isinstance(sample_size, (tuple, list)):
            sample_size = sample_size[0] if len(set(sample_size)) == 1 else None
        n_down = len(ucfg.get("down_block_types", ()))
        super().__init__(
            in_channels=in_ch,
            sample_size=sample_size,
            num_classes=num_classes,
            null_label=null_label,
            timestep_sigmas=sigmas_from_scheduler_config(cfg),
            size_multiple=2 ** max(n_down - 1, 0),
        )
        self.unet = unet
        self.prediction_type = prediction_type
        self.timestep_mode = timestep_mode
        self.learned_variance = out_ch == 2 * in_ch
        self.scheduler_config = cfg

    def timesteps_for(self, sigma: torch.Tensor) -> torch.Tensor:
        """The UNet's time input for noise levels ``sigma`` (float32, or int64 in ``nearest`` mode)."""
        t = sigma_to_t(sigma, self.timestep_sigmas, self.timestep_mode)
        return t if self.timestep_mode == "nearest" else t.float()

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        s = sigma.to(x.dtype).view(-1, 1, 1, 1)
        c_in = (1.0 + s * s).rsqrt()
        x_in = (x * c_in).to(module_dtype(self.unet, x.dtype))
        out = _unwrap(self.unet(x_in, self.timesteps_for(sigma), class_labels=class_labels))
        if self.learned_variance:
            out = out[:, : self.in_channels]
        out = out.to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "sample":
            return out
        return c_in * c_in * x - s * c_in * out  # v_prediction

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prediction_type={self.prediction_type!r}, timestep_mode={self.timestep_mode!r}"


class EDMDenoiser(Denoiser):
    """An EDM-preconditioned network (Karras et al. 2022, Table 1):

        D(x, sigma) = c_skip x + c_out F(c_in x, c_noise),
        c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
        c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,   sd = sigma_data.

    ``net`` is called as ``net(c_in * x, c_noise, class_labels)`` (``c_noise`` a ``(B,)`` tensor; without
    labels as ``net(c_in * x, c_noise)``), like the raw network inside NVlabs' ``EDMPrecond``.
    ``label_format="onehot"`` passes labels as float one-hot ``(B, num_classes)`` vectors and "no label" as
    zeros (the EDM convention; for a model trained with label dropout, ``null_label=num_classes`` names that zero
    vector so that classifier-free guidance can ask for it); ``"index"`` passes int labels and ``null_label`` for
    "no label".
    ``in_channels`` / ``sample_size`` default to the net's ``in_channels`` / ``img_channels`` /
    ``img_resolution`` / ``config`` attributes when present.
    """

    casts_network_input = True  # the net gets its weights' dtype (module_dtype); x0 math stays in x's dtype

    def __init__(
        self,
        net: nn.Module,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        *,
        in_channels: int | None = None,
        sample_size: int | None = None,
        num_classes: int | None = None,
        null_label: int | None = None,
        label_format: str = "index",
        timestep_sigmas: torch.Tensor | None = None,
        size_multiple: int = 1,
    ) -> None:
        if label_format not in ("index", "onehot"):
            raise ValueError(f"label_format must be 'index' or 'onehot', got {label_format!r}")
        if label_format == "onehot" and null_label is not None and null_label != num_classes:
            raise ValueError(
                "label_format='onehot' uses the zero vector for 'no label'; null_label may only be num_classes "
                f"(={num_classes}), the id that selects it"
            )
        cfg = getattr(net, "config", None) or {}
        if in_channels is None:
            in_channels = getattr(net, "in_channels", None) or getattr(net, "img_channels", None) or cfg.get("in_channels")
        if in_channels is None:
            raise ValueError("EDMDenoiser: cannot infer in_channels from the net; pass in_channels=...")
        if sample_size is None:
            sample_size = getattr(net, "img_resolution", None) or cfg.get("sample_size")
            if isinstance(sample_size, (tuple, list)):
                sample_size = sample_size[0]
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
        self.net = net
        self.sigma_data = float(sigma_data)
        self.label_format = label_format

    def preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` for a tensor of noise levels (same shape as ``sigma``)."""
        sd2 = self.sigma_data**2
        s2 = sigma * sigma
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data * (s2 + sd2).rsqrt()
        c_in = (s2 + sd2).rsqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma.to(x.dtype))
        view = (-1, 1, 1, 1)
        x_in = (x * c_in.view(view)).to(module_dtype(self.net, x.dtype))
        f = self.net(x_in, c_noise) if class_labels is None else self.net(x_in, c_noise, class_labels)
        return c_skip.view(view) * x + c_out.view(view) * _unwrap(f).to(x.dtype)

    def _resolve_labels(self, class_labels: LabelsLike, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.label_format == "index" or self.num_classes is None:
            return super()._resolve_labels(class_labels, batch, device)
        if class_labels is None:
            return torch.zeros(batch, self.num_classes, device=device)
        labels = torch.as_tensor(class_labels, device=device)
        if labels.is_floating_point() and labels.ndim == 2:
            if labels.shape != (batch, self.num_classes):
                raise ValueError(f"one-hot class_labels must have shape ({batch}, {self.num_classes})")
            return labels
        labels = super()._resolve_labels(labels, batch, device)
        depth = self.num_classes + (self.null_label is not None)  # the null id one-hot-encodes to zeros
        return F.one_hot(labels, depth)[:, : self.num_classes].float()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sigma_data={self.sigma_data}, label_format={self.label_format!r}"
