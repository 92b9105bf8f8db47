"""ODE/SDE solvers over a robaug denoiser, one short function per solver (as k-diffusion's ``sampling.py``).

Every solver integrates the probability-flow ODE of Karras et al. 2022 in the VE view, ``dx/dsigma = (x - D(x,
sigma)) / sigma``, over a descending noise grid ``sigma_0 > ... > sigma_{N-1} > sigma_N = 0``:

* :func:`sample_euler`: ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i`` with
  ``d_i = (x_i - D(x_i, sigma_i)) / sigma_i``;
* :func:`sample_heun`: EDM Algorithm 2 -- the Euler step followed by the trapezoidal correction
  ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_{i+1}) / 2`` (skipped on the last step to ``sigma = 0``),
  2N - 1 network evaluations;
* :func:`sample_ddim`: Song et al. 2021, which in the VE view is ``x_{i+1} = D + sigma_down * eps + sigma_up * z``
  with ``eps = (x_i - D) / sigma_i``, ``sigma_up = eta * sigma_{i+1} sqrt(sigma_i^2 - sigma_{i+1}^2) / sigma_i`` and
  ``sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)``; for ``eta = 0`` this is the Euler step. With
  ``clip_denoised`` the clipped ``x0_hat`` and the unclipped ``eps`` are combined, exactly as diffusers'
  ``DDIMScheduler(clip_sample=True)`` does.

Churn (EDM's ``S_churn``, ``S_tmin``, ``S_tmax``, ``S_noise``; every solver) adds noise to go from ``sigma_i`` up to
``sigma_hat = sigma_i (1 + gamma)``, ``gamma = min(S_churn / N, sqrt(2) - 1)``, before each step.

:data:`SOLVER_FUNCTIONS` maps a solver's name to its function (register more with
``SOLVER_FUNCTIONS.register(name, fn)``); :func:`sample_loop` looks the name up. Noise sources: :class:`SeedNoise`
(one generator per sample) and :class:`BatchNoise` (one generator for the batch), both drawing through
:mod:`robaug._core.rng`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Protocol, Sequence

import torch

from .._core import rng
from .._core.registry import Registry
from ._checks import finite_float

__all__ = [
    "SOLVERS",
    "SOLVER_FUNCTIONS",
    "NoiseSource",
    "SeedNoise",
    "BatchNoise",
    "sample_euler",
    "sample_heun",
    "sample_ddim",
    "sample_loop",
]

Denoise = Callable[[torch.Tensor, float, "torch.Tensor | None"], torch.Tensor]


# ------------------------------------------------------------------------------------------------------------
# noise sources


class NoiseSource(Protocol):
    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor: ...


class SeedNoise:
    """One ``torch.Generator`` per sample: sample ``i``'s noise depends only on ``seeds[i]``
    (cf. EDM's ``StackedRandomGenerator``). Noise is drawn in float32 and cast, so it is the same for
    float32 and float64 sampler states."""

    def __init__(self, seeds: Sequence[int] | torch.Tensor, device: torch.device | str) -> None:
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
        if not seeds:
            raise ValueError("seeds is empty")
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(s % (1 << 64)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"asked for {shape[0]} samples of noise but have {len(self.generators)} seeds")
        one = tuple(shape[1:])
        return torch.stack([rng.randn(one, g, self.device) for g in self.generators]).to(dtype)


class BatchNoise:
    """Noise for a whole batch from one ``torch.Generator`` (or the global RNG of ``device`` when ``generator`` is
    None). A generator on another device draws there and the noise moves to ``device`` (:mod:`robaug._core.rng`'s
    policy), so the same seed gives the same noise whichever device samples."""

    def __init__(self, generator: torch.Generator | None, device: torch.device | str) -> None:
        rng.check_generator(generator)
        self.generator = generator
        self.device = torch.device(device)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return rng.randn(shape, self.generator, self.device).to(dtype)


# ------------------------------------------------------------------------------------------------------------
# pieces every solver shares


def _grid(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    sig = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if len(sig) < 2 or sig[-1] != 0.0 or any(b >= a for a, b in zip(sig[:-1], sig[1:])):
        raise ValueError("sigmas must be strictly decreasing and end with 0 (e.g. from sampling_sigmas())")
    return sig


def _steps(n: int, progress: bool) -> Iterable[int]:
    if not progress:
        return range(n)
    from .._core.progress import progress_bar  # whole lines in log files, silent under ROBAUG_QUIET

    return progress_bar(range(n), desc="sampling", unit="step", leave=False)


def _clip(d: torch.Tensor, clip_denoised: bool) -> torch.Tensor:
    return d.clamp(-1.0, 1.0) if clip_denoised else d


def _churn(x: torch.Tensor, s_cur: float, gamma: float, s_tmin: float, s_tmax: float, s_noise: float,
           round_sigma: Callable[[float], float] | None, noise: NoiseSource | None) -> tuple[torch.Tensor, float]:
    """EDM's churn: raise the noise level from ``s_cur`` to ``s_hat = s_cur (1 + gamma)`` (rounded to the model's
    timesteps by ``round_sigma``) by adding ``sqrt(s_hat^2 - s_cur^2) * s_noise * z``; returns ``(x, s_hat)``."""
    if gamma <= 0 or not s_tmin <= s_cur <= s_tmax:
        return x, s_cur
    s_hat = s_cur * (1.0 + gamma)
    if round_sigma is not None:
        s_hat = float(round_sigma(s_hat))
    extra = math.sqrt(max(s_hat * s_hat - s_cur * s_cur, 0.0))
    if extra > 0:
        x = x + (extra * s_noise) * noise.randn(x.shape).to(x.dtype)
    return x, s_hat


def _gamma(s_churn: float, n: int) -> float:
    return min(s_churn / n, math.sqrt(2.0) - 1.0) if s_churn > 0 else 0.0


def _check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    """The churn settings every solver takes: finite (``s_tmax = inf``: no upper limit) and ``>= 0``."""
    finite_float("s_churn", s_churn, lo=0.0)
    finite_float("s_tmin", s_tmin, lo=0.0)
    finite_float("s_tmax", s_tmax, lo=0.0, allow_inf=True)
    finite_float("s_noise", s_noise, lo=0.0)


def _default_noise(noise: NoiseSource | None, needed: bool, x: torch.Tensor) -> NoiseSource | None:
    return BatchNoise(None, x.device) if needed and noise is None else noise


# ------------------------------------------------------------------------------------------------------------
# the solvers


def sample_euler(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
    class_labels: torch.Tensor | None = None, noise: NoiseSource | None = None, s_churn: float = 0.0,
    s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0, clip_denoised: bool = False,
    round_sigma: Callable[[float], float] | None = None, callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (with EDM churn when ``s_churn > 0``); N network evaluations."""
    _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    sig = _grid(sigmas)
    n = len(sig) - 1
    gamma = _gamma(s_churn, n)
    noise = _default_noise(noise, s_churn > 0, x)
    for i in _steps(n, progress):
        s_next = sig[i + 1]
        x, s_hat = _churn(x, sig[i], gamma, s_tmin, s_tmax, s_noise, round_sigma, noise)
        denoised = denoise(x, s_hat, class_labels)
        d = (x - _clip(denoised, clip_denoised)) / s_hat
        x = x + (s_next - s_hat) * d
        if callback is not None:
            callback({"i": i, "sigma": s_hat, "sigma_next": s_next, "x": x, "denoised": denoised})
    return x


