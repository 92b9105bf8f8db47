"""Adapters that turn existing diffusion networks into a :class:`~robaug.diffusion.Denoiser`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._core.modules import module_dtype
from .denoiser import Denoiser, LabelsLike, _table_dtype, _unwrap
from .schedule import scheduler_config_dict, sigma_to_t, sigmas_from_scheduler_config

__all__ = [
    "DDPMDenoiser",
    "DiffusersDenoiser",
    "ADMDenoiser",
    "NoisyClassifier",
    "ADM_LINEAR_SCHEDULE",
    "EDMDenoiser",
    "PREDICTION_TYPES",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DDPMDenoiser(Denoiser):
    """Any network trained with a DDPM-family schedule, called as ``net(x_t, t, **{label_keyword: labels})``,
    seen as ``D(x, sigma)``.

    With ``sigma_t = sqrt((1 - abar_t) / abar_t)`` the DDPM state is ``x_t = x / sqrt(1 + sigma^2)`` and

    - ``epsilon``:      ``x0_hat = x - sigma * eps_hat(x_t, t)``
    - ``sample``:       ``x0_hat = out(x_t, t)``
    - ``v_prediction``: ``x0_hat = sqrt(abar) x_t - sqrt(1 - abar) v_hat``
      ``= x / (1 + sigma^2) - sigma v_hat / sqrt(1 + sigma^2)``

    which are exactly diffusers' ``pred_original_sample`` (and guided-diffusion's ``pred_xstart``) formulas.
    ``scheduler_config`` is a dict such as ``scheduler_config.json`` or a diffusers scheduler (``linear``,
    ``scaled_linear`` and ``squaredcos_cap_v2`` betas or ``trained_betas``; ``prediction_type``; see
    :func:`~robaug.diffusion.schedule.sigmas_from_scheduler_config`). Learned-variance networks
    (``out_channels = 2 * in_channels``) are accepted; the variance half is dropped.

    Timesteps from sigma: ``timestep_mode="interpolate"`` (default) maps sigma to a fractional timestep,
    linear in ``log(sigma)`` between the two neighbouring table entries (a table sigma gives exactly its integer
    t; sinusoidal timestep embeddings take fractional t, as in k-diffusion). ``"nearest"`` uses the
    nearest table entry. Sigmas outside the table use t = 0 or t = T - 1 for the network's time input while the
    input scaling and the x0 formula still use the true sigma.
    """

    discrete = True
    #: attribute the network is stored under (``unet`` for :class:`DiffusersDenoiser`; keeps state-dict keys)
    _net_attr = "net"
    #: the adapter casts the network input to the weights' dtype itself (x0 arithmetic stays in x's dtype)
    casts_network_input = True

    def __init__(
        self,
        net: nn.Module,
        scheduler_config: Any,
        *,
        in_channels: int,
        out_channels: int,
        sample_size: int | None = None,
        num_classes: int | None = None,
        null_label: int | None = None,
        size_multiple: int = 1,
        label_keyword: str = "class_labels",
        timestep_mode: str = "interpolate",
    ) -> None:
        cfg = scheduler_config_dict(scheduler_config)
        prediction_type = cfg.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} not supported; use one of {PREDICTION_TYPES}")
        if timestep_mode not in ("interpolate", "nearest"):
            raise ValueError(f"timestep_mode must be 'interpolate' or 'nearest', got {timestep_mode!r}")
        in_ch, out_ch = int(in_channels), int(out_channels)
        if out_ch not in (in_ch, 2 * in_ch):
            raise ValueError(f"network out_channels={out_ch} is neither in_channels={in_ch} nor 2*in_channels")
        super().__init__(
            in_channels=in_ch,
            sample_size=sample_size,
            num_classes=num_classes,
            null_label=null_label,
            timestep_sigmas=sigmas_from_scheduler_config(cfg),
            size_multiple=size_multiple,
        )
        setattr(self, self._net_attr, net)
        self.label_keyword = label_keyword
        self.prediction_type = prediction_type
        self.timestep_mode = timestep_mode
        self.learned_variance = out_ch == 2 * in_ch
        self.scheduler_config = cfg

    def timesteps_for(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's time input for noise levels ``sigma`` (float32, or int64 in ``nearest`` mode)."""
        t = sigma_to_t(sigma, self.timestep_sigmas, self.timestep_mode)
        return t if self.timestep_mode == "nearest" else t.float()

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        s = sigma.to(x.dtype).view(-1, 1, 1, 1)
        c_in = (1.0 + s * s).rsqrt()
        net = getattr(self, self._net_attr)
        x_in = (x * c_in).to(module_dtype(net, x.dtype))
        out = _unwrap(net(x_in, self.timesteps_for(sigma), **{self.label_keyword: class_labels}))
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


