"""Robustness evaluation: batched common corruptions (to build "-C" sets), -C benchmark scoring, and adversarial
evaluation (batched PGD, the reference AutoAttack)."""

from .adversarial import AutoAttackResult, PGDResult, autoattack_accuracy, pgd_accuracy, pgd_attack
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
from .corruptions import Corrupt, FrostImages, available_corruptions, corrupt, make_corrupted_dataset

__all__ = [
    "ALEXNET_ERRORS", "CorruptionResults", "evaluate_corruptions", "evaluate_error", "mce",
    "mean_corruption_error", "open_corruption_benchmark", "relative_mce",
    "Corrupt", "FrostImages", "available_corruptions", "corrupt", "make_corrupted_dataset",
    "AutoAttackResult", "PGDResult", "autoattack_accuracy", "pgd_accuracy", "pgd_attack",
]
