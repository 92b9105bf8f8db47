"""Writing a shard dataset: one shard (atomically, bytes that depend only on the arrays), its record (the
``shards/shard-XXXXXX.json`` whose presence marks the shard done, so a killed run resumes) and the selection file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from ..._core.io import atomic_write_bytes, sha256_file
from .format import SELECTION_NAME, SHARD_DIR, atomic_write_json, shard_name

__all__ = ["write_shard", "shard_file", "shard_record_path", "write_shard_record", "shard_done", "shard_state",
           "write_selection"]


def _as_tensor(a: Any, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    return t.detach().cpu().contiguous()


def write_shard(path: str | os.PathLike, images: Any, labels: Any, **extra: Any) -> str:
    """Atomically write one shard (``images`` uint8 4-d, ``labels`` int64 1-d, extra float/int arrays of the
    same length) and return its sha256. The bytes depend only on the arrays (no metadata), so the same
    content always gives the same file and checksum."""
    img = _as_tensor(images, torch.uint8, "images")
    lab = _as_tensor(labels, torch.int64, "labels")
    if img.ndim != 4 or lab.ndim != 1 or img.shape[0] != lab.shape[0]:
        raise ValueError(f"images must be (N, ., ., .) and labels (N,), got {tuple(img.shape)} and {tuple(lab.shape)}")
    tensors = {"image": img, "label": lab}
    for k, v in extra.items():
        t = torch.as_tensor(v).detach().cpu().contiguous()
        if t.shape[:1] != lab.shape:
            raise ValueError(f"extra array {k!r} must have {lab.shape[0]} entries, got shape {tuple(t.shape)}")
        tensors[k] = t
    data = st_save(tensors)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def shard_file(k: int) -> str:
    """Path of shard ``k`` relative to the dataset folder (as recorded in the manifest)."""
    return f"{SHARD_DIR}/{shard_name(k)}.safetensors"


def shard_record_path(root: str | os.PathLike, k: int) -> Path:
    return Path(root) / SHARD_DIR / f"{shard_name(k)}.json"


def write_shard_record(root: str | os.PathLike, k: int, record: dict) -> None:
    """Write shard ``k``'s record after the shard itself: from then on the shard counts as done."""
    atomic_write_json(shard_record_path(root, k), record)


def shard_state(root: str | os.PathLike, k: int, verify: bool = False) -> tuple[bool, str | None]:
    """``(done, problem)`` of shard ``k``: done when it has a record and its file exists with the recorded size
    (``bytes``, a stat: free) and, with ``verify``, the recorded sha256 (reads the file). ``problem`` says why a
    recorded shard is unusable (``None`` when it is fine or was simply never finished)."""
    side = shard_record_path(root, k)
    if not side.is_file():
        return False, None
    try:
        rec = json.loads(side.read_text())
        path = Path(root) / rec["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"{side}: unreadable shard record"
    if not path.is_file():
        return False, f"{path}: file missing"
    size = rec.get("bytes")
    if size is not None and path.stat().st_size != int(size):
        return False, f"{path}: {path.stat().st_size} bytes, the record says {size} (truncated or replaced)"
    if verify and sha256_file(path) != rec.get("sha256"):
        return False, f"{path}: sha256 differs from the record (corrupted)"
    return True, None


def shard_done(root: str | os.PathLike, k: int, verify: bool = False) -> bool:
    """True when shard ``k`` is finished and intact (see :func:`shard_state`)."""
    return shard_state(root, k, verify)[0]


def write_selection(root: str | os.PathLike, index: torch.Tensor, **info: Any) -> dict:
    """Write the kept sample indices to ``selection.safetensors``; returns the manifest's ``selection`` record
    (``file``, ``count``, ``info``..., ``sha256``)."""
    data = st_save({"index": index.contiguous()})
    atomic_write_bytes(Path(root) / SELECTION_NAME, data)
    return {"file": SELECTION_NAME, "count": int(index.numel()), **info, "sha256": hashlib.sha256(data).hexdigest()}
