"""Guidance for diffusion sampling: classifier-free guidance plus composable gradient terms.

Every sampler in robaug integrates the probability-flow ODE of a denoiser ``D(x, sigma, y)`` (VE view,
``x = x0 + sigma * n``, data in ``[-1, 1]``). Guidance changes ``D`` before the solver uses it:

* **Classifier-free guidance** (Ho & Salimans 2022) with scale ``w`` and the model's null label:

      D_w = D(x, sigma, null) + w * (D(x, sigma, y) - D(x, sigma, null))

  ``w = 1`` is plain conditional sampling, ``w = 0`` unconditional sampling.

* **Gradient terms**: a term gives a per-sample objective ``J(x)`` to *increase* (e.g. ``log p(y | .)``) and

      D_guided = D + scale * lambda(sigma) * grad_x J.

  ``weighting`` chooses ``lambda``:

  - ``"score"``: ``lambda = sigma^2``. Adding ``scale * grad_x J`` to the score ``(D - x) / sigma^2``; classifier
    guidance in the form of Dhariwal & Nichol 2021 (``eps~ = eps - sqrt(1 - abar) * s * grad_{x_t} log p``).
  - ``"eps"``: ``lambda = sigma * sqrt(1 + sigma^2)``, i.e. adding ``-scale * grad_{x_t} J`` to the DDPM noise
    prediction (Contrastive-DP's ``eps~ = eps_hat + lambda * grad_{x_t} L`` with ``J = -L``).
  - ``"constant"``: ``lambda = 1``, a step of fixed size on the denoised estimate (as DPS, Chung et al. 2023).

  A term evaluates ``J`` either on the denoised estimate ``x0_hat = D(x, sigma)`` (``space="x0"``; the gradient
  flows back through the denoiser, the DiffAug paper's ``grad_{x_t} log p(y | x0_hat(x_t))``, which works with
  ordinary classifiers trained on clean or DiffAug'd images) or on the noisy iterate itself (``space="xt"``,
  for noise-aware classifiers). All active terms share one backward pass.

  Default weighting: ``"constant"`` for ``x0``-space terms, the term's textbook form for ``xt``-space terms.
  Through the denoiser, ``grad_x J = (dD/dx)^T grad_x0 J``; for an exact denoiser ``dD/dx = Cov[x0 | x] / sigma^2``
  and ``sigma^2 dD/dx`` stays bounded, but a learned epsilon-prediction network has ``dD/dx = I - sigma d eps/dx``
  with an error of order ``sigma`` times its Jacobian error, which ``sigma^2`` then multiplies: on the built-in
  Fashion-MNIST DDPM the ``"score"`` shift of ``x0_hat`` was ~750 per pixel at ``sigma = 157`` (data range is
  +-1) and unusable, while ``"constant"`` gives shifts of the same order at every noise level (docs/sampling.md).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._core.modules import module_dtype
from ._checks import finite_float

__all__ = [
    "GuidanceTerm",
    "ClassifierGuidance",
    "GuidedDenoiser",
    "guidance_weight",
    "module_dtype",
    "WEIGHTINGS",
]

WEIGHTINGS = ("score", "eps", "constant")


def guidance_weight(sigma: float | torch.Tensor, weighting: str | Callable) -> float | torch.Tensor:
    """``lambda(sigma)`` multiplying ``grad_x J`` in ``D_guided = D + scale * lambda(sigma) * grad_x J``."""
    if callable(weighting):
        return weighting(sigma)
    if weighting == "score":
        return sigma * sigma
    if weighting == "constant":
        return 1.0
    if weighting == "eps":
        if isinstance(sigma, torch.Tensor):
            return sigma * torch.sqrt(1.0 + sigma * sigma)
        return sigma * math.sqrt(1.0 + sigma * sigma)
    raise ValueError(f"weighting must be one of {WEIGHTINGS} or a callable sigma -> weight, got {weighting!r}")


class GuidanceTerm(nn.Module):
    """Base class of a guidance term: a per-sample objective ``J`` whose gradient steers sampling.

    Subclasses implement :meth:`objective`. ``scale`` multiplies the gradient; ``sigma_range=(lo, hi)``
    restricts the term to evaluations with ``lo <= sigma <= hi`` (the part of the trajectory where it is
    applied); ``space`` is ``"x0"`` (``J`` of the denoised estimate, gradient through the denoiser) or ``"xt"``
    (``J`` of the noisy iterate); ``weighting`` is ``"score"``, ``"eps"``, ``"constant"`` or a callable
    ``sigma -> lambda`` (default: ``"constant"`` in ``x0`` space, :attr:`xt_weighting` in ``xt`` space). ``scale``
    must be finite and ``sigma_range`` finite except ``hi = inf`` (no upper limit). ``arg_names`` maps these
    arguments to the names a sampler exposes them under (its error messages use those). Stateful terms may override
    :meth:`reset` (called at the start of every sampling call) and :meth:`update` (called after the guidance gradient
    of an evaluation was taken).
    """

    space: str = "x0"
    #: weighting of this term in ``xt`` space when none is given (``x0``-space terms default to "constant")
    xt_weighting: str = "score"
    #: set by terms whose :meth:`update` backpropagates through the objective's graph again
    needs_graph_after_grad: bool = False

    def __init__(
        self,
        scale: float = 1.0,
        *,
        sigma_range: tuple[float, float] | None = None,
        weighting: str | Callable | None = None,
        space: str | None = None,
        arg_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        # a sampler building this term passes its own spelling of the arguments, so messages name what the user typed
        self._arg_names = dict(arg_names or {})
        name = self._arg_name
        self.scale = finite_float(name("scale"), scale)
        if sigma_range is None:
            lo, hi = 0.0, math.inf
        else:
            if len(sigma_range) != 2:
                raise ValueError(f"{name('sigma_range')} must be (lo, hi), got {sigma_range!r}")
            lo = finite_float(f"{name('sigma_range')}[0]", sigma_range[0], lo=0.0)
            hi = finite_float(f"{name('sigma_range')}[1]", sigma_range[1], lo=0.0, allow_inf=True)
            if lo > hi:
                raise ValueError(f"{name('sigma_range')} must satisfy lo <= hi, got {tuple(sigma_range)}")
        self.sigma_range = (lo, hi)
        if space is not None:
            if space not in ("x0", "xt"):
                raise ValueError(f"{name('space')} must be 'x0' or 'xt', got {space!r}")
            self.space = space
        if weighting is None:
            weighting = "constant" if self.space == "x0" else self.xt_weighting
        if not callable(weighting) and weighting not in WEIGHTINGS:
            raise ValueError(f"{name('weighting')} must be one of {WEIGHTINGS} or a callable, got {weighting!r}")
        self.weighting = weighting

    def _arg_name(self, arg: str) -> str:
        """How the user spelled argument ``arg`` (e.g. ``classifier_scale`` when a sampler built this term)."""
        return getattr(self, "_arg_names", {}).get(arg, arg)

    def active(self, sigma: float) -> bool:
        lo, hi = self.sigma_range
        return self.scale != 0.0 and lo <= sigma <= hi

    def objective(
        self, inp: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Per-sample objective ``(B,)`` to increase (or ``None`` to skip this evaluation).

        ``inp`` is ``x0_hat`` (``space="x0"``, data scale ``[-1, 1]``) or the noisy iterate ``x`` (``"xt"``);
        ``sigma`` is the ``(B,)`` noise level.
        """
        raise NotImplementedError

    def reset(self, batch_size: int) -> None:
        """Start of a sampling call."""

    def update(self) -> None:
        """After the guidance gradient of one evaluation has been taken."""

    def config(self) -> dict:
        """JSON-able settings (recorded in dataset manifests)."""
        lo, hi = self.sigma_range
        w = self.weighting if isinstance(self.weighting, str) else getattr(self.weighting, "__name__", "callable")
        return {"type": type(self).__name__, "scale": self.scale, "sigma_range": [lo, None if math.isinf(hi) else hi],
                "weighting": w, "space": self.space}


