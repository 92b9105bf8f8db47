"""Corruption-robustness evaluation: readers for the standard "-C" layouts and the metrics of
Hendrycks & Dietterich (ICLR 2019).

Layouts
- **CIFAR-10-C / CIFAR-100-C** (:class:`NpyCorruptionBenchmark`): ``<root>/<corruption>.npy`` with
  ``(5 * N, H, W, C)`` uint8 images, severities 1..5 stacked in order (N = 10,000), and ``labels.npy`` with
  ``5 * N`` (or ``N``) labels. Sets written by :func:`robaug.eval.corruptions.make_corrupted_dataset` use the
  same layout plus a ``meta.json`` naming their severities.
- **ImageNet-C** (:class:`ImageFolderCorruptionBenchmark`): ``<root>/<corruption>/<severity>/<wnid>/<image>``,
  read with torchvision's ``ImageFolder`` (class index = position of the wnid in sorted order, as for the
  ImageNet validation set).

Metrics (all errors are fractions in [0, 1]; ``to_markdown`` prints percentages)
- ``E[c][s]``: top-1 error on corruption ``c`` at severity ``s``.
- Unnormalised corruption error ``CE_c = mean_s E[c][s]`` and its mean over corruptions, the "mean corruption
  error" reported for CIFAR-10-C / CIFAR-100-C (e.g. IPMix, AugMix).
- Normalised ``CE_c = sum_s E[c][s] / sum_s E_base[c][s]`` and ``mCE = mean_c CE_c`` (ImageNet-C: the baseline is
  AlexNet, :data:`ALEXNET_ERRORS`; multiply by 100 for the usual percentages).
- Relative ``rCE_c = sum_s (E[c][s] - E_clean) / sum_s (E_base[c][s] - E_base_clean)``, ``relative mCE = mean_c rCE_c``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._core.image import to_float_batch
from .corruptions import BENCHMARK_CORRUPTIONS, CORRUPTION_FAMILIES, EXTRA_CORRUPTIONS

__all__ = [
    "ALEXNET_ERRORS",
    "ALEXNET_CLEAN_ERROR",
    "CorruptionBenchmark",
    "NpyCorruptionBenchmark",
    "ImageFolderCorruptionBenchmark",
    "InMemoryCorruptionBenchmark",
    "open_corruption_benchmark",
    "CorruptionResults",
    "evaluate_corruptions",
    "evaluate_error",
    "mean_corruption_error",
    "mce",
    "relative_mce",
]

#: AlexNet's ImageNet-C top-1 error per corruption, averaged over severities 1..5
#: (Hendrycks & Dietterich 2019, github.com/hendrycks/robustness; the mCE normaliser).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
#: AlexNet's clean ImageNet top-1 error (torchvision's AlexNet, 56.52% accuracy; the paper rounds it to 43.5%),
#: the relative-mCE normaliser.
ALEXNET_CLEAN_ERROR: float = 0.4348

_ALL_SEVERITIES = (1, 2, 3, 4, 5)


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------


def _per_corruption(errors: Mapping[str, Mapping[int, float] | float]) -> dict[str, float]:
    out = {}
    for c, e in errors.items():
        if isinstance(e, Mapping):
            if not e:
                raise ValueError(f"no severities for corruption {c!r}")
            out[c] = float(sum(e.values()) / len(e))
        else:
            out[c] = float(e)
    return out


def _common(errors: Mapping[str, float], baseline: Mapping[str, float]) -> list[str]:
    names = [c for c in errors if c in baseline]
    if not names:
        raise ValueError(
            f"no corruption in common between the results ({sorted(errors)}) and the baseline ({sorted(baseline)})"
        )
    return names


def mean_corruption_error(errors: Mapping[str, Mapping[int, float] | float]) -> float:
    """Unnormalised mean corruption error: mean over corruptions of the mean error over severities.

    ``errors`` maps a corruption to ``{severity: error}`` or to its mean error over severities.
    """
    per = _per_corruption(errors)
    if not per:
        raise ValueError("no corruption errors given")
    return sum(per.values()) / len(per)


def mce(
    errors: Mapping[str, Mapping[int, float] | float], baseline: Mapping[str, Mapping[int, float] | float]
) -> float:
    """Normalised mCE = mean_c (sum_s E[c][s] / sum_s E_base[c][s]) over the corruptions in both (a fraction;
    x100 for the percentages of the papers)."""
    per, base = _per_corruption(errors), _per_corruption(baseline)
    names = _common(per, base)
    return sum(per[c] / base[c] for c in names) / len(names)


def relative_mce(
    errors: Mapping[str, Mapping[int, float] | float],
    clean_error: float,
    baseline: Mapping[str, Mapping[int, float] | float],
    baseline_clean_error: float,
) -> float:
    """Relative mCE = mean_c (sum_s (E[c][s] - E_clean) / sum_s (E_base[c][s] - E_base_clean))."""
    per, base = _per_corruption(errors), _per_corruption(baseline)
    names = _common(per, base)
    for c in names:
        if base[c] - baseline_clean_error == 0:
            raise ValueError(f"baseline error on {c!r} equals its clean error; relative CE is undefined")
    return sum((per[c] - clean_error) / (base[c] - baseline_clean_error) for c in names) / len(names)


def _resolve_baseline(baseline: Any, severities: Sequence[int]) -> tuple[dict[str, float], float | None, str]:
    """Return (per-corruption mean baseline error over ``severities``, baseline clean error, name)."""
    if isinstance(baseline, str):
        if baseline.lower() != "alexnet":
            raise ValueError(f"baseline must be 'alexnet', a CorruptionResults or a dict, got {baseline!r}")
        if sorted(set(severities)) != list(_ALL_SEVERITIES):
            raise ValueError(
                "the AlexNet errors are means over severities 1..5; evaluate all five severities for an "
                f"AlexNet-normalised mCE (got severities {list(severities)})"
            )
        return dict(ALEXNET_ERRORS), ALEXNET_CLEAN_ERROR, "AlexNet"
    if isinstance(baseline, CorruptionResults):
        per = {}
        for c, by_sev in baseline.errors.items():
            missing = [s for s in severities if s not in by_sev]
            if missing:
                raise ValueError(f"baseline results have no severities {missing} for {c!r}")
            per[c] = sum(by_sev[s] for s in severities) / len(severities)
        return per, baseline.clean_error, baseline.name or "baseline"
    if isinstance(baseline, tuple) and len(baseline) == 2:
        return _per_corruption(baseline[0]), float(baseline[1]), "baseline"
    if isinstance(baseline, Mapping):
        return _per_corruption(baseline), None, "baseline"
    raise TypeError(
        "baseline must be 'alexnet', a CorruptionResults, a {corruption: error} dict or a (dict, clean_error) "
        f"tuple, got {type(baseline).__name__}"
    )


@dataclass
class CorruptionResults:
    """Errors of one model on a corruption benchmark, with the summary metrics as properties."""

    errors: dict[str, dict[int, float]]
    clean_error: float | None = None
    num_samples: dict[str, dict[int, int]] = field(default_factory=dict)
    baseline_errors: dict[str, float] | None = None
    baseline_clean_error: float | None = None
    baseline_name: str | None = None
    name: str | None = None

    @property
    def corruptions(self) -> list[str]:
        return list(self.errors)

    @property
    def severities(self) -> list[int]:
        return sorted({s for by_sev in self.errors.values() for s in by_sev})

    @property
    def corruption_errors(self) -> dict[str, float]:
        """Unnormalised CE per corruption (mean error over severities)."""
        return _per_corruption(self.errors)

    @property
    def mean_corruption_error(self) -> float:
        """Unnormalised mean corruption error (the CIFAR-10-C / CIFAR-100-C number)."""
        return mean_corruption_error(self.errors)

    @property
    def mean_corruption_accuracy(self) -> float:
        return 1.0 - self.mean_corruption_error

    @property
    def clean_accuracy(self) -> float | None:
        return None if self.clean_error is None else 1.0 - self.clean_error

    @property
    def severity_errors(self) -> dict[int, float]:
        """Mean error over corruptions at each severity."""
        out = {}
        for s in self.severities:
            vals = [by_sev[s] for by_sev in self.errors.values() if s in by_sev]
            out[s] = sum(vals) / len(vals)
        return out

    @property
    def family_errors(self) -> dict[str, float]:
        """Mean CE per family (noise, blur, weather, digital; unknown names go to "other")."""
        groups: dict[str, list[float]] = {}
        for c, e in self.corruption_errors.items():
            groups.setdefault(CORRUPTION_FAMILIES.get(c, "other"), []).append(e)
        return {f: sum(v) / len(v) for f, v in groups.items()}

    @property
    def normalized_corruption_errors(self) -> dict[str, float] | None:
        if self.baseline_errors is None:
            return None
        per = self.corruption_errors
        return {c: per[c] / self.baseline_errors[c] for c in _common(per, self.baseline_errors)}

    @property
    def mce(self) -> float | None:
        """Baseline-normalised mCE (fraction), over the corruptions the baseline has; None without a baseline."""
        return None if self.baseline_errors is None else mce(self.errors, self.baseline_errors)

    @property
    def relative_mce(self) -> float | None:
        if self.baseline_errors is None or self.clean_error is None or self.baseline_clean_error is None:
            return None
        return relative_mce(self.errors, self.clean_error, self.baseline_errors, self.baseline_clean_error)

    def with_baseline(self, baseline: Any) -> "CorruptionResults":
        """A copy normalised by ``baseline`` ('alexnet', another CorruptionResults, or a dict of errors)."""
        errs, clean, name = _resolve_baseline(baseline, self.severities)
        return CorruptionResults(
            {c: dict(v) for c, v in self.errors.items()}, self.clean_error,
            {c: dict(v) for c, v in self.num_samples.items()}, errs, clean, name, self.name,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clean_error": self.clean_error,
            "errors": {c: {str(s): e for s, e in v.items()} for c, v in self.errors.items()},
            "num_samples": {c: {str(s): n for s, n in v.items()} for c, v in self.num_samples.items()},
            "corruption_errors": self.corruption_errors,
            "mean_corruption_error": self.mean_corruption_error,
            "severity_errors": {str(s): e for s, e in self.severity_errors.items()},
            "family_errors": self.family_errors,
            "baseline": self.baseline_name,
            "baseline_errors": self.baseline_errors,
            "baseline_clean_error": self.baseline_clean_error,
            "mce": self.mce,
            "relative_mce": self.relative_mce,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CorruptionResults":
        return cls(
            errors={c: {int(s): float(e) for s, e in v.items()} for c, v in d["errors"].items()},
            clean_error=d.get("clean_error"),
            num_samples={c: {int(s): int(n) for s, n in v.items()} for c, v in d.get("num_samples", {}).items()},
            baseline_errors=d.get("baseline_errors"),
            baseline_clean_error=d.get("baseline_clean_error"),
            baseline_name=d.get("baseline"),
            name=d.get("name"),
        )

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def to_markdown(self) -> str:
        """Per-corruption / per-severity error table (in %) followed by the summary metrics."""
        sevs = self.severities
        norm = self.normalized_corruption_errors
        head = ["corruption"] + [f"s{s}" for s in sevs] + ["mean"] + (["CE (norm.)"] if norm else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c, by_sev in self.errors.items():
            row = [c] + [f"{100 * by_sev[s]:.2f}" if s in by_sev else "" for s in sevs]
            row.append(f"{100 * self.corruption_errors[c]:.2f}")
            if norm:
                row.append(f"{100 * norm[c]:.1f}" if c in norm else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if self.clean_error is not None:
            lines.append(f"- clean error: {100 * self.clean_error:.2f}%")
        lines.append(f"- mean corruption error (unnormalised): {100 * self.mean_corruption_error:.2f}%")
        if self.mce is not None:
            lines.append(f"- mCE (normalised by {self.baseline_name}): {100 * self.mce:.2f}")
        if self.relative_mce is not None:
            lines.append(f"- relative mCE (normalised by {self.baseline_name}): {100 * self.relative_mce:.2f}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# benchmark layouts
# ----------------------------------------------------------------------------------------------------------


def _hwc_to_batch(arr: np.ndarray) -> torch.Tensor:
    """(B, H, W[, C]) numpy uint8/float -> float (B, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(arr))  # copy: memory-mapped slices are read-only
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if t.dtype.is_floating_point:
        return t.float()
    raise TypeError(f"unsupported image dtype {t.dtype} in the .npy file (expected uint8)")


