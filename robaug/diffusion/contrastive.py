"""Contrastive-guided sampling (Contrastive-DP; Ouyang, Xie & Cheng, ICML 2023, arXiv 2210.09643).

Generated samples should be *distinguishable* from each other. At every guided evaluation the batch's
current estimates are embedded, ``z_i = h(f(x0_hat_i))`` (``f`` a frozen feature extractor, ``h`` a small head
Linear-ReLU-Linear followed by L2 normalisation), and paired with the embeddings ``z'_i = h(f(x0_hat_i^prev))`` of
the same samples at the previous evaluation: positives are ``(z_i, z'_i)``, the negatives of an anchor are the
other ``2B - 2`` embeddings. The sampler moves every sample down the gradient of the contrastive loss ``L``
(``D~ = D - scale * lambda(sigma) * grad_x L``; ``weighting="eps"`` is the paper's
``eps~ = eps_hat + scale * grad_{x_t} L``, the default for ``space="xt"``; on ``x0_hat`` the default is
``"constant"``, see :mod:`robaug.diffusion.guidance`), and the head takes one Adam step on the same loss (lr 1e-2).

Losses (per anchor ``a`` with positive ``p``, ``N = 2B - 2``, ``s(u, v) = u . v / tau``):

* hard-negative loss of Robinson et al. 2021 (the paper's choice; tau 10, tau+ 0.1, beta 1)::

      pos = exp(s(z_a, z_p)),  neg_k = exp(s(z_a, z_k)),  imp_k = neg_k^beta
      Ng  = max((-tau+ N pos + sum_k imp_k neg_k / mean_k imp_k) / (1 - tau+),  N e^{-1/tau})
      l_a = -log(pos / (pos + Ng))

* InfoNCE / NT-Xent (tau 0.1): the same with ``Ng = sum_k neg_k`` (beta = 0, tau+ = 0).

Differences from the official code, on purpose: the encoder sees the denoised estimate ``x0_hat`` (not the noisy
iterate; ``space="xt"`` restores the paper's choice), so the method works with any sampler over a denoiser;
the guidance objective is the *sum* of the per-sample losses (``B`` times the paper's mean) so that the
per-sample strength does not depend on the batch size -- the paper's ``lambda`` at batch ``B`` corresponds to
``scale = lambda / B``; the head is re-initialised (from ``head_seed``) at every sampling call so that a batch's
samples only depend on the batch's seeds (``persistent_head=True`` keeps training one head across calls, as the
paper does).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._core import rng
from .._core.modules import module_dtype
from ._checks import finite_float
from .denoiser import Denoiser
from .guidance import GuidanceTerm
from .samplers import GuidedDiffusion

__all__ = [
    "hard_negative_loss",
    "info_nce_loss",
    "EmbeddingHead",
    "PenultimateFeatures",
    "ContrastiveGuidance",
    "ContrastiveGuidedSampler",
    "CONTRASTIVE_LOSSES",
]

CONTRASTIVE_LOSSES = ("hard", "infonce")


def _pair_logits(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    if b < 2:
        raise ValueError("contrastive losses need a batch of at least 2 samples (the other samples are the negatives)")
    z = torch.cat([z1, z2], dim=0)
    sim = z @ z.t() / tau  # (2B, 2B)
    idx = torch.arange(2 * b, device=z.device)
    partner = (idx + b) % (2 * b)
    pos = sim[idx, partner]  # (2B,)
    mask = torch.ones(2 * b, 2 * b, dtype=torch.bool, device=z.device)
    mask[idx, idx] = False
    mask[idx, partner] = False
    return sim, pos, mask


def hard_negative_loss(
    z1: torch.Tensor, z2: torch.Tensor, tau: float = 10.0, tau_plus: float = 0.1, beta: float = 1.0
) -> torch.Tensor:
    """Per-anchor hard-negative contrastive loss (Robinson et al. 2021), shape ``(2B,)``.

    ``z1[i]`` and ``z2[i]`` are a positive pair (L2-normalised embeddings); anchors are ``cat([z1, z2])``.
    """
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must lie in [0, 1), got {tau_plus}")
    sim, pos_logit, mask = _pair_logits(z1, z2, tau)
    n2 = sim.shape[0]
    n_neg = n2 - 2
    neg_logit = sim.masked_select(mask).view(n2, n_neg)
    pos = pos_logit.exp()
    # imp * neg = exp((1 + beta) s),  mean(imp) = mean(exp(beta s))
    reweighted = torch.exp((1.0 + beta) * neg_logit).sum(1) / torch.exp(beta * neg_logit).mean(1)
    ng = (-tau_plus * n_neg * pos + reweighted) / (1.0 - tau_plus)
    ng = ng.clamp(min=n_neg * math.exp(-1.0 / tau))
    return torch.log(pos + ng) - pos_logit


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Per-anchor InfoNCE / NT-Xent loss ``-log softmax_p(s(z_a, .))`` over the ``2B - 1`` others, shape ``(2B,)``."""
    sim, _, _ = _pair_logits(z1, z2, tau)
    n2 = sim.shape[0]
    idx = torch.arange(n2, device=sim.device)
    logits = sim.masked_fill(torch.eye(n2, dtype=torch.bool, device=sim.device), float("-inf"))
    return F.cross_entropy(logits, (idx + n2 // 2) % n2, reduction="none")


class EmbeddingHead(nn.Module):
    """``normalize(W2 relu(W1 f + b1) + b2)``: the online-trained projection head of Contrastive-DP."""

    def __init__(self, in_features: int, hidden_features: int = 128, out_features: int = 128,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)
        # nn.Linear's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias), from `generator`
        with torch.no_grad():
            for lin in (self.fc1, self.fc2):
                bound = 1.0 / math.sqrt(lin.in_features)
                for p in (lin.weight, lin.bias):
                    p.copy_(rng.rand(p.shape, generator, p.device) * (2 * bound) - bound)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(F.relu(self.fc1(f))), dim=-1)


class PenultimateFeatures(nn.Module):
    """A classifier's penultimate features: ``forward_features`` when it has one (timm, robaug.models),
    else the input of its last ``nn.Linear`` (captured with a hook). Output ``(B, F)``."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self._last_linear: nn.Linear | None = None
        if not callable(getattr(classifier, "forward_features", None)):
            linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError(
                    f"{type(classifier).__name__} has neither forward_features() nor an nn.Linear head; pass a "
                    "feature extractor as the encoder (a module returning (B, F) features)"
                )
            self._last_linear = linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._last_linear is None:
            return torch.flatten(self.classifier.forward_features(x), 1)
        captured: list[torch.Tensor] = []
        handle = self._last_linear.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return torch.flatten(captured[-1], 1)


class ContrastiveGuidance(GuidanceTerm):
    """The Contrastive-DP guidance term (see the module docstring); composes with CFG and other terms.

    Args:
        encoder: frozen feature extractor taking ``[0, 1]`` images, returning ``(B, F)`` (put in eval mode).
        scale: guidance strength (per sample; the paper's ``lambda`` at batch ``B`` is ``scale * B``).
        loss: ``"hard"`` (hard-negative, Robinson et al.) or ``"infonce"``.
        tau, tau_plus, beta: loss temperature (default 10 for ``hard``, 0.1 for ``infonce``), positive-class
            prior and hardness concentration.
        embed_dim, hidden_dim: head sizes (128, 128 as in the paper); lr: the head's Adam learning rate.
        sigma_range: apply only for ``lo <= sigma <= hi`` (the paper: DDIM timesteps ``t >= 400`` of 1000, i.e.
            ``(denoiser.sigma_at(400), inf)``).
        weighting: ``"constant"`` (default for ``space="x0"``), ``"eps"`` (paper; default for ``"xt"``), ``"score"``;
            space: ``"x0"`` (encoder on ``x0_hat``) or ``"xt"`` (encoder on the DDPM-scaled noisy iterate, as in
            the official code).
        head_seed: seed of the head's initialisation; persistent_head: keep the head across sampling calls.
    """

    needs_graph_after_grad = True
    xt_weighting = "eps"

    def __init__(
        self,
        encoder: nn.Module | Callable,
        scale: float = 100.0,
        *,
        loss: str = "hard",
        tau: float | None = None,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        lr: float = 1e-2,
        sigma_range: tuple[float, float] | None = None,
        weighting: str | Callable | None = None,
        space: str = "x0",
        head_seed: int = 0,
        persistent_head: bool = False,
        arg_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scale, sigma_range=sigma_range, weighting=weighting, space=space, arg_names=arg_names)
        name = self._arg_name
        if loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"{name('loss')} must be one of {CONTRASTIVE_LOSSES}, got {loss!r}")
        if not callable(encoder):
            raise TypeError(f"{name('encoder')} must be callable, got {type(encoder).__name__}")
        self.tau = finite_float(name("tau"), tau if tau is not None else (10.0 if loss == "hard" else 0.1),
                                lo=0.0, lo_open=True)
        self.tau_plus = finite_float(name("tau_plus"), tau_plus, lo=0.0)
        if self.tau_plus >= 1.0:
            raise ValueError(f"{name('tau_plus')} must lie in [0, 1), got {tau_plus!r}")
        self.beta = finite_float(name("beta"), beta, lo=0.0)
        self.lr = finite_float(name("lr"), lr, lo=0.0, lo_open=True)
        for arg, v in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name(arg)} must be a positive int, got {v!r}")
        if isinstance(encoder, nn.Module):
            encoder.eval()
        self.encoder = encoder
        self.loss = loss
        self.embed_dim, self.hidden_dim = int(embed_dim), int(hidden_dim)
        self.head_seed = int(head_seed)
        self.persistent_head = bool(persistent_head)
        self.head: EmbeddingHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._prev: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        #: mean loss of each guided evaluation of the last sampling call (diagnostics)
        self.history: list[float] = []

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.loss == "hard":
            return hard_negative_loss(z1, z2, self.tau, self.tau_plus, self.beta)
        return info_nce_loss(z1, z2, self.tau)

    def reset(self, batch_size: int) -> None:
        if batch_size < 2:
            raise ValueError("contrastive guidance needs at least 2 samples per batch (the negatives)")
        self._prev = None
        self._loss = None
        self.history = []
        if not self.persistent_head:
            self.head = None
            self.optimizer = None

    def _build_head(self, in_features: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(self.head_seed)
        self.head = EmbeddingHead(in_features, self.hidden_dim, self.embed_dim, generator=g).to(device)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr)

    def features(self, inp: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.space == "x0":
            img = inp * 0.5 + 0.5
        else:
            s = sigma.to(inp.dtype).reshape(-1, *([1] * (inp.ndim - 1)))
            img = inp / torch.sqrt(1.0 + s * s) * 0.5 + 0.5
        feats = self.encoder(img.to(module_dtype(self.encoder, img.dtype)))
        if feats.ndim < 2 or feats.shape[0] != inp.shape[0]:
            raise ValueError(f"encoder must return (B, F) features, got shape {tuple(feats.shape)}")
        return torch.flatten(feats, 1).float()

    def objective(self, inp, sigma, class_labels):
        feats = self.features(inp, sigma)
        prev, self._prev = self._prev, feats.detach()
        if prev is None:  # the first guided evaluation only records the positives of the next one
            return None
        if self.head is None or self.head.fc1.in_features != feats.shape[1]:
            self._build_head(feats.shape[1], feats.device)
        per_anchor = self.contrastive_loss(self.head(feats), self.head(prev))
        b = feats.shape[0]
        self._loss = per_anchor.mean()
        self.history.append(float(self._loss.detach()))
        return -(per_anchor[:b] + per_anchor[b:]) * 0.5

    def update(self) -> None:
        if self._loss is None or self.head is None:
            return
        params = list(self.head.parameters())
        grads = torch.autograd.grad(self._loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._loss = None

    def config(self) -> dict:
        return {**super().config(), "loss": self.loss, "tau": self.tau, "tau_plus": self.tau_plus, "beta": self.beta,
                "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim, "lr": self.lr,
                "head_seed": self.head_seed, "persistent_head": self.persistent_head,
                "encoder": type(self.encoder).__name__}


#: how ContrastiveGuidedSampler's arguments spell ContrastiveGuidance's (its error messages use these names)
_CONTRASTIVE_ARGS = {"scale": "contrastive_scale", "loss": "contrastive_loss", "lr": "head_lr",
                     "sigma_range": "contrastive_sigma_range", "weighting": "contrastive_weighting",
                     "space": "contrastive_space"}


def _as_encoder(encoder: nn.Module | Callable, features: str) -> nn.Module | Callable:
    if features == "output":
        return encoder
    if features != "penultimate":
        raise ValueError(f"encoder_features must be 'penultimate' or 'output', got {features!r}")
    if not isinstance(encoder, nn.Module):
        return encoder
    if isinstance(encoder, PenultimateFeatures):
        return encoder
    if callable(getattr(encoder, "forward_features", None)) or any(isinstance(m, nn.Linear) for m in encoder.modules()):
        return PenultimateFeatures(encoder)
    return encoder


class ContrastiveGuidedSampler(GuidedDiffusion):
    """:class:`GuidedDiffusion` plus Contrastive-DP guidance (a :class:`ContrastiveGuidance` term).

    >>> clf = robaug.models.create_model("small_cnn", 10, in_channels=1)   # trained on real data
    >>> sampler = ContrastiveGuidedSampler(load_denoiser("fmnist-ddpm"), encoder=clf, contrastive_scale=100.0)
    >>> images = sampler(class_labels=torch.arange(64) % 10, seeds=range(64))

    ``encoder``: a feature extractor or a classifier; with ``encoder_features="penultimate"`` (default) a
    classifier's penultimate features are used (its ``forward_features`` or the input of its last linear
    layer); ``"output"`` uses the module's output as is. The other ``contrastive_*`` arguments are those of
    :class:`ContrastiveGuidance`; everything else (solver, steps, CFG, classifier guidance, churn ...) is
    :class:`GuidedDiffusion`'s. Samples of one call are coupled through the loss: sample ``i`` depends on the
    other seeds of its batch (and therefore on the batch size).
    """

    def __init__(
        self,
        denoiser: Denoiser | str | os.PathLike,
        encoder: nn.Module | Callable,
        num_steps: int = 18,
        solver: str = "heun",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        *,
        encoder_features: str = "penultimate",
        contrastive_scale: float = 100.0,
        contrastive_loss: str = "hard",
        tau: float | None = None,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        head_lr: float = 1e-2,
        contrastive_sigma_range: tuple[float, float] | None = None,
        contrastive_weighting: str | Callable | None = None,
        contrastive_space: str = "x0",
        head_seed: int = 0,
        persistent_head: bool = False,
        guidance: Sequence[GuidanceTerm] = (),
        **kwargs,
    ) -> None:
        term = ContrastiveGuidance(
            _as_encoder(encoder, encoder_features), contrastive_scale, loss=contrastive_loss, tau=tau,
            tau_plus=tau_plus, beta=beta, embed_dim=embed_dim, hidden_dim=hidden_dim, lr=head_lr,
            sigma_range=contrastive_sigma_range, weighting=contrastive_weighting, space=contrastive_space,
            head_seed=head_seed, persistent_head=persistent_head, arg_names=_CONTRASTIVE_ARGS,
        )
        super().__init__(denoiser, num_steps, solver, sigma_min, sigma_max, rho, guidance=[*guidance, term], **kwargs)

    @property
    def contrastive(self) -> ContrastiveGuidance:
        """The :class:`ContrastiveGuidance` term (its ``history`` holds the loss of every guided evaluation)."""
        return next(t for t in self.terms if isinstance(t, ContrastiveGuidance))
