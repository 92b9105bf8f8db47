"""Corruption-robustness evaluation (the old module path, kept for the docs and users that cite it): the "-C"
readers live in :mod:`robaug.eval.datasets`, the metrics of Hendrycks & Dietterich (ICLR 2019) in
:mod:`robaug.eval.metrics`, the evaluation loops in :mod:`robaug.eval.evaluation`."""

from __future__ import annotations

from .datasets import (
    CorruptionBenchmark,
    ImageFolderCorruptionBenchmark,
    InMemoryCorruptionBenchmark,
    NpyCorruptionBenchmark,
    open_corruption_benchmark,
)
from .evaluation import evaluate_corruptions, evaluate_error
from .metrics import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, CorruptionResults, mce, mean_corruption_error, relative_mce

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
