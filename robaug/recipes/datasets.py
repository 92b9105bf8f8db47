"""Old path (warns; goes away in robaug 0.3.0): moved to :mod:`robaug.data.datasets`."""

from __future__ import annotations

from .._core.deprecation import moved_names

_HOMES = dict.fromkeys(["DatasetInfo", "TensorImages", "FolderImages", "load_dataset", "load_synthetic", "DATASETS"],
                       "robaug.data.datasets")
__all__ = sorted(_HOMES)
__getattr__, __dir__ = moved_names(__name__, _HOMES)