class ClassifierGuidance(GuidanceTerm):
    """Classifier guidance: ``J = log p(y | .)`` of a classifier, ``D~ = D + scale * lambda(sigma) * grad_x J``.

    ``mode="x0"`` (default unless the classifier has ``guidance_space = "xt"``):
    ``J = log softmax(classifier((x0_hat + 1) / 2))[y]`` on the denoised estimate, with
    the gradient taken through the denoiser (DiffAug paper, Sastry et al. 2024). ``classifier`` is any model
    taking ``[0, 1]`` images and returning logits (wrap a model trained on normalised inputs in
    ``robaug.models.Normalized``).

    ``mode="xt"``: a noise-aware classifier called as ``classifier(x_t, sigma)`` on the DDPM-scaled noisy iterate
    ``x_t = x / sqrt(1 + sigma^2)`` (the input of ADM's noisy classifiers; map ``sigma`` to a timestep with
    ``denoiser.sigma_to_t`` inside your wrapper if it expects ``t``).

    Default weighting: ``"constant"`` in ``x0`` mode (``D~ = D + scale * grad_x log p``; see the module docstring
    for why not ``sigma^2``), ``"score"`` in ``xt`` mode (Dhariwal & Nichol). The classifier is put in eval mode
    (BatchNorm statistics must not change while sampling).
    """

    def __init__(
        self,
        classifier: nn.Module | Callable,
        scale: float = 1.0,
        *,
        mode: str | None = None,
        sigma_range: tuple[float, float] | None = None,
        weighting: str | Callable | None = None,
        arg_names: Mapping[str, str] | None = None,
    ) -> None:
        names = dict(arg_names or {})
        if mode is None:  # noise-aware classifiers (robaug.diffusion.NoisyClassifier) declare guidance_space="xt"
            mode = getattr(classifier, "guidance_space", "x0")
        if mode not in ("x0", "xt"):
            raise ValueError(f"{names.get('mode', 'mode')} must be 'x0' (classifier on the denoised estimate) or 'xt' "
                             f"(noise-aware), got {mode!r}")
        super().__init__(scale, sigma_range=sigma_range, weighting=weighting, space=mode,
                         arg_names={"space": names.get("mode", "mode"), **names})
        if not callable(classifier):
            raise TypeError("classifier must be callable (an nn.Module returning logits), "
                            f"got {type(classifier).__name__}")
        if isinstance(classifier, nn.Module):
            classifier.eval()
        self.classifier = classifier
        self.mode = mode

    def objective(self, inp, sigma, class_labels):
        if class_labels is None:
            raise ValueError("classifier guidance needs target class labels: pass class_labels to the sampler")
        dtype = module_dtype(self.classifier, inp.dtype)
        if self.mode == "x0":
            logits = self.classifier((inp * 0.5 + 0.5).to(dtype))
        else:
            s = sigma.to(inp.dtype).reshape(-1, *([1] * (inp.ndim - 1)))
            logits = self.classifier((inp / torch.sqrt(1.0 + s * s)).to(dtype), sigma)
        if logits.ndim != 2 or logits.shape[0] != inp.shape[0]:
            raise ValueError(f"classifier must return (B, num_classes) logits, got shape {tuple(logits.shape)}")
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()  # half-precision classifiers: softmax in float32
        logp = F.log_softmax(logits, dim=1)
        return logp.gather(1, class_labels.long().reshape(-1, 1)).squeeze(1)

    def config(self) -> dict:
        return {**super().config(), "mode": self.mode, "classifier": type(self.classifier).__name__}


