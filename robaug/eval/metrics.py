"""Corruption-robustness metrics of Hendrycks & Dietterich (ICLR 2019) and the results object that holds them.

All errors are fractions in [0, 1] (``to_markdown`` prints percentages):

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
from typing import Any, Mapping, Sequence

from .._core.io import atomic_write_text
from .catalogue import CORRUPTION_FAMILIES, SEVERITIES

__all__ = [
    "ALEXNET_ERRORS",
    "ALEXNET_CLEAN_ERROR",
    "CorruptionResults",
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
        if sorted(set(severities)) != list(SEVERITIES):
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
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

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
