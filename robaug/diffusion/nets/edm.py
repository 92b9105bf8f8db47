"""EDM's VP / VE / EDM preconditioners as robaug denoisers, and a builder from EDM's recorded ``init_kwargs``.

Karras et al. 2022, Table 1, with ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``:

    VP:  c_skip = 1, c_out = -sigma, c_in = 1/sqrt(1 + sigma^2), c_noise = (M - 1) t(sigma),
         t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d
    VE:  c_skip = 1, c_out = sigma,  c_in = 1,                   c_noise = ln(sigma / 2)
    EDM: see :class:`~robaug.diffusion.EDMDenoiser` (c_noise = ln(sigma) / 4).

Class labels: robaug passes integer ids; EDM's networks take one-hot float vectors and all-zero vectors for
"no label", so conditional models use ``label_format="onehot"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..adapters import EDMDenoiser
from .edm_unets import DhariwalUNet, SongUNet

__all__ = ["EDM_NETWORKS", "EDM_PRECONDS", "VEDenoiser", "VPDenoiser", "build_edm_denoiser"]

EDM_NETWORKS: dict[str, type[nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}

# EDM's generate.py clamps its sampling range to the network's and to [0.002, 80]; robaug's samplers default to
# the denoiser's range, so the denoisers below advertise that clamped range.
_SAMPLER_SIGMA_MIN, _SAMPLER_SIGMA_MAX = 0.002, 80.0


class VPDenoiser(EDMDenoiser):
    """EDM's ``VPPrecond``: the variance-preserving SDE of Song et al. 2021 (DDPM++ CIFAR-10 models)."""

    def __init__(
        self,
        net: nn.Module,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        M: int = 1000,
        epsilon_t: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        self.beta_d, self.beta_min, self.M, self.epsilon_t = float(beta_d), float(beta_min), int(M), float(epsilon_t)
        lo = math.sqrt(math.expm1(0.5 * self.beta_d * epsilon_t**2 + self.beta_min * epsilon_t))
        hi = math.sqrt(math.expm1(0.5 * self.beta_d + self.beta_min))
        kwargs.setdefault("sigma_min", max(lo, _SAMPLER_SIGMA_MIN))
        kwargs.setdefault("sigma_max", min(hi, _SAMPLER_SIGMA_MAX))
        super().__init__(net, **kwargs)

    def sigma_to_vp_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The VP SDE time ``t in (0, 1]`` of a noise level.

        The inverse of ``sigma(t) = sqrt(e^{beta_d t^2/2 + beta_min t} - 1)``.
        """
        return ((self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma * sigma)).sqrt() - self.beta_min) / self.beta_d

    def preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c_in = (1 + sigma * sigma).rsqrt()
        return torch.ones_like(sigma), -sigma, c_in, (self.M - 1) * self.sigma_to_vp_t(sigma)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta_d={self.beta_d}, beta_min={self.beta_min}, M={self.M}"


class VEDenoiser(EDMDenoiser):
    """EDM's ``VEPrecond``: the variance-exploding SDE of Song et al. 2021 (NCSN++ CIFAR-10 models)."""

    def __init__(self, net: nn.Module, sigma_min: float = 0.02, sigma_max: float = 100.0, **kwargs: Any) -> None:
        super().__init__(
            net, sigma_min=max(float(sigma_min), _SAMPLER_SIGMA_MIN),
            sigma_max=min(float(sigma_max), _SAMPLER_SIGMA_MAX),
            **kwargs,
        )

    def preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        one = torch.ones_like(sigma)
        return one, sigma, one, (0.5 * sigma).log()


# Keyword arguments each EDM preconditioner consumes itself (the rest go to the network).
_PRECOND_KEYS = {
    "VPPrecond": ("beta_d", "beta_min", "M", "epsilon_t"),
    "VEPrecond": ("sigma_min", "sigma_max"),
    "EDMPrecond": ("sigma_min", "sigma_max", "sigma_data"),
}
_DEFAULT_MODEL = {"VPPrecond": "SongUNet", "VEPrecond": "SongUNet", "EDMPrecond": "DhariwalUNet"}
EDM_PRECONDS = tuple(_PRECOND_KEYS)


def _edm_range(kw: dict[str, Any]) -> dict[str, Any]:
    lo, hi = float(kw.pop("sigma_min", 0.0)), float(kw.pop("sigma_max", math.inf))
    return {"sigma_min": max(lo, _SAMPLER_SIGMA_MIN), "sigma_max": min(hi, _SAMPLER_SIGMA_MAX)}


def build_edm_denoiser(
    class_name: str,
    init_kwargs: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    device: torch.device | str | None = None,
) -> EDMDenoiser:
    """An EDM preconditioner (``class_name`` ``"VPPrecond"`` / ``"VEPrecond"`` / ``"EDMPrecond"``) from the keyword
    arguments EDM recorded for it (``img_resolution``, ``img_channels``, ``label_dim``, ``model_type``, the
    preconditioner's own and the network's keywords).

    With ``state_dict`` (the preconditioner's keys, ``model.enc.16x16_conv.weight``, ...) the network is built
    without initialising its weights and loaded strictly; the result is in eval mode with ``requires_grad=False``.
    Without it the network is randomly initialised on ``device`` (``"meta"``: shapes only).
    ``use_fp16`` is ignored: run the denoiser in the dtype you choose (``.half()``).
    """
    if class_name not in _PRECOND_KEYS:
        hint = " (iDDPMPrecond's discrete table is not supported)" if class_name == "iDDPMPrecond" else ""
        raise ValueError(f"unsupported EDM preconditioner {class_name!r}{hint}; expected one of {list(_PRECOND_KEYS)}")
    kw = dict(init_kwargs)
    for key in ("img_resolution", "img_channels"):
        if key not in kw:
            raise ValueError(f"init_kwargs of {class_name} lacks {key!r}; pass EDM's recorded init_kwargs")
    resolution, channels = int(kw.pop("img_resolution")), int(kw.pop("img_channels"))
    label_dim = int(kw.pop("label_dim", 0))
    kw.pop("use_fp16", None)
    model_type = kw.pop("model_type", _DEFAULT_MODEL[class_name])
    if model_type not in EDM_NETWORKS:
        raise ValueError(f"unsupported EDM model_type {model_type!r}; expected one of {list(EDM_NETWORKS)}")
    pre = {k: kw.pop(k) for k in _PRECOND_KEYS[class_name] if k in kw}

    net_kwargs = dict(img_resolution=resolution, in_channels=channels, out_channels=channels, label_dim=label_dim, **kw)
    try:
        # with weights: no point initialising tensors that are replaced at once
        with torch.device("meta" if state_dict is not None else device or "cpu"):
            net = EDM_NETWORKS[model_type](**net_kwargs)
    except TypeError as err:
        raise ValueError(f"bad init_kwargs for {class_name}/{model_type}: {err}") from None

    # label dropout trains the all-zero label as "no class": name it (id label_dim) so that CFG can use it
    null_label = label_dim if label_dim and float(kw.get("label_dropout", 0) or 0) > 0 else None
    common = dict(in_channels=channels, sample_size=resolution, size_multiple=net.downsample_factor,
                  num_classes=label_dim or None, null_label=null_label, label_format="onehot" if label_dim else "index")
    if class_name == "VPPrecond":
        den: EDMDenoiser = VPDenoiser(net, **pre, **common)
    elif class_name == "VEPrecond":
        den = VEDenoiser(net, **pre, **common)
    else:
        den = EDMDenoiser(net, sigma_data=float(pre.pop("sigma_data", 0.5)), **_edm_range(pre), **common)
    if state_dict is not None:
        _load_model_state(net, state_dict, class_name)
        den.eval().requires_grad_(False)
    return den


def _load_model_state(net: nn.Module, state_dict: Mapping[str, torch.Tensor], class_name: str) -> None:
    """Strictly load a preconditioner state dict (``model.<key>``) into the bare network."""
    bad = [k for k in state_dict if not k.startswith("model.")]
    if bad:
        raise ValueError(f"{class_name} state dict has keys outside 'model.': {bad[:5]}")
    sd = {k[len("model."):]: v for k, v in state_dict.items()}
    expected = set(net.state_dict().keys())
    missing, unexpected = sorted(expected - sd.keys()), sorted(sd.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"the weights do not fit the {class_name} network built from init_kwargs: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"the weights do not fit the {class_name} network built from init_kwargs: {err}") from None
