"""The files of a run folder: ``config.json``, ``checkpoint.pt``, ``metrics.jsonl`` / ``metrics.csv``,
``model.safetensors`` and ``results.json``. Every whole-file write is atomic (:mod:`robaug._core.io`: unique temporary
name, fsync, the user's umask, rename), so a run killed at any moment leaves the previous version intact."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaug._core.io import atomic_save, atomic_write_text

__all__ = ["CSV_FIELDS", "write_json", "write_metrics", "append_metrics", "save_checkpoint", "load_checkpoint",
           "save_weights"]

CSV_FIELDS = ["step", "epoch", "lr", "loss", "ce", "ce_diffaug", "jsd", "trades_kl", "train_acc", "test_acc",
              "img_per_s", "elapsed_s"]


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2))


def _csv_writer(f: Any) -> csv.DictWriter:
    return csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore", restval="")


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` from the checkpoint's history (at start and on resume)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    buf = io.StringIO(newline="")
    w = _csv_writer(buf)
    w.writeheader()
    for h in history:
        w.writerow(h)
    atomic_write_text(out / "metrics.csv", buf.getvalue())


def append_metrics(out: Path, rec: dict[str, Any]) -> None:
    """Append one record to metrics.jsonl / metrics.csv (rewritten from the checkpoint's history on resume)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    with open(out / "metrics.csv", "a", newline="") as f:
        _csv_writer(f).writerow(rec)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors only: ``weights_only=True``)."""
    return torch.load(path, map_location=device, weights_only=True)


def save_weights(path: Path, model: nn.Module) -> None:
    """``model``'s state_dict as safetensors (on the CPU), atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_save(path, lambda tmp: save_file(state, tmp))
