"""The evaluation at the end of a training run: clean accuracy, corruption accuracy, the DiffAug Ensemble.

Corruption test sets: the published CIFAR-10-C / CIFAR-100-C / ImageNet-C folders when given
(``corruption_root``); otherwise, for in-memory datasets (Fashion-MNIST, CIFAR without the published files),
a "-C" set built once with :func:`robaug.eval.make_corrupted_dataset` from the first ``n`` test images and
cached on disk. Those are robaug's re-implemented corruptions: compare methods on them, but quote published
-C numbers only from the published files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from robaug.data.datasets import DatasetInfo, FolderImages, TensorImages
from robaug.eval.datasets import CorruptionBenchmark, NpyCorruptionBenchmark, open_corruption_benchmark
from robaug.eval.evaluation import evaluate_corruptions, evaluate_error

__all__ = ["SubsetBenchmark", "corruption_benchmark", "clean_data", "final_evaluation", "default_cache_dir",
           "adversarial_evaluation"]


def default_cache_dir() -> Path:
    """Where generated -C sets are cached: ``$ROBAUG_CACHE/corrupted`` or ``~/.cache/robaug/corrupted``."""
    base = os.environ.get("ROBAUG_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "robaug") / "corrupted"


class SubsetBenchmark(CorruptionBenchmark):
    """The first ``n`` images of every (corruption, severity) of ``base`` (for the costlier DE evaluation)."""

    def __init__(self, base: CorruptionBenchmark, n: int) -> None:
        self.base, self.n = base, int(n)
        self.corruptions = list(base.corruptions)
        self.severities = list(base.severities)

    def dataset(self, corruption: str, severity: int) -> Dataset:
        ds = self.base.dataset(corruption, severity)
        return Subset(ds, range(min(self.n, len(ds))))  # type: ignore[arg-type]

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seen = 0
        for x, y in self.base.batches(corruption, severity, batch_size=batch_size, num_workers=num_workers):
            if seen >= self.n:
                break
            k = min(len(y), self.n - seen)
            yield x[:k], y[:k]
            seen += k


def corruption_benchmark(
    info: DatasetInfo,
    test: TensorImages | FolderImages,
    *,
    root: str | os.PathLike | None = None,
    num_images: int = 1000,
    seed: int = 0,
    corruptions: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[CorruptionBenchmark | None, str]:
    """The corruption benchmark for a dataset and a note saying what it is (``None`` when there is none)."""
    if root is not None:
        bench = open_corruption_benchmark(root)
        return bench, f"corruption files from {root}"
    if not isinstance(test, TensorImages):
        return None, "no corruption benchmark (pass the ImageNet-C folder as corruption_root)"
    from robaug.eval.corruptions import DEFAULT_CORRUPTIONS, make_corrupted_dataset

    n = min(int(num_images), len(test))
    names = list(corruptions or DEFAULT_CORRUPTIONS)
    # the tag names the exact corruption list, so a cache built before the default list changed is not reused
    names_id = hashlib.sha1(",".join(names).encode()).hexdigest()[:10]
    tag = f"{info.name}-n{n}-seed{seed}-{len(names)}c-{names_id}"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / tag
    note = (f"{info.name}-C re-implemented by robaug.eval.corruptions ({len(names)} corruptions x 5 severities, "
            f"first {n} test images, seed {seed}; not the published -C files)")
    if (target / "meta.json").is_file():
        return NpyCorruptionBenchmark(target), note
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=tag + ".", dir=folder))
    try:
        make_corrupted_dataset(test.images[:n], test.labels[:n], names, seed=seed, out_dir=tmp, progress=progress)
        try:
            os.replace(tmp, target)  # atomic: concurrent runs building the same set do not collide
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return NpyCorruptionBenchmark(target), note


def clean_data(test: TensorImages | FolderImages, info: DatasetInfo, n: int | None = None,
               batch_size: int = 256, num_workers: int = 0) -> Any:
    """The clean test set in the form :func:`robaug.eval.evaluate_error` takes (first ``n`` images)."""
    if isinstance(test, TensorImages):
        k = len(test) if n is None else min(n, len(test))
        return test.images[:k], test.labels[:k]
    from .augment import SampleAugment
    from .loader import SampleDataset

    tf = SampleAugment(info, None, train=False)
    ds: Dataset = SampleDataset(test, tf)
    if n is not None and n < len(test):
        ds = Subset(ds, range(n))
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers)


def _summary(res: Any) -> dict[str, Any]:
    return {
        "corruption_accuracy": res.mean_corruption_accuracy,
        "clean_accuracy": res.clean_accuracy,
        "per_corruption_accuracy": {c: 1.0 - e for c, e in res.corruption_errors.items()},
        "per_severity_accuracy": {str(s): 1.0 - e for s, e in res.severity_errors.items()},
        "images_per_set": int(next(iter(next(iter(res.num_samples.values())).values()))) if res.num_samples else None,
    }


@torch.no_grad()
def final_evaluation(
    model: nn.Module,
    info: DatasetInfo,
    test: TensorImages | FolderImages,
    *,
    device: torch.device,
    batch_size: int = 500,
    num_workers: int = 0,
    corruptions: bool = True,
    corruption_root: str | os.PathLike | None = None,
    corruption_images: int = 1000,
    corruption_seed: int = 0,
    corruption_names: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    denoiser: nn.Module | None = None,
    de_timesteps: Sequence[int] = tuple(range(0, 500, 50)),
    de_images: int | None = None,
    de_clean_images: int | None = None,
    de_kwargs: dict[str, Any] | None = None,
    amp: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Clean accuracy, corruption accuracy and (with ``denoiser``) the DiffAug Ensemble's accuracies.

    ``model`` takes float images in [0, 1]. The DE is evaluated on the first ``de_clean_images`` clean test
    images and the first ``de_images`` images of every corrupted set (all when None), and the plain classifier
    on the same subsets too, so the two compare like for like. ``de_kwargs`` go to
    :class:`robaug.DiffAugEnsemble` (e.g. ``autocast_dtype``).
    """
    t0 = time.perf_counter()
    model.eval()
    out: dict[str, Any] = {}
    clean = clean_data(test, info, batch_size=batch_size, num_workers=num_workers)
    out["clean_accuracy"] = 1.0 - evaluate_error(model, clean, batch_size=batch_size, device=device, amp=amp)
    out["num_test_images"] = len(test)
    bench = None
    if corruptions:
        bench, note = corruption_benchmark(
            info, test, root=corruption_root, num_images=corruption_images, seed=corruption_seed,
            corruptions=corruption_names, cache_dir=cache_dir, progress=progress,
        )
        out["corruption_benchmark"] = note
        if bench is not None:
            res = evaluate_corruptions(model, bench, batch_size=batch_size, device=device, amp=amp,
                                       num_workers=num_workers, progress=progress)
            out["corruption"] = _summary(res)
            out["corruption_accuracy"] = res.mean_corruption_accuracy
    if denoiser is not None:
        n = de_images
        n_clean = de_clean_images if de_clean_images is not None else n
        sub_clean = clean_data(test, info, n=n_clean, batch_size=batch_size, num_workers=num_workers)
        de: dict[str, Any] = {"timesteps": list(de_timesteps), "images": n,
                              "clean_images": min(n_clean, len(test)) if n_clean is not None else len(test)}
        de_kw = dict(denoiser=denoiser, ensemble_timesteps=list(de_timesteps), ensemble_kwargs=de_kwargs or None)
        de["clean_accuracy"] = 1.0 - evaluate_error(model, sub_clean, batch_size=batch_size, device=device, **de_kw)
        de["plain_clean_accuracy"] = 1.0 - evaluate_error(model, sub_clean, batch_size=batch_size, device=device,
                                                          amp=amp)
        if bench is not None:
            sub = SubsetBenchmark(bench, n) if n is not None else bench
            res_de = evaluate_corruptions(model, sub, batch_size=batch_size, device=device, progress=progress,
                                          num_workers=num_workers, **de_kw)
            res_plain = evaluate_corruptions(model, sub, batch_size=batch_size, device=device, amp=amp,
                                             num_workers=num_workers)
            de["corruption"] = _summary(res_de)
            de["corruption_accuracy"] = res_de.mean_corruption_accuracy
            de["plain_corruption_accuracy"] = res_plain.mean_corruption_accuracy
        out["diffaug_ensemble"] = de
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def _first_images(test: TensorImages | FolderImages, info: DatasetInfo, n: int, batch_size: int,
                  num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = clean_data(test, info, n=n, batch_size=batch_size, num_workers=num_workers)
    if isinstance(data, tuple):
        return data
    xs, ys = zip(*list(data))
    return torch.cat(xs), torch.cat(ys)


def adversarial_evaluation(
    model: nn.Module,
    info: DatasetInfo,
    test: TensorImages | FolderImages,
    *,
    device: torch.device,
    images: int = 500,
    norm: str = "linf",
    pgd: tuple[float, int] | None = None,
    pgd_restarts: int = 1,
    autoattack_eps: float | None = None,
    autoattack_version: str = "standard",
    autoattack_attacks: Sequence[str] | None = None,
    autoattack_iters: int | None = None,
    batch_size: int = 500,
    num_workers: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """PGD and/or AutoAttack robust accuracy on the first ``images`` test images (``model`` takes [0, 1] images).

    ``pgd=(eps, steps)``: PGD with CE loss, random start, step ``2.5 eps / steps``. ``autoattack_eps``: the
    reference AutoAttack (``pyautoattack``) at that radius, ``autoattack_version`` ``standard`` unless
    ``custom`` attacks are given.
    """
    from robaug.eval.adversarial import autoattack_accuracy, pgd_accuracy

    x, y = _first_images(test, info, images, batch_size, num_workers)
    out: dict[str, Any] = {"images": int(y.numel())}
    if pgd is not None:
        eps, steps = float(pgd[0]), int(pgd[1])
        g = torch.Generator(device=device)
        g.manual_seed(seed)
        res = pgd_accuracy(model, x, y, eps=eps, steps=steps, norm=norm, restarts=pgd_restarts, batch_size=batch_size,
                           generator=g, device=device)
        out["pgd"] = res.to_dict()
    if autoattack_eps is not None:
        version = "custom" if autoattack_attacks else autoattack_version
        res = autoattack_accuracy(model, x, y, float(autoattack_eps), norm, version=version,
                                  attacks=list(autoattack_attacks) if autoattack_attacks else None,
                                  n_iter=autoattack_iters, batch_size=batch_size, seed=seed, device=device)
        out["autoattack"] = res.to_dict()
    return out
