"""Noise schedules: the one place robaug turns a diffusion schedule into noise levels.

Everything in robaug speaks the variance-exploding (VE) view of Karras et al. 2022: a noisy image is
``x = x0 + sigma * n`` with data in ``[-1, 1]``. A discrete-time DDPM schedule with cumulative
product ``abar_t`` is the same process seen through

    sigma_t = sqrt((1 - abar_t) / abar_t),      abar_t = 1 / (1 + sigma_t^2),

and the DDPM state is ``x_t = sqrt(abar_t) * x = x / sqrt(1 + sigma_t^2)``.

The beta tables reproduce diffusers' ``DDPMScheduler`` exactly (same float32 betas and float32
cumulative product, which is what diffusers-trained models saw during training); the derived sigma
tables are float64.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import torch

from ._checks import finite_float
from ._ddpm import DDPM_SCHEDULER_CONFIG, ddpm_scheduler_config

__all__ = [
    "BETA_SCHEDULES",
    "make_betas",
    "alphas_cumprod_from_betas",
    "sigmas_from_alphas_cumprod",
    "alphas_cumprod_from_sigmas",
    "scheduler_config_dict",
    "sigmas_from_scheduler_config",
    "DDPM_SCHEDULER_CONFIG",
    "ddpm_scheduler_config",
    "default_timestep_sigmas",
    "sigma_to_t",
    "t_to_sigma",
    "karras_sigmas",
    "TIMESTEP_SPACINGS",
    "spaced_timesteps",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def make_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    *,
    max_beta: float = 0.999,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """float32 betas of a diffusers beta schedule (identical to ``DDPMScheduler.betas``); ``dtype=torch.float64``
    gives guided-diffusion's float64 tables (``get_named_beta_schedule``: ``linear`` and ``cosine``).

    - ``linear``: ``linspace(beta_start, beta_end, T)`` (Ho et al. 2020);
    - ``scaled_linear``: ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2`` (latent diffusion);
    - ``squaredcos_cap_v2``: ``beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta)`` with
      ``f(u) = cos((u + 0.008) / 1.008 * pi / 2) ** 2`` (Nichol & Dhariwal 2021).
    """
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=dtype)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=dtype) ** 2
    if beta_schedule == "squaredcos_cap_v2":

        def f(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
        return torch.tensor(betas, dtype=dtype)
    raise ValueError(
        f"unsupported beta_schedule {beta_schedule!r}; robaug supports {', '.join(BETA_SCHEDULES)} "
        "(or pass trained_betas in the scheduler config)."
    )


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, computed in the betas' dtype (as diffusers does)."""
    return torch.cumprod(1.0 - betas, dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """VE noise level of each DDPM step, ``sqrt((1 - abar) / abar)``, in float64."""
    a = alphas_cumprod.to(torch.float64)
    return ((1.0 - a) / a).sqrt()


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sigmas_from_alphas_cumprod`: ``abar = 1 / (1 + sigma^2)``."""
    return 1.0 / (1.0 + sigmas**2)


def scheduler_config_dict(scheduler_config: Any) -> dict[str, Any]:
    """A plain dict from a diffusers scheduler config dict, ``FrozenDict`` or ``SchedulerMixin``."""
    if isinstance(scheduler_config, Mapping):
        return dict(scheduler_config)
    config = getattr(scheduler_config, "config", None)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(
        "scheduler_config must be a dict (e.g. the contents of scheduler_config.json) or a diffusers "
        f"scheduler such as DDPMScheduler, got {type(scheduler_config).__name__}."
    )


def sigmas_from_scheduler_config(scheduler_config: Any) -> torch.Tensor:
    """Ascending float64 sigma table (one entry per training timestep) of a diffusers scheduler config.

    Reads ``num_train_timesteps``, ``beta_schedule``, ``beta_start``, ``beta_end`` and ``trained_betas``
    with diffusers' defaults; ``betas_dtype`` (robaug's key, default ``"float32"`` as diffusers) set to
    ``"float64"`` computes betas and their cumulative product in float64, as guided-diffusion (ADM) does.
    Zero-terminal-SNR rescaling is rejected (its last sigma is infinite).
    """
    cfg = scheduler_config_dict(scheduler_config)
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if cfg.get("betas_dtype", "float32") not in dtypes:
        raise ValueError(f"betas_dtype must be 'float32' or 'float64', got {cfg.get('betas_dtype')!r}")
    dtype = dtypes[cfg.get("betas_dtype", "float32")]
    if cfg.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "rescale_betas_zero_snr=True gives abar_T = 0, i.e. sigma_T = inf, which has no place in the "
            "x0 + sigma * n view; use a schedule without zero terminal SNR."
        )
    trained = cfg.get("trained_betas")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=dtype).flatten()
    else:
        betas = make_betas(
            cfg.get("beta_schedule", "linear"),
            int(cfg.get("num_train_timesteps", 1000)),
            float(cfg.get("beta_start", 1e-4)),
            float(cfg.get("beta_end", 0.02)),
            dtype=dtype,
        )
    return sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas))


def default_timestep_sigmas() -> torch.Tensor:
    """The table that gives ``t`` a meaning for continuous-time denoisers: the sigmas of
    :data:`DDPM_SCHEDULER_CONFIG` (DDPM linear betas 1e-4..0.02, T = 1000; Ho et al. 2020), the schedule of the
    DiffAug paper's models."""
    return sigmas_from_scheduler_config(DDPM_SCHEDULER_CONFIG)


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor, mode: str = "interpolate") -> torch.Tensor:
    """Map noise levels to (fractional) timesteps of an ascending sigma table.

    ``interpolate``: piecewise-linear in ``log(sigma)`` between neighbouring table entries, returns
    float timesteps (an exact table sigma maps to its integer t). ``nearest``: the index of the closest
    table entry in ``log(sigma)``, returns int64. Sigmas outside the table are clamped to ``[0, T-1]``.
    Computed in the table's dtype.
    """
    if mode not in ("interpolate", "nearest"):
        raise ValueError(f"mode must be 'interpolate' or 'nearest', got {mode!r}")
    sigmas = sigmas.to(sigma.device) if isinstance(sigma, torch.Tensor) else sigmas
    sigma = torch.as_tensor(sigma, dtype=sigmas.dtype, device=sigmas.device)
    log_sigmas = sigmas.log()
    ls = sigma.clamp(min=sigmas[0], max=sigmas[-1]).log()
    if mode == "nearest":
        return (ls.unsqueeze(-1) - log_sigmas).abs().argmin(dim=-1)
    n = sigmas.shape[0]
    if n == 1:
        return torch.zeros_like(ls)
    flat = ls.reshape(-1).contiguous()
    hi = torch.searchsorted(log_sigmas, flat).clamp(1, n - 1)
    lo = hi - 1
    w = ((flat - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0.0, 1.0)
    return (lo.to(flat.dtype) + w).reshape(ls.shape)


def t_to_sigma(t: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Sigma of (possibly fractional) timesteps; the inverse of ``sigma_to_t(..., "interpolate")``."""
    sigmas = sigmas.to(t.device) if isinstance(t, torch.Tensor) else sigmas
    t = torch.as_tensor(t, device=sigmas.device)
    if not t.is_floating_point():
        return sigmas[t]
    t = t.to(sigmas.dtype).clamp(0, sigmas.shape[0] - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=sigmas.shape[0] - 1)
    w = t - lo.to(t.dtype)
    log_sigmas = sigmas.log()
    return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()


def karras_sigmas(
    n: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    *,
    append_zero: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Descending noise levels of Karras et al. 2022, eq. 5:

        sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0..n-1,

    followed by ``sigma_n = 0`` when ``append_zero`` (so ``n + 1`` values, as EDM's sampler uses them).
    Needs ``n >= 1``, ``0 < sigma_min <= sigma_max`` (finite) and a finite ``rho > 0`` (``ValueError`` otherwise).
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n (the number of steps) must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n (the number of steps) must be >= 1, got {n}")
    sigma_min = finite_float("sigma_min", sigma_min, lo=0.0, lo_open=True)
    sigma_max = finite_float("sigma_max", sigma_max, lo=0.0, lo_open=True)
    if sigma_min > sigma_max:
        raise ValueError(f"need sigma_min <= sigma_max, got sigma_min={sigma_min:g} > sigma_max={sigma_max:g}; "
                         "swap them")
    rho = finite_float("rho", rho, lo=0.0, lo_open=True, hint=" (EDM uses rho=7; rho=1 is a uniform grid)")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sig = torch.cat([sig, sig.new_zeros(1)])
    return sig.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------
# Timestep selection for samplers that walk a discrete-time model's own timesteps (DDIM).
# Added with robaug.diffusion.samplers (issue 4).

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def spaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "leading",
                     steps_offset: int = 0) -> torch.Tensor:
    """Descending integer timesteps of a ``num_steps``-step sampler, chosen as diffusers does
    (Lin et al. 2023, Table 2): ``leading`` ``(0, r, 2r, ...) + offset`` with ``r = T // n`` (DDIM paper's
    uniform skip), ``trailing`` ``round(T, T - T/n, ...) - 1``, ``linspace`` ``round(linspace(0, T - 1, n))``."""
    T, n = int(num_train_timesteps), int(num_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_steps must lie in [1, {T}] (the model's number of timesteps), got {n}")
    if spacing == "leading":
        ts = torch.arange(n, dtype=torch.int64) * (T // n) + int(steps_offset)
    elif spacing == "trailing":
        r = T / n
        ts = torch.round(torch.arange(T, 0, -r, dtype=torch.float64)).to(torch.int64) - 1
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(0, T - 1, n, dtype=torch.float64)).to(torch.int64)
    else:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    return ts.clamp(0, T - 1).flip(0).contiguous()
