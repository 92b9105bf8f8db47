"""Evaluation loops: top-1 error of a classifier (or the DiffAug ensemble) on a clean set and on every
(corruption, severity) of a corruption benchmark, returned as :class:`~robaug.eval.metrics.CorruptionResults`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._core.image import to_float_batch
from .._core.modules import module_device
from .datasets import CorruptionBenchmark, collate_images, open_corruption_benchmark
from .metrics import CorruptionResults

__all__ = ["evaluate_error", "evaluate_corruptions"]


def _iterate_clean(data: Any, batch_size: int, num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, DataLoader):
        for batch in data:
            x, y = batch[0], batch[1]
            yield to_float_batch(x, name="clean images")[0], torch.as_tensor(y).long()
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (torch.Tensor, np.ndarray)):
        images, labels = data
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels).long().reshape(-1)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if len(images) != len(labels):
            raise ValueError(f"clean set has {len(images)} images but {len(labels)} labels")
        for start in range(0, len(labels), batch_size):
            yield (to_float_batch(images[start: start + batch_size], name="clean images")[0],
                   labels[start: start + batch_size])
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                              collate_fn=collate_images)
    else:
        raise TypeError(
            "clean must be a Dataset, a DataLoader or an (images, labels) pair of tensors, "
            f"got {type(data).__name__}"
        )


def _count_errors(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
    transform: Any, amp: bool,
) -> tuple[int, int]:
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with torch.autocast(device.type, enabled=amp):
            out = model(x)
        wrong += (out.argmax(1) != y).sum()
        total += y.numel()
    if total == 0:
        raise ValueError("empty test set")
    return int(wrong), total


def _prepare_model(
    model: nn.Module, normalize: tuple[Sequence[float], Sequence[float]] | None, denoiser: nn.Module | None,
    ensemble_timesteps: Sequence[int] | None, ensemble_kwargs: Mapping[str, Any] | None,
) -> nn.Module:
    if normalize is not None:
        from ..models.registry import Normalized

        model = Normalized(model, *normalize)
    if denoiser is not None:
        from ..transforms.diffaug import DiffAugEnsemble  # lazy: optional heavy dependency

        kw = dict(ensemble_kwargs or {})
        if ensemble_timesteps is not None:
            kw["timesteps"] = ensemble_timesteps
        model = DiffAugEnsemble(model, denoiser, **kw)
    elif ensemble_timesteps is not None or ensemble_kwargs:
        raise ValueError("ensemble_timesteps / ensemble_kwargs need denoiser= (the DiffAug ensemble's denoiser)")
    return model


@torch.no_grad()
def evaluate_error(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    transform: Any = None,
    denoiser: nn.Module | None = None,
    ensemble_timesteps: Sequence[int] | None = None,
    ensemble_kwargs: Mapping[str, Any] | None = None,
    amp: bool = False,
) -> float:
    """Top-1 error of ``model`` on a clean set (Dataset, DataLoader or ``(images, labels)``); options as in
    :func:`evaluate_corruptions`."""
    dev = torch.device(device) if device is not None else module_device(model)
    net = _prepare_model(model, normalize, denoiser, ensemble_timesteps, ensemble_kwargs).to(dev)
    was_training = net.training
    net.eval()
    try:
        wrong, total = _count_errors(net, _iterate_clean(data, batch_size, num_workers), dev, transform, amp)
    finally:
        net.train(was_training)
    return wrong / total


@torch.no_grad()
def evaluate_corruptions(
    model: nn.Module,
    benchmark: CorruptionBenchmark | str | Path,
    *,
    clean: Any = None,
    corruptions: Iterable[str] | None = None,
    severities: Iterable[int] | None = None,
    baseline: Any = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    transform: Any = None,
    denoiser: nn.Module | None = None,
    ensemble_timesteps: Sequence[int] | None = None,
    ensemble_kwargs: Mapping[str, Any] | None = None,
    amp: bool = False,
    progress: bool = False,
    name: str | None = None,
) -> CorruptionResults:
    """Evaluate ``model`` on every (corruption, severity) of ``benchmark`` and return :class:`CorruptionResults`.

    - ``benchmark``: a :class:`CorruptionBenchmark` (e.g. from ``make_corrupted_dataset``) or a folder in the
      CIFAR-10-C or ImageNet-C layout; ``corruptions`` / ``severities`` restrict it.
    - ``clean``: the clean test set (Dataset, DataLoader or ``(images, labels)``) for the clean error, which
      the relative mCE needs.
    - ``baseline``: ``"alexnet"`` (ImageNet-C), another model's :class:`CorruptionResults`, or a
      ``{corruption: error}`` dict (optionally ``(dict, clean_error)``), for the normalised and relative mCE.
    - The model gets float ``(B, C, H, W)`` images in [0, 1] on ``device`` (default: the model's), after
      ``transform`` (any callable on that batch). ``normalize=(mean, std)`` wraps the classifier so that it
      normalises its input itself.
    - ``denoiser``: evaluate the DiffAug Ensemble instead, ``robaug.DiffAugEnsemble(model, denoiser,
      timesteps=ensemble_timesteps, **ensemble_kwargs)``. Any ``nn.Module`` mapping images to logits or
      probabilities can also be passed directly as ``model``; predictions are the argmax over dim 1.

    The model is put in eval mode for the evaluation and returned to its previous mode afterwards.
    """
    if isinstance(benchmark, (str, Path)):
        benchmark = open_corruption_benchmark(benchmark)
    if not isinstance(benchmark, CorruptionBenchmark):
        raise TypeError(f"benchmark must be a CorruptionBenchmark or a folder path, got {type(benchmark).__name__}")
    names = list(benchmark.corruptions if corruptions is None else corruptions)
    sevs = list(benchmark.severities if severities is None else severities)
    for c in names:
        if c not in benchmark.corruptions:
            raise KeyError(f"corruption {c!r} is not in the benchmark ({benchmark.corruptions})")
    for s in sevs:
        if s not in benchmark.severities:
            raise KeyError(f"severity {s} is not in the benchmark ({benchmark.severities})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else module_device(model)
    net = _prepare_model(model, normalize, denoiser, ensemble_timesteps, ensemble_kwargs).to(dev)

    bar = None
    if progress:
        from .._core.progress import progress_bar as tqdm  # whole lines in log files

        bar = tqdm(total=len(names) * len(sevs) + (clean is not None), desc="corruption eval", unit="set")
    was_training = net.training
    net.eval()
    errors: dict[str, dict[int, float]] = {}
    counts: dict[str, dict[int, int]] = {}
    clean_error = None
    try:
        if clean is not None:
            wrong, total = _count_errors(net, _iterate_clean(clean, batch_size, num_workers), dev, transform, amp)
            clean_error = wrong / total
            if bar is not None:
                bar.update(1)
        for c in names:
            errors[c], counts[c] = {}, {}
            for s in sevs:
                wrong, total = _count_errors(
                    net, benchmark.batches(c, s, batch_size=batch_size, num_workers=num_workers), dev, transform, amp
                )
                errors[c][s] = wrong / total
                counts[c][s] = total
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(corruption=c, severity=s, error=f"{100 * errors[c][s]:.1f}%")
    finally:
        net.train(was_training)
        if bar is not None:
            bar.close()

    results = CorruptionResults(errors, clean_error, counts, name=name)
    if baseline is not None:
        results = results.with_baseline(baseline)
    return results
