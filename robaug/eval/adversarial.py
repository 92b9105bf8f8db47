"""Adversarial evaluation: batched PGD (l_inf / l_2, random start, restarts, CE or margin loss) and a wrapper
around the reference AutoAttack (``pyautoattack``, Croce & Hein 2020).

Models take float images in ``[0, 1]`` and return logits; normalisation (mean/std) is the model's job
(e.g. :class:`robaug.models.Normalized`), so that ``eps`` is measured in pixel space as in the papers
(8/255 l_inf, 128/255 l_2 on CIFAR-10). Models are evaluated in eval mode (their mode is restored after).

PGD (Madry et al. 2018)::

    x^0     = x + U(-eps, eps)  (l_inf)  |  x + r eps d, d uniform on the sphere, r ~ U(0, 1)  (l_2)   [random start]
    x^{k+1} = Proj_{B(x, eps) & [0,1]}(x^k + a sign(grad L))  (l_inf)  |  x^k + a grad / ||grad||_2  (l_2)

with ``L`` the cross-entropy or the margin ``max_{j != y} z_j - z_y`` (Carlini-Wagner); default step
``a = 2.5 eps / steps``. A sample is robust when it is classified correctly on the clean input and at every
iterate of every restart (the attack keeps any misclassified iterate).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._core import rng
from .._core.modules import module_device
from .._perturb import draw_like, l2_norm, per_sample, project_linf, uniform_linf_start

__all__ = ["PGDResult", "AutoAttackResult", "pgd_attack", "pgd_accuracy", "autoattack_accuracy"]

_NORMS = ("linf", "l2")
_LOSSES = ("ce", "margin")


@dataclass
class PGDResult:
    """Robust and clean accuracy of a PGD evaluation and the per-sample outcome (``bool`` tensors, CPU)."""

    robust_accuracy: float
    clean_accuracy: float
    correct: torch.Tensor  #: correct under the attack (robust)
    clean_correct: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"robust_accuracy": self.robust_accuracy, "clean_accuracy": self.clean_accuracy,
                "images": int(self.correct.numel()), **self.settings, "seconds": self.seconds}


@dataclass
class AutoAttackResult:
    """Robust accuracy under AutoAttack, clean accuracy, per-sample robust correctness (CPU ``bool``)."""

    robust_accuracy: float
    clean_accuracy: float
    correct: torch.Tensor
    clean_correct: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"robust_accuracy": self.robust_accuracy, "clean_accuracy": self.clean_accuracy,
                "images": int(self.correct.numel()), **self.settings, "seconds": self.seconds}


def _norm_key(norm: str) -> str:
    key = norm.lower().replace("_", "").replace("-", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(key, key)
    if key not in _NORMS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return key


def _loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss to maximise."""
    logits = logits.float()
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    z_y = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - z_y


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return project_linf(x_adv, x, eps)
    delta = x_adv - x
    n = l2_norm(delta)
    delta = delta * (eps / n.clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp_(0.0, 1.0)  # clamping only shrinks |delta_i|: still in the ball


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        return uniform_linf_start(x, eps, generator)
    d = draw_like("randn", x, generator)
    d = d / l2_norm(d).clamp_min(1e-12)
    r = rng.rand((x.shape[0],), generator, x.device, x.dtype)
    return _project(x + d * per_sample(r, x) * eps, x, eps, norm)


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    norm: str = "linf",
    loss: str = "ce",
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD on one batch. Returns ``(x_adv, correct)``: for every sample a misclassified iterate when the attack
    found one (else the last iterate of the last restart), and whether the sample withstood every iterate of
    every restart (clean correctness included). The model is used as is (call ``model.eval()`` first)."""
    norm = _norm_key(norm)
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if not x.is_floating_point():
        raise TypeError(f"PGD expects float images in [0, 1], got {x.dtype}; convert with x.float() / 255")
    if eps < 0 or steps < 0 or restarts < 1:
        raise ValueError(f"need eps >= 0, steps >= 0, restarts >= 1; got {eps}, {steps}, {restarts}")
    a = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    x = x.detach()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    best = x.clone()
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
        for k in range(steps + 1):
            with torch.enable_grad():
                x_adv.requires_grad_(True)
                logits = model(x_adv)
                ok = logits.argmax(1) == y
                if k < steps:
                    (grad,) = torch.autograd.grad(_loss(logits, y, loss).sum(), [x_adv])
            x_adv = x_adv.detach()
            fooled = correct & ~ok  # first success per sample is kept
            best = torch.where(per_sample(fooled, x), x_adv, best)
            correct = correct & ok
            if k == steps:
                break
            if norm == "linf":
                step = grad.sign()
            else:
                step = grad / l2_norm(grad).clamp_min(1e-12)
            x_adv = _project(x_adv + a * step, x, eps, norm)
        best = torch.where(per_sample(correct, x), x_adv, best)
    return best, correct


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
    """Names the problem before any attack runs: shapes, label count and dtype, the [0, 1] range of float images."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be a ({images.shape[0]},) tensor of class ids (one per image), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids, got {labels.dtype}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())  # one sync, before the attack
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must be finite and in [0, 1] (the attack's eps is in that scale), got "
                             f"values in [{lo:.3g}, {hi:.3g}]; divide uint8-scaled images by 255")


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def _as_float_images(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
    return x.float()


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else module_device(model)


def pgd_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    norm: str = "linf",
    loss: str = "ce",
    random_start: bool = True,
    restarts: int = 1,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PGDResult:
    """PGD robust accuracy of ``model`` on ``images`` (uint8 or float ``[0, 1]``, ``(N, C, H, W)``) in batches.

    The model runs in eval mode (restored afterwards); batches move to ``device`` (default: the model's).
    """
    norm = _norm_key(norm)
    _check_inputs(images, labels, batch_size)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    dev = _model_device(model, device)
    was = model.training
    model.eval()
    t0 = time.perf_counter()
    robust, clean = [], []
    try:
        for xb, yb in _batches(images, labels, batch_size):
            xb = _as_float_images(xb.to(dev))
            yb = yb.to(dev)
            with torch.no_grad():
                clean.append((model(xb).argmax(1) == yb).cpu())
            _, ok = pgd_attack(model, xb, yb, eps=eps, steps=steps, step_size=step_size, norm=norm, loss=loss,
                               random_start=random_start, restarts=restarts, generator=generator)
            robust.append(ok.cpu())
    finally:
        model.train(was)
    correct, clean_correct = torch.cat(robust), torch.cat(clean)
    a = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    settings = {"attack": f"PGD-{steps}", "eps": eps, "norm": norm, "steps": steps, "step_size": a, "loss": loss,
                "restarts": restarts, "random_start": random_start}
    return PGDResult(float(correct.float().mean()), float(clean_correct.float().mean()), correct, clean_correct,
                     settings, time.perf_counter() - t0)


_AA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


def _import_autoattack() -> Any:
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "autoattack_accuracy needs the reference AutoAttack: pip install pyautoattack "
            "(or pip install 'robaug[recipes]')"
        ) from err
    return AutoAttack


def _set_apgd_iters(attack: Any, n_iter: int) -> None:
    """APGD derives its checkpoint schedule from ``n_iter`` in ``__init__``; recompute it for a new value."""
    attack.n_iter = attack.n_iter_orig = int(n_iter)
    attack.n_iter_2 = max(int(0.22 * n_iter), 1)
    attack.n_iter_min = max(int(0.06 * n_iter), 1)
    attack.size_decr = max(int(0.03 * n_iter), 1)


def autoattack_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str = "linf",
    *,
    version: str = "standard",
    attacks: Sequence[str] | None = None,
    n_iter: int | None = None,
    n_restarts: int | None = None,
    n_target_classes: int | None = None,
    square_queries: int | None = None,
    batch_size: int = 250,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AutoAttackResult:
    """Robust accuracy under AutoAttack (``pyautoattack.AutoAttack``, the authors' implementation).

    ``version``: ``"standard"`` (APGD-CE, APGD-T with 9 targets, FAB-T, Square 5000 queries: the number papers
    report), ``"rand"`` (for randomised defences) or ``"custom"`` with ``attacks`` from ``apgd-ce, apgd-dlr,
    apgd-t, fab, fab-t, square``. ``n_iter`` / ``n_restarts`` / ``n_target_classes`` / ``square_queries``
    override the attacks' settings (anything but the defaults is no longer the standard evaluation); the
    number of targets is capped at ``num_classes - 1``. ``seed`` makes the attacks deterministic; the global
    RNG is restored afterwards. ``images`` uint8 or float ``[0, 1]``; ``model`` takes ``[0, 1]`` images and
    runs in eval mode.
    """
    _check_inputs(images, labels, batch_size)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    AutoAttack = _import_autoattack()
    key = norm.lower().replace("_", "")
    if key not in _AA_NORMS:
        raise ValueError(f"norm must be one of {tuple(_AA_NORMS)}, got {norm!r}")
    if version not in ("standard", "rand", "custom", "plus"):
        raise ValueError(f"version must be 'standard', 'rand', 'plus' or 'custom', got {version!r}")
    if version == "custom" and not attacks:
        raise ValueError("version='custom' needs attacks=[...], e.g. ['apgd-ce', 'apgd-t']")
    if version != "custom" and attacks:
        raise ValueError(f"attacks are chosen by version={version!r}; pass version='custom' to choose them")
    dev = _model_device(model, device)
    was = model.training
    model.eval()
    t0 = time.perf_counter()
    x = _as_float_images(images).cpu()
    y = labels.long().cpu()
    try:
        with torch.no_grad():
            clean_correct = torch.cat([(model(xb.to(dev)).argmax(1) == yb.to(dev)).cpu()
                                       for xb, yb in _batches(x, y, batch_size)])
            num_classes = int(model(x[:1].to(dev)).shape[1])
        aa = AutoAttack(model, attacks=list(attacks) if attacks else None, device=dev, eps=float(eps),
                        norm=_AA_NORMS[key], seed=int(seed), version=version)
        if n_iter is not None:
            _set_apgd_iters(aa.apgd, n_iter)
            _set_apgd_iters(aa.apgd_targeted, n_iter)
            aa.fab.n_iter = int(n_iter)
        if n_restarts is not None:
            aa.apgd.n_restarts = aa.fab.n_restarts = int(n_restarts)
        targets = n_target_classes if n_target_classes is not None else aa.apgd_targeted.n_target_classes
        targets = max(1, min(int(targets), num_classes - 1))
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = targets
        if square_queries is not None:
            aa.square.n_queries = int(square_queries)
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # AutoAttack reseeds the global RNG
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        with torch.no_grad():
            correct = torch.cat([(model(xb.to(dev)).argmax(1) == yb.to(dev)).cpu()
                                 for xb, yb in _batches(x_adv, y, batch_size)])
        correct &= clean_correct
    finally:
        model.train(was)
    settings = {"attack": "AutoAttack", "version": version, "attacks": list(aa.attacks_to_run), "eps": float(eps),
                "norm": key, "n_iter": aa.apgd.n_iter, "n_target_classes": targets, "seed": seed}
    return AutoAttackResult(float(correct.float().mean()), float(clean_correct.float().mean()), correct,
                            clean_correct, settings, time.perf_counter() - t0)
