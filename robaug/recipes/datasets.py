"""Moved to :mod:`robaug.data.datasets`; this path keeps working."""

from robaug.data.datasets import (
    DATASETS,
    DatasetInfo,
    FolderImages,
    TensorImages,
    load_dataset,
    load_synthetic,
)

__all__ = ["DatasetInfo", "TensorImages", "FolderImages", "load_dataset", "load_synthetic", "DATASETS"]
