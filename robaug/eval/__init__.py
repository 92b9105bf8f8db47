"""Robustness evaluation: batched common corruptions (to build "-C" sets) and -C benchmark scoring."""

from .benchmarks import (
    ALEXNET_ERRORS,
    CorruptionResults,
    evaluate_corruptions,
    evaluate_error,
    mce,
    mean_corruption_error,
    open_corruption_benchmark,
    relative_mce,
)
from .corruptions import Corrupt, available_corruptions, corrupt, make_corrupted_dataset

__all__ = [
    "ALEXNET_ERRORS", "CorruptionResults", "evaluate_corruptions", "evaluate_error", "mce",
    "mean_corruption_error", "open_corruption_benchmark", "relative_mce",
    "Corrupt", "available_corruptions", "corrupt", "make_corrupted_dataset",
]