def _select_corruptions(
    found: Sequence[str], requested: Iterable[str] | None, root: Path, item: str, layout: str
) -> list[str]:
    """The corruptions to evaluate: ``requested`` (all must be in ``found``) or every one found, benchmark order first."""
    if requested is None:
        order = list(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
        chosen = [c for c in order if c in found] + [c for c in found if c not in order]
    else:
        chosen = list(requested)
        missing = [c for c in chosen if c not in found]
        if missing:
            raise FileNotFoundError(f"no {', '.join(item.format(m) for m in missing)} in {root}")
    if not chosen:
        raise FileNotFoundError(f"no {layout} in {root}")
    return chosen


class CorruptionBenchmark:
    """A set of (corruption, severity) test sets. Subclasses implement :meth:`dataset` and may override
    :meth:`batches` with something faster than a DataLoader."""

    corruptions: list[str]
    severities: list[int]

    def dataset(self, corruption: str, severity: int) -> Dataset:
        raise NotImplementedError

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images float (B, C, H, W) in [0, 1], labels int64 (B,))``."""
        self._check(corruption, severity)
        loader = DataLoader(
            self.dataset(corruption, severity), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, collate_fn=_collate_images,
        )
        yield from loader

    def _check(self, corruption: str, severity: int) -> None:
        if corruption not in self.corruptions:
            raise KeyError(f"corruption {corruption!r} is not in this benchmark; it has {self.corruptions}")
        if severity not in self.severities:
            raise KeyError(f"severity {severity} is not in this benchmark; it has {self.severities}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.corruptions)} corruptions, severities {self.severities})"


class _ArrayDataset(Dataset):
    def __init__(self, images: Any, labels: np.ndarray | torch.Tensor, chw: bool) -> None:
        self.images, self.labels, self.chw = images, labels, chw

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.chw:
            x = img.float() / 255.0
        else:
            x = _hwc_to_batch(np.asarray(img)[None])[0]
        return x, int(self.labels[i])


class NpyCorruptionBenchmark(CorruptionBenchmark):
    """CIFAR-10-C / CIFAR-100-C layout (see the module docstring); arrays are memory-mapped."""

    def __init__(self, root: str | Path, corruptions: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a directory")
        labels_path = self.root / "labels.npy"
        if not labels_path.is_file():
            raise FileNotFoundError(
                f"{labels_path} not found: a CIFAR-10-C style folder holds <corruption>.npy files and labels.npy"
            )
        found = sorted(p.stem for p in self.root.glob("*.npy") if p.stem != "labels")
        meta_path = self.root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.severities = [int(s) for s in meta.get("severities", _ALL_SEVERITIES)]
        self.corruptions = _select_corruptions(found, corruptions, self.root, "{}.npy", "<corruption>.npy files")
        self._labels = np.load(labels_path, mmap_mode="r")
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, corruption: str) -> np.ndarray:
        if corruption not in self._arrays:
            arr = np.load(self.root / f"{corruption}.npy", mmap_mode="r")
            if arr.ndim not in (3, 4) or len(arr) % len(self.severities):
                raise ValueError(
                    f"{corruption}.npy has shape {arr.shape}; expected ({len(self.severities)} * N, H, W[, C])"
                )
            self._arrays[corruption] = arr
        return self._arrays[corruption]

    def _rows(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        self._check(corruption, severity)
        arr = self._array(corruption)
        n = len(arr) // len(self.severities)
        si = self.severities.index(severity)
        if len(self._labels) == len(arr):
            labels = self._labels[si * n: (si + 1) * n]
        elif len(self._labels) == n:
            labels = self._labels
        else:
            raise ValueError(
                f"labels.npy has {len(self._labels)} entries; expected {len(arr)} (one per row of "
                f"{corruption}.npy) or {n} (one per image)"
            )
        return arr[si * n: (si + 1) * n], labels

    def dataset(self, corruption: str, severity: int) -> Dataset:
        images, labels = self._rows(corruption, severity)
        return _ArrayDataset(images, labels, chw=False)

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self._rows(corruption, severity)
        for start in range(0, len(labels), batch_size):
            x = _hwc_to_batch(images[start: start + batch_size])
            y = torch.from_numpy(np.asarray(labels[start: start + batch_size]).astype(np.int64))
            yield x, y


class InMemoryCorruptionBenchmark(CorruptionBenchmark):
    """Corrupted sets held as uint8 tensors: ``data[corruption]`` has shape ``(S, N, C, H, W)`` for the
    ``severities`` in order, ``labels`` shape ``(N,)``. Returned by ``make_corrupted_dataset``."""

    def __init__(self, data: Mapping[str, torch.Tensor], labels: torch.Tensor, severities: Sequence[int] = _ALL_SEVERITIES) -> None:
        self.data = dict(data)
        self.labels = torch.as_tensor(labels).long().reshape(-1)
        self.severities = [int(s) for s in severities]
        self.corruptions = list(self.data)
        for c, t in self.data.items():
            if t.ndim != 5 or t.shape[0] != len(self.severities) or t.shape[1] != len(self.labels):
                raise ValueError(
                    f"data[{c!r}] has shape {tuple(t.shape)}; expected ({len(self.severities)}, {len(self.labels)}, C, H, W)"
                )

    def images(self, corruption: str, severity: int) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` images of one corruption and severity."""
        self._check(corruption, severity)
        return self.data[corruption][self.severities.index(severity)]

    def dataset(self, corruption: str, severity: int) -> Dataset:
        return _ArrayDataset(self.images(corruption, severity), self.labels, chw=True)

    def batches(
        self, corruption: str, severity: int, batch_size: int = 256, num_workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        imgs = self.images(corruption, severity)
        for start in range(0, len(self.labels), batch_size):
            yield imgs[start: start + batch_size].float().div_(255.0), self.labels[start: start + batch_size]

    def save(self, out_dir: str | Path) -> "NpyCorruptionBenchmark":
        """Write the CIFAR-10-C layout (``<corruption>.npy`` (S*N, H, W, C) uint8, ``labels.npy``, ``meta.json``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for c, t in self.data.items():
            s, n, ch, h, w = t.shape
            np.save(out / f"{c}.npy", t.permute(0, 1, 3, 4, 2).reshape(s * n, h, w, ch).numpy())
        np.save(out / "labels.npy", self.labels.repeat(len(self.severities)).numpy())
        meta = {"corruptions": self.corruptions, "severities": self.severities, "num_images": len(self.labels)}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        return NpyCorruptionBenchmark(out)


class ImageFolderCorruptionBenchmark(CorruptionBenchmark):
    """ImageNet-C layout: ``<root>/<corruption>/<severity>/<class>/<image>``.

    ``transform`` maps a PIL image to a tensor (default: ``ToImage`` + ``ToDtype(float32, scale=True)``; the
    published ImageNet-C images are already 224x224). Keep normalisation out of it (pass ``normalize=`` to
    :func:`evaluate_corruptions`) so that the DiffAug ensemble sees [0, 1] images.
    """

    def __init__(self, root: str | Path, transform: Any = None, corruptions: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a directory")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.corruptions = _select_corruptions(found, corruptions, self.root, "folder {}/", "<corruption>/<severity>/ folders")
        sevs = sorted(
            {int(p.name) for c in self.corruptions for p in (self.root / c).iterdir() if p.is_dir() and p.name.isdigit()}
        )
        if not sevs:
            raise FileNotFoundError(f"no severity folders (1..5) under {self.root / self.corruptions[0]}")
        self.severities = sevs
        if transform is None:
            from torchvision.transforms import v2

            transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        self.transform = transform

    def dataset(self, corruption: str, severity: int) -> Dataset:
        from torchvision.datasets import ImageFolder

        self._check(corruption, severity)
        folder = self.root / corruption / str(severity)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        return ImageFolder(str(folder), transform=self.transform)


def open_corruption_benchmark(root: str | Path, **kwargs: Any) -> CorruptionBenchmark:
    """Open ``root`` as a CIFAR-10-C style (``*.npy``) or ImageNet-C style (folders) benchmark."""
    root = Path(root)
    if (root / "labels.npy").is_file():
        return NpyCorruptionBenchmark(root, **kwargs)
    if root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return ImageFolderCorruptionBenchmark(root, **kwargs)
    raise FileNotFoundError(
        f"{root}: neither a CIFAR-10-C style folder (<corruption>.npy + labels.npy) nor an ImageNet-C style "
        "folder (<corruption>/<severity>/<class>/<image>)"
    )


# ----------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------


def _collate_images(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs = [to_float_batch(img, name="image", validate=False)[0][0] for img, _ in items]
    ys = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return torch.stack(xs), ys


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
            yield to_float_batch(images[start: start + batch_size], name="clean images")[0], labels[start: start + batch_size]
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate_images)
    else:
        raise TypeError(
            "clean must be a Dataset, a DataLoader or an (images, labels) pair of tensors, "
            f"got {type(data).__name__}"
        )


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


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
    dev = torch.device(device) if device is not None else _model_device(model)
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
    dev = torch.device(device) if device is not None else _model_device(model)
    net = _prepare_model(model, normalize, denoiser, ensemble_timesteps, ensemble_kwargs).to(dev)

    bar = None
    if progress:
        from tqdm.auto import tqdm

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