class GuidedDenoiser(nn.Module):
    """``D`` with classifier-free guidance and gradient terms applied; what the sampler loop calls.

    ``forward(x, sigma, class_labels)`` returns the guided denoised estimate in ``x``'s dtype. ``sigma`` is a
    Python float (one noise level for the whole batch). ``class_labels`` go to the denoiser when it is
    class-conditional, and always to the guidance terms. The denoiser is called in :meth:`input_dtype` and its
    output cast back to ``x``'s dtype (the sampler state may be float64); see :meth:`input_dtype`.

    ``grad_through_denoiser=False`` takes ``x0``-space gradients with respect to ``x0_hat`` and uses them as
    gradients with respect to ``x`` (skips the backward pass through the denoiser; cheaper, cruder).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        cfg_scale: float = 1.0,
        terms: Sequence[GuidanceTerm] = (),
        grad_through_denoiser: bool = True,
        model_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.cfg_scale = finite_float("cfg_scale", cfg_scale, hint=" (1 = conditional, 0 = unconditional)")
        self.terms = nn.ModuleList(terms)
        for t in self.terms:
            if not isinstance(t, GuidanceTerm):
                raise TypeError(f"guidance terms must be GuidanceTerm instances, got {type(t).__name__}")
        self.grad_through_denoiser = bool(grad_through_denoiser)
        self._model_dtype = model_dtype
        nc = getattr(denoiser, "num_classes", None)
        if self.cfg_scale != 1.0 and (nc is None or getattr(denoiser, "null_label", None) is None):
            raise ValueError(
                f"cfg_scale={self.cfg_scale} needs a class-conditional denoiser with a null label (trained with label "
                "dropout); this one has num_classes="
                f"{nc}, null_label={getattr(denoiser, 'null_label', None)}. Use cfg_scale=1.0 or pass null_label=... "
                "to the denoiser adapter."
            )

    def input_dtype(self, state_dtype: torch.dtype) -> torch.dtype:
        """dtype ``x`` is handed to the denoiser in: the sampler state's when the denoiser says it casts the
        network input itself (``casts_network_input``, true for robaug's diffusers and EDM adapters, which keep
        the x0 arithmetic in the state's precision), else the dtype of the denoiser's weights (a
        ``CallableDenoiser`` around a float32 network cannot take float64)."""
        if self._model_dtype is not None:
            return self._model_dtype
        if getattr(self.denoiser, "casts_network_input", False):
            return state_dtype
        return module_dtype(self.denoiser, state_dtype)

    @property
    def conditional(self) -> bool:
        return getattr(self.denoiser, "num_classes", None) is not None

    def reset(self, batch_size: int) -> None:
        for t in self.terms:
            t.reset(batch_size)

    # -- plain (CFG) denoising -----------------------------------------------------------------------------
    def _cfg_denoise(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        xm = x.to(self.input_dtype(x.dtype))
        w = self.cfg_scale
        if not self.conditional or class_labels is None:
            out = self.denoiser(xm, sigma, None if not self.conditional else class_labels)
        elif w == 1.0:
            out = self.denoiser(xm, sigma, class_labels)
        elif w == 0.0:
            out = self.denoiser(xm, sigma, None)
        else:
            null = torch.full_like(class_labels, self.denoiser.null_label)
            both = self.denoiser(torch.cat([xm, xm]), torch.cat([sigma, sigma]), torch.cat([class_labels, null]))
            d_cond, d_uncond = both.chunk(2)
            out = d_uncond.to(x.dtype) + w * (d_cond.to(x.dtype) - d_uncond.to(x.dtype))
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor, sigma: float, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        sig = torch.full((x.shape[0],), float(sigma),
                         dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
        active = [t for t in self.terms if t.active(float(sigma))]
        if not active:
            with torch.no_grad():
                return self._cfg_denoise(x, sig, class_labels)
        need_x0_graph = self.grad_through_denoiser and any(t.space == "x0" for t in active)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            if need_x0_graph:
                d = self._cfg_denoise(x_in, sig, class_labels)
                d_in = d
            else:
                with torch.no_grad():
                    d = self._cfg_denoise(x, sig, class_labels)
                d_in = d.detach().requires_grad_(True)
            total = None
            used: list[GuidanceTerm] = []
            for t in active:
                inp = d_in if t.space == "x0" else x_in
                obj = t.objective(inp, sig, class_labels)
                if obj is None:
                    continue
                lam = guidance_weight(float(sigma), t.weighting)
                contrib = (t.scale * float(lam)) * obj.sum()
                total = contrib if total is None else total + contrib
                used.append(t)
            if total is None:
                out = d.detach()
            else:
                wants = [x_in]
                if not need_x0_graph and any(t.space == "x0" for t in used):
                    wants.append(d_in)
                retain = any(t.needs_graph_after_grad for t in used)
                grads = torch.autograd.grad(total, wants, retain_graph=retain, allow_unused=True)
                g = None
                for gr in grads:
                    if gr is not None:
                        g = gr if g is None else g + gr
                out = d.detach() if g is None else d.detach() + g.to(d.dtype)
                for t in used:
                    t.update()
        return out

    def config(self) -> dict:
        return {"cfg_scale": self.cfg_scale, "grad_through_denoiser": self.grad_through_denoiser,
                "terms": [t.config() for t in self.terms]}
