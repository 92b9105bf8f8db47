"""TRADES (Zhang et al. 2019) as used by Wang et al. 2023 (DM-Improves-AT) for adversarial training.

Inner maximisation (the attack), with ``p = softmax f(x)`` held fixed::

    x_adv^0     = clip_[0,1](x + U(-eps, eps))                                 (l_inf)
                = x + 0.001 N(0, I)                                            (l_2, as in the reference code)
    x_adv^{k+1} = Proj_{B(x, eps) & [0,1]}(x_adv^k + a * sign(grad KL(p || softmax f(x_adv^k))))       (l_inf)
                = Proj_{B(x, eps) & [0,1]}(x_adv^k + a * grad / ||grad||_2)                            (l_2)

Outer objective (what the optimiser minimises)::

    L = CE_ls(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))        (KL averaged over the batch)

with label smoothing 0.1, ``beta`` 5 (6 in Zhang et al. and Contrastive-DP), ``eps`` 8/255 and 10 steps of
2/255 for l_inf (128/255 and step ``2 eps / steps`` for l_2). The gradient flows through both ``f(x)`` and
``f(x_adv)`` in ``L``; ``x_adv`` itself is a constant.

BatchNorm during the attack (``bn_mode``): ``"batch"`` (default, DM-Improves-AT's ``track_bn_stats(model,
False)``): the model stays in train mode, so the attack sees the same batch-statistics network that the loss
is computed with, but the running statistics are not updated by the ``steps + 1`` attack forwards (they would
otherwise be dominated by adversarial batches). ``"eval"`` (the original TRADES code): the attack runs in eval
mode (running statistics). Either way the modules' train/eval flags and ``track_running_stats`` are restored
afterwards, and the two loss forwards update the running statistics as in the reference (clean, then
adversarial batch, each normalised with its own statistics).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._perturb import draw_like, l2_norm, project_linf, uniform_linf_start

__all__ = [
    "TRADESLoss",
    "TRADESOutput",
    "trades_loss",
    "trades_attack",
    "trades_objective",
    "trades_kl",
    "frozen_bn_stats",
]

_NORMS = ("linf", "l2")
_BN_MODES = ("batch", "eval")


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module, mode: str = "batch") -> Iterator[None]:
    """Run the body without touching BatchNorm running statistics.

    ``mode="batch"``: train-mode BN (batch statistics) with ``track_running_stats=False`` on every BN layer
    (no running-mean/var or ``num_batches_tracked`` update). ``mode="eval"``: the whole model in eval mode.
    Both restore the previous flags on exit.
    """
    if mode not in _BN_MODES:
        raise ValueError(f"bn_mode must be one of {_BN_MODES}, got {mode!r}")
    if mode == "eval":
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield
        finally:
            for m, t in flags:
                m.training = t
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    for m in bns:
        # only layers that have running buffers: without them train-mode BN needs no change
        if m.running_mean is not None:
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s


def _check(x: torch.Tensor, eps: float, step_size: float, steps: int, norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if not x.is_floating_point():
        raise TypeError(f"TRADES expects float images in [0, 1], got dtype {x.dtype}; convert with x.float() / 255")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"TRADES expects a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    _check_settings(eps, step_size, steps)


def _check_settings(eps: float, step_size: float, steps: int, beta: float = 0.0) -> None:
    for name, v in (("eps", eps), ("step_size", step_size), ("beta", beta)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")


def trades_attack(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    bn_mode: str = "batch",
    p_natural: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRADES' inner maximisation: ``x_adv`` maximising ``KL(softmax f(x) || softmax f(x_adv))`` in the
    ``eps``-ball (``norm`` ``"linf"`` or ``"l2"``) intersected with ``[0, 1]``. Returns a detached tensor.

    ``x`` float ``(B, C, H, W)`` in [0, 1]; ``model`` takes such images (normalisation is the model's job).
    Randomness (the random start, the l_2 fallback direction for zero gradients) comes from ``generator``
    (its device) or the global RNG. No host synchronisation inside the loop. ``p_natural``: precomputed
    ``softmax f(x)`` (computed here, under the same BN mode, when None).
    """
    _check(x, eps, step_size, steps, norm)
    x = x.detach()
    with frozen_bn_stats(model, bn_mode), torch.enable_grad():
        if p_natural is None:
            with torch.no_grad():
                p_natural = F.softmax(model(x).float(), dim=1)
        p_natural = p_natural.detach()
        if norm == "linf":
            x_adv = uniform_linf_start(x, eps, generator)
        else:
            x_adv = x + 0.001 * draw_like("randn", x, generator)
        grad_scale = _fp16_grad_scale(x.device)
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            logp_adv = F.log_softmax(model(x_adv).float(), dim=1)
            kl = F.kl_div(logp_adv, p_natural, reduction="sum")
            (grad,) = torch.autograd.grad(kl * grad_scale, [x_adv])
            if grad_scale != 1.0:
                grad = torch.nan_to_num(grad, nan=0.0)  # an overflow only loses that element's step
            x_adv = x_adv.detach()
            if norm == "linf":
                x_adv = x_adv + step_size * grad.sign()
                x_adv = project_linf(x_adv, x, eps)
            else:
                g_norm = l2_norm(grad)
                direction = torch.where(g_norm > 0, grad / g_norm.clamp_min(1e-30), draw_like("randn", x, generator))
                delta = (x_adv + step_size * direction).clamp_(0.0, 1.0) - x
                d_norm = l2_norm(delta)
                delta = delta * (eps / d_norm.clamp_min(1e-12)).clamp(max=1.0)
                x_adv = x + delta
    return x_adv.clamp(0.0, 1.0).detach()


