"""Certified l2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) and denoised smoothing
(Carlini et al., ICLR 2023; used by DiffAug).

The smoothed classifier is ``g(x) = argmax_c P(f(x + sigma * eps) = c)``, ``eps ~ N(0, I)``, with images in
[0, 1] and ``sigma`` in that scale (the papers' convention). :func:`certify` runs CERTIFY: the top class ``c_A``
from the counts of ``n0`` noisy copies, then ``p_A_lower``, the one-sided Clopper-Pearson lower bound at level
``alpha`` of ``P(f(x + sigma eps) = c_A)`` from ``n`` fresh copies; it abstains when ``p_A_lower < 1/2`` and
otherwise certifies the radius ``R = sigma * Phi^-1(p_A_lower)``: with probability at least ``1 - alpha`` over
the noise, ``g`` predicts ``c_A`` on the whole l2 ball of radius ``R``. :func:`predict` runs PREDICT: the top
two classes of ``n`` copies and the two-sided binomial test of ``n_A`` against ``n_A + n_B`` at level
``alpha`` (abstain when it does not reject ``p = 1/2``).

Denoised smoothing (``denoiser=``): the base classifier becomes ``f(denoise(x + sigma eps))`` with one denoiser
call at the matching noise level. robaug's denoisers take the [-1, 1] view ``D(z, s)`` with ``z = x0 + s n``;
mapping ``x_noisy = x + sigma eps`` to that view gives ``z = 2 x_noisy - 1 = (2x - 1) + 2 sigma eps``, so the
denoiser is called on ``2 x_noisy - 1`` **with ``s = 2 sigma``**, and the classifier gets
``(clip(D(z, 2 sigma), -1, 1) + 1) / 2`` (images whose size the denoiser cannot take are padded and cropped,
1-channel images are repeated to RGB for an RGB denoiser; see :func:`robaug.transforms.diffaug.diffuse_and_denoise`).

Floating-point caveat: the certificate is a statement about the exact smoothed classifier. The implementation
evaluates ``f`` in floating point (and on a GPU non-deterministically), and the noise comes from a pseudo-random
generator, so the guarantee holds only up to these effects; Voráček & Hein (ICML 2023, "Sound randomized
smoothing in floating-point arithmetic") construct classifiers whose float certificates are wrong. Radii are
also reported for the clean image only, not for its rounding to uint8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .._perturb import draw_like
from .intervals import binom_test_half, clopper_pearson_lower

__all__ = ["CertifyResult", "certify", "predict", "smoothed_counts"]

ABSTAIN = -1


@dataclass
class CertifyResult:
    """Outcome of :func:`certify` / :func:`predict` for a batch of images (CPU tensors)."""

    predictions: torch.Tensor  #: int64 (N,), -1 where the smoothed classifier abstains
    radii: torch.Tensor  #: float64 (N,), certified l2 radius in [0, 1] pixel units (0 where abstained)
    labels: torch.Tensor | None = None  #: int64 (N,) when given
    p_lower: torch.Tensor | None = None  #: float64 (N,), Clopper-Pearson lower bound of p_A (certify only)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.predictions.numel())

    @property
    def abstain_rate(self) -> float:
        return float((self.predictions == ABSTAIN).double().mean()) if len(self) else float("nan")

    def _need_labels(self) -> torch.Tensor:
        if self.labels is None:
            raise ValueError("certified accuracy needs the true labels: pass labels= to certify()")
        return self.labels

    def correct(self, radius: float = 0.0) -> torch.Tensor:
        """Per image: predicted the true label and certified at ``radius`` or more (bool (N,))."""
        labels = self._need_labels()
        return (self.predictions == labels) & (self.radii >= float(radius))

    def certified_accuracy(self, radius: float = 0.0) -> float:
        """Fraction of images predicted correctly with a certified radius >= ``radius`` (at 0: the smoothed
        classifier's accuracy, abstentions counted as errors)."""
        return float(self.correct(radius).double().mean()) if len(self) else float("nan")

    def curve(self, radii: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(radii, certified accuracy at each)``; by default 0..max radius in 50 steps."""
        if radii is None:
            top = float(self.radii.max()) if len(self) else 0.0
            radii = np.linspace(0.0, max(top, 1e-6), 50)
        r = np.asarray(list(radii), dtype=np.float64)
        return r, np.array([self.certified_accuracy(float(v)) for v in r])

    def to_dict(self) -> dict[str, Any]:
        return {"images": len(self), "abstain_rate": self.abstain_rate,
                "certified_accuracy_0": self.certified_accuracy(0.0) if self.labels is not None else None,
                **self.settings, "seconds": self.seconds}


def _model_device(model: Any, fallback: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device
    return fallback


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a float tensor (N, C, H, W) in [0, 1], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.numel() == 0:
        raise ValueError(f"images must have shape (N, C, H, W) (or one (C, H, W) image), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1] (sigma is measured in that scale), got values in "
                         f"[{lo:.3g}, {hi:.3g}]; undo the Normalize (the model should normalise inside, "
                         "e.g. robaug.models.Normalized)")
    return images


def _check_settings(sigma: float, n0: int, n: int, alpha: float, batch_size: int) -> None:
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0 (the noise level in [0, 1] pixel units, e.g. 0.25), got {sigma}")
    if int(n0) < 1 or int(n) < 1:
        raise ValueError(f"n0 and n must be >= 1, got n0={n0}, n={n}")
    if int(n) < int(n0):
        raise ValueError(f"n (copies for the estimate, {n}) must be >= n0 (copies for selecting the class, {n0}); "
                         "Cohen et al. use n0=100, n=100,000")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1) (failure probability, e.g. 0.001), got {alpha}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _resolve(denoiser: Any, device: torch.device | None = None) -> nn.Module | None:
    """A Denoiser as is, or a registry name / path loaded with robaug.hub.load_denoiser onto ``device``."""
    if denoiser is None:
        return None
    from ..transforms.diffaug import _resolve_denoiser

    loaded = isinstance(denoiser, (str, os.PathLike))
    den = _resolve_denoiser(denoiser, "certify")
    if loaded and device is not None:
        den = den.to(device)
    p = next(den.parameters(), None)
    if device is not None and p is not None and p.device != device:
        raise ValueError(f"certify: the denoiser is on {p.device} but the classifier on {device}; move it with "
                         f".to({str(device)!r})")
    return den


@torch.no_grad()
def smoothed_counts(
    classifier: nn.Module,
    images: torch.Tensor,
    num: int,
    *,
    sigma: float,
    denoiser: nn.Module | None = None,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
    device: torch.device | None = None,
    progress: Any = None,
) -> torch.Tensor:
    """Class counts ``(N, K)`` (int64, on the classifier's device) of ``f`` on ``num`` noisy copies of every image.

    The ``N * num`` copies are streamed in chunks of ``batch_size`` (a chunk may hold copies of several images);
    the noise is drawn per chunk with ``generator`` on its device, so results depend on ``batch_size``.
    ``progress``: a tqdm bar advanced by the copies done.
    """
    dev = device if device is not None else _model_device(classifier, images.device)
    images = images.to(dev)
    n_img = images.shape[0]
    total = n_img * int(num)
    counts: torch.Tensor | None = None
    k = num_classes
    for start in range(0, total, int(batch_size)):  # a loop over memory-sized chunks, not over copies
        idx = torch.arange(start, min(total, start + int(batch_size)), device=dev) // int(num)
        x = images[idx]
        eps = draw_like("randn", x, generator)
        if denoiser is not None:
            from ..transforms.diffaug import diffuse_and_denoise

            s = torch.full((x.shape[0],), 2.0 * float(sigma), device=dev)  # [-1, 1] view: noise doubles
            x_in = diffuse_and_denoise(x, denoiser, s, noise=eps if _noise_fits(x, denoiser) else None,
                                       generator=generator)
        else:
            x_in = x + float(sigma) * eps
        logits = classifier(x_in)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the classifier must return (batch, num_classes) logits, got {shape} for a batch of "
                             f"{x.shape[0]} images")
        if k is None:
            k = int(logits.shape[1])
        if logits.shape[1] != k:
            raise ValueError(f"the classifier returned {logits.shape[1]} classes, expected {k}")
        if counts is None:
            counts = torch.zeros(n_img * k, dtype=torch.int64, device=dev)
        flat = idx * k + logits.argmax(1)
        counts.index_add_(0, flat, torch.ones_like(flat))
        if progress is not None:
            progress.update(int(x.shape[0]))
    assert counts is not None and k is not None
    return counts.view(n_img, k)


def _noise_fits(x: torch.Tensor, denoiser: nn.Module) -> bool:
    """Whether our ``x``-shaped noise is the denoiser's model-side noise (no padding, same channels); otherwise
    :func:`diffuse_and_denoise` draws it from the same generator."""
    m = getattr(denoiser, "size_multiple", 1)
    return (getattr(denoiser, "in_channels", x.shape[1]) == x.shape[1]
            and x.shape[-1] % m == 0 and x.shape[-2] % m == 0)


def _prepare(classifier: nn.Module, images: Any, labels: Any, sigma: float, n0: int, n: int, alpha: float,
             batch_size: int, denoiser: Any, device: Any = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module | None]:
    if not callable(classifier):
        raise TypeError(f"classifier must be a callable nn.Module returning logits, got {type(classifier).__name__}")
    _check_settings(sigma, n0, n, alpha, batch_size)
    x = _check_images(images)
    y = None
    if labels is not None:
        y = torch.as_tensor(labels).long().reshape(-1).cpu()
        if y.numel() != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} images but {y.numel()} labels")
    dev = torch.device(device) if device is not None else _model_device(classifier, x.device)
    den = _resolve(denoiser, dev)
    return x, y, den


def _run(classifier: nn.Module, den: nn.Module | None, fn: Any) -> Any:
    modules = [m for m in (classifier, den) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        return fn()
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def certify(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    sigma: float,
    denoiser: Any = None,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> CertifyResult:
    """Cohen et al.'s CERTIFY for every image: prediction (-1 = abstain) and certified l2 radius.

    Args:
        classifier: ``nn.Module`` mapping float ``(B, C, H, W)`` images in [0, 1] to ``(B, K)`` logits (the base
            classifier ``f``; put normalisation inside it). Evaluated in eval mode, its mode restored after.
        images: ``(N, C, H, W)`` float in [0, 1] (or uint8). labels: optional true labels, for the accuracies.
        sigma: noise level in [0, 1] pixel units (0.12, 0.25, 0.5, 1.0 in the papers).
        denoiser: a :class:`robaug.diffusion.Denoiser`, a registry name or a path (loaded with
            :func:`robaug.hub.load_denoiser`): denoised smoothing, the denoiser called on ``2 x_noisy - 1`` with
            sigma ``2 * sigma`` (see the module docstring). Move it to the classifier's device first.
        n0, n, alpha: selection copies, estimation copies, failure probability (Cohen et al.: 100, 100,000,
            0.001; Carlini et al. and DiffAug: 100, 10,000, 0.001).
        batch_size: noisy copies per classifier call (copies of several images share a call).
        generator: ``torch.Generator`` for the noise (drawn on its device, moved to the classifier's).
        progress: a tqdm bar over the noisy copies.
    """
    x, y, den = _prepare(classifier, images, labels, sigma, n0, n, alpha, batch_size, denoiser, device)
    import time

    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else None

    bar = None
    if progress:
        from .._core.progress import progress_bar as tqdm  # whole lines in log files

        bar = tqdm(total=x.shape[0] * (int(n0) + int(n)), desc=f"certify sigma={sigma}", unit="copy", leave=False)

    def go() -> tuple[torch.Tensor, torch.Tensor]:
        kw = dict(sigma=sigma, denoiser=den, batch_size=batch_size, generator=generator, device=dev, progress=bar)
        sel = smoothed_counts(classifier, x, n0, **kw)
        est = smoothed_counts(classifier, x, n, num_classes=sel.shape[1], **kw)
        return sel, est

    try:
        sel, est = _run(classifier, den, go)
    finally:
        if bar is not None:
            bar.close()
    c_a = sel.argmax(1)  # ties: the lowest class index, as numpy's argmax in the reference
    n_a = est.gather(1, c_a[:, None])[:, 0].cpu().numpy()
    p_lower = clopper_pearson_lower(n_a, int(n), float(alpha))
    certified = p_lower >= 0.5
    radii = np.where(certified, float(sigma) * _norm_ppf(np.where(certified, p_lower, 0.5)), 0.0)
    preds = torch.where(torch.from_numpy(certified), c_a.cpu(), torch.full_like(c_a.cpu(), ABSTAIN))
    settings = {"method": "certify", "sigma": float(sigma), "n0": int(n0), "n": int(n), "alpha": float(alpha),
                "denoised": den is not None, "batch_size": int(batch_size)}
    return CertifyResult(preds, torch.from_numpy(radii), y, torch.from_numpy(p_lower), settings,
                         time.perf_counter() - t0)


def predict(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    sigma: float,
    denoiser: Any = None,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> CertifyResult:
    """Cohen et al.'s PREDICT: the smoothed prediction, or -1 when the two-sided binomial test of the top count
    against the top two counts does not reject ``p = 1/2`` at level ``alpha`` (then the prediction is wrong with
    probability at most ``alpha``). ``radii`` are all 0. Arguments as in :func:`certify`."""
    x, y, den = _prepare(classifier, images, labels, sigma, 1, n, alpha, batch_size, denoiser, device)
    import time

    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else None
    counts = _run(classifier, den, lambda: smoothed_counts(
        classifier, x, n, sigma=sigma, denoiser=den, batch_size=batch_size, generator=generator, device=dev))
    top2 = counts.topk(min(2, counts.shape[1]), dim=1)
    n_a = top2.values[:, 0].cpu().numpy()
    n_b = top2.values[:, 1].cpu().numpy() if counts.shape[1] > 1 else np.zeros_like(n_a)
    pval = binom_test_half(n_a, n_a + n_b)
    c_a = top2.indices[:, 0].cpu()
    preds = torch.where(torch.from_numpy(pval <= float(alpha)), c_a, torch.full_like(c_a, ABSTAIN))
    settings = {"method": "predict", "sigma": float(sigma), "n": int(n), "alpha": float(alpha),
                "denoised": den is not None, "batch_size": int(batch_size)}
    return CertifyResult(preds, torch.zeros(len(preds), dtype=torch.float64), y, None, settings,
                         time.perf_counter() - t0)


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """``Phi^-1`` in float64 (torch's ``ndtri``)."""
    return torch.special.ndtri(torch.from_numpy(np.asarray(p, dtype=np.float64))).numpy()


def load_denoiser_for(name_or_path: str | os.PathLike, device: str | torch.device) -> nn.Module:
    """A registry name or path as an eval-mode denoiser on ``device`` (what ``robaug eval --denoiser`` uses)."""
    from ..hub import load_denoiser

    return load_denoiser(os.fspath(name_or_path)).to(device).eval()
