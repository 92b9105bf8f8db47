"""One robustness report for a classifier: clean, corruption, adversarial and certified accuracy, OOD detection and
calibration, every number with a 95% interval (Wilson for accuracies, percentile bootstrap for AUROC / ECE-type
metrics), written as ``report.json`` (numbers + exact settings), ``report.md`` and PNG figures.

Suites are computed one by one and stored in ``OUT/suites/<suite>.json`` (atomically); a suite whose stored
signature (its settings, the model's weights, the test images, the denoiser) matches is loaded instead of being
recomputed, so an interrupted report resumes and a report with one more suite only computes that one.
The suite computations are in :mod:`robaug.eval.report_suites`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["SUITES", "ReportSettings", "report", "default_settings"]

SUITES = ("clean", "corruptions", "adversarial", "certified", "ood", "calibration")
#: part of every suite's signature: bump it when a suite's computation or stored fields change
SUITE_FORMAT = 1


@dataclass
class ReportSettings:
    """Sizes and parameters of every suite (see :func:`default_settings` for the quick / full values)."""

    clean_images: int | None = None  #: first N test images (None = all)
    corruption_images: int = 1000  #: first N test images of every (corruption, severity) set
    corruptions: list[str] | None = None  #: default: robaug's DEFAULT_CORRUPTIONS (or all in corruption_root)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    corruption_seed: int = 0
    adv_images: int = 1000
    pgd_eps: float | None = None  #: None: 0.1 (Fashion-MNIST), 8/255 (CIFAR), 4/255 (ImageNet / other)
    pgd_steps: int = 20
    pgd_norm: str = "linf"
    autoattack: bool = False  #: also the reference AutoAttack (pip install pyautoattack; slow)
    cert_images: int = 500
    cert_sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5])
    cert_n0: int = 100
    cert_n: int = 10_000
    cert_alpha: float = 0.001
    cert_radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    cert_batch_size: int = 2000  #: noisy copies per classifier call (raise it on a GPU; the noise order depends on it)
    ood_images: int = 2000  #: in-distribution images and images per OOD set
    ood_methods: list[str] = field(default_factory=lambda: ["msp", "max_logit", "energy", "odin"])
    ood_sets: list[str] | None = None  #: offline sets (default: all for 28x28 greyscale, the procedural ones else)
    calib_bins: int = 15
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 500

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_settings(quick: bool = False, denoised: bool = False) -> ReportSettings:
    """Full-size settings (Carlini et al.'s / DiffAug's certification sizes n0 = 100, n = 10,000; a GPU job) or
    ``quick`` ones (a Fashion-MNIST small CNN reports in a few minutes on two CPU cores; with a denoiser the
    certification shrinks to 20 images, n0 = 20, n = 500, which caps the certifiable radius at
    ``sigma Phi^-1(alpha^(1/n))``, 0.55 for sigma = 0.25)."""
    if not quick:
        return ReportSettings()
    cert = dict(cert_images=20, cert_n0=20, cert_n=500) if denoised else dict(cert_images=50, cert_n=1000)
    return ReportSettings(clean_images=2000, corruption_images=100, adv_images=200, pgd_steps=10, cert_sigmas=[0.25],
                          cert_radii=[0.0, 0.25, 0.5], ood_images=500, ood_methods=["msp", "max_logit", "energy"],
                          n_boot=200, **cert)


def _pgd_eps(dataset: str | None) -> float:
    name = (dataset or "").lower()
    if "mnist" in name:
        return 0.1
    if "cifar" in name:
        return 8 / 255
    return 4 / 255


# ------------------------------------------------------------------------------------------------------------
# fingerprints and the suite store


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tensor_fingerprint(*ts: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in ts:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write_text(path: Path, text: str) -> None:
    from robaug._core.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _load_suite(path: Path, signature: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged file: recompute
    return stored.get("result") if stored.get("signature") == signature else None


# ------------------------------------------------------------------------------------------------------------
# the report


def _test_data(dataset: Any, data_root: Any, n_max: int | None, batch_size: int,
               img_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str, Any, Any]:
    """(images uint8/float (N, C, H, W), labels, dataset name, DatasetInfo or None, test dataset or None)."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = torch.as_tensor(dataset[0]), torch.as_tensor(dataset[1]).long().reshape(-1)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[1] not in (1, 3):
            raise ValueError(f"dataset=(images, labels): expected (N, C, H, W) images and N labels, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if x.dtype != torch.uint8:
            if not x.is_floating_point():
                raise TypeError(f"dataset images must be uint8 or float in [0, 1], got {x.dtype}")
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3 or x.isnan().any():
                raise ValueError(f"dataset images must lie in [0, 1] (or be uint8), got values in [{lo:.3g}, "
                                 f"{hi:.3g}]; the model should normalise inside (robaug.models.Normalized)")
        return x, y, "custom", None, None
    if not isinstance(dataset, str):
        raise TypeError("dataset must be a dataset name (fashion_mnist, cifar10, cifar100, imagefolder) or an "
                        f"(images, labels) pair, got {type(dataset).__name__}")
    from robaug.data.datasets import load_dataset
    from robaug.recipes.evaluate import _first_images

    test, info = load_dataset(dataset, data_root, train=False, img_size=img_size)
    n = len(test) if n_max is None else min(n_max, len(test))
    x, y = _first_images(test, info, n, batch_size, 0)
    return x, y, info.name, info, test


def report(
    model: nn.Module,
    dataset: Any = "fashion_mnist",
    *,
    suites: Sequence[str] = SUITES,
    out: str | os.PathLike = "report",
    quick: bool = False,
    settings: ReportSettings | dict[str, Any] | None = None,
    denoiser: Any = None,
    data_root: str | os.PathLike | None = None,
    corruption_root: str | os.PathLike | None = None,
    ood_folders: dict[str, str | os.PathLike] | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
    progress: bool = True,
    figures: bool = True,
    img_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (float ``(B, C, H, W)`` images in [0, 1] -> logits; normalisation inside) and write
    ``OUT/report.json``, ``OUT/report.md`` and ``OUT/figures/*.png``; returns the report dict.

    Args:
        dataset: a name for :func:`robaug.data.datasets.load_dataset` (its test split; ``data_root`` where the
            files are) or an ``(images, labels)`` pair (uint8 or float in [0, 1]).
        suites: any of ``clean, corruptions, adversarial, certified, ood, calibration``.
        quick / settings: :func:`default_settings` (``quick``), overridden field by field by ``settings``.
        denoiser: for ``certified``: denoised smoothing through this denoiser (a robaug Denoiser, a registry name
            such as ``fmnist-ddpm``, or a path); without it, plain randomized smoothing of ``model``.
        corruption_root: published CIFAR-10-C / ImageNet-C files; otherwise a -C set is built from the first test
            images with robaug's corruptions (cached in ``cache_dir``, see :mod:`robaug.recipes.evaluate`).
        img_size: image size of an ``imagefolder`` dataset (default 224).
        ood_folders: extra OOD sets ``{name: path}`` (a ``.npy`` or an image folder, "far" unless the name ends
            with ``:near``), read with :func:`robaug.eval.ood_sets.load_ood_folder`.
    """
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ValueError(f"unknown suites {unknown}; choose from {', '.join(SUITES)}")
    base = default_settings(quick, denoised=denoiser is not None and "certified" in suites)
    if isinstance(settings, ReportSettings):
        cfg = settings
    else:
        cfg = dataclasses.replace(base, **(settings or {}))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module returning logits, got {type(model).__name__}")
    dev = torch.device(device) if device is not None else next(
        (t.device for t in list(model.parameters()) + list(model.buffers())), torch.device("cpu"))
    was_training = model.training
    model = model.to(dev).eval()
    try:
        return _report(model, dataset, suites, out, quick, cfg, denoiser, data_root, corruption_root, ood_folders,
                       cache_dir, dev, name, progress, figures, img_size)
    finally:
        model.train(was_training)


def _report(model: nn.Module, dataset: Any, suites: Sequence[str], out: Any, quick: bool, cfg: ReportSettings,
            denoiser: Any, data_root: Any, corruption_root: Any, ood_folders: Any, cache_dir: Any, dev: torch.device,
            name: str | None, progress: bool, figures: bool, img_size: int | None) -> dict[str, Any]:
    from . import report_suites as S
    from .report_render import render_figures, render_markdown

    need = max([cfg.clean_images or 10**9] + [
        cfg.corruption_images if "corruptions" in suites or "calibration" in suites else 0,
        cfg.adv_images if "adversarial" in suites else 0,
        cfg.cert_images if "certified" in suites else 0,
        cfg.ood_images if "ood" in suites else 0])
    x, y, data_name, info, test = _test_data(dataset, data_root, None if need >= 10**9 else need, cfg.batch_size,
                                             img_size)
    with torch.no_grad():  # one probe batch: (B, K) logits with K covering the labels
        from .report_suites import _logits_of

        probe = x[:2].float().div(255.0) if x.dtype == torch.uint8 else x[:2].float()
        k = _logits_of(model, probe.to(dev)).shape[1]
    if int(y.max()) >= k or int(y.min()) < 0:
        raise ValueError(f"the model returns {k} classes but the labels go up to {int(y.max())}")

    if cfg.pgd_eps is None:
        cfg = dataclasses.replace(cfg, pgd_eps=_pgd_eps(data_name))
    den = None
    den_id = None
    if denoiser is not None and "certified" in suites:
        from .certify import _resolve

        den_id = os.fspath(denoiser) if isinstance(denoiser, (str, os.PathLike)) else type(denoiser).__name__
        den = _resolve(denoiser).to(dev).eval()
        den_id = f"{den_id}:{model_fingerprint(den)[:16]}"

    out_dir = Path(out)
    (out_dir / "suites").mkdir(parents=True, exist_ok=True)
    ctx = S.Context(model=model, x=x, y=y, cfg=cfg, device=dev, info=info, test=test, data_name=data_name,
                    denoiser=den, corruption_root=corruption_root, cache_dir=cache_dir, ood_folders=ood_folders or {},
                    progress=progress)
    fingerprint = {"model": model_fingerprint(model), "data": tensor_fingerprint(x, y), "dataset": data_name}
    # what else each suite depends on besides its settings
    inputs = {
        "certified": {"denoiser": den_id},
        "corruptions": {"corruption_root": os.fspath(corruption_root) if corruption_root else None},
        "calibration": {"corruption_root": os.fspath(corruption_root) if corruption_root else None},
        "ood": {"ood_folders": {k: os.fspath(v) for k, v in (ood_folders or {}).items()}},
    }
    results: dict[str, Any] = {}
    reused: list[str] = []
    bar = None
    if progress:
        from .._core.progress import progress_bar as tqdm  # whole lines in log files

        bar = tqdm(total=len(suites), desc="robaug eval", unit="suite")
    t_all = time.perf_counter()
    try:
        for suite in suites:
            if bar is not None:
                bar.set_postfix(suite=suite)
            keys = S.SUITE_SETTINGS[suite]
            suite_cfg = {k: getattr(cfg, k) for k in keys}
            key = {"suite": suite, "format": SUITE_FORMAT, "settings": suite_cfg, **fingerprint,
                   **inputs.get(suite, {})}
            sig = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
            path = out_dir / "suites" / f"{suite}.json"
            res = _load_suite(path, sig)
            if res is None:
                t0 = time.perf_counter()
                res = S.RUNNERS[suite](ctx)
                res["seconds"] = time.perf_counter() - t0
                _write_text(path, json.dumps({"signature": sig, "settings": suite_cfg, "result": res}, indent=1,
                                             default=float) + "\n")
            else:
                reused.append(suite)
            results[suite] = res
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    import robaug

    doc = {
        "format": "robaug report v1",
        "name": name or data_name,
        "robaug_version": getattr(robaug, "__version__", None),
        "torch_version": torch.__version__,
        "device": str(dev),
        "dataset": data_name,
        "num_test_images_loaded": int(y.numel()),
        "model_sha256": fingerprint["model"],
        "denoiser": den_id,
        "quick": bool(quick),
        "settings": cfg.to_dict(),
        "suites": results,
        "reused_suites": reused,
        "seconds": time.perf_counter() - t_all,
        "intervals": "95%: Wilson score for accuracies; percentile bootstrap (n_boot resamples, stratified for "
                     "OOD) for AUROC, AUPR, FPR95, ECE, RMS, NLL, Brier",
    }
    if figures:
        doc["figures"] = render_figures(doc, out_dir / "figures")
    _write_text(out_dir / "report.json", json.dumps(doc, indent=1, default=float) + "\n")
    _write_text(out_dir / "report.md", render_markdown(doc))
    return doc