class DiffusersDenoiser(DDPMDenoiser):
    """A diffusers ``UNet2DModel`` trained with a DDPM-family schedule, seen as ``D(x, sigma)``
    (a :class:`DDPMDenoiser` reading its channels, size and class embeddings from ``unet.config``).

    The UNet is the submodule ``unet``. Class-conditional UNets (``num_class_embeds``): ``num_classes`` defaults to
    ``num_class_embeds - 1`` when ``null_label`` is the last embedding (label-dropout training), else
    ``num_class_embeds``.
    """

    _net_attr = "unet"

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
                "wrap other networks with DDPMDenoiser, ADMDenoiser, EDMDenoiser or CallableDenoiser"
            )
        if ucfg.get("time_embedding_type", "positional") == "fourier":
            raise ValueError(
                "this UNet2DModel uses Fourier time embeddings (a score-SDE VE model), not a DDPM timestep; "
                "wrap it with CallableDenoiser"
            )
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
            unet,
            scheduler_config,
            in_channels=int(ucfg["in_channels"]),
            out_channels=int(ucfg["out_channels"]),
            sample_size=sample_size,
            num_classes=num_classes,
            null_label=null_label,
            size_multiple=2 ** max(n_down - 1, 0),
            label_keyword="class_labels",
            timestep_mode=timestep_mode,
        )


#: guided-diffusion's ``linear`` schedule (Ho et al. 2020: betas 1e-4..0.02, T = 1000) computed in float64 as the
#: reference does; the ``cosine`` one (Nichol & Dhariwal 2021) is ``beta_schedule="squaredcos_cap_v2"``.
ADM_LINEAR_SCHEDULE = {"beta_schedule": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4,
                       "beta_end": 0.02, "prediction_type": "epsilon", "betas_dtype": "float64"}


class ADMDenoiser(DDPMDenoiser):
    """An ADM ``UNetModel`` (:mod:`robaug.diffusion.nets.adm`, guided-diffusion) as ``D(x, sigma)``: epsilon
    prediction (the first ``C`` of a learned-variance net's ``2C`` outputs), ``x0_hat = x - sigma * eps_hat``,
    timesteps from guided-diffusion's own schedule (default :data:`ADM_LINEAR_SCHEDULE`, float64 betas).
    Class-conditional ADMs have no null label (they were trained without label dropout)."""

    def __init__(self, net: nn.Module, scheduler_config: Any = None, *, timestep_mode: str = "interpolate") -> None:
        for attr in ("in_channels", "out_channels", "num_classes", "image_size"):
            if not hasattr(net, attr):
                raise TypeError("ADMDenoiser expects an ADM UNetModel (robaug.diffusion.nets.adm), "
                                f"got {type(net).__name__}")
        super().__init__(
            net,
            ADM_LINEAR_SCHEDULE if scheduler_config is None else scheduler_config,
            in_channels=net.in_channels,
            out_channels=net.out_channels,
            sample_size=net.image_size,
            num_classes=net.num_classes,
            size_multiple=getattr(net, "size_multiple", 1),
            label_keyword="y",
            timestep_mode=timestep_mode,
        )


class NoisyClassifier(nn.Module):
    """A noise-aware classifier ``net(x_t, t) -> logits`` (ADM's ``EncoderUNetModel``) called as
    ``classifier(x_t, sigma)``, the ``xt``-space form :class:`~robaug.diffusion.guidance.ClassifierGuidance`
    uses (its ``guidance_space`` is ``"xt"``, so ``GuidedDiffusion(D, classifier=this)`` guides with
    Dhariwal & Nichol's ``grad_{x_t} log p(y | x_t, t)``). ``sigma`` maps to ``t`` through the schedule the
    classifier was trained with (default :data:`ADM_LINEAR_SCHEDULE`), fractional between table entries."""

    guidance_space = "xt"

    def __init__(self, net: nn.Module, scheduler_config: Any = None, *, timestep_mode: str = "interpolate") -> None:
        super().__init__()
        if timestep_mode not in ("interpolate", "nearest"):
            raise ValueError(f"timestep_mode must be 'interpolate' or 'nearest', got {timestep_mode!r}")
        self.net = net
        self.timestep_mode = timestep_mode
        cfg = scheduler_config_dict(ADM_LINEAR_SCHEDULE if scheduler_config is None else scheduler_config)
        self.scheduler_config = cfg
        self.register_buffer("timestep_sigmas", sigmas_from_scheduler_config(cfg), persistent=False)
        self.num_classes = getattr(net, "out_channels", None)
        self.sample_size = getattr(net, "image_size", None)

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x_t.device)
        if sigma.ndim == 0:
            sigma = sigma.reshape(1).expand(x_t.shape[0])
        t = sigma_to_t(sigma, self.timestep_sigmas, self.timestep_mode)
        return self.net(x_t, t if self.timestep_mode == "nearest" else t.float())

    def _apply(self, fn, recurse: bool = True) -> "NoisyClassifier":
        # the schedule table keeps float64 through .half() / .to(dtype) and only follows the device
        table = self._buffers["timestep_sigmas"]
        out = super()._apply(fn, recurse)
        device = self._buffers["timestep_sigmas"].device
        self._buffers["timestep_sigmas"] = table.to(device=device, dtype=_table_dtype(device))
        return out


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

    casts_network_input = True

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
            in_channels = (getattr(net, "in_channels", None) or getattr(net, "img_channels", None)
                           or cfg.get("in_channels"))
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
