"""Old path of the corruption-benchmark code (warns; goes away in robaug 0.3.0): the "-C" readers live in
:mod:`robaug.eval.datasets`, the metrics in :mod:`robaug.eval.metrics`, the evaluation loops in
:mod:`robaug.eval.evaluation`; the public names are in :mod:`robaug.eval`."""

from __future__ import annotations

from .._core.deprecation import moved_names

_HOMES = {
    **dict.fromkeys(["CorruptionBenchmark", "NpyCorruptionBenchmark", "ImageFolderCorruptionBenchmark",
                     "InMemoryCorruptionBenchmark", "open_corruption_benchmark"], "robaug.eval.datasets"),
    **dict.fromkeys(["evaluate_corruptions", "evaluate_error"], "robaug.eval.evaluation"),
    **dict.fromkeys(["ALEXNET_ERRORS", "ALEXNET_CLEAN_ERROR", "CorruptionResults", "mean_corruption_error", "mce",
                     "relative_mce"], "robaug.eval.metrics"),
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)
