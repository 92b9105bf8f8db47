"""DiffAug (Sastry et al., NeurIPS 2024, arXiv 2306.09192): one forward-diffusion step + one-step denoise.

For an image ``x`` in ``[0, 1]``, ``x' = 2x - 1``, a timestep ``t`` drawn per sample and ``n ~ N(0, I)``:

    x_t    = sqrt(abar_t) x' + sqrt(1 - abar_t) n          (VE view: x' + sigma_t n, sigma_t = sqrt((1-abar_t)/abar_t))
    x0_hat = D(x' + sigma_t n, sigma_t)                    (one-step clean-image estimate)
    out    = (clip(x0_hat, -1, 1) + 1) / 2

:class:`DiffAug` is the train-time transform; :class:`DiffAugEnsemble` is the paper's test-time ensemble
``p(y|x) = mean_{t in S} softmax f(DiffAug_t(x))`` with ``t = 0`` meaning the raw image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from robaug._core.image import not_an_image, to_float_batch
from robaug._core.rng import GeneratorMixin, Rng, randn, worker_generator
from robaug.diffusion.denoiser import Denoiser

from ._base import BatchTransform, check_int

__all__ = ["DiffAug", "DiffAugEnsemble", "diffuse_and_denoise"]

_AUTOCAST_DTYPES = (None, torch.float16, torch.bfloat16)
_DEFAULTS = {"clip": True, "micro_batch": None, "autocast_dtype": None}


def _resolve_denoiser(denoiser: Denoiser | str | os.PathLike, owner: str) -> Denoiser:
    from robaug.hub.resolve import resolve_denoiser

    denoiser = resolve_denoiser(denoiser, owner=owner)
    if denoiser.num_classes is not None and denoiser.null_label is None and not _accepts_no_label(denoiser):
        raise ValueError(
            f"{owner} runs the denoiser unconditionally, but this class-conditional denoiser has no null_label; "
            "pass null_label=... when wrapping a model trained with label dropout, or use an unconditional model"
        )
    return denoiser


def _accepts_no_label(denoiser: Denoiser) -> bool:
    return getattr(denoiser, "label_format", None) == "onehot"  # EDM convention: zeros = no label


def _check_device(denoiser: Denoiser, device: torch.device, owner: str) -> None:
    p = next(denoiser.parameters(), None)
    if p is not None and p.device != device:
        raise RuntimeError(
            f"{owner}: the denoiser is on {p.device} but the images are on {device}; move the transform with "
            f".to({str(device)!r}) (PIL images and CPU tensors need the denoiser on the CPU)"
        )


def _size(module: nn.Module) -> str:
    """``35.7M parameters, 143 MB``: a module's parameter count and the bytes of its parameters and buffers."""
    count = sum(p.numel() for p in module.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    n = f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.1f}K" if count >= 1e3 else str(count)
    size = (f"{nbytes / 1e6:.0f} MB" if nbytes >= 1e7 else f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5
            else f"{nbytes / 1e3:.1f} KB" if nbytes >= 1e3 else f"{nbytes} B")
    return f"{n} parameters, {size}"


def _denoiser_repr(denoiser: Denoiser, source: object) -> str:
    """The denoiser in one phrase: ``'fmnist-ddpm' (DiffusersDenoiser, 35.7M parameters, 143 MB)``."""
    name = f"{str(source)!r} " if isinstance(source, (str, os.PathLike)) else ""
    return f"{name}({type(denoiser).__name__}, {_size(denoiser)})"


