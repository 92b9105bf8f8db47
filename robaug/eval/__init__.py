"""Robustness evaluation: batched common corruptions (to build "-C" sets), -C benchmark scoring, and adversarial
evaluation (batched PGD, the reference AutoAttack).

Layout: :mod:`.catalogue` (names, families, per-severity parameters), :mod:`.noise` / :mod:`.blur` /
:mod:`.weather` / :mod:`.digital` (the corruptions by family), :mod:`.kernels` and :mod:`._cv_ops` (the image
operations they share), :mod:`.frost` (frost photographs and the procedural texture), :mod:`.corruptions`
(``corrupt``, ``Corrupt``, ``make_corrupted_dataset``), :mod:`.datasets` (-C readers), :mod:`.metrics` (mCE and
friends), :mod:`.evaluation` (evaluation loops), :mod:`.adversarial` (PGD, AutoAttack)."""

from .adversarial import AutoAttackResult, PGDResult, autoattack_accuracy, pgd_accuracy, pgd_attack
from .corruptions import Corrupt, FrostImages, available_corruptions, corrupt, make_corrupted_dataset
from .datasets import open_corruption_benchmark
from .evaluation import evaluate_corruptions, evaluate_error
from .metrics import ALEXNET_ERRORS, CorruptionResults, mce, mean_corruption_error, relative_mce

__all__ = [
    "ALEXNET_ERRORS", "CorruptionResults", "evaluate_corruptions", "evaluate_error", "mce",
    "mean_corruption_error", "open_corruption_benchmark", "relative_mce",
    "Corrupt", "FrostImages", "available_corruptions", "corrupt", "make_corrupted_dataset",
    "AutoAttackResult", "PGDResult", "autoattack_accuracy", "pgd_accuracy", "pgd_attack",
]