def sample_heun(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
    class_labels: torch.Tensor | None = None, noise: NoiseSource | None = None, s_churn: float = 0.0,
    s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0, clip_denoised: bool = False,
    round_sigma: Callable[[float], float] | None = None, callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """EDM Algorithm 2: an Euler step, then the trapezoidal (Heun) correction except on the step to
    ``sigma = 0``; 2N - 1 network evaluations."""
    _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    sig = _grid(sigmas)
    n = len(sig) - 1
    gamma = _gamma(s_churn, n)
    noise = _default_noise(noise, s_churn > 0, x)
    for i in _steps(n, progress):
        s_next = sig[i + 1]
        x, s_hat = _churn(x, sig[i], gamma, s_tmin, s_tmax, s_noise, round_sigma, noise)
        denoised = denoise(x, s_hat, class_labels)
        d = (x - _clip(denoised, clip_denoised)) / s_hat
        x_next = x + (s_next - s_hat) * d
        if s_next > 0:
            d_prime = (x_next - _clip(denoise(x_next, s_next, class_labels), clip_denoised)) / s_next
            x_next = x + (s_next - s_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
        if callback is not None:
            callback({"i": i, "sigma": s_hat, "sigma_next": s_next, "x": x, "denoised": denoised})
    return x


def sample_ddim(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float], *,
    class_labels: torch.Tensor | None = None, noise: NoiseSource | None = None, eta: float = 0.0,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
    clip_denoised: bool = False, round_sigma: Callable[[float], float] | None = None,
    callback: Callable[[dict], None] | None = None, progress: bool = False,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) in the VE view: ``x_{i+1} = x0_hat + sigma_down * eps + sigma_up * z``;
    ``eta = 0`` is deterministic (the Euler step), ``eta = 1`` ancestral sampling. N network evaluations."""
    finite_float("eta", eta, lo=0.0)
    _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    sig = _grid(sigmas)
    n = len(sig) - 1
    gamma = _gamma(s_churn, n)
    noise = _default_noise(noise, s_churn > 0 or eta > 0, x)
    for i in _steps(n, progress):
        s_next = sig[i + 1]
        x, s_hat = _churn(x, sig[i], gamma, s_tmin, s_tmax, s_noise, round_sigma, noise)
        denoised = denoise(x, s_hat, class_labels)
        eps = (x - denoised) / s_hat
        s_up = 0.0
        if eta > 0 and s_next > 0:
            s_up = min(s_next, eta * s_next * math.sqrt(max(s_hat * s_hat - s_next * s_next, 0.0)) / s_hat)
        s_down = math.sqrt(s_next * s_next - s_up * s_up)
        x = _clip(denoised, clip_denoised) + s_down * eps
        if s_up > 0:
            x = x + s_up * noise.randn(x.shape).to(x.dtype)
        if callback is not None:
            callback({"i": i, "sigma": s_hat, "sigma_next": s_next, "x": x, "denoised": denoised})
    return x


#: name -> solver function; every solver takes ``(denoise, x, sigmas, *, class_labels, noise, s_churn, s_tmin,
#: s_tmax, s_noise, clip_denoised, round_sigma, callback, progress)``, stochastic ones more (DDIM's ``eta``).
SOLVER_FUNCTIONS: Registry[Callable[..., torch.Tensor]] = Registry("solver")
SOLVER_FUNCTIONS.register("heun", sample_heun)
SOLVER_FUNCTIONS.register("euler", sample_euler)
SOLVER_FUNCTIONS.register("ddim", sample_ddim)

#: the built-in solvers' names
SOLVERS = tuple(SOLVER_FUNCTIONS.names())


def sample_loop(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    solver: str = "heun",
    class_labels: torch.Tensor | None = None,
    noise: NoiseSource | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    eta: float = 0.0,
    clip_denoised: bool = False,
    round_sigma: Callable[[float], float] | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate from ``x`` (already ``sigmas[0] * n``) down the grid ``sigmas`` (descending, last entry 0) with
    the solver registered as ``solver`` in :data:`SOLVER_FUNCTIONS`.

    ``denoise(x, sigma, class_labels)`` returns ``x0_hat`` in ``x``'s dtype (``sigma`` a Python float). The state
    keeps ``x``'s dtype (EDM samples in float64). ``callback`` gets ``{"i", "sigma", "sigma_next", "x", "denoised"}``
    after each step.
    """
    if solver not in SOLVER_FUNCTIONS:
        raise ValueError(f"solver must be one of {tuple(SOLVER_FUNCTIONS.names())}, got {solver!r}")
    if eta and solver != "ddim":
        raise ValueError(f"eta={eta} is DDIM's stochasticity; use solver='ddim' (or s_churn for heun/euler)")
    extra = {"eta": eta} if eta else {}
    return SOLVER_FUNCTIONS[solver](
        denoise, x, sigmas, class_labels=class_labels, noise=noise, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
        s_noise=s_noise, clip_denoised=clip_denoised, round_sigma=round_sigma, callback=callback, progress=progress,
        **extra)