class _FrozenDenoiser(nn.Module):
    """A module holding a frozen ``denoiser``: it is put in eval mode and stays there when the module is put in
    ``.train()`` (dropout in a DDPM's UNet must stay off); short ``repr`` instead of the whole network."""

    denoiser: Denoiser

    def train(self, mode: bool = True) -> "_FrozenDenoiser":
        super().train(mode)
        self.denoiser.eval()
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def diffuse_and_denoise(
    images: torch.Tensor,
    denoiser: Denoiser,
    sigma: torch.Tensor,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    clip: bool = True,
    micro_batch: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """The DiffAug operation on a float ``(B, C, H, W)`` batch in ``[0, 1]`` with per-sample ``sigma`` ``(B,)``.

    Returns a float32 ``(B, C, H, W)`` batch, in ``[0, 1]`` when ``clip``. Images whose size is not a multiple of
    the model's ``size_multiple`` are padded (``pad_mode``, reflect by default) and cropped back; a 1-channel
    image with a 3-channel model is repeated to RGB and the result averaged back to one channel. ``noise``, if
    given, has the model-side shape ``(B, in_channels, H_pad, W_pad)``; otherwise it is drawn from ``generator``
    (or the global RNG). Gradients flow unless the caller disables them.
    """
    b, c, h, w = images.shape
    mc = denoiser.in_channels
    if c != mc:
        if c == 1 and mc == 3:
            images = images.expand(b, 3, h, w)
        elif c == 3 and mc == 1:
            raise ValueError(
                "DiffAug: RGB images but a 1-channel (grayscale) denoiser; convert the images first with "
                "transforms.Grayscale(num_output_channels=1), or use an RGB denoiser"
            )
        else:
            raise ValueError(f"DiffAug: images have {c} channels but the denoiser takes {mc}")
    m = denoiser.size_multiple
    ph, pw = (-h) % m, (-w) % m
    x = images.float() * 2 - 1
    if ph or pw:
        mode = pad_mode if (pad_mode != "reflect" or (ph < h and pw < w)) else "replicate"
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
    if noise is None:
        noise = randn(x.shape, generator, x.device)
    elif noise.shape != x.shape:
        raise ValueError(f"noise must have the model-side shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    sigma = sigma.reshape(-1)
    x_noisy = x + sigma.to(x.dtype).view(-1, 1, 1, 1) * noise
    step = b if micro_batch is None else int(micro_batch)
    autocast = (
        torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    with autocast:
        parts = [denoiser(x_noisy[i : i + step], sigma[i : i + step]) for i in range(0, b, step)]
    x0 = (parts[0] if len(parts) == 1 else torch.cat(parts)).float()
    if ph or pw:
        x0 = x0[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    if c != mc:
        x0 = x0.mean(dim=1, keepdim=True)
    return (x0 + 1) * 0.5


def _check_common(micro_batch: int | None, autocast_dtype: torch.dtype | None, owner: str) -> None:
    if micro_batch is not None:
        check_int(micro_batch, "micro_batch", owner, low=1)
    if autocast_dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"{owner}: autocast_dtype must be None, torch.float16 or torch.bfloat16, got {autocast_dtype}")


class DiffAug(BatchTransform, _FrozenDenoiser):
    """Diffuse-and-denoise augmentation (a torchvision v2 transform and ``nn.Module``).

    Per sample: ``t ~ U{t_range[0], ..., t_range[1] - 1}`` (or the fixed ``t``), ``n ~ N(0, I)``, output
    ``(clip(D(2x - 1 + sigma_t n, sigma_t)) + 1) / 2``; with probability ``1 - p`` (per sample) the image is
    returned unchanged. Accepts PIL images, ``(C, H, W)`` / ``(..., C, H, W)`` tensors (uint8 or float in
    ``[0, 1]``) and ``tv_tensors.Image``; returns the input's type, dtype, device and shape. Labels, boxes and
    masks pass through.

    Args:
        denoiser: a :class:`~robaug.diffusion.Denoiser`, or a registry name / local path / diffusers folder for
            :func:`robaug.hub.load_denoiser`. Registered as a submodule (follows ``.to(device)``); it is frozen: put
            in eval mode, and kept there when the transform (or a module holding it) is put in ``.train()``. A
            class-conditional model runs with its ``null_label``.
        t_range: half-open integer range of timesteps of the denoiser's ``timestep_sigmas`` table; the paper uses
            the full range ``(0, 1000)``. ``t = 0`` is the smallest noise level of the table, not the identity.
        p: per-sample probability of applying the augmentation. ``p < 1`` costs one host-device sync per call
            (the denoiser then only runs on the selected samples).
        clip: clip the estimate to ``[-1, 1]`` (the paper does); ``clip=False`` can return floats outside ``[0, 1]``.
        generator: optional ``torch.Generator`` (draws happen on its device, then move to the input's). Draw
            order per call: t ``(B,)``, then the apply mask ``(B,)`` when ``p < 1``, then the noise. In a DataLoader
            worker, the worker's copy is re-seeded on first use from its seed and the worker's seed
            (:func:`robaug._core.rng.worker_generator`), so workers do not repeat each other.
        t: fixed timestep for test-time use (overrides ``t_range``).
        micro_batch: run the denoiser on at most this many images at once.
        autocast_dtype: ``torch.float16`` / ``torch.bfloat16`` autocast around the denoiser (CUDA; bf16 works on CPU).
        pad_mode: ``F.pad`` mode for sizes that are not a multiple of the model's downsampling factor.
        validate: check float input for NaN/inf and the ``[0, 1]`` range (one host-device sync).
    """

    def __init__(
        self,
        denoiser: Denoiser | str | os.PathLike,
        t_range: tuple[int, int] = (0, 1000),
        p: float = 1.0,
        clip: bool = True,
        generator: torch.Generator | None = None,
        t: int | None = None,
        micro_batch: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        *,
        pad_mode: str = "reflect",
        validate: bool = True,
    ) -> None:
        super().__init__(generator=generator, validate=validate, p=p)
        self.denoiser = _resolve_denoiser(denoiser, "DiffAug").eval()
        self._source = denoiser if isinstance(denoiser, (str, os.PathLike)) else None
        n = self.denoiser.num_timesteps
        if isinstance(t_range, (str, bytes)) or not isinstance(t_range, Iterable) or len(tuple(t_range)) != 2:
            raise ValueError(f"DiffAug: t_range must be a pair (low, high) of timesteps, got {t_range!r}")
        lo, hi = (check_int(v, "t_range", "DiffAug") for v in t_range)
        if not 0 <= lo < hi <= n:
            raise ValueError(
                f"DiffAug: t_range must satisfy 0 <= low < high <= {n} (the denoiser's timesteps), got {t_range}"
            )
        if t is not None and not 0 <= check_int(t, "t", "DiffAug") < n:
            raise ValueError(f"DiffAug: t must lie in [0, {n - 1}], got {t}")
        if pad_mode not in ("reflect", "replicate", "constant", "circular"):
            raise ValueError(f"DiffAug: unknown pad_mode {pad_mode!r}")
        _check_common(micro_batch, autocast_dtype, "DiffAug")
        self.t_range = (lo, hi)
        self.clip = bool(clip)
        self.t = None if t is None else int(t)
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self.autocast_dtype = autocast_dtype
        self.pad_mode = pad_mode

    def draw_params(self, batch: torch.Tensor, rng: Rng) -> dict[str, torch.Tensor | None]:
        """Per sample: timestep ``t`` ``(B,)``, the apply mask ``(B,)`` (``None`` when ``p = 1``) and the noise
        ``(B, in_channels, H_pad, W_pad)``, drawn in that order."""
        b, device = batch.shape[0], batch.device
        _check_device(self.denoiser, device, "DiffAug")
        if self.t is None:
            t = rng.randint(self.t_range[0], self.t_range[1], b)
        else:
            t = torch.full((b,), self.t, dtype=torch.long, device=device)
        apply = self.draw_apply(b, rng)
        m = self.denoiser.size_multiple
        h, w = batch.shape[2], batch.shape[3]
        noise = rng.randn(b, self.denoiser.in_channels, h + (-h) % m, w + (-w) % m)
        return {"t": t, "apply": apply, "noise": noise}

    @torch.no_grad()
    def kernel(self, batch: torch.Tensor, params: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """:func:`diffuse_and_denoise` of the samples ``params["apply"]`` selects (all when it is ``None``)."""
        sigma = self.denoiser.sigma_at(params["t"])
        kw = dict(
            clip=self.clip,
            micro_batch=self.micro_batch,
            autocast_dtype=self.autocast_dtype,
            pad_mode=self.pad_mode,
        )
        apply, noise = params["apply"], params["noise"]
        if apply is None:
            return diffuse_and_denoise(batch, self.denoiser, sigma, noise=noise, **kw)
        # The full batch's noise is drawn so that a sample's noise does not depend on the other samples' coins.
        idx = apply.nonzero().squeeze(1)  # host-device sync
        out = batch.clone()
        if idx.numel():
            out[idx] = diffuse_and_denoise(batch[idx], self.denoiser, sigma[idx], noise=noise[idx], **kw)
        return out

    def extra_repr(self) -> str:
        when = f"t={self.t}" if self.t is not None else f"t_range={self.t_range}"
        extra = "".join(
            f", {k}={v}" for k, v in (("clip", self.clip), ("micro_batch", self.micro_batch),
                                      ("autocast_dtype", self.autocast_dtype)) if v != _DEFAULTS[k]
        )  # fmt: skip
        return f"denoiser={_denoiser_repr(self.denoiser, self._source)}, {when}, p={self.p}{extra}"


class DiffAugEnsemble(GeneratorMixin, _FrozenDenoiser):
    """DiffAug Ensemble (DE), the paper's test-time classifier:

        p(y | x) = 1/|S| * sum_{t in S} softmax(f(DiffAug_t(x)))

    with one fixed ``t`` per view and ``t = 0`` meaning the raw image (so ``S = range(0, 500, 50)`` costs 9
    denoiser and 10 classifier forwards per image). ``forward(x)`` takes a float ``(B, C, H, W)`` batch in
    ``[0, 1]`` (or uint8) and returns ``log p(y | x)`` (``(B, num_classes)``), so it is a drop-in classifier:
    ``argmax`` gives the prediction and ``F.cross_entropy`` on it is the NLL of the averaged probabilities
    (``log_softmax`` of log-probabilities is the identity). ``return_probs=True`` returns the probabilities.

    ``micro_batch`` bounds how many images go through the denoiser and classifier at once. The denoiser runs
    under ``no_grad`` unless ``differentiable=True`` (for adaptive attacks); gradients through the classifier
    always flow. Put the classifier in ``eval()`` mode yourself; the denoiser is frozen (eval mode, kept there by
    ``.train()``). ``generator`` draws the noise; in a DataLoader worker the worker's copy is re-seeded on first use
    (:func:`robaug._core.rng.worker_generator`).
    """

    def __init__(
        self,
        classifier: nn.Module,
        denoiser: Denoiser | str | os.PathLike,
        timesteps: Iterable[int] = range(0, 500, 50),
        micro_batch: int | None = None,
        *,
        generator: torch.Generator | None = None,
        clip: bool = True,
        autocast_dtype: torch.dtype | None = None,
        return_probs: bool = False,
        differentiable: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if not callable(classifier):
            raise TypeError(
                f"DiffAugEnsemble: classifier must be a module (or callable), got {type(classifier).__name__}"
            )
        self.generator = generator  # checked, and tracked for DataLoader workers
        self.classifier = classifier
        self.denoiser = _resolve_denoiser(denoiser, "DiffAugEnsemble").eval()
        self._source = denoiser if isinstance(denoiser, (str, os.PathLike)) else None
        if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Iterable):
            raise ValueError(f"DiffAugEnsemble: timesteps must be a sequence of ints, got {timesteps!r}")
        ts = tuple(check_int(t, "timesteps", "DiffAugEnsemble") for t in timesteps)
        n = self.denoiser.num_timesteps
        if not ts:
            raise ValueError("DiffAugEnsemble: timesteps is empty")
        if any(not 0 <= t < n for t in ts):
            raise ValueError(f"DiffAugEnsemble: timesteps must lie in [0, {n - 1}], got {ts}")
        _check_common(micro_batch, autocast_dtype, "DiffAugEnsemble")
        self.timesteps = ts
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self.clip = bool(clip)
        self.autocast_dtype = autocast_dtype
        self.return_probs = bool(return_probs)
        self.differentiable = bool(differentiable)
        self.validate = bool(validate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise not_an_image(x, "DiffAugEnsemble input")
        images, _ = to_float_batch(x, name="DiffAugEnsemble input", validate=self.validate)
        _check_device(self.denoiser, images.device, "DiffAugEnsemble")
        step = images.shape[0] if self.micro_batch is None else self.micro_batch
        out = [self._log_probs(images[i : i + step]) for i in range(0, images.shape[0], step)]
        log_p = out[0] if len(out) == 1 else torch.cat(out)
        return log_p.exp() if self.return_probs else log_p

    def _log_probs(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        generator = worker_generator(self.generator)
        log_ps = []
        for t in self.timesteps:
            if t == 0:
                view = images
            else:
                sigma = self.denoiser.sigma_at(torch.full((b,), t, dtype=torch.long, device=images.device))
                with nullcontext() if self.differentiable else torch.no_grad():
                    view = diffuse_and_denoise(
                        images, self.denoiser, sigma, generator=generator, clip=self.clip,
                        autocast_dtype=self.autocast_dtype,
                    )
            logits = self.classifier(view)
            if logits.ndim != 2 or logits.shape[0] != b:
                raise ValueError("DiffAugEnsemble: classifier must return (B, num_classes) logits, "
                                 f"got {tuple(logits.shape)}")
            log_ps.append(logits.float().log_softmax(dim=1))
        return torch.stack(log_ps).logsumexp(dim=0) - math.log(len(log_ps))

    def extra_repr(self) -> str:
        classifier = type(self.classifier).__name__
        if isinstance(self.classifier, nn.Module):
            classifier += f" ({_size(self.classifier)})"
        ts = list(self.timesteps)
        steps = str(ts) if len(ts) <= 6 else f"[{ts[0]}, {ts[1]}, ..., {ts[-1]}] ({len(ts)} views)"
        return (f"classifier={classifier}, denoiser={_denoiser_repr(self.denoiser, self._source)}, timesteps={steps}, "
                f"micro_batch={self.micro_batch}")  # fmt: skip