def _fp16_grad_scale(device: torch.device) -> float:
    """A constant loss scale for the attack's input gradient under fp16 autocast, where the small KL gradients
    of the first steps underflow to zero in the half-precision backward (the step uses only the gradient's
    sign or direction, so the scale changes nothing else); 1 otherwise."""
    kind = device.type
    if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.float16:
        return 2.0**16
    return 1.0


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(logits_clean) || softmax(logits_adv))`` summed over classes, averaged over the batch
    (differentiable in both arguments)."""
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits_clean.float(), dim=1),
                    reduction="batchmean")


def trades_objective(
    logits_clean: torch.Tensor,
    logits_adv: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``CE_ls(logits_clean, y) + beta * KL(softmax(logits_clean) || softmax(logits_adv))`` (batch mean).

    Returns ``(loss, terms)``; ``terms`` holds the detached summands ``ce`` and ``trades_kl`` (already
    multiplied by ``beta``).
    """
    logits_clean, logits_adv = logits_clean.float(), logits_adv.float()
    ce = F.cross_entropy(logits_clean, targets, label_smoothing=label_smoothing)
    robust = beta * trades_kl(logits_clean, logits_adv)
    return ce + robust, {"ce": ce.detach(), "trades_kl": robust.detach()}


class TRADESOutput(NamedTuple):
    loss: torch.Tensor
    ce: torch.Tensor  #: detached CE_ls(f(x), y)
    kl: torch.Tensor  #: detached beta * KL(f(x) || f(x_adv))
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    x_adv: torch.Tensor


def trades_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
    beta: float = 5.0,
    norm: str = "linf",
    label_smoothing: float = 0.1,
    generator: torch.Generator | None = None,
    bn_mode: str = "batch",
    attack_model: nn.Module | None = None,
    return_outputs: bool = False,
) -> torch.Tensor | TRADESOutput:
    """The TRADES training loss of one batch (defaults: DM-Improves-AT's CIFAR-10 l_inf setting).

    Runs :func:`trades_attack` with BN statistics frozen (``bn_mode``), then two forwards of ``model`` in its
    current mode (clean batch, adversarial batch) and :func:`trades_objective`. ``attack_model``: the module
    to attack with when ``model`` is a wrapper whose extra forwards would confuse it (the module inside a
    ``DistributedDataParallel``); default ``model``. Returns the loss, or a :class:`TRADESOutput` with the
    terms, logits and ``x_adv`` when ``return_outputs``.
    """
    x_adv = trades_attack(attack_model if attack_model is not None else model, x, eps=eps, step_size=step_size,
                          steps=steps, norm=norm, generator=generator, bn_mode=bn_mode)
    logits_clean = model(x)
    logits_adv = model(x_adv)
    loss, terms = trades_objective(logits_clean, logits_adv, y, beta=beta, label_smoothing=label_smoothing)
    if not return_outputs:
        return loss
    return TRADESOutput(loss, terms["ce"], terms["trades_kl"], logits_clean, logits_adv, x_adv)


class TRADESLoss(nn.Module):
    """:func:`trades_loss` with its settings bound: ``TRADESLoss(eps=8/255)(model, x, y) -> loss``.

    ``generator`` (optional) is used for the random starts of every call.
    """

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        beta: float = 5.0,
        norm: str = "linf",
        label_smoothing: float = 0.1,
        bn_mode: str = "batch",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if bn_mode not in _BN_MODES:
            raise ValueError(f"bn_mode must be one of {_BN_MODES}, got {bn_mode!r}")
        _check_settings(eps, step_size, steps, beta)
        self.eps, self.step_size, self.steps, self.beta = float(eps), float(step_size), int(steps), float(beta)
        self.norm, self.label_smoothing, self.bn_mode = norm, float(label_smoothing), bn_mode
        self.generator = generator

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, return_outputs: bool = False,
                attack_model: nn.Module | None = None) -> torch.Tensor | TRADESOutput:
        return trades_loss(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps, beta=self.beta,
                           norm=self.norm, label_smoothing=self.label_smoothing, generator=self.generator,
                           bn_mode=self.bn_mode, attack_model=attack_model, return_outputs=return_outputs)

    def extra_repr(self) -> str:
        return (f"eps={self.eps:.5g}, step_size={self.step_size:.5g}, steps={self.steps}, beta={self.beta}, "
                f"norm={self.norm!r}, label_smoothing={self.label_smoothing}, bn_mode={self.bn_mode!r}")
