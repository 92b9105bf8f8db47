"""The samplers users call: :class:`GuidedDiffusion` (an ``nn.Module``) holds the settings, builds the noise grid
(:func:`sampling_sigmas`) and the noise source, applies guidance (:class:`~robaug.diffusion.guidance.GuidedDenoiser`)
and hands the rest to a solver of :mod:`robaug.diffusion.sampling` (EDM's Heun with churn, Euler, DDIM with eta).

Noise grids: by default DDIM walks the model's own timesteps (``timestep_spacing="leading"``, diffusers' default),
Heun and Euler the Karras grid (eq. 5) rounded to the model's timesteps for discrete-time models.

Randomness: ``seeds=[s_0, ..., s_{B-1}]`` gives every sample its own generator (initial noise, churn and DDIM
noise are drawn from it in a fixed order), so sample ``i``'s noise is bit-identical for any batch size and any
number of processes, and its image equal up to the network's float rounding, which depends on the batch size
(~1e-6..6e-6 on CPU, docs/sampling.md). ``generator=`` draws the whole batch from one ``torch.Generator`` instead,
and neither uses the global RNG.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Callable, Sequence

import torch
from torch import nn

from .._core.modules import module_device
from ._checks import finite_float, optional_finite
from .denoiser import Denoiser
from .guidance import ClassifierGuidance, GuidanceTerm, GuidedDenoiser
from .sampling import SOLVER_FUNCTIONS, SOLVERS, BatchNoise, SeedNoise, sample_loop
from .schedule import TIMESTEP_SPACINGS, karras_sigmas, spaced_timesteps

__all__ = [
    "SOLVERS",
    "GuidedDiffusion",
    "sampling_sigmas",
    "spaced_timesteps",
    "sample_loop",
    "SeedNoise",
    "BatchNoise",
]

#: how GuidedDiffusion's arguments spell ClassifierGuidance's (its error messages use these names)
_CLASSIFIER_ARGS = {"scale": "classifier_scale", "mode": "classifier_mode", "sigma_range": "classifier_sigma_range",
                    "weighting": "classifier_weighting"}


def _check_steps(num_steps) -> int:
    try:
        n = operator.index(num_steps)
    except TypeError:
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}") from None
    if n < 1:
        raise ValueError(f"num_steps must be >= 1, got {n}")
    return n


# ------------------------------------------------------------------------------------------------------------
# noise grids


def sampling_sigmas(
    denoiser: nn.Module,
    num_steps: int,
    *,
    discretization: str = "karras",
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
    timestep_spacing: str = "leading",
    round_sigmas: bool = True,
) -> torch.Tensor:
    """The descending float64 (CPU) noise grid a sampler walks, ending with ``sigma_N = 0``.

    ``discretization="karras"``: eq. 5 of Karras et al. between ``sigma_max`` and ``sigma_min`` (default: the
    denoiser's range; explicit values are clamped into it, as EDM does), passed through ``denoiser.round_sigma``
    when ``round_sigmas`` (the nearest trained timestep for discrete-time models; consecutive duplicates
    created by rounding are dropped). ``discretization="timesteps"``: the sigmas of ``num_steps`` of the
    model's own timesteps (``timestep_spacing``); ``sigma_min``/``sigma_max``/``rho`` are not used.
    """
    num_steps = _check_steps(num_steps)
    table = getattr(denoiser, "timestep_sigmas", None)
    if discretization == "timesteps":
        if table is None:
            raise ValueError("discretization='timesteps' needs a denoiser with a timestep_sigmas table")
        table = table.detach().to("cpu", torch.float64)
        ts = spaced_timesteps(table.shape[0], num_steps, timestep_spacing)
        sig = table[ts]
        return torch.cat([sig, sig.new_zeros(1)])
    if discretization != "karras":
        raise ValueError(f"discretization must be 'karras' or 'timesteps', got {discretization!r}")
    d_min = float(getattr(denoiser, "sigma_min", 0.002))
    d_max = float(getattr(denoiser, "sigma_max", 80.0))
    sigma_min = optional_finite("sigma_min", sigma_min, lo=0.0, lo_open=True)
    sigma_max = optional_finite("sigma_max", sigma_max, lo=0.0, lo_open=True)
    lo = d_min if sigma_min is None else max(sigma_min, d_min)
    hi = d_max if sigma_max is None else min(sigma_max, d_max)
    if lo > hi:
        raise ValueError(f"empty noise range: sigma_min={lo} > sigma_max={hi} "
                         f"(the denoiser supports [{d_min}, {d_max}])")
    sig = karras_sigmas(int(num_steps), lo, hi, rho, append_zero=False)
    if round_sigmas and hasattr(denoiser, "round_sigma"):
        sig = torch.as_tensor(denoiser.round_sigma(sig)).to("cpu", torch.float64)
        sig = torch.unique_consecutive(sig)
    return torch.cat([sig, sig.new_zeros(1)])


# ------------------------------------------------------------------------------------------------------------
# the nn.Module users call


class GuidedDiffusion(nn.Module):
    """Class-conditional sampler over any robaug denoiser, with classifier-free and classifier guidance.

    >>> sampler = GuidedDiffusion(load_denoiser("fmnist-ddpm"), num_steps=18, solver="heun", cfg_scale=2.0)
    >>> images = sampler(class_labels=torch.arange(10), seeds=range(10))   # (10, 1, 28, 28) in [0, 1]

    Args:
        denoiser: a :class:`robaug.diffusion.Denoiser` (``D(x, sigma, class_labels) -> x0_hat``).
        num_steps: steps ``N`` of the noise grid (Heun uses ``2N - 1`` network evaluations).
        solver: ``"heun"`` (EDM Algorithm 2), ``"euler"`` or ``"ddim"``.
        sigma_min, sigma_max, rho: Karras grid (defaults: the denoiser's range, rho 7).
        cfg_scale: classifier-free guidance weight ``w`` (1 = conditional, 0 = unconditional).
        classifier, classifier_scale, classifier_mode: classifier guidance (see :class:`ClassifierGuidance`):
            ``"x0"`` = ``grad log p(y | x0_hat(x))`` through the denoiser, ``"xt"`` = noise-aware classifier
            (default: the classifier's ``guidance_space``, e.g. ``"xt"`` for a ``NoisyClassifier``, else ``"x0"``).
        classifier_sigma_range: apply classifier guidance only for ``lo <= sigma <= hi``.
        classifier_weighting: ``lambda(sigma)`` of the guidance step (``"constant"`` default in ``x0`` mode,
            ``"score"`` in ``xt`` mode; see :mod:`robaug.diffusion.guidance`).
        guidance: more :class:`GuidanceTerm` s (they compose; one backward pass per evaluation).
        grad_through_denoiser: backpropagate ``x0``-space terms through the denoiser (else identity Jacobian).
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochastic churn (``s_churn = 0``: deterministic), applied for
            ``s_tmin <= sigma <= s_tmax`` (``s_tmax = inf``, the default, means no upper limit); every setting
            is checked to be finite (``ValueError`` naming it), since a NaN would make every image NaN.
        eta: DDIM stochasticity (solver ``"ddim"`` only).
        discretization: ``"karras"`` or ``"timesteps"``; default: ``"timesteps"`` for DDIM on a discrete-time
            model, else ``"karras"``.
        timestep_spacing: ``"leading"`` / ``"trailing"`` / ``"linspace"`` for the ``"timesteps"`` grid.
        round_sigmas: round the Karras grid (and churned sigmas) to the model's timesteps (discrete models).
        clip_denoised: clip ``x0_hat`` to ``[-1, 1]`` at each step (diffusers' ``clip_sample``).
        state_dtype: dtype of the sampler state (float64 as in EDM / DM-Improves-AT; float32 on MPS).
        image_size: ``(H, W)`` or int, for denoisers without a native ``sample_size``.
        progress: show a per-step progress bar.
    """

    def __init__(
        self,
        denoiser: Denoiser | str | os.PathLike,
        num_steps: int = 18,
        solver: str = "heun",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        *,
        cfg_scale: float = 1.0,
        classifier: nn.Module | None = None,
        classifier_scale: float = 1.0,
        classifier_mode: str | None = None,
        classifier_sigma_range: tuple[float, float] | None = None,
        classifier_weighting: str | Callable | None = None,
        guidance: Sequence[GuidanceTerm] = (),
        grad_through_denoiser: bool = True,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        eta: float = 0.0,
        discretization: str | None = None,
        timestep_spacing: str = "leading",
        round_sigmas: bool = True,
        clip_denoised: bool = False,
        state_dtype: torch.dtype = torch.float64,
        image_size: int | tuple[int, int] | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        from ..hub.resolve import resolve_denoiser

        denoiser = resolve_denoiser(denoiser, owner=type(self).__name__)
        num_steps = _check_steps(num_steps)
        if solver not in SOLVER_FUNCTIONS:
            raise ValueError(f"solver must be one of {tuple(SOLVER_FUNCTIONS.names())}, got {solver!r}")
        sigma_min = optional_finite("sigma_min", sigma_min, lo=0.0, lo_open=True)
        sigma_max = optional_finite("sigma_max", sigma_max, lo=0.0, lo_open=True)
        if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got sigma_min={sigma_min:g}, sigma_max={sigma_max:g}")
        rho = finite_float("rho", rho, lo=0.0, lo_open=True, hint=" (EDM uses rho=7)")
        eta = finite_float("eta", eta, lo=0.0)
        if eta and solver != "ddim":
            raise ValueError(f"eta={eta:g} is DDIM's stochasticity and needs solver='ddim' (heun/euler: use s_churn)")
        s_churn = finite_float("s_churn", s_churn, lo=0.0)
        s_tmin = finite_float("s_tmin", s_tmin, lo=0.0)
        s_tmax = finite_float("s_tmax", s_tmax, lo=0.0, allow_inf=True)
        if s_tmin > s_tmax:
            raise ValueError(f"need s_tmin <= s_tmax, got s_tmin={s_tmin:g}, s_tmax={s_tmax:g}")
        s_noise = finite_float("s_noise", s_noise, lo=0.0, hint=" (EDM uses 1.0 to 1.007)")
        cfg_scale = finite_float("cfg_scale", cfg_scale, hint=" (1 = conditional, 0 = unconditional)")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        if discretization not in (None, "karras", "timesteps"):
            raise ValueError(f"discretization must be 'karras', 'timesteps' or None, got {discretization!r}")
        if not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
            raise TypeError(f"state_dtype must be a floating torch.dtype (torch.float64 or torch.float32), "
                            f"got {state_dtype!r}")
        if discretization is None:
            discretization = "timesteps" if solver == "ddim" and getattr(denoiser, "discrete", False) else "karras"
        terms = list(guidance)
        if classifier is not None:
            terms.insert(0, ClassifierGuidance(
                classifier, classifier_scale, mode=classifier_mode, sigma_range=classifier_sigma_range,
                weighting=classifier_weighting, arg_names=_CLASSIFIER_ARGS))
        self.guided = GuidedDenoiser(denoiser, cfg_scale=cfg_scale, terms=terms,
                                     grad_through_denoiser=grad_through_denoiser)
        self.num_steps = num_steps
        self.solver = solver
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise
        self.eta = eta
        self.discretization = discretization
        self.timestep_spacing = timestep_spacing
        self.round_sigmas = bool(round_sigmas)
        self.clip_denoised = bool(clip_denoised)
        self.state_dtype = state_dtype
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and (len(image_size) != 2 or any(int(v) < 1 for v in image_size)):
            raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.progress = progress
        self.sigmas()  # validate the grid settings now

    # -- introspection ---------------------------------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        return self.guided.denoiser

    @property
    def terms(self) -> nn.ModuleList:
        return self.guided.terms

    def sigmas(self) -> torch.Tensor:
        """The descending float64 noise grid (ending with 0) this sampler walks."""
        return sampling_sigmas(
            self.denoiser, self.num_steps, discretization=self.discretization, sigma_min=self.sigma_min,
            sigma_max=self.sigma_max, rho=self.rho, timestep_spacing=self.timestep_spacing,
            round_sigmas=self.round_sigmas,
        )

    @property
    def num_evals(self) -> int:
        """Network evaluations per sample (CFG runs each on a doubled batch)."""
        sig = self.sigmas()
        n = sig.shape[0] - 1
        if self.solver == "heun":
            return n + int((sig[1:] > 0).sum())
        return n

    def image_shape(self) -> tuple[int, int, int]:
        size = self.image_size
        if size is None:
            s = getattr(self.denoiser, "sample_size", None)
            if s is None:
                raise ValueError("the denoiser has no native sample_size: pass image_size=(H, W) to the sampler")
            size = (s, s) if isinstance(s, int) else tuple(s)
        return (int(self.denoiser.in_channels), int(size[0]), int(size[1]))

    def config(self) -> dict:
        """JSON-able sampler settings (recorded in dataset manifests)."""
        return {
            "sampler": type(self).__name__, "solver": self.solver, "num_steps": self.num_steps,
            "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho,
            "discretization": self.discretization, "timestep_spacing": self.timestep_spacing,
            "round_sigmas": self.round_sigmas, "s_churn": self.s_churn, "s_tmin": self.s_tmin,
            "s_tmax": None if math.isinf(self.s_tmax) else self.s_tmax, "s_noise": self.s_noise, "eta": self.eta,
            "clip_denoised": self.clip_denoised, "state_dtype": str(self.state_dtype).replace("torch.", ""),
            "sigmas": [round(float(s), 10) for s in self.sigmas()], "num_evals": self.num_evals,
            "image_shape": list(self.image_shape()), **self.guided.config(),
        }

    def __repr__(self) -> str:
        """The settings in a few lines (not the network's layers)."""
        d = self.denoiser
        params = sum(p.numel() for p in d.parameters())
        classes = "unconditional" if getattr(d, "num_classes", None) is None else \
            f"{d.num_classes} classes, null_label={getattr(d, 'null_label', None)}"
        sig = self.sigmas()
        lines = [
            f"denoiser={type(d).__name__}({params / 1e6:.2f}M params, {classes}, "
            f"sigma {float(getattr(d, 'sigma_min', 0)):.4g}..{float(getattr(d, 'sigma_max', 0)):.4g})",
            f"solver={self.solver!r}, num_steps={self.num_steps} ({self.num_evals} evaluations), "
            f"discretization={self.discretization!r}, sigma {float(sig[-2]):.4g}..{float(sig[0]):.4g}"
            + (f", rho={self.rho:g}" if self.discretization == "karras" else f", spacing={self.timestep_spacing!r}"),
            "churn: none" if not self.s_churn else
            f"churn: s_churn={self.s_churn:g}, s_tmin={self.s_tmin:g}, s_tmax={self.s_tmax:g}, "
            f"s_noise={self.s_noise:g}",
        ]
        if self.solver == "ddim":
            lines.append(f"eta={self.eta:g}")
        lines.append(f"cfg_scale={self.guided.cfg_scale:g}, state_dtype={str(self.state_dtype).replace('torch.', '')}"
                     + (", clip_denoised=True" if self.clip_denoised else ""))
        for t in self.terms:
            cfg = t.config()
            lo, hi = cfg.pop("sigma_range")
            kind = cfg.pop("type")
            cfg["sigma_range"] = f"{lo:g}..{'inf' if hi is None else format(hi, 'g')}"
            lines.append(f"guidance: {kind}(" + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ")")
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    # -- sampling --------------------------------------------------------------------------------------------
    def _batch(self, class_labels, num_samples, seeds, noise, device) -> tuple[int, torch.Tensor | None]:
        sizes = {}
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, device=device)
            if labels.is_floating_point():
                raise TypeError("class_labels must be integer class indices")
            if labels.ndim == 0:
                if num_samples is None:
                    num_samples = 1 if seeds is None and noise is None else None
                labels = labels.reshape(1)
                if num_samples is not None:
                    labels = labels.expand(int(num_samples))
                elif seeds is not None:
                    labels = labels.expand(len(seeds))
                elif noise is not None:
                    labels = labels.expand(noise.shape[0])
            if labels.ndim != 1:
                raise ValueError(f"class_labels must be an int or a 1-d tensor, got shape {tuple(labels.shape)}")
            nc = getattr(self.denoiser, "num_classes", None)
            if labels.numel() and nc is not None and (int(labels.min()) < 0 or int(labels.max()) >= nc):
                raise ValueError(f"class_labels must lie in [0, {nc - 1}], "
                                 f"got {int(labels.min())}..{int(labels.max())}")
            sizes["class_labels"] = labels.shape[0]
        else:
            labels = None
        if num_samples is not None:
            sizes["num_samples"] = int(num_samples)
        if seeds is not None:
            sizes["seeds"] = len(seeds)
        if noise is not None:
            sizes["noise"] = noise.shape[0]
        if not sizes:
            raise ValueError("give class_labels, num_samples, seeds or noise so the sampler knows the batch size")
        if len(set(sizes.values())) != 1:
            raise ValueError(f"inconsistent batch sizes: {sizes}")
        b = next(iter(sizes.values()))
        if b < 1:
            raise ValueError("the batch is empty")
        if labels is None and getattr(self.denoiser, "num_classes", None) is not None \
                and getattr(self.denoiser, "null_label", None) is None:
            raise ValueError("this denoiser is class-conditional without a null label: pass class_labels")
        if labels is None and any(isinstance(t, ClassifierGuidance) for t in self.terms):
            raise ValueError("classifier guidance needs class_labels (the classes to guide towards)")
        return b, labels

    @torch.no_grad()
    def sample(
        self,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        num_samples: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        callback: Callable[[dict], None] | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Like :meth:`forward` but returns the final state ``x`` (data scale ``[-1, 1]``, ``state_dtype``).

        ``noise``: the unit-variance initial noise ``(B, C, H, W)`` (the sampler starts at ``sigmas[0] * noise``).
        """
        device = module_device(self.denoiser)
        if seeds is not None and generator is not None:
            raise ValueError("pass either seeds (one per sample) or generator, not both")
        if isinstance(seeds, range):
            seeds = list(seeds)
        b, labels = self._batch(class_labels, num_samples, seeds, noise, device)
        shape = (b, *self.image_shape())
        dtype = self.state_dtype
        if device.type == "mps" and dtype == torch.float64:
            dtype = torch.float32
        src = SeedNoise(seeds, device) if seeds is not None else BatchNoise(generator, device)
        if noise is None:
            noise = src.randn(shape)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        sig = self.sigmas()
        x = noise.to(device=device, dtype=dtype) * float(sig[0])
        self.guided.reset(b)
        round_fn = None
        if self.round_sigmas and getattr(self.denoiser, "discrete", False):
            round_fn = lambda s: float(self.denoiser.round_sigma(torch.tensor(s, dtype=torch.float64)))  # noqa: E731
        return sample_loop(
            self.guided, x, sig, solver=self.solver, class_labels=labels, noise=src, s_churn=self.s_churn,
            s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise, eta=self.eta,
            clip_denoised=self.clip_denoised, round_sigma=round_fn, callback=callback,
            progress=self.progress if progress is None else progress,
        )

    def forward(
        self,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        num_samples: int | None = None,
        *,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Generate ``(B, C, H, W)`` float32 images in ``[0, 1]``.

        ``class_labels``: an int or ``(B,)`` classes (``None``: unconditional, via the null label);
        ``num_samples``: batch size when no labels/seeds are given; ``seeds``: one int per sample (sample ``i``
        then does not depend on the batch it is in, up to float rounding); ``generator``: one generator for the
        batch.
        """
        x = self.sample(class_labels, num_samples, generator=generator, seeds=seeds, noise=noise, progress=progress)
        return (x.float() * 0.5 + 0.5).clamp_(0.0, 1.0)
