"""Robustness evaluation: batched common corruptions (to build "-C" sets), -C benchmark scoring, and adversarial
evaluation (batched PGD, the reference AutoAttack), certified accuracy (randomized and denoised smoothing), OOD
detection, calibration, and one report of all of them (:func:`report`, ``robaug eval``).

Layout: :mod:`.catalogue` (names, families, per-severity parameters), :mod:`.noise` / :mod:`.blur` /
:mod:`.weather` / :mod:`.digital` (the corruptions by family), :mod:`.kernels` and :mod:`._cv_ops` (the image
operations they share), :mod:`.frost` (frost photographs and the procedural texture), :mod:`.corruptions`
(``corrupt``, ``Corrupt``, ``make_corrupted_dataset``), :mod:`.datasets` (-C readers), :mod:`.metrics` (mCE and
friends), :mod:`.evaluation` (evaluation loops), :mod:`.adversarial` (PGD, AutoAttack), :mod:`.certify`,
:mod:`.intervals` (Clopper-Pearson, Wilson, bootstrap), :mod:`.ood` / :mod:`.ood_sets`, :mod:`.calibration`,
:mod:`.report` (with its suites, rendering and figures)."""

from .adversarial import AutoAttackResult, PGDResult, autoattack_accuracy, pgd_accuracy, pgd_attack
from .calibration import calibration_metrics, reliability_diagram
from .certify import CertifyResult, certify, predict
from .corruptions import Corrupt, FrostImages, available_corruptions, corrupt, make_corrupted_dataset
from .datasets import open_corruption_benchmark
from .evaluation import evaluate_corruptions, evaluate_error
from .metrics import ALEXNET_ERRORS, CorruptionResults, mce, mean_corruption_error, relative_mce
from .ood import ood_metrics, ood_scores
from .ood_sets import OODSet, blobs_ood, digits_ood, load_ood_folder, noise_ood, offline_ood_sets, photo_crops_ood
from .report import ReportSettings, report

__all__ = [
    "ALEXNET_ERRORS", "CorruptionResults", "evaluate_corruptions", "evaluate_error", "mce",
    "mean_corruption_error", "open_corruption_benchmark", "relative_mce",
    "Corrupt", "FrostImages", "available_corruptions", "corrupt", "make_corrupted_dataset",
    "AutoAttackResult", "PGDResult", "autoattack_accuracy", "pgd_accuracy", "pgd_attack",
    "certify", "predict", "CertifyResult", "ood_scores", "ood_metrics", "OODSet", "offline_ood_sets",
    "load_ood_folder", "digits_ood", "photo_crops_ood", "noise_ood", "blobs_ood", "calibration_metrics",
    "reliability_diagram", "report", "ReportSettings",
]
